package kube

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodAffected(t *testing.T) {
	b, _ := start(t,
		service("demo", "web", nil),
		service("demo", "other", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.99" }),
		slice("demo", "web", "web-abc", 8080, endpoint("10.0.0.1", "web-1", true)),
		pod("demo", "web-1", "10.0.0.1", "web", true),
	)
	affected := b.podAffected(pod("demo", "web-1", "10.0.0.1", "web", true))
	for k, want := range map[key]bool{
		{namespace: "demo", service: "web", port: 80}:                    true,
		{namespace: "demo", service: "web", hostname: "web-1", port: 80}: true,
		{namespace: "demo", service: "other", port: 80}:                  false,
		{namespace: "prod", service: "web", port: 80}:                    false,
		{ip: netip.MustParseAddr("10.0.0.1"), port: 8080}:                true, // the pod's IP
		{ip: netip.MustParseAddr("10.96.0.10"), port: 80}:                true, // web's cluster IP
		{ip: netip.MustParseAddr("10.96.0.99"), port: 80}:                false,
		{ip: netip.MustParseAddr("10.0.0.2"), port: 8080}:                false,
	} {
		if got := affected(k); got != want {
			t.Errorf("%+v: got %v, want %v", k, got, want)
		}
	}
}
