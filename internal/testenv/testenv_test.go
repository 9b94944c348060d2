package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

const hello = "./internal/testenv/testdata/hello"

func TestBuildOncePerOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	dev := Build(t, hello)
	if again := Build(t, hello); again != dev {
		t.Errorf("second Build = %s, want the first build %s", again, dev)
	}
	v1 := Build(t, hello, WithVersion("v1.2.3"))
	if v1 == dev {
		t.Errorf("Build with a version = %s, the same path as without", v1)
	}
	for bin, want := range map[string]string{dev: "dev", v1: "v1.2.3"} {
		if filepath.Base(bin) != "hello" {
			t.Errorf("binary %s is not named after its package", bin)
		}
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%s printed %q, want %q", bin, got, want)
		}
	}
}

func TestBuildFailureFails(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	ft := &fakeT{TB: t}
	Build(ft, "./internal/testenv/testdata/nosuchpackage")
	if !strings.Contains(ft.fatal, "nosuchpackage") {
		t.Errorf("Build of a missing package failed with %q, want go build's error", ft.fatal)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Minute, time.Millisecond, func() error {
		if n++; n < 3 {
			return fmt.Errorf("try %d", n)
		}
		return nil
	})
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}

	ft := &fakeT{TB: t}
	Eventually(ft, 20*time.Millisecond, time.Millisecond, func() error { return errors.New("never ready") })
	if want := "after 20ms: never ready"; ft.fatal != want {
		t.Errorf("Eventually failed with %q, want %q", ft.fatal, want)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 400 {
		t.Errorf("len = %d, want 400", got)
	}
}

func TestLinksOnly(t *testing.T) {
	// This package links only itself outside the standard library.
	LinksOnly(t, ".", []string{"github.com/conduitmesh/conduit/internal/testenv"})
	LinksOnly(t, ".", []string{"github.com/conduitmesh/conduit/internal/"})
	ft := &fakeT{TB: t}
	LinksOnly(ft, ".", []string{"github.com/conduitmesh/conduit/internal/testenvx"})
	if !strings.Contains(ft.errors, "internal/testenv links github.com/conduitmesh/conduit/internal/testenv, which is not among") {
		t.Errorf("LinksOnly with the package left out reported %q", ft.errors)
	}
}

// fakeT records a Fatalf or Errorf instead of failing the test.
type fakeT struct {
	testing.TB
	fatal, errors string
}

func (f *fakeT) Errorf(format string, args ...any) { f.errors += fmt.Sprintf(format, args...) + "\n" }

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }

func (f *fakeT) Fatal(args ...any) { f.fatal = fmt.Sprint(args...) }
