package grpcwire

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		for range 20 {
			if d := Backoff(100, 1000, n); d < want/2 || d > want {
				t.Errorf("Backoff(100, 1000, %d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
