// Package integration tests the conduit binaries end to end against a real
// kube-apiserver, etcd, kube-controller-manager and kwok (see
// integration/cluster). One cluster is started for the whole package; each
// test uses its own namespaces.
package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/integration/cluster"
	"github.com/conduitmesh/conduit/internal/testenv"
)

// testCluster is the package's cluster, started by TestMain.
var testCluster *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipping the whole package in -short mode (it starts a real kube-apiserver)")
		return 0
	}
	defer testenv.Cleanup()

	// A cold cache builds the Kubernetes binaries first (several minutes):
	// run `make k8s-binaries` beforehand, or give go test a long -timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	c, err := cluster.Start(ctx, cluster.Options{Log: os.Stderr})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: FAIL: could not start the test cluster: %v\n", err)
		return 1
	}
	testCluster = c
	code := m.Run()
	if refused := c.RefusedEgress(); len(refused) > 0 {
		// The guard stopped these; without it they would have left the machine.
		fmt.Fprintf(os.Stderr, "integration: FAIL: a test made the API server dial the cluster network %d times (a webhook's Service, a kwok pod or node), refused by the egress guard: %s\n", len(refused), strings.Join(refused, ", "))
		code = 1
	}
	if code != 0 {
		c.Keep()
		fmt.Fprintf(os.Stderr, "integration: tests failed; the cluster's logs are kept in %s\n", c.Dir)
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: stopping the test cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// withVersion links the binary as release version v (pkg/version.Version),
// e.g. to build an "older" CLI for upgrade tests.
func withVersion(v string) testenv.BuildOption { return testenv.WithVersion(v) }

// buildBinary builds the main package pkg (relative to the module root, e.g.
// "./cmd/conduit") once per test run and returns the binary's path
// (testenv.Build).
func buildBinary(t testing.TB, pkg string, opts ...testenv.BuildOption) string {
	t.Helper()
	return testenv.Build(t, pkg, opts...)
}

// cmdResult is what a binary run by runBinary did.
type cmdResult struct {
	Stdout, Stderr string
	Code           int
}

// noInjectorProbe goes on every install and upgrade that waits: kwok's
// controller pods run nothing, so the proxy injector cannot answer the dry-run
// probe of --wait, and the API server's call to the webhook would go to the
// Service's ClusterIP, an address no one here owns (pods in these tests carry
// conduit.io/inject=disabled for the same reason). The probe is proven on the
// real node (integration/realnode) and in pkg/install's tests; `conduit
// check`'s probe is answered here by startLocalController's injector, which
// the cluster's egress guard routes the Service to.
const noInjectorProbe = "--wait-injector=false"

// runBinary runs bin with args against the cluster kubeconfig (KUBECONFIG
// is set; pass "" to use testCluster's admin kubeconfig), with no stdin and
// CI=true, and returns its output and exit status. It fails the test only
// if the binary could not be run at all or ran longer than two minutes.
func runBinary(t testing.TB, bin, kubeconfig string, args ...string) cmdResult {
	t.Helper()
	if kubeconfig == "" {
		kubeconfig = testCluster.Kubeconfig
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "CI=true", "NO_COLOR=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("running %s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, res.Stdout, res.Stderr)
	}
	return res
}
