package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ErrNotInstalled means no iptables program was found.
var ErrNotInstalled = errors.New("iptables not found")

// ErrPermission means iptables ran but may not change the nat table.
var ErrPermission = errors.New("permission denied")

// Runner runs programs; ExecRunner is the real one, tests use fakes.
type Runner interface {
	// LookPath returns the path of program, or an error when it is missing.
	LookPath(program string) (string, error)
	// Run runs program with args and returns its combined output.
	Run(ctx context.Context, program string, args ...string) ([]byte, error)
}

// ExecRunner runs programs with os/exec.
type ExecRunner struct{}

func (ExecRunner) LookPath(program string) (string, error) { return exec.LookPath(program) }

func (ExecRunner) Run(ctx context.Context, program string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// Mode selects the iptables back end.
type Mode string

const (
	ModeAuto   Mode = "auto"
	ModeLegacy Mode = "legacy"
	ModeNFT    Mode = "nft"
)

// ParseMode accepts "auto", "legacy" or "nft".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeAuto, ModeLegacy, ModeNFT:
		return m, nil
	}
	return "", fmt.Errorf("%q is not an iptables mode: use auto, legacy or nft", s)
}

// base is the program prefix of a family: iptables or ip6tables.
func (f Family) base() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// Program picks the iptables program for mode and family. Auto prefers the
// back end that already holds nat rules in this network namespace (so a pod
// whose other init containers used iptables-legacy stays consistent), and
// iptables-nft otherwise.
func Program(ctx context.Context, r Runner, mode Mode, family Family) (string, error) {
	legacy, nft := family.base()+"-legacy", family.base()+"-nft"
	have := func(p string) bool { _, err := r.LookPath(p); return err == nil }
	switch mode {
	case ModeLegacy, ModeNFT:
		want := legacy
		if mode == ModeNFT {
			want = nft
		}
		if have(want) {
			return want, nil
		}
		// A distribution may ship only the plain name for one back end.
		if have(family.base()) {
			if out, err := r.Run(ctx, family.base(), "--version"); err == nil && backendOf(out) == mode {
				return family.base(), nil
			}
		}
		return "", fmt.Errorf("%w: %s is not installed (install the iptables package, or use --iptables-mode auto)", ErrNotInstalled, want)
	}
	switch hasLegacy, hasNFT := have(legacy), have(nft); {
	case hasLegacy && hasNFT:
		nLegacy, errLegacy := countNATRules(ctx, r, legacy)
		nNFT, errNFT := countNATRules(ctx, r, nft)
		if errNFT != nil && errLegacy == nil || nLegacy > nNFT {
			return legacy, nil
		}
		return nft, nil
	case hasNFT:
		return nft, nil
	case hasLegacy:
		return legacy, nil
	case have(family.base()):
		return family.base(), nil
	}
	return "", fmt.Errorf("%w: neither %s, %s nor %s is on PATH (install the iptables package, e.g. apt-get install iptables)",
		ErrNotInstalled, nft, legacy, family.base())
}

// DefaultProgram is the program name of mode without looking at the machine:
// iptables for auto, iptables-legacy or iptables-nft otherwise.
func (f Family) DefaultProgram(mode Mode) string {
	if mode == ModeAuto {
		return f.base()
	}
	return f.base() + "-" + string(mode)
}

func backendOf(versionOutput []byte) Mode {
	switch {
	case bytes.Contains(versionOutput, []byte("nf_tables")):
		return ModeNFT
	case bytes.Contains(versionOutput, []byte("legacy")):
		return ModeLegacy
	}
	return ""
}

// countNATRules counts the appended rules in the nat table.
func countNATRules(ctx context.Context, r Runner, program string) (int, error) {
	out, err := r.Run(ctx, program, "-w", "5", "-t", "nat", "-S")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") {
			n++
		}
	}
	return n, nil
}

// Install runs steps with program. It stops at the first failure and names
// the command; a permission problem is reported as ErrPermission.
func Install(ctx context.Context, r Runner, program string, steps []Step) error {
	for _, s := range steps {
		out, err := r.Run(ctx, program, s.Args...)
		args := s.Args
		if err != nil && s.OrElse != nil {
			args = s.OrElse
			out, err = r.Run(ctx, program, s.OrElse...)
		}
		if err != nil {
			return commandError(program, args, out, err)
		}
	}
	return nil
}

func commandError(program string, args []string, out []byte, err error) error {
	msg := strings.Join(strings.Fields(string(out)), " ")
	if msg == "" {
		msg = err.Error()
	}
	if isPermissionProblem(msg) {
		return fmt.Errorf("%w: %s cannot change the nat table (%s)", ErrPermission, program, msg)
	}
	return fmt.Errorf("%s: %s", commandLine(program, args), msg)
}

func isPermissionProblem(msg string) bool {
	for _, s := range []string{"Permission denied", "you must be root", "Operation not permitted"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
