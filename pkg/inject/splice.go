package inject

import (
	"bytes"
	"cmp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Re-encoding a whole document with yaml.v3 costs far more than parsing it,
// and loses the author's exact layout. So when injection only adds things,
// textEdits records where each addition goes relative to the parsed nodes'
// positions, and splice writes the additions into the original text. Any
// change it cannot place (a replaced or deleted value, a flow collection, a
// block or quoted scalar at the insertion point, CRLF text) sets full, and
// the document is re-encoded instead.

// textEdits records the additions made to one parsed document. A nil
// *textEdits records nothing (the tree is re-encoded).
type textEdits struct {
	body  []byte
	lines [][]byte // body split after each newline, made when needed
	split bool     // lines holds body's lines
	full  bool
	why   string // why full: the first reason the text could not be edited
	ins   []insertion
	dels  []deletion
}

// reset makes t record the edits of another document, keeping its slices.
func (t *textEdits) reset(body []byte) *textEdits {
	clear(t.ins)
	clear(t.dels)
	*t = textEdits{body: body, lines: t.lines[:0], ins: t.ins[:0], dels: t.dels[:0]}
	return t
}

// bodyLines returns the body split after each newline, as bytes.SplitAfter
// splits it.
func (t *textEdits) bodyLines() [][]byte {
	if !t.split {
		b := t.body
		for i := bytes.IndexByte(b, '\n'); i >= 0; i = bytes.IndexByte(b, '\n') {
			t.lines = append(t.lines, b[:i+1:i+1])
			b = b[i+1:]
		}
		t.lines = append(t.lines, b)
		t.split = true
	}
	return t.lines
}

// deletion drops the lines [from, to] of an entry of parent.
type deletion struct {
	from, to int
	parent   *yaml.Node
}

// insertion adds a mapping pair (key, val) at the end of the block mapping
// anchor, or a sequence item before the positioned item before (or at the
// end of the block sequence anchor when before is nil).
type insertion struct {
	anchor   *yaml.Node
	before   *yaml.Node
	key, val *yaml.Node // pair
	item     *yaml.Node // sequence item
}

func positioned(n *yaml.Node) bool { return n != nil && n.Line > 0 }

// refuse gives up splicing this document, saying why (the first reason wins).
func (t *textEdits) refuse(why string) {
	if !t.full {
		t.full, t.why = true, why
	}
}

// set is the package's set, recorded.
func (t *textEdits) set(m *yaml.Node, key string, val *yaml.Node) {
	if t != nil && positioned(m) {
		switch {
		case m.Style&yaml.FlowStyle != 0:
			t.refuse("a mapping to add " + key + " to is written in flow style ({...})")
		case get(m, key) != nil:
			t.refuse("the existing value of " + key + " has to be replaced")
		default:
			k := strNode(key)
			m.Content = append(m.Content, k, val)
			t.ins = append(t.ins, insertion{anchor: m, key: k, val: val})
			return
		}
	}
	set(m, key, val)
}

// insertAt is the package's insertAt, recorded.
func (t *textEdits) insertAt(s *yaml.Node, i int, val *yaml.Node) {
	if t != nil && positioned(s) {
		if s.Style&yaml.FlowStyle != 0 {
			t.refuse("a list to add to is written in flow style ([...])")
		} else {
			var before *yaml.Node
			for _, c := range s.Content[i:] {
				if positioned(c) {
					before = c
					break
				}
			}
			t.ins = append(t.ins, insertion{anchor: s, before: before, item: val})
		}
	}
	insertAt(s, i, val)
}

// del is the package's del, recorded.
func (t *textEdits) del(m *yaml.Node, key string) bool {
	if t != nil && positioned(m) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				t.recordDeletion(m, i, 2)
				break
			}
		}
	}
	return del(m, key)
}

// removeNamed is the package's removeNamed, recorded.
func (t *textEdits) removeNamed(s *yaml.Node, name string) bool {
	s = resolve(s)
	if t != nil && positioned(s) {
		for i, c := range s.Content {
			if n, _ := getString(c, "name"); n == name {
				t.recordDeletion(s, i, 1)
			}
		}
	}
	return removeNamed(s, name)
}

// recordDeletion records the lines of parent.Content[i:i+width] (a pair or
// an item), before it is removed from the tree.
func (t *textEdits) recordDeletion(parent *yaml.Node, i, width int) {
	if t.full {
		return
	}
	from, to, ok := deletedLines(t.bodyLines(), parent, i, width)
	if !ok {
		t.refuse("the text of an entry to remove could not be told apart from its neighbours")
		return
	}
	t.dels = append(t.dels, deletion{from, to, parent})
}

// deletedLines returns the line range [from, to] of parent.Content[i:i+width]:
// from its first line to the last line of text before the next sibling.
func deletedLines(lines [][]byte, parent *yaml.Node, i, width int) (from, to int, ok bool) {
	first, last := parent.Content[i], parent.Content[i+width-1]
	if !positioned(first) || first.Line > len(lines) {
		return 0, 0, false
	}
	col, ok := blockColumn(lines, parent)
	if !ok {
		return 0, 0, false
	}
	from = first.Line - 1
	l := lines[from]
	if len(l) <= col || len(bytes.TrimLeft(l[:col], " ")) != 0 {
		return 0, 0, false // the key must start its line, not follow "- "
	}
	if parent.Kind == yaml.SequenceNode && l[col] != '-' {
		return 0, 0, false
	}
	if !safeEnd(lines, last) {
		return 0, 0, false
	}
	if i+width == len(parent.Content) {
		end, ok := endLine(lines, parent, col)
		return from, end, ok
	}
	next := parent.Content[i+width]
	if !positioned(next) || next.Line-1 <= from || next.Line > len(lines) {
		return 0, 0, false
	}
	to = next.Line - 2
	for to > from {
		t := bytes.TrimSpace(lines[to])
		if len(t) > 0 && t[0] != '#' {
			break
		}
		to--
	}
	return from, to, true
}

// safeEnd reports whether the text of n surely ends on a line that is not
// blank and does not start with '#' (not so for block scalars, or quoted
// ones that span lines).
func safeEnd(lines [][]byte, n *yaml.Node) bool {
	last := lastDescendant(n)
	if last == nil || last.Kind == yaml.AliasNode || last.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 ||
		last.Line < 1 || last.Line > len(lines) {
		return false
	}
	if last.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
		return quotedOnOneLine(lines, last)
	}
	return true
}

// quotedOnOneLine reports whether the quoted scalar n closes on the line it
// opens, with nothing but a comment after it.
func quotedOnOneLine(lines [][]byte, n *yaml.Node) bool {
	if n.Line < 1 || n.Line > len(lines) {
		return false
	}
	l := bytes.TrimRight(lines[n.Line-1], "\r\n")
	i := n.Column - 1
	if i < 0 || i >= len(l) || (l[i] != '"' && l[i] != '\'') {
		return false
	}
	quote := l[i]
	for i++; i < len(l); i++ {
		switch {
		case quote == '"' && l[i] == '\\':
			i++ // an escaped character
		case quote == '\'' && l[i] == '\'' && i+1 < len(l) && l[i+1] == '\'':
			i++ // '' is a quote
		case l[i] == quote:
			rest := bytes.TrimLeft(l[i+1:], " \t")
			return len(rest) == 0 || rest[0] == '#'
		}
	}
	return false
}

// ensureMap is the package's ensureMap, recorded.
func (t *textEdits) ensureMap(m *yaml.Node, key string) (*yaml.Node, bool) {
	if v := get(m, key); isMap(v) {
		return v, false
	}
	child := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	t.set(m, key, child)
	return child, true
}

// ensureSeq is the package's ensureSeq, recorded.
func (t *textEdits) ensureSeq(m *yaml.Node, key string) (*yaml.Node, bool) {
	if v := get(m, key); isSeq(v) {
		return v, false
	}
	child := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	t.set(m, key, child)
	return child, true
}

// splicer renders insertions in one stream's style, caching the text of
// sequence items shared by many documents (the sidecar's containers).
type splicer struct {
	items map[itemKey]string
	text  bytes.Buffer // the current document's additions, reused
}

type itemKey struct {
	n           *yaml.Node
	col, indent int
	compact     bool
}

// splice writes body with the insertions into w, or returns false (having
// written nothing, t.why saying why) when the edits cannot be placed in the
// text.
func (s *splicer) splice(w *bytes.Buffer, body []byte, t *textEdits) bool {
	if bytes.Contains(body, []byte("\r")) {
		t.refuse("it has CRLF line endings")
	}
	if t.full {
		return false
	}
	lines := t.bodyLines()
	indent, compact := yamlStyle(body)
	type placed struct {
		line int // insert before this 0-based line index
		// At one line: the ends of nested nodes (deepest first), then new
		// sequence items, each in the order they were made.
		rank int
		// The text is s.text's bytes [from, to).
		from, to int
	}
	adds := make([]placed, 0, len(t.ins))
	s.text.Reset()
	for _, in := range t.ins {
		col, ok := blockColumn(lines, in.anchor)
		if !ok {
			t.refuse("a mapping or list to add to carries a tag or an anchor, or does not start its own line")
			return false
		}
		var at int
		// Deeper nodes end first. A compact sequence's dashes share their
		// parent key's column but nest deeper, so depth is 2·col, plus one
		// for a sequence.
		rank := -2 * col
		if in.anchor.Kind == yaml.SequenceNode {
			rank--
		}
		if in.before != nil {
			rank = 1 << 20
			at = in.before.Line - 1
			l := lines[at]
			if len(l) <= col || l[col] != '-' || len(bytes.TrimLeft(l[:col], " ")) != 0 {
				t.refuse("a list item to insert before does not start its own line")
				return false
			}
		} else {
			end, ok := endLine(lines, in.anchor, col)
			if !ok {
				t.refuse("a mapping or list to add to ends in a quoted or block scalar, whose end the text does not show")
				return false
			}
			at = end + 1
		}
		from := s.text.Len()
		if in.item != nil {
			var text string
			text, ok = s.item(in.item, col, indent, compact)
			s.text.WriteString(text)
		} else {
			ok = s.pair(&s.text, in.key, in.val, col, indent, compact)
		}
		if !ok {
			t.refuse("an added value has a shape that cannot be written into the text")
			return false
		}
		adds = append(adds, placed{at, rank, from, s.text.Len()})
	}
	slices.SortStableFunc(adds, func(a, b placed) int { return cmp.Or(a.line-b.line, a.rank-b.rank) })
	drop := make([]bool, len(lines))
	for _, d := range t.dels {
		// Text cannot say "empty" once every entry of a block is cut: its key
		// would read as null. Only an ancestor's deletion may take it whole.
		if len(d.parent.Content) == 0 && !slices.ContainsFunc(t.dels, func(o deletion) bool {
			return o.from < d.from && o.to >= d.to
		}) {
			t.refuse("a mapping or list it empties stays, and only a rewrite can write it empty")
			return false
		}
		for i := d.from; i <= d.to; i++ {
			drop[i] = true
		}
	}
	out := w
	text := s.text.Bytes()
	next := 0
	for i, l := range lines {
		for j := range adds {
			if adds[j].line == i {
				out.Write(text[adds[j].from:adds[j].to])
			}
		}
		if !drop[i] {
			out.Write(l)
		}
		next = i + 1
	}
	if len(lines) > 0 && !bytes.HasSuffix(lines[len(lines)-1], []byte("\n")) {
		for j := range adds {
			if adds[j].line >= next {
				out.WriteByte('\n')
				break
			}
		}
	}
	for j := range adds {
		if adds[j].line >= next {
			out.Write(text[adds[j].from:adds[j].to])
		}
	}
	return true
}

// endLine finds the last line of a block mapping or sequence: the last
// non-blank, non-comment line before the text returns to a lower
// indentation. It refuses (false) when the node ends in a scalar whose text
// could continue on comment-like or blank lines (literal, folded, or quoted
// over several lines).
func endLine(lines [][]byte, n *yaml.Node, col int) (int, bool) {
	last := lastDescendant(n)
	if last == nil || last.Kind == yaml.AliasNode || last.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return 0, false
	}
	if last.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 && !quotedOnOneLine(lines, last) {
		return 0, false
	}
	first := n.Content[0].Line
	end := first - 1
	for i := first; i < len(lines); i++ {
		l := lines[i]
		t := bytes.TrimLeft(l, " ")
		if len(bytes.TrimSpace(t)) == 0 || t[0] == '#' {
			continue
		}
		ind := len(l) - len(t)
		if ind == 0 && (bytes.HasPrefix(t, []byte("---")) || bytes.HasPrefix(t, []byte("..."))) {
			break
		}
		if ind < col {
			break
		}
		if n.Kind == yaml.SequenceNode && ind == col && !(t[0] == '-' && (len(t) == 1 || t[1] == ' ' || t[1] == '\n')) {
			break
		}
		end = i
	}
	if end < last.Line-1 {
		return 0, false // the scan disagrees with the parser: do not guess
	}
	return end, true
}

// blockColumn returns the 0-based column of a block collection's keys (or
// dashes), checked against the text: the node must start a line of its own
// (after a "- " for a mapping in a sequence) and carry no tag or anchor.
func blockColumn(lines [][]byte, n *yaml.Node) (int, bool) {
	if len(n.Content) == 0 || n.Style&(yaml.FlowStyle|yaml.TaggedStyle) != 0 || n.Anchor != "" {
		return 0, false
	}
	var l []byte
	var col int
	if n.Kind == yaml.SequenceNode {
		// The sequence's own position is its first dash (even once that
		// item has been removed from the tree, or others inserted before).
		if n.Line < 1 || n.Line > len(lines) {
			return 0, false
		}
		l, col = lines[n.Line-1], n.Column-1
		if len(l) <= col || l[col] != '-' {
			return 0, false
		}
	} else {
		// Pairs are only ever added at the end: the first key is the
		// parsed one.
		first := n.Content[0]
		if first.Style&yaml.TaggedStyle != 0 || first.Anchor != "" || first.Line < 1 || first.Line > len(lines) {
			return 0, false
		}
		l, col = lines[first.Line-1], first.Column-1
	}
	if col >= len(l) {
		return 0, false
	}
	// Only spaces, or spaces and "- " markers, before the column.
	for _, c := range l[:col] {
		if c != ' ' && c != '-' {
			return 0, false
		}
	}
	return col, true
}

// lastDescendant is the last node of n's subtree as parsed (nodes added
// since have no position and are skipped).
func lastDescendant(n *yaml.Node) *yaml.Node {
	for n != nil && (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) {
		if n.Style&yaml.FlowStyle != 0 {
			return n
		}
		var last *yaml.Node
		for i := len(n.Content) - 1; i >= 0; i-- {
			if positioned(n.Content[i]) {
				last = n.Content[i]
				break
			}
		}
		if last == nil {
			return n
		}
		n = last
	}
	return n
}

// pair writes "key: value" at column col for the shapes injection creates:
// scalars, block mappings and sequences of them; anything else is encoded.
func (s *splicer) pair(b *bytes.Buffer, k, v *yaml.Node, col, indent int, compact bool) bool {
	key, ok := plainOrQuoted(k)
	if !ok {
		return false
	}
	writeKey := func(after string) {
		for range col {
			b.WriteByte(' ')
		}
		b.WriteString(key)
		b.WriteString(after)
	}
	switch v.Kind {
	case yaml.ScalarNode:
		val, ok := plainOrQuoted(v)
		if !ok {
			return false
		}
		writeKey(": ")
		b.WriteString(val)
		b.WriteByte('\n')
	case yaml.MappingNode:
		if len(v.Content) == 0 {
			writeKey(": {}\n")
			return true
		}
		writeKey(":\n")
		for i := 0; i+1 < len(v.Content); i += 2 {
			if !s.pair(b, v.Content[i], v.Content[i+1], col+indent, indent, compact) {
				return false
			}
		}
	case yaml.SequenceNode:
		if len(v.Content) == 0 {
			writeKey(": []\n")
			return true
		}
		writeKey(":\n")
		dash := col + indent
		if compact {
			dash = col
		}
		for _, it := range v.Content {
			text, ok := s.item(it, dash, indent, compact)
			if !ok {
				return false
			}
			b.WriteString(text)
		}
	default:
		return false
	}
	return true
}

// item renders a sequence item ("- ...") with its dash at column col.
func (s *splicer) item(n *yaml.Node, col, indent int, compact bool) (string, bool) {
	if text, ok := s.items[itemKey{n, col, indent, compact}]; ok {
		return text, true
	}
	key := itemKey{n, 0, indent, compact}
	text, ok := s.items[key]
	if !ok {
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(indent)
		if compact {
			enc.CompactSeqIndent()
		}
		if err := enc.Encode(&yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{n}}); err != nil {
			return "", false
		}
		if err := enc.Close(); err != nil {
			return "", false
		}
		text = buf.String()
		if s.items == nil {
			s.items = map[itemKey]string{}
		}
		s.items[key] = text
	}
	if col == 0 {
		return text, true
	}
	pad := strings.Repeat(" ", col)
	var b strings.Builder
	b.Grow(len(text) + 16*col)
	for l := range strings.Lines(text) {
		if l != "\n" {
			b.WriteString(pad)
		}
		b.WriteString(l)
	}
	s.items[itemKey{n, col, indent, compact}] = b.String()
	return b.String(), true
}

// plainOrQuoted writes a scalar the way a YAML 1.1 or 1.2 reader reads back
// as the same value: plain when unambiguous, else JSON-quoted.
func plainOrQuoted(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		return "", false
	}
	switch n.ShortTag() {
	case "!!str":
		if safePlain(n.Value) {
			return n.Value, true
		}
		var b bytes.Buffer
		writeJSONString(&b, n.Value)
		return b.String(), true
	case "!!bool", "!!int", "!!null":
		return n.Value, true
	}
	return "", false
}

// quantityLike matches digits then letters ("50m", "64Mi"), which no YAML
// reader takes for a number, date or boolean.
func quantityLike(s string) bool {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == len(s) {
		return false
	}
	for ; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// safePlain reports whether s can be written as a plain scalar and read back
// as the same string by both YAML 1.1 and 1.2 readers.
func safePlain(s string) bool {
	if s == "" {
		return false
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~":
		return false
	}
	c := s[0]
	if c >= '0' && c <= '9' {
		return quantityLike(s)
	}
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '/') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '/' || c == '-') {
			return false
		}
	}
	return true
}
