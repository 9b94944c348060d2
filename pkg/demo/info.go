package demo

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Info describes a running demo (printed as a table, or with -o json|yaml).
type Info struct {
	Namespace  string         `json:"namespace"`
	Controller ControllerInfo `json:"controller"`
	Services   []ServiceInfo  `json:"services"`
	// Denied says which calls the demo's inbound policy refuses, and why.
	Denied string `json:"denied"`
	// Routes say what the demo's outbound routes do.
	Routes []string `json:"routes"`
	// Export is the line that points the CLI at the demo's controller.
	Export string `json:"export"`
	// Try lists commands to run next.
	Try []string `json:"try"`
	// Logs is the directory of every process's log (removed on exit).
	Logs string `json:"logs"`
}

// ControllerInfo is where the controller listens.
type ControllerInfo struct {
	GRPCAddr  string `json:"grpcAddr"`
	AdminAddr string `json:"adminAddr"`
}

// ServiceInfo is one demo workload: its app and its proxy.
type ServiceInfo struct {
	Name      string `json:"name"`
	Authority string `json:"authority"`
	App       string `json:"app"`
	Inbound   string `json:"inbound"`
	Outbound  string `json:"outbound"`
	Admin     string `json:"admin"`
	Identity  string `json:"identity"`
}

func (d *demo) info() Info {
	web := d.workloads[0]
	for _, w := range d.workloads {
		if w.role == RoleWeb {
			web = w
		}
	}
	in := Info{
		Namespace:  Namespace,
		Controller: ControllerInfo{GRPCAddr: d.controllerGRPC, AdminAddr: d.controllerAdmin},
		Denied:     deniedLine(DirectShare),
		Routes:     routeLines(d.opts.FailureRate, d.opts.SlowRate),
		Export:     "export CONDUIT_CONTROLLER_ADDR=" + d.controllerGRPC,
		Try: []string{
			"conduit stat deploy -n " + Namespace,
			"conduit edges deploy -n " + Namespace,
			"conduit stat --by route deploy/web -n " + Namespace,
			"conduit top deploy/web -n " + Namespace,
			"conduit tap deploy/web -n " + Namespace,
			"conduit tap deploy/books -n " + Namespace + " --path /demo.v1.Books/",
			fmt.Sprintf("curl -s http://%s/metrics | grep 'tls=\"true\"'", web.admin),
			fmt.Sprintf("curl -s http://%s/books/3", web.inbound),
		},
		Logs: filepath.Join(d.dir, "logs"),
	}
	for _, w := range d.workloads {
		in.Services = append(in.Services, ServiceInfo{
			Name:      w.name,
			Authority: fmt.Sprintf("%s.%s.svc.%s:%d", w.name, Namespace, trustDomain, servicePort),
			App:       w.app, Inbound: w.inbound, Outbound: w.outbound, Admin: w.admin,
			Identity: w.identity,
		})
	}
	return in
}

// printInfo writes the whole description at once.
func (d *demo) printInfo() error {
	in := d.info()
	switch d.opts.Output {
	case "json":
		b, err := json.MarshalIndent(in, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(d.opts.Out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(in)
		if err != nil {
			return err
		}
		_, err = d.opts.Out.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(d.opts.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "conduit demo is running in namespace %q: every call between the services below is mutual TLS.\n\n", Namespace)
	fmt.Fprintln(tw, "SERVICE\tAPP\tPROXY INBOUND\tPROXY OUTBOUND\tPROXY ADMIN\tIDENTITY")
	for _, s := range in.Services {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.App, s.Inbound, s.Outbound, s.Admin, s.Identity)
	}
	fmt.Fprintf(tw, "controller\tgrpc %s\t-\t-\t%s\t-\n", in.Controller.GRPCAddr, in.Controller.AdminAddr)
	tw.Flush()
	fmt.Fprintf(d.opts.Out, "\nweb calls books and authors over gRPC; books fails %s of lookups on purpose; traffic sends %.0f requests/s to web;\n"+
		"every app is health-checked through its proxy every %s, from outside the mesh, as the kubelet would.\n%s\n", percent(d.opts.FailureRate), d.opts.RPS, d.opts.ProbeEvery, in.Denied)
	fmt.Fprintln(d.opts.Out, "routes:")
	for _, r := range in.Routes {
		fmt.Fprintf(d.opts.Out, "  %s\n", r)
	}
	fmt.Fprintf(d.opts.Out, "\nIn another terminal:\n\n  %s\n", in.Export)
	for _, t := range in.Try {
		fmt.Fprintf(d.opts.Out, "  %s\n", t)
	}
	fmt.Fprintf(d.opts.Out, "\nLogs: %s (removed on exit). Press Ctrl-C to stop everything.\n", in.Logs)
	return nil
}
