//go:build !linux

package cluster

import (
	"context"
	"errors"
)

// NodeOptions configure StartNode.
type NodeOptions struct{ Options }

// Node is a real single-node cluster (Linux only).
type Node struct{ *Cluster }

// NodePrerequisites says why there is no real node here.
func NodePrerequisites() string { return "a real node needs Linux" }

// StartNode fails: a real node needs Linux.
func StartNode(context.Context, NodeOptions) (*Node, error) {
	return nil, errors.New(NodePrerequisites())
}

// Stop does nothing.
func (n *Node) Stop() error { return nil }
