package routes

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// testServices are the Services the translator's lookups find.
var testServices = map[string]*corev1.Service{
	"books/authors":    service("books", "authors", 7001),
	"books/authors-v1": service("books", "authors-v1", 7001),
	"books/authors-v2": service("books", "authors-v2", 7002),
	"books/web":        service("books", "web", 80),
	"other/shared":     service("other", "shared", 8080),
}

func service(ns, name string, ports ...int32) *corev1.Service {
	svc := &corev1.Service{}
	svc.Namespace, svc.Name = ns, name
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "http", Port: p})
	}
	svc.Spec.ClusterIP = "10.96.0.10"
	return svc
}

func testTranslator() *translator {
	return &translator{clusterDomain: "cluster.local", service: func(ns, name string) *corev1.Service {
		return testServices[ns+"/"+name]
	}}
}

// parseRoute reads a route written in YAML.
func parseRoute[T any](t *testing.T, doc string) *T {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	out, err := policy.FromUnstructured[T](&unstructured.Unstructured{Object: m})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantProto parses a text-format message, failing the test on an error.
func wantProto[T proto.Message](t *testing.T, text string, into T) T {
	t.Helper()
	if err := prototext.Unmarshal([]byte(text), into); err != nil {
		t.Fatalf("bad expectation %q: %v", text, err)
	}
	return into
}

func diffProto(t *testing.T, want, got proto.Message) {
	t.Helper()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestHTTPRouteMatches(t *testing.T) {
	hr := parseRoute[policy.HTTPRoute](t, `
metadata: {name: authors, namespace: books}
spec:
  parentRefs: [{group: "", kind: Service, name: authors, port: 7001}]
  rules:
  - matches:
    - path: {type: Exact, value: /authors.json}
      method: GET
    - path: {type: PathPrefix, value: /authors/}
      headers:
      - {name: x-canary, value: "true"}
      - {type: RegularExpression, name: x-user, value: "^a.*"}
      queryParams:
      - {name: page, value: "1"}
      - {type: RegularExpression, name: sort, value: "^(asc|desc)$"}
    - path: {type: RegularExpression, value: "/authors/[0-9]+\\.json"}
  - {}
`)
	got := testTranslator().httpRoute(hr)
	if got.unsupported != nil {
		t.Fatal(got.unsupported)
	}
	want := wantProto(t, `
ref {kind: "httproute" name: "authors" namespace: "books"}
rules {
  matches {path {exact: "/authors.json"} method: "GET"}
  matches {
    path {prefix: "/authors/"}
    headers {name: "x-canary" exact: "true"}
    headers {name: "x-user" regex: "^a.*"}
    query_params {name: "page" exact: "1"}
    query_params {name: "sort" regex: "^(asc|desc)$"}
  }
  matches {path {regex: "/authors/[0-9]+\\.json"}}
}
rules {}
`, &destinationv1.OutboundRoute{})
	diffProto(t, want, got.route)
}

func TestGRPCRouteTranslation(t *testing.T) {
	gr := parseRoute[policy.GRPCRoute](t, `
metadata: {name: authors-grpc, namespace: books, annotations: {retry.conduit.io/grpc: "unavailable, internal", retry.conduit.io/limit: "3"}}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules:
  - matches:
    - method: {service: books.Authors, method: Get}
    - method: {service: books.Authors}
      headers: [{name: x-tenant, value: blue}]
    backendRefs:
    - {name: authors-v1, port: 7001, weight: 90}
    - {name: authors-v2, port: 7002, weight: 10}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: grpc}]}
`)
	got := testTranslator().grpcRoute(gr)
	if got.unsupported != nil || len(got.ignored) > 0 {
		t.Fatal(got.unsupported, got.ignored)
	}
	want := wantProto(t, `
ref {kind: "grpcroute" name: "authors-grpc" namespace: "books"}
rules {
  matches {path {exact: "/books.Authors/Get"}}
  matches {path {prefix: "/books.Authors/"} headers {name: "x-tenant" exact: "blue"}}
  filters {request_header_modifier {set {name: "x-route" value: "grpc"}}}
  backends {authority: "authors-v1.books.svc.cluster.local:7001" weight: 90}
  backends {authority: "authors-v2.books.svc.cluster.local:7002" weight: 10}
  policy {retry {limit: 3 grpc_codes: [14, 13]}}
}
`, &destinationv1.OutboundRoute{})
	diffProto(t, want, got.route)
}

func TestWeightsAndInvalidBackends(t *testing.T) {
	hr := parseRoute[policy.HTTPRoute](t, `
metadata: {name: split, namespace: books}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules:
  - backendRefs:
    - {name: authors-v1, port: 7001, weight: 10}
    - {name: authors-v2, port: 7002, weight: 90}
    - {name: authors-v2, port: 7002, weight: 0}
    - {name: shared, namespace: other, port: 8080}
  - backendRefs:
    - {name: missing, port: 80}
    - {name: authors-v2, port: 9999}
    - {name: authors-v2}
    - {group: multicluster.x-k8s.io, kind: ServiceImport, name: authors, port: 7001}
`)
	tr := testTranslator()
	got := tr.httpRoute(hr)
	if got.unsupported != nil {
		t.Fatal(got.unsupported)
	}
	want := wantProto(t, `
ref {kind: "httproute" name: "split" namespace: "books"}
rules {
  backends {authority: "authors-v1.books.svc.cluster.local:7001" weight: 10}
  backends {authority: "authors-v2.books.svc.cluster.local:7002" weight: 90}
  backends {authority: "authors-v2.books.svc.cluster.local:7002" weight: 0}
  backends {authority: "shared.other.svc.cluster.local:8080" weight: 1}
}
rules {
  backends {authority: "missing.books.svc.cluster.local:80" weight: 1 invalid: "backendRef Service books/missing not found"}
  backends {authority: "authors-v2.books.svc.cluster.local:9999" weight: 1 invalid: "backendRef Service books/authors-v2 has no port 9999"}
  backends {weight: 1 invalid: "backendRef Service books/authors-v2 has no port: a Service backendRef needs one"}
  backends {weight: 1 invalid: "backendRef authors is a ServiceImport (group \"multicluster.x-k8s.io\"): only Services are supported"}
}
`, &destinationv1.OutboundRoute{})
	diffProto(t, want, got.route)

	var refs [][]policy.BackendRef
	for _, r := range hr.Spec.Rules {
		refs = append(refs, r.BackendRefs)
	}
	var reasons []string
	for _, p := range tr.refProblems(hr.Namespace, refs) {
		reasons = append(reasons, p.reason)
	}
	if want := []string{ReasonBackendNotFound, ReasonBackendNotFound, ReasonBackendNotFound, ReasonInvalidKind}; !cmp.Equal(reasons, want) {
		t.Errorf("reasons %v, want %v", reasons, want)
	}
}

func TestFilters(t *testing.T) {
	hr := parseRoute[policy.HTTPRoute](t, `
metadata: {name: filters, namespace: books}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example.com, port: 8443, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: "1"}], add: [{name: x-b, value: "2"}], remove: [x-c]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-served-by, value: conduit}]}
    backendRefs:
    - name: web
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: web}]}
  - matches: [{path: {type: Exact, value: /x}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /y}}}]
`)
	got := testTranslator().httpRoute(hr)
	if got.unsupported != nil {
		t.Fatal(got.unsupported)
	}
	want := wantProto(t, `
ref {kind: "httproute" name: "filters" namespace: "books"}
rules {
  matches {path {prefix: "/old"}}
  filters {request_redirect {scheme: "https" hostname: "new.example.com" port: 8443 status_code: 301 path {prefix: "/new"}}}
}
rules {
  filters {request_header_modifier {set {name: "x-a" value: "1"} add {name: "x-b" value: "2"} remove: "x-c"}}
  filters {response_header_modifier {add {name: "x-served-by" value: "conduit"}}}
  backends {
    authority: "web.books.svc.cluster.local:80" weight: 1
    filters {request_header_modifier {set {name: "x-backend" value: "web"}}}
  }
}
rules {
  matches {path {exact: "/x"}}
  filters {request_redirect {status_code: 302 path {full: "/y"}}}
}
`, &destinationv1.OutboundRoute{})
	diffProto(t, want, got.route)
}

// Routes the proxy could not follow are not accepted, with the reason.
func TestUnsupported(t *testing.T) {
	for name, c := range map[string]struct{ rules, want string }{
		"URLRewrite":        {`[{filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]}]`, `rule 1: filter type "URLRewrite" is not supported (supported: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect)`},
		"mirror on backend": {`[{backendRefs: [{name: web, port: 80, filters: [{type: RequestMirror}]}]}]`, `rule 1: backendRef web: filter type "RequestMirror" is not supported`},
		"bad regex":         {`[{matches: [{path: {type: RegularExpression, value: "(["}}]}]`, `rule 1: path regular expression "(["`},
		"prefix redirect":   {`[{matches: [{path: {type: Exact, value: /a}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}]`, "needs every match of the rule to be a PathPrefix match"},
		"status 303":        {`[{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 303}}]}]`, "redirect statusCode 303 is not supported"},
		"timeout format":    {`[{timeouts: {request: 1.5s}}]`, `rule 1: timeouts.request: "1.5s" is not a Gateway API duration`},
		"backend > request": {`[{}, {timeouts: {request: 1s, backendRequest: 2s}}]`, "rule 2: timeouts.backendRequest (2s) exceeds timeouts.request (1s)"},
		"negative weight":   {`[{backendRefs: [{name: web, port: 80, weight: -1}]}]`, "weight -1 is negative"},
	} {
		t.Run(name, func(t *testing.T) {
			hr := parseRoute[policy.HTTPRoute](t, "metadata: {name: r, namespace: books}\nspec:\n  rules: "+c.rules)
			got := testTranslator().httpRoute(hr)
			if got.unsupported == nil || !strings.Contains(got.unsupported.Error(), c.want) {
				t.Fatalf("unsupported = %v, want it to say %q", got.unsupported, c.want)
			}
			if got.route != nil {
				t.Error("a route not accepted was translated")
			}
		})
	}
	gr := parseRoute[policy.GRPCRoute](t, `
metadata: {name: g, namespace: books}
spec: {rules: [{filters: [{type: RequestRedirect, requestRedirect: {hostname: x}}]}]}`)
	if got := testTranslator().grpcRoute(gr); got.unsupported == nil || !strings.Contains(got.unsupported.Error(), "(supported: RequestHeaderModifier, ResponseHeaderModifier)") {
		t.Errorf("GRPCRoute redirect: %v", got.unsupported)
	}
}

func TestTimeouts(t *testing.T) {
	hr := parseRoute[policy.HTTPRoute](t, `
metadata: {name: t, namespace: books, annotations: {timeout.conduit.io/request: 30s}}
spec:
  rules:
  - timeouts: {request: 10s, backendRequest: 500ms}
  - timeouts: {request: 1h30m}
  - timeouts: {backendRequest: 2s}
  - timeouts: {request: 0s}
  - {}
`)
	got := testTranslator().httpRoute(hr)
	if got.unsupported != nil {
		t.Fatal(got.unsupported)
	}
	var policies []string
	for _, r := range got.route.Rules {
		text := ""
		if r.GetPolicy() != nil {
			text = prototext.MarshalOptions{}.Format(r.GetPolicy())
		}
		policies = append(policies, text)
	}
	want := []string{
		"request_timeout_ms:10000 backend_request_timeout_ms:500",
		"request_timeout_ms:5400000",
		"request_timeout_ms:30000 backend_request_timeout_ms:2000",
		"", // 0s disables the timeout, the annotation's too
		"request_timeout_ms:30000",
	}
	for i := range policies {
		policies[i] = strings.Join(strings.Fields(policies[i]), " ")
	}
	if d := cmp.Diff(want, policies); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	for _, v := range []string{"10s", "500ms", "1h30m", "0s", "1h2m3s4ms"} {
		if _, err := parseGatewayDuration(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	for _, v := range []string{"", "1.5s", "10", "1d", "-1s", "100000s", "1us"} {
		if _, err := parseGatewayDuration(v); err == nil {
			t.Errorf("%q parsed", v)
		}
	}
}

func TestRetryAnnotations(t *testing.T) {
	for name, c := range map[string]struct {
		ann     map[string]string
		on      conditions
		want    string // text format of the Retry; "" for none
		ignored string
	}{
		"none":            {nil, onService, "", ""},
		"5xx":             {map[string]string{"retry.conduit.io/http": "5xx"}, onHTTPRoute, "limit:1 http_statuses:{min:500 max:599}", ""},
		"ranges":          {map[string]string{"retry.conduit.io/http": "500-504,429, gateway-error"}, onHTTPRoute, "limit:1 http_statuses:{min:500 max:504} http_statuses:{min:429 max:429} http_statuses:{min:502 max:504}", ""},
		"limit only":      {map[string]string{"retry.conduit.io/limit": "3"}, onHTTPRoute, "limit:3 http_statuses:{min:500 max:599}", ""},
		"service default": {map[string]string{"retry.conduit.io/timeout": "250ms"}, onService, "limit:1 http_statuses:{min:500 max:599} grpc_codes:1 grpc_codes:4 grpc_codes:8 grpc_codes:14 timeout_ms:250", ""},
		"grpc names":      {map[string]string{"retry.conduit.io/grpc": "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"}, onGRPCRoute, "limit:1 grpc_codes:1 grpc_codes:4 grpc_codes:13 grpc_codes:8 grpc_codes:14", ""},
		"limit 0":         {map[string]string{"retry.conduit.io/http": "5xx", "retry.conduit.io/limit": "0"}, onHTTPRoute, "http_statuses:{min:500 max:599}", ""},
		"bad limit":       {map[string]string{"retry.conduit.io/http": "5xx", "retry.conduit.io/limit": "many"}, onHTTPRoute, "limit:1 http_statuses:{min:500 max:599}", `retry.conduit.io/limit="many": want a number of retries such as 3`},
		"bad status":      {map[string]string{"retry.conduit.io/http": "5xx,600"}, onHTTPRoute, "", `retry.conduit.io/http="5xx,600": "600" is not a status`},
		"bad code":        {map[string]string{"retry.conduit.io/grpc": "unavailable,boom"}, onGRPCRoute, "", `"boom" is not a gRPC status code name`},
		"grpc on http":    {map[string]string{"retry.conduit.io/grpc": "unavailable"}, onHTTPRoute, "", "an HTTPRoute is retried by HTTP status"},
		"http on grpc":    {map[string]string{"retry.conduit.io/http": "5xx", "retry.conduit.io/limit": "2"}, onGRPCRoute, "", "a GRPCRoute is retried by gRPC status"},
		"bad timeout":     {map[string]string{"retry.conduit.io/http": "5xx", "retry.conduit.io/timeout": "soon"}, onHTTPRoute, "limit:1 http_statuses:{min:500 max:599}", `retry.conduit.io/timeout="soon": want a duration`},
	} {
		t.Run(name, func(t *testing.T) {
			r, ignored := parseRetry(c.ann, c.on)
			got := ""
			if r != nil {
				got = strings.Join(strings.Fields(prototext.MarshalOptions{}.Format(r)), " ")
			}
			if want := strings.Join(strings.Fields(c.want), " "); got != want {
				t.Errorf("retry %q, want %q", got, want)
			}
			if all := strings.Join(ignored, "\n"); c.ignored == "" && all != "" || !strings.Contains(all, c.ignored) {
				t.Errorf("ignored %q, want %q", all, c.ignored)
			}
		})
	}
}

func TestServiceAnnotations(t *testing.T) {
	p, ignored := servicePolicy(map[string]string{"timeout.conduit.io/request": "2s", "retry.conduit.io/http": "503"})
	diffProto(t, wantProto(t, `request_timeout_ms: 2000 retry {limit: 1 http_statuses {min: 503 max: 503}}`, &destinationv1.RoutePolicy{}), p)
	if len(ignored) > 0 {
		t.Error(ignored)
	}
	if p, ignored := servicePolicy(map[string]string{"timeout.conduit.io/request": "2 seconds"}); p != nil || len(ignored) != 1 {
		t.Errorf("bad timeout: %v %v", p, ignored)
	}

	fa, ignored := failureAccrual(map[string]string{"balancer.conduit.io/failure-accrual": "consecutive"})
	diffProto(t, wantProto(t, `consecutive_max_failures: 7 min_penalty_ms: 1000 max_penalty_ms: 60000 jitter_ratio: 0.5`, &destinationv1.FailureAccrual{}), fa)
	fa, ignored = failureAccrual(map[string]string{
		"balancer.conduit.io/failure-accrual":                          "consecutive",
		"balancer.conduit.io/failure-accrual-consecutive-max-failures": "3",
		"balancer.conduit.io/failure-accrual-consecutive-min-penalty":  "500ms",
		"balancer.conduit.io/failure-accrual-consecutive-max-penalty":  "10s",
		"balancer.conduit.io/failure-accrual-consecutive-jitter-ratio": "0.1",
	})
	diffProto(t, wantProto(t, `consecutive_max_failures: 3 min_penalty_ms: 500 max_penalty_ms: 10000 jitter_ratio: 0.1`, &destinationv1.FailureAccrual{}), fa)
	if len(ignored) > 0 {
		t.Error(ignored)
	}
	fa, ignored = failureAccrual(map[string]string{
		"balancer.conduit.io/failure-accrual":                          "consecutive",
		"balancer.conduit.io/failure-accrual-consecutive-max-failures": "0",
		"balancer.conduit.io/failure-accrual-consecutive-min-penalty":  "2m",
		"balancer.conduit.io/failure-accrual-consecutive-jitter-ratio": "2",
	})
	diffProto(t, wantProto(t, `consecutive_max_failures: 7 min_penalty_ms: 1000 max_penalty_ms: 60000 jitter_ratio: 0.5`, &destinationv1.FailureAccrual{}), fa)
	if len(ignored) != 3 {
		t.Errorf("ignored %q, want 3 lines", ignored)
	}
	if fa, ignored := failureAccrual(map[string]string{"balancer.conduit.io/failure-accrual": "ewma"}); fa != nil || len(ignored) != 1 {
		t.Errorf("unknown mode: %v %v", fa, ignored)
	}
	if fa, _ := failureAccrual(nil); fa != nil {
		t.Errorf("no annotation: %v", fa)
	}
}
