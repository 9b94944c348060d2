package cmd

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/pkg/version"
)

func TestVersion(t *testing.T) {
	installed := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "conduit-config", Namespace: "conduit"},
		Data:       map[string]string{"version": "v1.2.3", "values": "namespace: conduit\n"},
	}
	cv := version.Version
	tests := []struct {
		name       string
		opts       versionOptions
		objs       []runtime.Object
		apiErr     error
		wantOut    string
		wantErrOut string
		wantErr    string
	}{
		{name: "client only", opts: versionOptions{clientOnly: true}, wantOut: "Client version: " + cv + "\n"},
		{name: "client short", opts: versionOptions{clientOnly: true, short: true}, wantOut: cv + "\n"},
		{name: "client json", opts: versionOptions{clientOnly: true, output: "json"}, wantOut: "{\n  \"clientVersion\": \"" + cv + "\"\n}\n"},
		{name: "installed yaml", opts: versionOptions{output: "yaml"}, objs: []runtime.Object{installed}, wantOut: "clientVersion: " + cv + "\nserverVersion: v1.2.3\n"},
		{name: "installed", objs: []runtime.Object{installed}, wantOut: "Client version: " + cv + "\nServer version: v1.2.3\n"},
		{name: "installed short", opts: versionOptions{short: true}, objs: []runtime.Object{installed}, wantOut: cv + "\nv1.2.3\n"},
		{name: "installed json", opts: versionOptions{output: "json"}, objs: []runtime.Object{installed},
			wantOut: "{\n  \"clientVersion\": \"" + cv + "\",\n  \"serverVersion\": \"v1.2.3\"\n}\n"},
		{name: "not installed", wantOut: "Client version: " + cv + "\nServer version: unavailable\n",
			wantErrOut: "Conduit is not installed in namespace \"conduit\" (no ConfigMap conduit-config): install it with `conduit install`, or point --conduit-namespace at the control plane\n"},
		{name: "not installed json", opts: versionOptions{output: "json"},
			wantOut: "{\n  \"clientVersion\": \"" + cv + "\",\n  \"serverError\": \"Conduit is not installed in namespace \\\"conduit\\\" (no ConfigMap conduit-config): install it with `conduit install`, or point --conduit-namespace at the control plane\"\n}\n"},
		{name: "forbidden", apiErr: errors.New(`configmaps "conduit-config" is forbidden`),
			wantErr: `reading the server version from ConfigMap conduit/conduit-config: configmaps "conduit-config" is forbidden (use --client for the client version alone)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(tt.objs...)
			if tt.apiErr != nil {
				client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.apiErr })
			}
			tt.opts.controlNS, tt.opts.progName = "conduit", "conduit"
			var out, errOut bytes.Buffer
			err := runVersion(context.Background(), tt.opts, IOStreams{Out: &out, ErrOut: &errOut},
				func() (kubernetes.Interface, error) { return client, nil })
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if out.Len() != 0 {
					t.Errorf("stdout must stay empty on error, got %q", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantOut, out.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantErrOut, errOut.String()); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVersionFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{"conduit", "version", "--client", "-o", "xml"})
	if err == nil || err.Error() != `-o "xml" is not an output format of this command: use json or yaml, or leave it out for text` {
		t.Errorf("got %v", err)
	}
	err = Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{"conduit", "version", "-n", "mesh"})
	if err == nil || err.Error() != "version does not take -n: name the control plane's namespace with -L: `conduit version -L mesh`" {
		t.Errorf("got %v", err)
	}
	out.Reset()
	if err := Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{"kubectl-conduit", "version", "--client", "--short"}); err != nil {
		t.Fatal(err)
	}
	if out.String() != version.Version+"\n" {
		t.Errorf("got %q", out.String())
	}
}
