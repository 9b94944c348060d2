package realnode

import "strings"

// bookshopApp is one of the demo's apps as a Deployment (and a Service
// unless it is the traffic generator) in appNS.
func bookshopApp(role, service string, args ...string) string {
	return bookshopAppNamed(role, role, service, args...)
}

// bookshopAppNamed is bookshopApp with a name of its own (its Deployment,
// Service, ServiceAccount and app label), playing role.
func bookshopAppNamed(name, role, service string, args ...string) string {
	a := `["demo", "app", "--role", "` + role + `", "--listen", ":8080", "--app-namespace", "bookshop"`
	for _, x := range args {
		a += `, "` + x + `"`
	}
	a += "]"
	probe := ""
	if role == "web" {
		// the kubelet's probe goes through the proxy, as it does for users
		probe = "\n        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}"
	}
	d := `---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ROLE, namespace: bookshop, labels: {app.kubernetes.io/part-of: bookshop}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ROLE}}
  template:
    metadata: {labels: {app: ROLE, app.kubernetes.io/part-of: bookshop}}
    spec:
      serviceAccountName: ROLE
      terminationGracePeriodSeconds: 5
      containers:
      - name: ROLE
        image: ` + appImage + `
        imagePullPolicy: Never
        args: ` + a + `
        ports: [{containerPort: 8080, name: PORTNAME}]` + probe + `
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ROLE, namespace: bookshop}
`
	if service != "" {
		d += `---
apiVersion: v1
kind: Service
metadata: {name: ROLE, namespace: bookshop}
spec:
  selector: {app: ROLE}
  ports: [{port: 8080, targetPort: 8080, name: PORTNAME}]
`
	}
	return strings.NewReplacer("ROLE", name, "PORTNAME", service).Replace(d)
}

// bookshop is the demo's bookshop, meshed by the namespace's annotation: the
// traffic generator calls web over HTTP/1.1, web calls books and authors
// over gRPC. Nothing fails on purpose. The ConfigMap stands for the user's
// own objects, which uninstall must keep.
var bookshop = `apiVersion: v1
kind: Namespace
metadata:
  name: bookshop
  annotations: {conduit.io/inject: enabled}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shelf, namespace: bookshop}
data: {owner: the user}
` + bookshopApp("web", "http") +
	bookshopApp("books", "grpc", "--failure-rate", "0") +
	bookshopApp("authors", "grpc") +
	bookshopApp("traffic", "", "--rps", "20", "--report-every", "2s", "--direct-share", "0.1")

// booksV2 is a second books that fails one lookup in ten (UNAVAILABLE),
// with a Service of its own, and not part of the bookshop that waitApp
// counts.
var booksV2 = strings.ReplaceAll(bookshopAppNamed("books-v2", "books", "grpc", "--failure-rate", "0.1"),
	"app.kubernetes.io/part-of: bookshop", "app.kubernetes.io/part-of: bookshop-v2")

// booksSplit is a GAMMA GRPCRoute on the books Service that sends half of
// its calls to books-v2 and retries an UNAVAILABLE answer up to 3 times,
// on an endpoint picked again: a call then fails only if four tries in a
// row do (at most 0.1⁴), so web and traffic see none of books-v2's
// failures.
const booksSplit = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: books-split
  namespace: bookshop
  annotations: {retry.conduit.io/grpc: unavailable, retry.conduit.io/limit: "3"}
spec:
  parentRefs: [{group: "", kind: Service, name: books, port: 8080}]
  rules:
  - backendRefs:
    - {name: books, port: 8080, weight: 50}
    - {name: books-v2, port: 8080, weight: 50}
`

// jobs are a meshed Job and a CronJob: their pods exit, and the native
// sidecar proxy must not keep them from completing.
var jobs = `apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: bookshop}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: report
        image: ` + appImage + `
        imagePullPolicy: Never
        args: ["version", "--client"]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: bookshop}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: report
            image: ` + appImage + `
            imagePullPolicy: Never
            args: ["version", "--client"]
`

// booksFromWebOnly is an inbound policy on books's gRPC port: only web's
// ServiceAccount may call it, so the traffic generator's direct calls to
// books (its --direct-share) are refused.
const booksFromWebOnly = `apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: books-grpc, namespace: bookshop}
spec:
  podSelector: {matchLabels: {app: books}}
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: web, namespace: bookshop}
spec:
  identityRefs: [{kind: ServiceAccount, name: web}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: books-from-web, namespace: bookshop}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: books-grpc}
  requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: web}]
`

// outsiderNS is a namespace the mesh leaves alone.
const outsiderNS = "outside"

// outsider is an unmeshed traffic generator calling web in plaintext.
var outsider = `apiVersion: v1
kind: Namespace
metadata: {name: outside}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: outsider, namespace: outside}
spec:
  replicas: 1
  selector: {matchLabels: {app: outsider}}
  template:
    metadata: {labels: {app: outsider}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: outsider
        image: ` + appImage + `
        imagePullPolicy: Never
        args: ["demo", "app", "--role", "traffic", "--listen", ":8080", "--app-namespace", "bookshop", "--rps", "5", "--report-every", "2s"]
`
