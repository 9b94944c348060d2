package cmd

import (
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

	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/version"
)

// urlTimeout bounds fetching one URL input.
const urlTimeout = 30 * time.Second

// injectOptions are `conduit inject`'s options.
type injectOptions struct {
	inputs []string
	inject inject.Options
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
		&cli.StringFlag{Name: "conduit-namespace", Aliases: []string{"L"}, Value: inject.DefaultControlPlaneNS, Usage: "namespace of the Conduit control plane"},
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
--manual writes the whole sidecar. --proxy-* and other settings become
config.conduit.io/* annotations. A report goes to stderr.

   conduit inject app.yaml | kubectl apply -f -
   kubectl get deploy -o yaml | conduit inject --manual - | kubectl apply -f -`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			opts := injectOptions{inputs: c.Args().Slice()}
			opts.inject.Manual = c.Bool("manual")
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
	}
	return transform(ctx, opts.inputs, streams, verb, func(b []byte) ([]byte, []inject.Result, error) {
		return inject.Inject(b, opts.inject)
	})
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
	var out bytes.Buffer
	var results []inject.Result
	for i, src := range srcs {
		b, res, err := fn(src.data)
		if err != nil {
			return fmt.Errorf("%s: %w", src.name, err)
		}
		if i > 0 && len(b) > 0 {
			if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
				out.WriteByte('\n')
			}
			out.WriteString("---\n")
		}
		out.Write(b)
		results = append(results, res...)
	}
	if _, err := streams.Out.Write(out.Bytes()); err != nil {
		return fmt.Errorf("writing the result: %w", err)
	}
	writeReport(streams.ErrOut, results, verb, isTerminal(streams.ErrOut))
	return nil
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
