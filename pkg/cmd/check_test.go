package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sversion "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/pkg/healthcheck"
)

func TestCheckFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"conduit", "check", "-o", "xml"}, `-o "xml" is not an output format of this command: use basic, short, json, yaml or junit`},
		{[]string{"conduit", "check", "--pre", "--proxy"}, "--pre and --proxy cannot be combined"},
		{[]string{"conduit", "check", "extra"}, `check takes no arguments, got ["extra"]`},
		{[]string{"conduit", "check", "-n", "mesh"}, "-n mesh only selects the data plane namespace of --proxy; name the control plane's namespace with -L: `conduit check -L mesh`"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[2:], " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout must be empty on a usage error, got %q", out.String())
			}
		})
	}
}

func TestCheckNotInstalled(t *testing.T) {
	client := fake.NewClientset()
	newClient := func() (kubernetes.Interface, error) { return client, nil }
	for _, output := range []string{"basic", "short", "json", "junit"} {
		t.Run(output, func(t *testing.T) {
			var out bytes.Buffer
			opts := checkOptions{output: output, controlNS: "conduit", progName: "kubectl conduit"}
			err := runCheck(context.Background(), opts, &out, newClient)
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != 1 {
				t.Fatalf("got %v, want exit status 1", err)
			}
			got := out.String()
			if !strings.Contains(got, `namespace \"conduit\" does not exist`) && !strings.Contains(got, `namespace "conduit" does not exist`) && !strings.Contains(got, "namespace &#34;conduit&#34; does not exist") {
				t.Errorf("output does not name the missing namespace:\n%s", got)
			}
			if !strings.Contains(got, "kubectl conduit install") {
				t.Errorf("the hint does not use the plugin's name:\n%s", got)
			}
			if output == "json" {
				var doc struct{ Success bool }
				if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Success {
					t.Errorf("json output %v, success %v", err, doc.Success)
				}
			}
			if output == "short" && strings.Contains(got, "✔") && !strings.Contains(got, "Status check results") {
				t.Errorf("short output lists passing checks:\n%s", got)
			}
		})
	}
}

func TestCheckPrePasses(t *testing.T) {
	client := fake.NewClientset()
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &k8sversion.Info{GitVersion: "v1.37.2"}
	// The fake denies every SelfSubjectAccessReview; allow them all.
	client.PrependReactor("create", "selfsubjectaccessreviews", allowAllReviews)
	var out bytes.Buffer
	err := runCheck(context.Background(), checkOptions{pre: true, output: "basic", controlNS: "conduit", progName: "conduit"}, &out,
		func() (kubernetes.Interface, error) { return client, nil })
	if err != nil {
		t.Fatalf("check --pre on an empty cluster: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "✔ can create Deployments") || strings.Contains(out.String(), "\x1b[") {
		t.Errorf("unexpected output (plain, with the permission checks, expected):\n%s", out.String())
	}
}

func allowAllReviews(a k8stesting.Action) (bool, runtime.Object, error) {
	r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
	r.Status.Allowed = true
	return true, r, nil
}

func TestControllerServing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln) //nolint:errcheck // ends with Stop
	defer gs.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := controllerServing(ctx, ln.Addr().String()); err != nil {
		t.Errorf("serving controller: %v", err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if err := controllerServing(ctx, ln.Addr().String()); err == nil || err.Error() != "health status NOT_SERVING" {
		t.Errorf("not serving controller: got %v", err)
	}
}

func TestInstallResourcesComeFromTheChart(t *testing.T) {
	got, err := installResources("mesh")
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]healthcheck.Resource{}
	for _, r := range got {
		byKind[r.Kind] = r
	}
	// Every kind the checks list by default is in the chart, with the same
	// resource name and scope.
	for _, want := range healthcheck.DefaultInstallResources() {
		if r, ok := byKind[want.Kind]; !ok || r != want {
			t.Errorf("chart resource for %s: got %+v (present %v), want %+v", want.Kind, r, ok, want)
		}
	}
}

func TestNoColorsOffATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if colorOutput(w) {
		t.Error("colors on a pipe")
	}
	if colorOutput(&bytes.Buffer{}) {
		t.Error("colors on a buffer")
	}
}
