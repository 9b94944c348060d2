package resolve

import (
	"context"
	"errors"
	"testing"
)

func TestStatic(t *testing.T) {
	s := Static{}
	for _, r := range []string{"web=127.0.0.1:8080", "Web:80=127.0.0.1:8081", "api.ns.svc:9090=10.0.0.1:9090"} {
		if err := s.ParseRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	eps, err := s.Endpoints(context.Background(), "web:80")
	if err != nil || len(eps) != 2 || eps[1].Addr != "127.0.0.1:8081" {
		t.Errorf("web:80 = %v, %v", eps, err)
	}
	if _, err := s.Endpoints(context.Background(), "nope:80"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown authority: err = %v", err)
	}
	for _, bad := range []string{"", "web", "=1.2.3.4:5", "web=", "web=1.2.3.4"} {
		if err := s.ParseRoute(bad); err == nil {
			t.Errorf("ParseRoute(%q) succeeded", bad)
		}
	}
}
