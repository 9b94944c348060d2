package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/conduitmesh/conduit/pkg/install"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, append([]string{"conduit"}, args...))
	return out.String(), errOut.String(), err
}

func TestInstallRenderOnly(t *testing.T) {
	// No kubeconfig is needed: -o only renders.
	t.Setenv("KUBECONFIG", "/nonexistent")
	out, _, err := runCLI(t, "install", "-L", "mesh", "--ha", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.DecodeObjects(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 19 || objs[0].GetKind() != "Namespace" || objs[0].GetName() != "mesh" {
		t.Errorf("got %d objects starting with %s", len(objs), install.KeyOf(objs[0]))
	}

	out, _, err = runCLI(t, "install", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string
		Items []json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Kind != "List" || len(list.Items) != 18 {
		t.Errorf("-o json: kind %q, %d items, err %v", list.Kind, len(list.Items), err)
	}
}

// TestInstallCRDsRenderOnly: --crds -o yaml prints the Gateway API CRDs
// that install creates where absent, and nothing else.
func TestInstallCRDsRenderOnly(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	out, _, err := runCLI(t, "install", "--crds", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.DecodeObjects(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want, err := install.GatewayAPIObjects()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, o := range objs {
		// The standard install: its CRDs and its safe-upgrades admission
		// policy.
		kind := o.GetKind()
		if kind != "CustomResourceDefinition" && kind != "ValidatingAdmissionPolicy" && kind != "ValidatingAdmissionPolicyBinding" ||
			!strings.HasSuffix(o.GetName(), ".gateway.networking.k8s.io") {
			t.Errorf("--crds printed %s", install.KeyOf(o))
		}
		names[o.GetName()] = true
	}
	if len(objs) != len(want) || !names["httproutes.gateway.networking.k8s.io"] || !names["grpcroutes.gateway.networking.k8s.io"] {
		t.Errorf("--crds printed %d objects (%v), want the %d objects of the Gateway API's standard install", len(objs), names, len(want))
	}
	if _, _, err := runCLI(t, "install", "--crds"); err == nil || !strings.Contains(err.Error(), "add -o yaml") {
		t.Errorf("--crds without -o: %v, want an error asking for -o", err)
	}
}

func TestInstallBadInput(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "-o", "xml"}, `-o "xml" is not an output format of this command: use yaml or json`},
		{[]string{"install", "--identity-trust-anchors-file", "a.pem", "-o", "yaml"}, "must be given together"},
		{[]string{"install", "--set", "controller.replicas", "-o", "yaml"}, `--set "controller.replicas"`},
		{[]string{"install", "-f", "/nonexistent/values.yaml", "-o", "yaml"}, "values.yaml"},
		{[]string{"install", "extra"}, "install takes no arguments"},
		{[]string{"uninstall", "-o", "xml"}, `-o "xml"`},
	} {
		out, _, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("%v: stdout not empty on error: %q", tc.args, out)
		}
	}
}
