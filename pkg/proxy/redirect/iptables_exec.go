package redirect

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

// ErrPermission means the redirect may not be changed: the process lacks
// CAP_NET_ADMIN in the network namespace (or CAP_NET_RAW, for
// iptables-legacy).
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

// Program picks the iptables program for mode and family: ModeIptablesNFT and
// ModeIptablesLegacy want that back end; any other mode picks one. Picking
// prefers the back end that already holds nat rules in this network
// namespace (so a pod whose other init containers used iptables-legacy stays
// consistent), and iptables-nft otherwise.
func Program(ctx context.Context, r Runner, mode Mode, family Family) (string, error) {
	legacy, nft := family.base()+"-legacy", family.base()+"-nft"
	have := func(p string) bool { _, err := r.LookPath(p); return err == nil }
	switch mode {
	case ModeIptablesLegacy, ModeIptablesNFT:
		want := legacy
		if mode == ModeIptablesNFT {
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
		return "", fmt.Errorf("%w: %s is not installed (install the iptables package, or use --redirect-mode auto)", ErrNotInstalled, want)
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
	return "", fmt.Errorf("%w: neither %s, %s nor %s is on PATH", ErrNotInstalled, nft, legacy, family.base())
}

// DefaultProgram is the program name of mode without looking at the machine:
// iptables-legacy or iptables-nft for those modes, iptables otherwise.
func (f Family) DefaultProgram(mode Mode) string {
	switch mode {
	case ModeIptablesLegacy:
		return f.base() + "-legacy"
	case ModeIptablesNFT:
		return f.base() + "-nft"
	}
	return f.base()
}

func backendOf(versionOutput []byte) Mode {
	switch {
	case bytes.Contains(versionOutput, []byte("nf_tables")):
		return ModeIptablesNFT
	case bytes.Contains(versionOutput, []byte("legacy")):
		return ModeIptablesLegacy
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

// InstallIptables runs steps with program. It stops at the first failure and
// names the command; a permission problem is reported as ErrPermission.
func InstallIptables(ctx context.Context, r Runner, program string, steps []Step) error {
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
