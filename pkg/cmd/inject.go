package cmd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/version"
)

// urlTimeout bounds fetching one URL input, and reading the trust anchors
// from the cluster.
const urlTimeout = 30 * time.Second

// injectOptions are `conduit inject`'s options.
type injectOptions struct {
	inputs []string
	inject inject.Options
	// anchorsFile (--identity-trust-anchors-file) holds the trust anchors
	// for --manual; without it they come from the cluster through client.
	anchorsFile string
	client      func() (kubernetes.Interface, error)
	progName    string
}

// overrideFlagUsage documents the config.conduit.io/* flags.
func overrideFlagUsage() map[string]string {
	return map[string]string{
		inject.OverrideProxyImage:           "proxy container image, without tag",
		inject.OverrideProxyVersion:         "proxy image tag (default: this CLI's version)",
		inject.OverrideProxyImagePullPolicy: "proxy image pull policy: Always, IfNotPresent or Never",
		inject.OverrideProxyCPURequest:      "proxy CPU request (e.g. 100m)",
		inject.OverrideProxyCPULimit:        "proxy CPU limit (e.g. 1)",
		inject.OverrideProxyMemoryRequest:   "proxy memory request (e.g. 20Mi)",
		inject.OverrideProxyMemoryLimit:     "proxy memory limit (e.g. 250Mi)",
		inject.OverrideProxyLogLevel:        "proxy log level: debug, info, warn or error",
		inject.OverrideProxyUID:             "user ID the proxy runs as",
		inject.OverrideProxyInboundPort:     "port of the proxy's inbound listener",
		inject.OverrideProxyOutboundPort:    "port of the proxy's outbound listener",
		inject.OverrideProxyAdminPort:       "port of the proxy's admin server (metrics, probes)",
		inject.OverrideSkipInboundPorts:     "ports (or FIRST-LAST ranges) whose inbound traffic bypasses the proxy",
		inject.OverrideSkipOutboundPorts:    "ports (or FIRST-LAST ranges) whose outbound traffic bypasses the proxy",
		inject.OverrideOpaquePorts:          "ports the proxy treats as opaque TCP, without protocol detection",
	}
}

func injectCommand(g *Globals) *cli.Command {
	flags := []cli.Flag{
		&cli.BoolFlag{Name: "manual", Usage: "write the full proxy sidecar into the manifests instead of the annotation the proxy injector acts on"},
		&cli.BoolFlag{Name: inject.OverrideNativeSidecar, Value: true, Usage: "run the proxy as a native sidecar (Kubernetes 1.29 or later); --native-sidecar=false for older clusters"},
		&cli.BoolFlag{Name: "force", Usage: "replace another mesh's proxy (Linkerd, Istio, or --other-mesh-*) with Conduit's: its containers, volumes, annotations and labels are removed (the migration path); without it such pods are skipped"},
		&cli.StringSliceFlag{Name: "other-mesh-container", Usage: "container `NAME` of another mesh whose pods are skipped (or replaced with --force), besides Linkerd's and Istio's; repeatable"},
		&cli.StringSliceFlag{Name: "other-mesh-annotation", Usage: "pod annotation (`KEY` or KEY=VALUE) marking another mesh's pods likewise; repeatable"},
		&cli.StringFlag{Name: "identity-trust-anchors-file", Usage: "PEM trust anchors of the mesh for --manual (default: read from the " + inject.TrustRootsConfigMap + " ConfigMap of the installed control plane)"},
	}
	usage := overrideFlagUsage()
	for _, name := range inject.OverrideNames() {
		if usage, ok := usage[name]; ok {
			flags = append(flags, &cli.StringFlag{Name: name, Usage: usage})
		}
	}
	return &cli.Command{
		Name:      "inject",
		Usage:     "add the Conduit proxy to Kubernetes workloads",
		ArgsUsage: "FILE|DIR|URL|- ...",
		Description: `Reads Kubernetes manifests (YAML or JSON, many documents per file) and writes
them to stdout with every Pod, Deployment, ReplicaSet, ReplicationController,
StatefulSet, DaemonSet, Job and CronJob meshed; other objects pass through
untouched. By default the pod templates get the conduit.io/inject: enabled
annotation and the proxy injector adds the proxy when the pods are created;
--manual writes the whole sidecar, with the mesh's trust anchors read from the
installed control plane (or --identity-trust-anchors-file). --proxy-* and
other settings become config.conduit.io/* annotations. A report goes to stderr.

Pods that already carry another mesh's proxy (Linkerd, Istio, or what
--other-mesh-container/--other-mesh-annotation name) are skipped: two proxies
in one pod cannot work. To migrate, --force replaces it: the other mesh's
containers, the volumes only they mounted, its annotations and labels (and
Istio's rewritten probes) are removed, its opaque and skipped ports are kept
as config.conduit.io/* annotations, and Conduit's proxy is added.

   conduit inject app.yaml | kubectl apply -f -
   kubectl get deploy -o yaml | conduit inject --manual - | kubectl apply -f -
   kubectl get deploy -n shop -o yaml | conduit inject --force - | kubectl apply -f -   # from Linkerd or Istio`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			opts := injectOptions{
				inputs:      c.Args().Slice(),
				anchorsFile: c.String("identity-trust-anchors-file"),
				client:      func() (kubernetes.Interface, error) { return clientsetFor(g) },
				progName:    g.ProgName,
			}
			opts.inject.Manual = c.Bool("manual")
			opts.inject.ReplaceOtherMeshes = c.Bool("force")
			meshes, err := inject.OtherMeshesWith(c.StringSlice("other-mesh-container"), c.StringSlice("other-mesh-annotation"))
			if err != nil {
				return fmt.Errorf("--other-mesh-container/--other-mesh-annotation: %w", err)
			}
			opts.inject.OtherMeshes = meshes
			opts.inject.Proxy = inject.DefaultProxyConfig(version.Version)
			opts.inject.Proxy.ControlPlaneNamespace = c.String("conduit-namespace")
			opts.inject.Overrides = map[string]string{}
			for _, name := range inject.OverrideNames() {
				if c.IsSet(name) {
					v := c.String(name)
					if name == inject.OverrideNativeSidecar {
						v = fmt.Sprint(c.Bool(name))
					}
					if _, err := inject.NormalizeOverride(name, v); err != nil {
						return fmt.Errorf("--%s: %w", name, err)
					}
					opts.inject.Overrides[name] = v
				}
			}
			return runInject(c.Context, opts, g.Streams)
		},
	}
}

func runInject(ctx context.Context, opts injectOptions, streams IOStreams) error {
	verb := "annotated for injection"
	if opts.inject.Manual {
		verb = "injected"
		pem, err := trustAnchors(ctx, opts)
		if err != nil {
			return err
		}
		opts.inject.Proxy.TrustAnchorsPEM = pem
	} else if opts.anchorsFile != "" {
		return errors.New("--identity-trust-anchors-file is only used with --manual (the proxy injector has the trust anchors)")
	}
	return transform(ctx, opts.inputs, streams, verb, func(b []byte) ([]byte, []inject.Result, error) {
		return inject.Inject(b, opts.inject)
	})
}

// trustAnchors returns the PEM trust anchors for --manual: from
// --identity-trust-anchors-file, else from the installed control plane's
// ConfigMap. Every failure is one line saying what to do.
func trustAnchors(ctx context.Context, opts injectOptions) (string, error) {
	if opts.anchorsFile != "" {
		b, err := os.ReadFile(opts.anchorsFile)
		if err != nil {
			return "", fmt.Errorf("--identity-trust-anchors-file: %w", err)
		}
		if err := inject.CheckTrustAnchors(string(b)); err != nil {
			return "", fmt.Errorf("--identity-trust-anchors-file %s: %w", opts.anchorsFile, err)
		}
		return string(b), nil
	}
	ns := opts.inject.Proxy.ControlPlaneNamespace
	where := fmt.Sprintf("ConfigMap %s/%s", ns, inject.TrustRootsConfigMap)
	hint := fmt.Sprintf("install Conduit with `%s install` (or point --conduit-namespace at its namespace), or pass --identity-trust-anchors-file", opts.progName)
	client, err := opts.client()
	if err != nil {
		return "", fmt.Errorf("--manual needs the mesh's trust anchors and there is no cluster to read them from (%v): %s", err, hint)
	}
	ctx, cancel := context.WithTimeout(ctx, urlTimeout)
	defer cancel()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, inject.TrustRootsConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("--manual needs the mesh's trust anchors and Conduit is not installed in namespace %q (no %s): %s", ns, where, hint)
	case err != nil:
		return "", fmt.Errorf("--manual needs the mesh's trust anchors: reading %s: %v: %s", where, err, hint)
	}
	pem := cm.Data[inject.TrustRootsKey]
	if err := inject.CheckTrustAnchors(pem); err != nil {
		return "", fmt.Errorf("%s key %s: %w: repair the installation with `%s upgrade`, or pass --identity-trust-anchors-file", where, inject.TrustRootsKey, err, opts.progName)
	}
	return pem, nil
}

// transform reads every input, applies fn, and writes all results to Out
// only when every input succeeded; the per-object report goes to ErrOut.
func transform(ctx context.Context, inputs []string, streams IOStreams, verb string,
	fn func([]byte) ([]byte, []inject.Result, error)) error {
	if len(inputs) == 0 {
		return errors.New("no input: give one or more files, directories, URLs, or - for stdin")
	}
	for _, in := range inputs {
		if len(in) > 1 && in[0] == '-' {
			return fmt.Errorf("%s: flags must come before the inputs (FILE|DIR|URL|- ...)", in)
		}
	}
	srcs, err := readInputs(ctx, inputs, streams.In)
	if err != nil {
		return err
	}
	// The output is each input's result, with "---" between them: kept as
	// those pieces (not copied into one buffer) until every input is done.
	var out [][]byte
	add := func(b []byte) {
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	var results []inject.Result
	var notes []string
	for i, src := range srcs {
		b, res, err := fn(src.data)
		if err != nil {
			return fmt.Errorf("%s: %w", src.name, err)
		}
		srcs[i].data = nil // done with it
		notes = append(notes, reencodedNotes(src.name, res)...)
		if i > 0 && len(b) > 0 {
			if last := len(out) - 1; last >= 0 && !bytes.HasSuffix(out[last], []byte("\n")) {
				add([]byte("\n"))
			}
			add([]byte("---\n"))
		}
		add(b)
		results = append(results, res...)
	}
	for _, b := range out {
		if _, err := streams.Out.Write(b); err != nil {
			return fmt.Errorf("writing the result: %w", err)
		}
	}
	// Buffered: not a write per object. A report that cannot be written
	// does not fail the command, as before.
	report := bufio.NewWriter(streams.ErrOut)
	writeReport(report, results, verb, isTerminal(streams.ErrOut))
	for _, n := range notes {
		fmt.Fprintln(report, n)
	}
	report.Flush()
	return nil
}

// reencodedNotes says which documents were written anew rather than edited
// in place, and why: their objects are exact, their bytes are not.
func reencodedNotes(src string, res []inject.Result) []string {
	var notes []string
	last := 0
	for _, r := range res {
		if r.Reencoded == "" || r.Doc == last {
			continue
		}
		last = r.Doc
		notes = append(notes, fmt.Sprintf("%s: document %d was written anew, not edited in place, because %s: its objects are exact, but its layout and comments may differ, so it will not come back byte for byte",
			src, r.Doc, r.Reencoded))
	}
	return notes
}

// writeReport prints one line per object, Linkerd style: ✔ and ‼ marks on a
// terminal, plain lines otherwise.
func writeReport(w io.Writer, results []inject.Result, verb string, tty bool) {
	for _, r := range results {
		kind := strings.ToLower(r.Kind)
		if kind == "" {
			kind = "object"
		}
		obj := fmt.Sprintf("%s %q", kind, r.Name)
		verb := verb
		if r.Replaced != "" {
			verb += ", replacing " + r.Replaced
		}
		switch {
		case r.Changed && tty:
			fmt.Fprintf(w, "✔ %s %s\n", obj, verb)
		case r.Changed:
			fmt.Fprintf(w, "%s %s\n", obj, verb)
		case tty:
			fmt.Fprintf(w, "‼ %s skipped: %s\n", obj, r.Reason)
		default:
			fmt.Fprintf(w, "%s skipped: %s\n", obj, r.Reason)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// source is one input's name (for messages) and content.
type source struct {
	name string
	data []byte
}

// readInputs reads files, the manifests of directories (*.yaml, *.yml,
// *.json, not recursive), URLs and stdin ("-").
func readInputs(ctx context.Context, inputs []string, stdin io.Reader) ([]source, error) {
	var srcs []source
	for _, in := range inputs {
		switch {
		case in == "-":
			if stdin == nil {
				return nil, errors.New("-: no standard input")
			}
			b, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			srcs = append(srcs, source{"-", b})
		case strings.HasPrefix(in, "http://") || strings.HasPrefix(in, "https://"):
			b, err := fetch(ctx, in)
			if err != nil {
				return nil, err
			}
			srcs = append(srcs, source{in, b})
		default:
			st, err := os.Stat(in)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", in, errors.Unwrap(err))
			}
			if !st.IsDir() {
				b, err := os.ReadFile(in)
				if err != nil {
					return nil, fmt.Errorf("reading %s: %w", in, err)
				}
				srcs = append(srcs, source{in, b})
				continue
			}
			dir, err := readDir(in)
			if err != nil {
				return nil, err
			}
			srcs = append(srcs, dir...)
		}
	}
	return srcs, nil
}

func readDir(dir string) ([]source, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", dir, err)
	}
	var srcs []source
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || !slices.Contains([]string{".yaml", ".yml", ".json"}, ext) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		srcs = append(srcs, source{p, b})
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json files in the directory", dir)
	}
	return srcs, nil
}

func fetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, urlTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: HTTP %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	return b, nil
}
