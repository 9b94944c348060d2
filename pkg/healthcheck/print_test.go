package healthcheck

import (
	"encoding/json"
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

// sampleReport has every kind of result: passes, a warning, a failure with
// a multi-line hint, and a failure with a specific hint.
func sampleReport() Report {
	return Report{Success: false, Categories: []CategoryReport{
		{ID: KubernetesAPI, Results: []Result{
			{Category: KubernetesAPI, Description: "can initialize the client", Status: StatusSuccess, Duration: 2 * time.Millisecond},
			{Category: KubernetesAPI, Description: "can query the Kubernetes API", Status: StatusSuccess, Duration: 15 * time.Millisecond},
		}},
		{ID: Identity, Results: []Result{
			{Category: Identity, Description: "trust anchors are readable", Status: StatusSuccess, Duration: 3 * time.Millisecond},
			{Category: Identity, Description: "issuer certificate is within its validity period", Status: StatusError,
				Error: `issuer certificate "identity.conduit.cluster.local" expired on 2026-01-25T12:00:00Z`,
				Hint:  "make a new issuer:\n  step certificate create ...\n  conduit upgrade --identity-issuer-certificate-file issuer.crt", Duration: time.Millisecond},
			{Category: Identity, Description: "issuer certificate is valid for at least 60 days", Status: StatusWarning,
				Error: "expires soon", Hint: "rotate it <soon> & \"now\"", Duration: time.Millisecond},
		}},
		{ID: Version, Results: []Result{
			{Category: Version, Description: "control plane and CLI versions match", Status: StatusSuccess},
		}},
	}}
}

func TestPrinters(t *testing.T) {
	rep := sampleReport()
	tests := []struct {
		golden string
		print  func(*strings.Builder) error
	}{
		{"check_output.golden", func(b *strings.Builder) error { PrintBasic(b, rep, false, false); return nil }},
		{"check_output_color.golden", func(b *strings.Builder) error { PrintBasic(b, rep, true, false); return nil }},
		{"check_output_short.golden", func(b *strings.Builder) error { PrintBasic(b, rep, false, true); return nil }},
		{"check_output_json.golden", func(b *strings.Builder) error { return PrintJSON(b, rep) }},
		{"check_output_junit.golden", func(b *strings.Builder) error { return PrintJUnit(b, rep) }},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var b strings.Builder
			if err := tt.print(&b); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, b.String())
		})
	}
}

func TestMachineOutputsParse(t *testing.T) {
	rep := sampleReport()
	var j strings.Builder
	if err := PrintJSON(&j, rep); err != nil {
		t.Fatal(err)
	}
	var doc jsonReport
	if err := json.Unmarshal([]byte(j.String()), &doc); err != nil {
		t.Fatalf("JSON output does not parse: %v", err)
	}
	if doc.Success || len(doc.Categories) != 3 || doc.Categories[1].Checks[1].Result != StatusError {
		t.Errorf("JSON round trip lost data: %+v", doc)
	}
	var x strings.Builder
	if err := PrintJUnit(&x, rep); err != nil {
		t.Fatal(err)
	}
	var suites junitSuites
	if err := xml.Unmarshal([]byte(x.String()), &suites); err != nil {
		t.Fatalf("JUnit output does not parse: %v", err)
	}
	if suites.Tests != 6 || suites.Failures != 1 || suites.Suites[1].Cases[1].Failure == nil {
		t.Errorf("JUnit round trip lost data: %+v", suites)
	}
}

func TestSummaryWhenAllPass(t *testing.T) {
	rep := Report{Success: true, Categories: []CategoryReport{{ID: Version, Results: []Result{{Category: Version, Description: "x", Status: StatusSuccess}}}}}
	var b strings.Builder
	PrintBasic(&b, rep, false, true)
	if got, want := b.String(), "Status check results are ✔ (1 passed, 0 warnings, 0 failed)\n"; got != want {
		t.Errorf("short output of a passing run:\n got %q\nwant %q", got, want)
	}
}

func TestRetryingLine(t *testing.T) {
	var b strings.Builder
	p := &BasicPrinter{W: &b}
	p.Retrying(Result{Category: ControlPlane, Description: "control plane pods are ready", Error: "pod x is Pending\nmore"}, time.Date(2026, 3, 1, 12, 5, 0, 0, time.UTC))
	p.Done(Result{Category: ControlPlane, Description: "control plane pods are ready", Status: StatusSuccess})
	want := "control-plane\n-------------\n… control plane pods are ready (waiting until 12:05:00: pod x is Pending)\n✔ control plane pods are ready\n"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}
