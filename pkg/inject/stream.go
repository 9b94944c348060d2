// Package inject adds Conduit's proxy to Kubernetes workloads and takes it
// away again. It works on manifests as bytes (multi-document YAML or JSON
// streams) or on single pods, and edits them as YAML node trees, so that
// document order, unrelated fields and comments survive. Used by both
// `conduit inject`/`uninject` and the proxy-injector webhook.
package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Options configure Inject.
type Options struct {
	// Manual writes the full sidecar; otherwise only the conduit.io/inject
	// annotation is added and the webhook does the rest.
	Manual bool
	// Proxy is the configuration before each workload's own
	// config.conduit.io/* annotations (used by Manual, and for the control
	// plane namespace check).
	Proxy ProxyConfig
	// Overrides (name without the config.conduit.io/ prefix → value) are
	// written onto every pod template and win over its own annotations.
	Overrides map[string]string
	// OtherMeshes are the meshes whose pods are left alone (nil:
	// DefaultOtherMeshes()).
	OtherMeshes []OtherMesh
	// ReplaceOtherMeshes takes another mesh's proxy, init container,
	// volumes and annotations out of its pods and meshes them with Conduit
	// instead (the migration path; `conduit inject --force`).
	ReplaceOtherMeshes bool
}

// ParseError is malformed input. Doc is the 1-based document number and
// Line the 1-based line in the whole input (0 when the parser gave none).
type ParseError struct {
	Doc  int
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("document %d (line %d): %s", e.Doc, e.Line, e.Msg)
	}
	return fmt.Sprintf("document %d: %s", e.Doc, e.Msg)
}

// Inject injects every supported object in data (a YAML or JSON stream) and
// returns the whole stream with a Result per object. Malformed input is a
// *ParseError and no output.
func Inject(data []byte, opts Options) ([]byte, []Result, error) {
	p, err := newInjector(opts)
	if err != nil {
		return nil, nil, err
	}
	return p.stream(data)
}

func newInjector(opts Options) (*processor, error) {
	overrides := make(map[string]string, len(opts.Overrides))
	for name, v := range opts.Overrides {
		n, err := NormalizeOverride(name, v)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", ConfigPrefix, name, err)
		}
		overrides[name] = n
	}
	if opts.OtherMeshes == nil {
		opts.OtherMeshes = DefaultOtherMeshes()
	}
	if opts.Proxy.Image == "" {
		anchors := opts.Proxy.TrustAnchorsPEM
		opts.Proxy = DefaultProxyConfig(opts.Proxy.Version)
		opts.Proxy.TrustAnchorsPEM = anchors
	}
	m := modeAnnotate
	if opts.Manual {
		m = modeManual
		if err := CheckTrustAnchors(opts.Proxy.TrustAnchorsPEM); err != nil {
			return nil, err
		}
	}
	return &processor{mode: m, opts: opts, overrides: overrides, cache: sidecarCache{}}, nil
}

// Uninject removes what Inject added, restoring the original objects. It
// leaves alone what Inject would not have touched: objects in the control
// plane namespace (opts.Proxy.ControlPlaneNamespace, when set) and pods on
// the host's network.
func Uninject(data []byte, opts Options) ([]byte, []Result, error) {
	p := &processor{mode: modeUninject, opts: opts}
	return p.stream(data)
}

func (p *processor) stream(data []byte) ([]byte, []Result, error) {
	// Like kubectl: a stream that starts like JSON is JSON, strictly.
	if looksLikeJSON(data) {
		return p.jsonStream(data)
	}
	return p.yamlStream(data)
}

func looksLikeJSON(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// yamlDoc is one document of a YAML stream: its separator line(s) and body,
// both verbatim.
type yamlDoc struct {
	sep, body []byte
	start     int // offset of the body in the stream
	line      int // 1-based line of the body's first line
	// inline: the body starts on the separator's line ("--- {a: 1}"), so
	// its first line's columns are shifted: never splice it.
	inline bool
}

// yamlSplitter cuts a stream at "---" lines, one document at a time. YAML
// forbids "---" at the start of a line inside a document, so the cut is
// exact.
type yamlSplitter struct {
	data []byte
	pos  int // where the next line starts
	line int // its 1-based number
	cur  yamlDoc
	done bool
}

func newYAMLSplitter(data []byte) *yamlSplitter {
	return &yamlSplitter{data: data, line: 1, cur: yamlDoc{line: 1}}
}

// next returns the next document; false after the last.
func (s *yamlSplitter) next() (yamlDoc, bool) {
	if s.done {
		return yamlDoc{}, false
	}
	data := s.data
	for i := s.pos; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += i + 1
		}
		l := data[i:end]
		line := s.line
		s.pos, s.line = end, line+1
		if !isDocSeparator(l) {
			i = end
			continue
		}
		d := s.cur
		d.body = data[d.start:i]
		s.cur = yamlDoc{sep: l, start: end, line: line + 1}
		if rest := bytes.TrimSpace(l[3:]); len(rest) > 0 && rest[0] != '#' {
			s.cur = yamlDoc{sep: l[:3], start: i + 3, line: line, inline: true}
		}
		return d, true
	}
	s.done = true
	d := s.cur
	d.body = data[d.start:]
	return d, true
}

// splitYAML returns every document of a stream.
func splitYAML(data []byte) []yamlDoc {
	var docs []yamlDoc
	s := newYAMLSplitter(data)
	for d, ok := s.next(); ok; d, ok = s.next() {
		docs = append(docs, d)
	}
	return docs
}

func isDocSeparator(l []byte) bool {
	if !bytes.HasPrefix(l, []byte("---")) {
		return false
	}
	return len(l) == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\n' || l[3] == '\r'
}

var yamlLineErr = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *processor) yamlStream(data []byte) ([]byte, []Result, error) {
	var out bytes.Buffer
	results := make([]Result, 0, bytes.Count(data, []byte("\n---"))+1)
	docNum := 0
	split := newYAMLSplitter(data)
	docs := make([]yamlDoc, 0, parseBatch)
	parsed := make([]parsedDoc, parseBatch)
	for batch := 0; ; batch++ {
		docs = docs[:0]
		for len(docs) < parseBatch {
			d, ok := split.next()
			if !ok {
				break
			}
			docs = append(docs, d)
		}
		if len(docs) == 0 {
			break
		}
		parseAll(data, docs, parsed)
		for i, d := range docs {
			var err error
			results, err = p.yamlDoc(&out, d, &parsed[i], &docNum, results)
			if err != nil {
				return nil, nil, err
			}
			parsed[i] = parsedDoc{}
		}
		if batch == 0 && split.pos < len(data) {
			// Streams are mostly alike: the first batch tells how much
			// the output will hold, so the buffer is made once rather than
			// doubled again and again (--manual makes ten times the input).
			expect := float64(out.Len()) * float64(len(data)) / float64(split.pos)
			out.Grow(max(0, int(expect*1.0625)-out.Len()))
		}
	}
	return out.Bytes(), results, nil
}

// yamlDoc writes one document of a YAML stream to out, injected, and appends
// its Results. docNum counts the documents that have content.
func (p *processor) yamlDoc(out *bytes.Buffer, d yamlDoc, pd *parsedDoc, docNum *int, results []Result) ([]Result, error) {
	out.Write(d.sep)
	root, err := pd.root, pd.err
	if err != nil {
		*docNum++
		return nil, yamlParseError(*docNum, d.line, err)
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		out.Write(d.body) // comments or nothing
		return results, nil
	}
	*docNum++
	obj := resolve(root.Content[0])
	if obj.Kind == yaml.ScalarNode && obj.Tag == "!!null" {
		out.Write(d.body)
		return results, nil
	}
	if !isMap(obj) {
		return nil, &ParseError{Doc: *docNum, Line: d.line + root.Content[0].Line - 1,
			Msg: "not a Kubernetes object (expected a mapping with apiVersion and kind)"}
	}
	aliased := false
	if bytes.IndexByte(d.body, '*') >= 0 {
		if aliased, err = expandAliases(root); err != nil {
			return nil, &ParseError{Doc: *docNum, Line: d.line, Msg: err.Error()}
		}
	}
	n := len(results)
	p.edits = nil
	if !p.noSplice && !aliased && !d.inline {
		p.edits = p.scratch.reset(d.body)
	}
	results = p.object(*docNum, obj, results)
	if !anyChanged(results[n:]) {
		out.Write(d.body)
		return results, nil
	}
	why := ""
	switch {
	case d.inline:
		out.WriteByte('\n')
		why = "its content starts on the --- line"
	case aliased:
		why = "it uses YAML aliases (*name), which are written out in full"
	case p.edits != nil:
		if p.splicer.splice(out, d.body, p.edits) {
			return results, nil
		}
		why = p.edits.why
	}
	if pd.shared {
		// The encoder writes comments, and a decoder shared with the
		// documents around this one may place those next to the --- lines
		// differently: edit the document's own tree instead.
		if root, err = parseYAMLDoc(d.body); err != nil {
			return nil, yamlParseError(*docNum, d.line, err)
		}
		p.edits = nil
		results = p.object(*docNum, resolve(root.Content[0]), results[:n])
	}
	for i := n; i < len(results); i++ {
		if results[i].Changed {
			results[i].Reencoded = why
		}
	}
	if err := encodeYAML(out, root, d.body); err != nil {
		return nil, fmt.Errorf("document %d: %w", *docNum, err)
	}
	return results, nil
}

// parseBatch is how many documents are parsed (in parallel) ahead of
// processing, which is sequential.
const parseBatch = 64

type parsedDoc struct {
	root *yaml.Node
	err  error
	// shared: parsed by a decoder that also parsed the documents around it
	// (its nodes are the same, its comments may not be).
	shared bool
}

// parseAll parses docs (consecutive documents of data) into out[:len(docs)]
// on up to GOMAXPROCS goroutines, each taking a consecutive share.
func parseAll(data []byte, docs []yamlDoc, out []parsedDoc) {
	workers := min(runtime.GOMAXPROCS(0), len(docs))
	var wg sync.WaitGroup
	for w := range workers {
		from, to := w*len(docs)/workers, (w+1)*len(docs)/workers
		wg.Go(func() { parseDocs(data, docs[from:to], out[from:to]) })
	}
	wg.Wait()
}

// parseDocs parses consecutive documents of data. Runs of them that one
// decoder can take in a row share it: setting up a yaml.v3 decoder and its
// token queue costs about as much as a small document's nodes.
func parseDocs(data []byte, docs []yamlDoc, out []parsedDoc) {
	for i := 0; i < len(docs); {
		j := i
		for j < len(docs) && shareable(docs[j]) {
			j++
		}
		if j-i > 1 {
			last := docs[j-1]
			if parseShared(data[docs[i].start:last.start+len(last.body)], docs[i:j], out[i:j]) {
				i = j
				continue
			}
		}
		for j = max(j, i+1); i < j; i++ {
			root, err := parseYAMLDoc(docs[i].body)
			out[i] = parsedDoc{root: root, err: err}
		}
	}
}

// shareable reports whether a decoder that has parsed the documents before
// this one parses it to the same nodes as it alone would (their lines
// shifted): it has content; no alias (a decoder keeps the anchors of the
// documents before); no line that could read as a document marker or a
// directive; and no line break but "\n" and no byte order mark (either
// would shift its lines or columns).
func shareable(d yamlDoc) bool {
	b := d.body
	if d.inline || len(b) == 0 || b[len(b)-1] != '\n' ||
		bytes.IndexByte(b, '*') >= 0 || bytes.IndexByte(b, '\r') >= 0 {
		return false
	}
	if slices.ContainsFunc(b, func(c byte) bool { return c >= utf8.RuneSelf }) {
		// NEL, LS and PS break lines in YAML; then the byte order mark.
		for _, r := range []string{"\u0085", "\u2028", "\u2029", "\ufeff"} {
			if bytes.Contains(b, []byte(r)) {
				return false
			}
		}
	}
	content := false
	for l := range bytes.Lines(b) {
		if bytes.HasPrefix(l, []byte("...")) || bytes.HasPrefix(l, []byte("---")) || bytes.HasPrefix(l, []byte("%")) {
			return false
		}
		if t := bytes.TrimLeft(bytes.TrimSuffix(l, []byte("\n")), " \t"); !content && len(t) > 0 && t[0] != '#' {
			content = true
		}
	}
	return content
}

// parseShared parses docs, shareable and consecutive, from their stretch of
// the stream with one decoder, or returns false when the decoder does not
// see exactly those documents (their own parses then tell what is wrong).
func parseShared(text []byte, docs []yamlDoc, out []parsedDoc) bool {
	dec := yaml.NewDecoder(bytes.NewReader(text))
	for k, d := range docs {
		root := new(yaml.Node)
		if err := dec.Decode(root); err != nil || len(root.Content) == 0 {
			return false
		}
		// The decoder numbers lines from the first document's first.
		shift := d.line - docs[0].line
		if first := root.Content[0].Line - shift; first < 1 || first > bytes.Count(d.body, []byte("\n")) {
			return false
		}
		if shift != 0 {
			shiftLines(root, shift)
		}
		// Alone, a document without "---" starts at its content.
		root.Line, root.Column = root.Content[0].Line, root.Content[0].Column
		out[k] = parsedDoc{root: root, err: duplicateKeys(root), shared: true}
	}
	var extra yaml.Node
	return errors.Is(dec.Decode(&extra), io.EOF)
}

func shiftLines(n *yaml.Node, by int) {
	if n.Line > 0 {
		n.Line -= by
	}
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}

// parseYAMLDoc parses one document and insists that nothing follows it
// (yaml.Unmarshal alone ignores what comes after the first document).
func parseYAMLDoc(body []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(body))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return &root, duplicateKeys(&root)
	case err != nil:
		return nil, err
	}
	return nil, fmt.Errorf("yaml: line %d: a second document starts here; separate documents with a --- line", extra.Line)
}

// duplicateKeys rejects a mapping that defines a key twice, as Kubernetes'
// own decoders do.
func duplicateKeys(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				continue
			}
			for j := 0; j < i; j += 2 {
				if p := n.Content[j]; p.Kind == yaml.ScalarNode && p.Value == k.Value {
					return fmt.Errorf("yaml: line %d: mapping key %q already defined at line %d", k.Line, k.Value, p.Line)
				}
			}
		}
	}
	for _, c := range n.Content {
		if err := duplicateKeys(c); err != nil {
			return err
		}
	}
	return nil
}

func yamlParseError(doc, firstLine int, err error) *ParseError {
	msg := err.Error()
	if m := yamlLineErr.FindStringSubmatch(msg); m != nil {
		l, _ := strconv.Atoi(m[1])
		return &ParseError{Doc: doc, Line: firstLine + l - 1, Msg: m[2]}
	}
	if len(msg) > 6 && msg[:6] == "yaml: " {
		msg = msg[6:]
	}
	return &ParseError{Doc: doc, Line: firstLine, Msg: msg}
}

func anyChanged(rs []Result) bool {
	for _, r := range rs {
		if r.Changed {
			return true
		}
	}
	return false
}

// encodeYAML writes root in the indentation style of the original body.
func encodeYAML(w *bytes.Buffer, root *yaml.Node, original []byte) error {
	indent, compact := yamlStyle(original)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(indent)
	if compact {
		enc.CompactSeqIndent()
	}
	if err := enc.Encode(root); err != nil {
		return fmt.Errorf("writing YAML: %w", err)
	}
	return enc.Close()
}

// yamlStyle guesses the indentation width and whether sequences are written
// "compact" (the dash at the parent key's indentation, as kubectl does).
func yamlStyle(body []byte) (indent int, compact bool) {
	indent, compact = 2, true
	foundIndent, foundSeq := false, false
	prevIndent, prevIsKey := -1, false
	for l := range bytes.Lines(body) {
		l = bytes.TrimSuffix(l, []byte("\n"))
		t := bytes.TrimLeft(l, " ")
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		ind := len(l) - len(t)
		isSeq := t[0] == '-' && (len(t) == 1 || t[1] == ' ')
		if prevIsKey && prevIndent >= 0 {
			if isSeq && !foundSeq {
				compact, foundSeq = ind == prevIndent, true
				if !compact && !foundIndent && ind > prevIndent {
					indent, foundIndent = ind-prevIndent, true
				}
			} else if !isSeq && !foundIndent && ind > prevIndent {
				indent, foundIndent = ind-prevIndent, true
			}
		}
		if foundIndent && foundSeq {
			break
		}
		tt := bytes.TrimRight(t, " \r")
		prevIndent, prevIsKey = ind, len(tt) > 0 && tt[len(tt)-1] == ':'
		if isSeq {
			// "- key:" opens a mapping two columns further in.
			prevIndent += 2
		}
	}
	if indent != 2 && indent != 4 {
		indent = 2 // yaml.v3 nests compact sequences wrongly at odd widths
	}
	return indent, compact
}

func (p *processor) jsonStream(data []byte) ([]byte, []Result, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var out bytes.Buffer
	var results []Result
	docNum := 0
	var prevEnd int64
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		docNum++
		if err != nil {
			return nil, nil, jsonParseError(data, docNum, prevEnd, err)
		}
		end := dec.InputOffset()
		out.Write(leadingSpace(data[prevEnd:end]))
		root, err := jsonToNode(raw)
		if err != nil {
			return nil, nil, &ParseError{Doc: docNum, Line: lineAt(data, prevEnd), Msg: err.Error()}
		}
		if !isMap(root) {
			return nil, nil, &ParseError{Doc: docNum, Line: lineAt(data, end-int64(len(raw))),
				Msg: "not a Kubernetes object (expected a JSON object with apiVersion and kind)"}
		}
		n := len(results)
		p.edits = nil
		results = p.object(docNum, root, results)
		if !anyChanged(results[n:]) {
			out.Write(raw)
		} else if err := encodeJSON(&out, root, raw); err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", docNum, err)
		}
		prevEnd = end
	}
	out.Write(data[prevEnd:])
	return out.Bytes(), results, nil
}

// leadingSpace returns the whitespace before the value in b.
func leadingSpace(b []byte) []byte {
	return b[:len(b)-len(bytes.TrimLeft(b, " \t\r\n"))]
}

func jsonParseError(data []byte, doc int, docStart int64, err error) *ParseError {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &ParseError{Doc: doc, Line: lineAt(data, se.Offset), Msg: se.Error()}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &ParseError{Doc: doc, Line: lineAt(data, int64(len(data))), Msg: "unexpected end of input (unclosed object or array)"}
	}
	return &ParseError{Doc: doc, Line: lineAt(data, docStart), Msg: err.Error()}
}

func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// encodeJSON writes root in the layout of the original: indented like it
// when it spans lines, compact otherwise.
func encodeJSON(w *bytes.Buffer, root *yaml.Node, original []byte) error {
	var compact bytes.Buffer
	if err := nodeToJSON(&compact, root); err != nil {
		return err
	}
	if !bytes.Contains(original, []byte("\n")) {
		w.Write(compact.Bytes())
		return nil
	}
	return json.Indent(w, compact.Bytes(), "", jsonIndent(original))
}

func jsonIndent(original []byte) string {
	i := bytes.IndexByte(original, '\n')
	rest := original[i+1:]
	t := bytes.TrimLeft(rest, " \t")
	if n := len(rest) - len(t); n > 0 {
		return string(rest[:n])
	}
	return "  "
}
