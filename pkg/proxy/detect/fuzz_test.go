package detect

import (
	"testing"
)

func FuzzDetect(f *testing.F) {
	f.Add([]byte(h2Preface))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("CONNECT a:443 HTTP/1.1\r\n"))
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Add([]byte("*1\r\n$4\r\nPING\r\n"))
	f.Add([]byte("\r\nGET /a HTTP/1.2\r\n"))
	f.Add(clientHelloBytes(f, "a.b", "conduit.io/proxy"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Classify(b)
		fr := Final(b)
		if fr.Protocol == Unknown {
			t.Fatalf("Final(%q) = unknown", b)
		}
		if r.Protocol != Unknown && r.Protocol != fr.Protocol {
			t.Fatalf("Classify(%q) = %v but Final = %v", b, r.Protocol, fr.Protocol)
		}
		// A decision never changes when more bytes arrive.
		if r.Protocol != Unknown {
			if r2 := Classify(append(b[:len(b):len(b)], "extra\r\n"...)); r2.Protocol != r.Protocol {
				t.Fatalf("Classify(%q) = %v, but with more bytes %v", b, r.Protocol, r2.Protocol)
			}
		}
	})
}
