package cmd

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/conduitmesh/conduit/pkg/controller/stats"
)

// completeCmdName is the hidden command the completion scripts call, named
// and spoken as cobra's, which is what kubectl (≥ 1.26) expects from a
// plugin's kubectl_complete-<plugin>: `conduit __complete ARG... WORD`
// prints the candidates for WORD, one a line (a tab may follow with a
// description), then `:N`, a cobra ShellCompDirective.
const completeCmdName = "__complete"

// Cobra's directives that the scripts act on.
const (
	compDefault   = 0 // the shell may complete file names when there is no candidate
	compNoFiles   = 4
	compTimeout   = 3 * time.Second // the most a completion waits for the cluster
	compMaxListed = 500             // names listed of one kind
)

func completeCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:            completeCmdName,
		Hidden:          true,
		HideHelp:        true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) == 0 {
				args = []string{""}
			}
			cands, directive := g.complete(c.Context, c.App, args[:len(args)-1], args[len(args)-1])
			var b strings.Builder
			for _, s := range cands {
				b.WriteString(s + "\n")
			}
			fmt.Fprintf(&b, ":%d\n", directive)
			_, err := fmt.Fprint(g.Streams.Out, b.String())
			return err
		},
	}
}

// complete finds the candidates for word after the command line words:
// subcommands, flags, flag values, and resource kinds, names and
// namespaces read from the cluster. It never fails: what it cannot list it
// leaves out, as kubectl's completion does.
func (g *Globals) complete(ctx context.Context, app *cli.App, words []string, word string) ([]string, int) {
	cmds, flags := app.Commands, app.Flags
	var cmd *cli.Command
	var args []string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			args = append(args, words[i+1:]...)
			break
		}
		if strings.HasPrefix(w, "-") && w != "-" {
			name, value, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
			f := findFlag(flags, name)
			if f != nil && flagTakesValue(f) && !hasValue {
				if i+1 == len(words) { // word is this flag's value
					return g.completeFlagValue(ctx, cmd, f, word, "")
				}
				i++
				value, hasValue = words[i], true
			}
			if pf, ok := f.(*pflagFlag); ok && hasValue {
				_ = flagValue{pf.f}.Set(value) // -n, --context, … as the command will see them
			}
			continue
		}
		if len(args) == 0 {
			if next := findCommand(cmds, w); next != nil {
				cmd, cmds, flags = next, next.Subcommands, next.Flags
				continue
			}
		}
		args = append(args, w)
	}
	if strings.HasPrefix(word, "-") {
		if name, value, ok := strings.Cut(strings.TrimLeft(word, "-"), "="); ok {
			if f := findFlag(flags, name); f != nil {
				return g.completeFlagValue(ctx, cmd, f, value, word[:len(word)-len(value)])
			}
			return nil, compNoFiles
		}
		return flagNames(flags, word), compNoFiles
	}
	if len(args) == 0 && len(cmds) > 0 {
		var out []string
		for _, c := range cmds {
			if !c.Hidden && strings.HasPrefix(c.Name, word) {
				out = append(out, c.Name+"\t"+c.Usage)
			}
		}
		return out, compNoFiles
	}
	if cmd == nil {
		return nil, compNoFiles
	}
	return g.completeArgs(ctx, cmd.Name, args, word)
}

// completeArgs completes the positional arguments of the command name.
func (g *Globals) completeArgs(ctx context.Context, name string, args []string, word string) ([]string, int) {
	switch name {
	case "stat", "top", "tap":
		withAuthority := name == "stat"
		switch {
		case len(args) == 0:
			return g.completeTarget(ctx, word, targetTypes(withAuthority)), compNoFiles
		case len(args) == 1 && !strings.Contains(args[0], "/"):
			return prefixed(g.resourceNames(ctx, args[0], word), ""), compNoFiles
		}
	case "authz":
		switch {
		case len(args) == 0:
			return g.completeTarget(ctx, word, workloadTypes()), compNoFiles
		case len(args) == 1 && !strings.Contains(args[0], "/"):
			return prefixed(g.resourceNames(ctx, args[0], word), ""), compNoFiles
		}
	case "edges":
		if len(args) == 0 {
			return filterPrefix(targetTypes(false), word), compNoFiles
		}
	case "completion":
		if len(args) == 0 {
			return filterPrefix([]string{"bash", "zsh", "fish", "kubectl"}, word), compNoFiles
		}
	case "inject", "uninject":
		return nil, compDefault // files, directories, - or URLs
	}
	return nil, compNoFiles
}

// completeTarget completes TYPE, one of types, or TYPE/NAME.
func (g *Globals) completeTarget(ctx context.Context, word string, types []string) []string {
	if typ, prefix, ok := strings.Cut(word, "/"); ok {
		return prefixed(g.resourceNames(ctx, typ, prefix), typ+"/")
	}
	return filterPrefix(types, word)
}

// targetTypes are the resource kinds stat, top, tap and edges take.
func targetTypes(withAuthority bool) []string {
	types := stats.KnownTypes()
	if !withAuthority {
		types = slices.DeleteFunc(types, func(t string) bool { return t == stats.TypeAuthority })
	}
	return types
}

// workloadTypes are the resource kinds authz takes.
func workloadTypes() []string {
	out := make([]string, len(workloadKinds))
	for i, k := range workloadKinds {
		out[i] = k.name
	}
	return out
}

// completeFlagValue completes the value of flag f of cmd (nil: the app)
// given as word; prefix ("--context=") goes in front of each candidate.
func (g *Globals) completeFlagValue(ctx context.Context, cmd *cli.Command, f cli.Flag, word, prefix string) ([]string, int) {
	name := f.Names()[0]
	switch name {
	case "namespace", "conduit-namespace", "from-namespace", "to-namespace":
		return prefixed(g.resourceNames(ctx, stats.TypeNamespace, word), prefix), compNoFiles
	case "context", "cluster", "user":
		return prefixed(g.kubeconfigNames(name, word), prefix), compNoFiles
	case "from", "to":
		return prefixed(g.completeTarget(ctx, word, targetTypes(false)), prefix), compNoFiles
	case "output":
		return prefixed(filterPrefix(outputFormats(f), word), prefix), compNoFiles
	case "kubeconfig", "cache-dir", "certificate-authority", "client-certificate", "client-key", "values":
		return nil, compDefault
	}
	if strings.HasSuffix(name, "-file") {
		return nil, compDefault
	}
	return nil, compNoFiles
}

var formatWord = regexp.MustCompile(`\b(table|wide|json|yaml|basic|short|junit)\b`)

// outputFormats are the formats an -o flag's usage names.
func outputFormats(f cli.Flag) []string {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return nil
	}
	var out []string
	for _, m := range formatWord.FindAllString(df.GetUsage(), -1) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// kubeconfigNames lists the contexts, clusters or users of the merged
// kubeconfig.
func (g *Globals) kubeconfigNames(kind, prefix string) []string {
	raw, err := g.Kube.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil
	}
	var names []string
	switch kind {
	case "context":
		names = slices.Sorted(maps.Keys(raw.Contexts))
	case "cluster":
		names = slices.Sorted(maps.Keys(raw.Clusters))
	case "user":
		names = slices.Sorted(maps.Keys(raw.AuthInfos))
	}
	return filterPrefix(names, prefix)
}

// resourceNames lists the names of typ (any spelling stat or authz takes)
// that start with prefix: namespaces, or deployments, pods, services,
// statefulsets, daemonsets, replicasets or jobs of the command's namespace.
// It asks the cluster for at most compTimeout and is silent on every error.
func (g *Globals) resourceNames(ctx context.Context, typ, prefix string) []string {
	kind, ok := stats.CanonicalType(typ)
	if !ok {
		kind, ok = workloadKind(typ)
	}
	if !ok || kind == stats.TypeAuthority {
		return nil
	}
	typ = kind
	client, err := g.completionClient()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, compTimeout)
	defer cancel()
	opts := metav1.ListOptions{Limit: compMaxListed}
	ns := g.Namespace()
	var list runtime.Object
	switch typ {
	case stats.TypeNamespace:
		list, err = client.CoreV1().Namespaces().List(ctx, opts)
	case stats.TypeDeployment:
		list, err = client.AppsV1().Deployments(ns).List(ctx, opts)
	case stats.TypePod:
		list, err = client.CoreV1().Pods(ns).List(ctx, opts)
	case stats.TypeService:
		list, err = client.CoreV1().Services(ns).List(ctx, opts)
	case kindStatefulSet:
		list, err = client.AppsV1().StatefulSets(ns).List(ctx, opts)
	case kindDaemonSet:
		list, err = client.AppsV1().DaemonSets(ns).List(ctx, opts)
	case kindReplicaSet:
		list, err = client.AppsV1().ReplicaSets(ns).List(ctx, opts)
	case kindJob:
		list, err = client.BatchV1().Jobs(ns).List(ctx, opts)
	}
	if err != nil || list == nil {
		return nil
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil
	}
	var names []string
	for _, item := range items {
		if m, err := meta.Accessor(item); err == nil {
			names = append(names, m.GetName())
		}
	}
	return filterPrefix(names, prefix)
}

// completionClient is the cluster completion reads, with compTimeout on
// each request and never a prompt.
func (g *Globals) completionClient() (kubernetes.Interface, error) {
	if g.newCompletionClient != nil {
		return g.newCompletionClient()
	}
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = compTimeout
	if cfg.ExecProvider != nil { // a credential plugin must not prompt at a TAB
		cfg.ExecProvider.InteractiveMode = clientcmdapi.NeverExecInteractiveMode
	}
	return kubernetes.NewForConfig(cfg)
}

// flagNames lists the visible flags starting with word, long names as
// --name and short ones as -x, with their usage.
func flagNames(flags []cli.Flag, word string) []string {
	var out []string
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		usage := ""
		if df, ok := f.(cli.DocGenerationFlag); ok {
			usage = df.GetUsage()
		}
		for _, n := range f.Names() {
			dashed := "--" + n
			if len(n) == 1 {
				dashed = "-" + n
			}
			if strings.HasPrefix(dashed, word) {
				out = append(out, dashed+"\t"+usage)
			}
		}
	}
	return out
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func flagTakesValue(f cli.Flag) bool {
	df, ok := f.(cli.DocGenerationFlag)
	return !ok || df.TakesValue()
}

func filterPrefix(words []string, prefix string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

func prefixed(words []string, prefix string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = prefix + w
	}
	return out
}
