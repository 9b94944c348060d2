package redirect

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Mode selects how the redirect is installed.
type Mode string

const (
	// ModeAuto uses nftables over netlink, and iptables programs only when
	// the kernel has no nf_tables.
	ModeAuto Mode = "auto"
	// ModeNFT uses nftables over netlink only; it needs no program.
	ModeNFT Mode = "nft"
	// ModeIptablesNFT runs iptables-nft (ip6tables-nft).
	ModeIptablesNFT Mode = "iptables-nft"
	// ModeIptablesLegacy runs iptables-legacy (ip6tables-legacy).
	ModeIptablesLegacy Mode = "iptables-legacy"
)

// ParseMode accepts auto, nft, iptables-nft or iptables-legacy.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeAuto, ModeNFT, ModeIptablesNFT, ModeIptablesLegacy:
		return m, nil
	}
	return "", fmt.Errorf("%q is not a redirect mode: use auto, nft, iptables-nft or iptables-legacy", s)
}

// UsesNFT reports whether m installs with nftables over netlink first.
func (m Mode) UsesNFT() bool { return m == ModeAuto || m == ModeNFT }

// Backends are the two ways of installing a plan.
type Backends struct {
	// NFT installs rulesets over netlink; InstallNFT is the real one.
	NFT func(context.Context, []Ruleset) error
	// Runner runs iptables programs.
	Runner Runner
}

// Install installs rulesets as mode says and returns what did it, for the
// log line: "nftables over netlink (table ip conduit)", or the iptables
// programs used, with the reason when auto fell back to them.
func Install(ctx context.Context, mode Mode, rulesets []Ruleset, b Backends) (string, error) {
	if !mode.UsesNFT() {
		return installIptables(ctx, mode, rulesets, b.Runner)
	}
	nftErr := b.NFT(ctx, rulesets)
	if nftErr == nil {
		tables := make([]string, len(rulesets))
		for i, rs := range rulesets {
			tables[i] = "table " + rs.Family.nftFamily() + " " + NFTTable
		}
		return "nftables over netlink (" + strings.Join(tables, ", ") + ")", nil
	}
	if mode == ModeNFT || !errors.Is(nftErr, ErrNFTablesUnavailable) {
		return "", nftErr
	}
	used, err := installIptables(ctx, ModeAuto, rulesets, b.Runner)
	if errors.Is(err, ErrNotInstalled) {
		return "", fmt.Errorf("%w, and %w: load the nf_tables and nft_chain_nat modules on the node, or use an image that has the iptables package",
			nftErr, err)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (%v)", used, nftErr), nil
}

// installIptables installs each ruleset with the iptables program that mode
// picks for its family and returns the programs used.
func installIptables(ctx context.Context, mode Mode, rulesets []Ruleset, r Runner) (string, error) {
	type job struct {
		program string
		steps   []Step
	}
	var jobs []job
	for _, rs := range rulesets {
		program, err := Program(ctx, r, mode, rs.Family)
		if err != nil {
			return "", err
		}
		jobs = append(jobs, job{program, Steps(rs)})
	}
	programs := make([]string, len(jobs))
	for i, j := range jobs {
		if err := InstallIptables(ctx, r, j.program, j.steps); err != nil {
			return "", err
		}
		programs[i] = j.program
	}
	return strings.Join(programs, " and "), nil
}
