package inject

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// The helpers below edit yaml.v3 mapping and sequence nodes in place, so
// every field the injector does not know about keeps its value, its position
// and its comments.

// resolve follows aliases so that reads see the anchored value.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isMap reports whether n is a mapping node.
func isMap(n *yaml.Node) bool { return n != nil && n.Kind == yaml.MappingNode }

// isSeq reports whether n is a sequence node.
func isSeq(n *yaml.Node) bool { return n != nil && n.Kind == yaml.SequenceNode }

// get returns the value stored under key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	m = resolve(m)
	if !isMap(m) {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return resolve(m.Content[i+1])
		}
	}
	return nil
}

// getPath walks nested mappings.
func getPath(m *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		m = get(m, k)
		if m == nil {
			return nil
		}
	}
	return m
}

// getString returns the scalar under key ("" and false when absent or not a
// scalar).
func getString(m *yaml.Node, key string) (string, bool) {
	v := get(m, key)
	if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return "", false
	}
	return v.Value, true
}

// set stores val under key, replacing an existing value in place or
// appending the pair at the end of the mapping.
func set(m *yaml.Node, key string, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = val
			return
		}
	}
	m.Style &^= yaml.FlowStyle // block style for what grows
	m.Content = append(m.Content, strNode(key), val)
}

// del removes key from m and reports whether it was there.
func del(m *yaml.Node, key string) bool {
	if !isMap(m) {
		return false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i:i], m.Content[i+2:]...)
			return true
		}
	}
	return false
}

// strNode is a string scalar; the encoder quotes it when it would otherwise
// read back as a number, boolean or null.
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// boolNode is a boolean scalar.
func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

// hasContainer reports whether sequence s has an element named name.
func hasContainer(s *yaml.Node, name string) bool {
	return indexOfNamed(s, name) >= 0
}

// namedItem returns the element of s whose name is name, or nil.
func namedItem(s *yaml.Node, name string) *yaml.Node {
	if i := indexOfNamed(s, name); i >= 0 {
		return resolve(resolve(s).Content[i])
	}
	return nil
}

// indexOfNamed returns the index of the element of s whose name is name.
func indexOfNamed(s *yaml.Node, name string) int {
	s = resolve(s)
	if !isSeq(s) {
		return -1
	}
	for i, c := range s.Content {
		if n, _ := getString(c, "name"); n == name {
			return i
		}
	}
	return -1
}

// removeNamed deletes every element of s named name and reports whether any
// was removed.
func removeNamed(s *yaml.Node, name string) bool {
	s = resolve(s)
	if !isSeq(s) {
		return false
	}
	out := s.Content[:0]
	removed := false
	for _, c := range s.Content {
		if n, _ := getString(c, "name"); n == name {
			removed = true
			continue
		}
		out = append(out, c)
	}
	s.Content = out
	return removed
}

// insertAt inserts val at index i of sequence s.
func insertAt(s *yaml.Node, i int, val *yaml.Node) {
	s.Style &^= yaml.FlowStyle
	s.Content = append(s.Content, nil)
	copy(s.Content[i+1:], s.Content[i:])
	s.Content[i] = val
}

// maxExpandedNodes bounds alias expansion (a "billion laughs" document
// would otherwise grow without limit).
const maxExpandedNodes = 100000

// expandAliases replaces every alias in the tree with a copy of what it
// points at and drops the anchors, so that editing one object's pod template
// cannot change another place that shared it (e.g. labels shared between a
// selector and a template). It reports whether the tree had aliases.
func expandAliases(n *yaml.Node) (bool, error) {
	budget := maxExpandedNodes
	found := false
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		for i, c := range n.Content {
			if c.Kind == yaml.AliasNode {
				found = true
				cp, err := copyNode(resolve(c), &budget)
				if err != nil {
					return err
				}
				n.Content[i] = cp
				continue
			}
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(n); err != nil {
		return found, err
	}
	if found {
		clearAnchors(n)
	}
	return found, nil
}

func copyNode(n *yaml.Node, budget *int) (*yaml.Node, error) {
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("aliases expand to more than %d nodes", maxExpandedNodes)
	}
	n = resolve(n)
	c := *n
	c.Anchor = ""
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, k := range n.Content {
			cp, err := copyNode(k, budget)
			if err != nil {
				return nil, err
			}
			c.Content[i] = cp
		}
	}
	return &c, nil
}

func clearAnchors(n *yaml.Node) {
	n.Anchor = ""
	for _, c := range n.Content {
		clearAnchors(c)
	}
}
