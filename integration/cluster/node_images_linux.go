package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/conduitmesh/conduit/pkg/ociimage"
)

// The node's own images, built here and imported before the kubelet starts.
const (
	PauseImage   = "conduit.test/pause:v1"
	CoreDNSImage = "conduit.test/coredns:v1"
)

// PackImage packs one static binary as a single-layer image archive at out:
// the binary at /<name>, entrypoint it, run as user (empty: root).
func PackImage(out, ref, binary, user string, args ...string) error {
	name := "/" + filepath.Base(binary)
	return ociimage.WriteFile(out, ociimage.Image{
		Refs:       []string{ref},
		Files:      map[string]string{name: binary},
		Dirs:       map[string]os.FileMode{"/tmp": 0o1777},
		Entrypoint: []string{name},
		Cmd:        args,
		User:       user,
		OS:         "linux",
		Arch:       runtime.GOARCH,
	})
}

// nodeImages builds the pause program and packs it and CoreDNS into dir.
func (n *Node) nodeImages(ctx context.Context, dir string) ([]string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("cannot locate integration/cluster/pause")
	}
	pause := filepath.Join(dir, "images", "pause")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", pause, "./pause")
	build.Dir = filepath.Dir(file)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the pause program: %v: %s", err, strings.TrimSpace(string(out)))
	}
	archives := []string{filepath.Join(dir, "images", "pause.tar"), filepath.Join(dir, "images", "coredns.tar")}
	if err := PackImage(archives[0], PauseImage, pause, ""); err != nil {
		return nil, err
	}
	if err := PackImage(archives[1], CoreDNSImage, n.bins.CoreDNS, ""); err != nil {
		return nil, err
	}
	return archives, nil
}

const corefile = `.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`

// startDNS deploys CoreDNS as kube-dns (DNSServiceIP) and waits until it is
// Ready. Names outside cluster.local get NXDOMAIN: nothing is forwarded off
// the machine.
func (n *Node) startDNS(ctx context.Context) error {
	const ns = "kube-system"
	labels := map[string]string{"k8s-app": "kube-dns"}
	cs := n.Client
	create := func(what string, err error) error {
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", what, err)
		}
		return nil
	}
	if err := n.waitServiceAccount(ctx, ns, "default"); err != nil {
		return err
	}
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns}}, metav1.CreateOptions{})
	if err := create("ServiceAccount coredns", err); err != nil {
		return err
	}
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}, metav1.CreateOptions{})
	if err := create("ClusterRole system:coredns", err); err != nil {
		return err
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns", Namespace: ns}},
	}, metav1.CreateOptions{})
	if err := create("ClusterRoleBinding system:coredns", err); err != nil {
		return err
	}
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns},
		Data:       map[string]string{"Corefile": corefile},
	}, metav1.CreateOptions{})
	if err := create("ConfigMap coredns", err); err != nil {
		return err
	}
	one, grace := int32(1), int64(2)
	_, err = cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            "coredns",
					DNSPolicy:                     corev1.DNSDefault,
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name:            "coredns",
						Image:           CoreDNSImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						VolumeMounts:    []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
						Ports: []corev1.ContainerPort{
							{ContainerPort: 53, Name: "dns", Protocol: corev1.ProtocolUDP},
							{ContainerPort: 53, Name: "dns-tcp", Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
							PeriodSeconds: 1,
						},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}},
					}}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err := create("Deployment coredns", err); err != nil {
		return err
	}
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{
			ClusterIP: DNSServiceIP,
			Selector:  labels,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			},
		},
	}, metav1.CreateOptions{})
	if err := create("Service kube-dns", err); err != nil {
		return err
	}
	err = n.poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 1, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for CoreDNS to be Ready (kubelet log %s): %w", filepath.Join(n.dir, "kubelet.log"), err)
	}
	return nil
}
