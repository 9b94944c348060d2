package cmd

import (
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInterspersed(t *testing.T) {
	app := NewApp(IOStreams{Out: io.Discard, ErrOut: io.Discard}, "conduit")
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"flags after files", []string{"conduit", "inject", "a.yaml", "--manual", "b.yaml"},
			[]string{"conduit", "inject", "--manual", "a.yaml", "b.yaml"}},
		{"value flags keep their value", []string{"conduit", "tap", "deploy/web", "-n", "demo", "--max-rps", "5"},
			[]string{"conduit", "tap", "-n", "demo", "--max-rps", "5", "deploy/web"}},
		{"global flags before the command stay", []string{"conduit", "--context", "x", "stat", "deploy", "-o", "json"},
			[]string{"conduit", "--context", "x", "stat", "-o", "json", "deploy"}},
		{"stdin dash is positional", []string{"conduit", "inject", "-", "--manual"},
			[]string{"conduit", "inject", "--manual", "-"}},
		{"after -- nothing moves", []string{"conduit", "inject", "a.yaml", "--", "--manual"},
			[]string{"conduit", "inject", "a.yaml", "--", "--manual"}},
		{"equals form", []string{"conduit", "stat", "deploy", "--namespace=demo"},
			[]string{"conduit", "stat", "--namespace=demo", "deploy"}},
		{"unknown command untouched", []string{"conduit", "nope", "x", "-n", "y"},
			[]string{"conduit", "nope", "x", "-n", "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, interspersed(app, tt.in)); diff != "" {
				t.Errorf("interspersed (-want +got):\n%s", diff)
			}
		})
	}
}
