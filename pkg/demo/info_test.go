package demo

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fixedDemo is a demo with fixed addresses, as prepare would lay it out.
func fixedDemo(output string, out *bytes.Buffer) *demo {
	d := &demo{
		opts:            Options{Output: output, FailureRate: 0.05, SlowRate: DefaultSlowRate, RPS: 10, ProbeEvery: DefaultProbeEvery, Out: out},
		dir:             "/tmp/conduit-demo-123",
		controllerGRPC:  "127.0.0.1:40001",
		controllerAdmin: "127.0.0.1:40002",
	}
	port := 41000
	next := func() string { port++; return "127.0.0.1:" + strconv.Itoa(port) }
	for _, dep := range deployments {
		d.workloads = append(d.workloads, &workload{
			name: dep.name, role: dep.role, version: dep.version, app: next(), inbound: next(), outbound: next(), admin: next(),
			identity: "spiffe://cluster.local/ns/demo/sa/" + dep.role,
		})
	}
	return d
}

func TestPrintInfo(t *testing.T) {
	for _, output := range []string{"table", "json", "yaml"} {
		t.Run(output, func(t *testing.T) {
			var out bytes.Buffer
			if err := fixedDemo(output, &out).printInfo(); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "info."+output+".golden")
			if *update {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s (-update to accept):\n%s", golden, out.String())
			}
			if output == "json" {
				var in Info
				if err := json.Unmarshal(out.Bytes(), &in); err != nil || len(in.Services) != len(deployments) || in.Export != "export CONDUIT_CONTROLLER_ADDR=127.0.0.1:40001" {
					t.Errorf("json: %+v, %v", in, err)
				}
			}
		})
	}
}
