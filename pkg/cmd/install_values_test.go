package cmd

import (
	"bytes"
	"strings"
	"testing"
)

// TestBadValuesRejected: install, install -o yaml and upgrade reject a value
// the chart's values.schema.json rejects with one line naming its path, a
// non-zero exit and nothing on stdout, before any cluster is needed.
func TestBadValuesRejected(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "-o", "yaml", "--set-string", "controller.replicas=2"},
			"invalid chart value controller.replicas: it is a string, the chart needs an integer; "},
		{[]string{"install", "--set", "controller.replica=2"},
			"invalid chart value controller.replica: the chart has no such value; check its spelling (controller has image, "},
		{[]string{"upgrade", "--yes", "--set", "webhook.failurePolicy=fail"},
			`invalid chart value webhook.failurePolicy: "fail" is not one of "Ignore", "Fail"; use one of those`},
	} {
		out, _, err := runCLI(t, tc.args...)
		var errOut bytes.Buffer
		code := ExitCode(&errOut, err)
		if code == 0 || out != "" {
			t.Errorf("%v: exit %d, stdout %q; want a failure and nothing on stdout", tc.args, code, out)
		}
		msg := errOut.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: stderr %q, want one line with %q", tc.args, msg, tc.want)
		}
	}
}
