package local

import "testing"

// FuzzParseRegistry checks that no registry file, however broken, makes
// the parser panic, and that what it accepts can be indexed.
func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(registryV1))
	f.Add([]byte(`{"services": [{"name": "web", "namespace": "demo", "port": 80}]}`))
	f.Add([]byte("services: [{name: web, namespace: demo, port: 80, endpoints: [{address: '[::1]:80'}]}]"))
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
