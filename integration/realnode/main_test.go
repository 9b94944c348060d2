// Package realnode proves Conduit where users run it: real pods on a real
// kubelet node (integration/cluster.StartNode: containerd, runc, the CNI
// bridge, kube-proxy, kube-scheduler, CoreDNS), with the images `make
// images` builds — the same contents the release ships. It needs root and
// the node's Debian packages; without them it skips with the reason, except
// in CI (CI=true), where it fails.
package realnode

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/conduitmesh/conduit/integration/cluster"
)

// current is the running node, for the signal handler.
var current struct {
	node chan *cluster.Node
}

func TestMain(m *testing.M) {
	current.node = make(chan *cluster.Node, 1)
	current.node <- nil
	// An interrupted run (Ctrl-C, go test's own SIGTERM on a timeout is a
	// SIGQUIT and cannot be caught: the next run tears that node down)
	// still tears the node down: no netns, bridge, chain or mount is left.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		n := <-current.node
		if n != nil {
			fmt.Fprintf(os.Stderr, "realnode: %v: tearing the node down\n", s)
			if err := n.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "realnode: %v\n", err)
			}
		}
		os.Exit(130)
	}()
	os.Exit(m.Run())
}

// setNode records the running node for the signal handler.
func setNode(n *cluster.Node) {
	<-current.node
	current.node <- n
}
