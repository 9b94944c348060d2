package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/conduitmesh/conduit/internal/testenv"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// updateDeadline bounds how long a change may take to reach a stream. It is
// a failure bound, not a measurement: the latencies are logged.
const updateDeadline = 30 * time.Second

// controllerProcess is a conduit-controller started by startController.
type controllerProcess struct {
	grpcAddr, adminAddr string
	pki                 *pki.PKI
	issuerDir           string // the --identity-issuer-dir, for rotation tests
	conn                *grpc.ClientConn
}

// startController runs the conduit-controller binary in Kubernetes mode
// against testCluster, with a fresh trust anchor and issuer, and stops it
// (SIGTERM, then SIGKILL) when the test ends.
func startController(t *testing.T, args ...string) *controllerProcess {
	t.Helper()
	bin := buildBinary(t, "./cmd/conduit-controller")
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--controller-namespace") }) {
		// Its namespace, where it holds the Lease of route status writes,
		// exists in a cluster it runs in.
		args = append(args, "--controller-namespace="+createNamespace(t, "conduit-ctl"))
	}
	dir := t.TempDir()
	pki, err := pki.Generate(time.Now(), "cluster.local", 24*time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteDir(filepath.Join(dir, "pki")); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{
		"--discovery", "kubernetes",
		"--kubeconfig", testCluster.Kubeconfig,
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--identity-issuer-dir", filepath.Join(dir, "pki"),
		"--log-level", "debug",
		// kwok's pod IPs are not on this machine: never scrape them.
		"--stats-interval", "0",
	}, args...)...)
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Errorf("conduit-controller did not stop within 15s of SIGTERM")
			cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("conduit-controller log:\n%s", b)
		}
	})

	p := &controllerProcess{pki: pki, issuerDir: filepath.Join(dir, "pki")}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	deadline := time.After(time.Minute)
	for p.grpcAddr == "" || p.adminAddr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				b, _ := os.ReadFile(logPath)
				t.Fatalf("conduit-controller exited before listening:\n%s", b)
			}
			if v, ok := strings.CutPrefix(l, "grpc-addr="); ok {
				p.grpcAddr = v
			}
			if v, ok := strings.CutPrefix(l, "admin-addr="); ok {
				p.adminAddr = v
			}
		case <-deadline:
			t.Fatal("conduit-controller printed no addresses within a minute")
		}
	}
	waitReady(t, "http://"+p.adminAddr+"/ready")
	p.conn, err = grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	return p
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		resp, err := http.Get(url)
		code := 0
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
			if code == http.StatusOK {
				return nil
			}
		}
		return fmt.Errorf("%s not ready (last: %d %v)", url, code, err)
	})
}

// createNamespace creates a namespace for one test and deletes it afterwards.
func createNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := prefix + "-" + rand.String(5)
	ctx := context.Background()
	if _, err := testCluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testCluster.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return ns
}

// watcher reads a Destination stream in the background and keeps the
// endpoint set it describes.
type watcher struct {
	updates chan string
}

func watch(t *testing.T, p *controllerProcess, authority string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := destinationv1.NewDestinationClient(p.conn).Get(ctx, &destinationv1.GetDestination{Authority: authority})
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{updates: make(chan string, 100)}
	go func() {
		state := map[string]string{} // addr -> identity
		for {
			u, err := stream.Recv()
			if err != nil {
				close(w.updates)
				return
			}
			switch x := u.Update.(type) {
			case *destinationv1.Update_Add:
				for _, a := range x.Add.Addrs {
					ap, _ := a.Addr.AddrPort()
					state[ap.String()] = a.Identity
				}
			case *destinationv1.Update_Remove:
				for _, a := range x.Remove.Addrs {
					ap, _ := a.AddrPort()
					delete(state, ap.String())
				}
			case *destinationv1.Update_NoEndpoints:
				state = map[string]string{}
				if !x.NoEndpoints.Exists {
					w.updates <- "absent"
					continue
				}
			}
			w.updates <- describeState(state)
		}
	}()
	return w
}

func describeState(state map[string]string) string {
	if len(state) == 0 {
		return "empty"
	}
	var out []string
	for addr, id := range state {
		out = append(out, addr+"="+id)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// expect waits for the stream to describe want and returns how long after
// start (just before the change was made) that was.
func (w *watcher) expect(t *testing.T, start time.Time, want func(string) bool, what string) time.Duration {
	t.Helper()
	deadline := time.After(updateDeadline)
	last := "(nothing)"
	for {
		select {
		case s, ok := <-w.updates:
			if !ok {
				t.Fatalf("stream ended while waiting for %s (last state %s)", what, last)
			}
			last = s
			if want(s) {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("no update with %s within %s (last state %s)", what, updateDeadline, last)
		}
	}
}

func equals(s string) func(string) bool { return func(got string) bool { return got == s } }

// TestDestinationFollowsEndpointSlices changes a selector-less Service and its
// hand-written EndpointSlice and checks that each change reaches an open stream.
func TestDestinationFollowsEndpointSlices(t *testing.T) {
	ctx := context.Background()
	p := startController(t)
	ns := createNamespace(t, "dest-slices")
	client := testCluster.Client

	start := time.Now()
	w := watch(t, p, "api."+ns+".svc.cluster.local:80")
	w.expect(t, start, equals("absent"), "no service yet")

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	start = time.Now()
	svc, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("service created: %s", w.expect(t, start, equals("empty"), "an existing service without endpoints"))

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "api-1", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.9.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.244.9.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		},
	}
	start = time.Now()
	slice, err = client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("endpointslice created: %s", w.expect(t, start, equals("10.244.9.1:8080="), "the ready endpoint only"))

	start = time.Now()
	slice.Endpoints[1].Conditions.Ready = ptr.To(true)
	if slice, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("endpoint became ready: %s", w.expect(t, start, equals("10.244.9.1:8080= 10.244.9.2:8080="), "both endpoints"))

	start = time.Now()
	slice.Endpoints = slice.Endpoints[1:]
	if _, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("endpoint removed: %s", w.expect(t, start, equals("10.244.9.2:8080="), "one endpoint left"))

	// The service stops exposing port 80.
	start = time.Now()
	svc.Spec.Ports[0].Port = 81
	if _, err = client.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("service port changed: %s", w.expect(t, start, equals("empty"), "no endpoints for port 80"))

	start = time.Now()
	if err := client.CoreV1().Services(ns).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("service deleted: %s", w.expect(t, start, equals("absent"), "the service gone"))
}

// TestDestinationFollowsPods runs meshed pods behind a Service with a named
// target port; kube-controller-manager writes the EndpointSlices, kwok makes
// the pods ready, and the stream announces them with their identities.
func TestDestinationFollowsPods(t *testing.T) {
	ctx := context.Background()
	p := startController(t)
	ns := createNamespace(t, "dest-pods")
	client := testCluster.Client

	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("web-http")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w := watch(t, p, "web."+ns+":80")
	w.expect(t, start, equals("empty"), "a service without endpoints")

	newPod := func(name string, meshed bool) *corev1.Pod {
		labels := map[string]string{"app": "web"}
		if meshed {
			labels["conduit.io/proxy-version"] = "test"
		}
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{
				NodeName:           "kwok-node-0",
				ServiceAccountName: "web",
				Containers: []corev1.Container{{
					Name: "web", Image: "example.invalid/web",
					Ports: []corev1.ContainerPort{{Name: "web-http", ContainerPort: 8080}},
				}},
			},
		}
	}
	start = time.Now()
	if _, err := client.CoreV1().Pods(ns).Create(ctx, newPod("web-meshed", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	id := "spiffe://cluster.local/ns/" + ns + "/sa/web"
	took := w.expect(t, start, func(s string) bool { return strings.HasSuffix(s, ":8080="+id) && !strings.Contains(s, " ") }, "the meshed pod on its named port with its identity")
	t.Logf("meshed pod became an endpoint: %s", took)

	start = time.Now()
	if _, err := client.CoreV1().Pods(ns).Create(ctx, newPod("web-plain", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took = w.expect(t, start, func(s string) bool {
		eps := strings.Fields(s)
		return len(eps) == 2 && (strings.HasSuffix(eps[0], "=") != strings.HasSuffix(eps[1], "="))
	}, "a meshed and an unmeshed endpoint")
	t.Logf("unmeshed pod became an endpoint: %s", took)

	// The pod's own IP resolves to the pod.
	pod, err := client.CoreV1().Pods(ns).Get(ctx, "web-meshed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
		byIP := watch(t, p, netip.AddrPortFrom(ip, 8080).String())
		byIP.expect(t, time.Now(), equals(netip.AddrPortFrom(ip, 8080).String()+"="+id), "the pod by its IP")
	} else {
		t.Errorf("pod has no IP: %q", pod.Status.PodIP)
	}

	start = time.Now()
	if err := client.CoreV1().Pods(ns).Delete(ctx, "web-meshed", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	took = w.expect(t, start, func(s string) bool { return s != "empty" && !strings.Contains(s, " ") && strings.HasSuffix(s, "=") }, "only the unmeshed endpoint")
	t.Logf("deleted pod withdrawn: %s", took)
}

// TestDestinationHeadlessAndExternalName resolves a headless service, one of
// its pods by DNS name, and an ExternalName service.
func TestDestinationHeadlessAndExternalName(t *testing.T) {
	ctx := context.Background()
	p := startController(t)
	ns := createNamespace(t, "dest-headless")
	client := testCluster.Client

	for _, svc := range []*corev1.Service{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
			Spec: corev1.ServiceSpec{
				ClusterIP: corev1.ClusterIPNone,
				Selector:  map[string]string{"app": "db"},
				Ports:     []corev1.ServicePort{{Name: "pg", Port: 5432, TargetPort: intstr.FromInt32(5432)}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ext"},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "api.example.com"},
		},
	} {
		if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"db-0", "db-1"} {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "db"}},
			Spec: corev1.PodSpec{
				NodeName:   "kwok-node-0",
				Hostname:   name,
				Subdomain:  "db",
				Containers: []corev1.Container{{Name: "db", Image: "example.invalid/db"}},
			},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	all := watch(t, p, "db."+ns+".svc.cluster.local:5432")
	took := all.expect(t, start, func(s string) bool { return len(strings.Fields(s)) == 2 }, "both pods of the headless service")
	t.Logf("headless service endpoints: %s", took)
	pod, err := client.CoreV1().Pods(ns).Get(ctx, "db-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		t.Fatalf("db-1 is an endpoint but has no IP: %q", pod.Status.PodIP)
	}
	one := watch(t, p, "db-1.db."+ns+".svc.cluster.local:5432")
	one.expect(t, time.Now(), equals(netip.AddrPortFrom(ip, 5432).String()+"="), "only db-1, by its DNS name")

	ext := watch(t, p, "ext."+ns+".svc.cluster.local:443")
	ext.expect(t, time.Now(), equals("absent"), "an ExternalName service to resolve with DNS")
}
