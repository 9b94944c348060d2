package local

import "testing"

// FuzzParseRegistry checks that no registry file, however broken, makes
// the parser panic, and that what it accepts can be indexed.
func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(registryV1))
	f.Add([]byte(`{"services": [{"name": "web", "namespace": "demo", "port": 80}]}`))
	f.Add([]byte("services: [{name: web, namespace: demo, port: 80, endpoints: [{address: '[::1]:80'}]}]"))
	f.Add([]byte("proxies: [{namespace: demo, pod: web-0, adminAddress: '127.0.0.1:1', ports: [{name: http, port: 80}]}]\n" +
		"namespaces: [{name: demo, annotations: {config.conduit.io/default-inbound-policy: deny}}]\n" +
		"policies: [{apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: web, namespace: demo}, spec: {port: http}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistry(data)
		if err != nil {
			return
		}
		if _, err := newIndex(r, "cluster.local"); err != nil {
			t.Fatalf("accepted a registry it cannot index: %v", err)
		}
	})
}
