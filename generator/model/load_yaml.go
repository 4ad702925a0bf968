package model

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// loadClusterFile reads cluster.yaml. It returns nil when the file cannot be
// decoded at all; problems with individual values are left to validate.
func loadClusterFile(file string, r *report) *Cluster {
	data, err := readInput(file, maxFileSize)
	if err != nil {
		r.addAt(flagPos(flagClusterFile), "", "%v", err)
		return nil
	}
	r.read(file)
	r.pos[""] = Pos{File: file}
	var c Cluster
	switch decodeYAML(file, data, "", &c, r) {
	case yamlEmpty:
		// Line 1 so that editors and CI annotations have somewhere to point.
		r.addAt(Pos{File: file, Line: 1}, "", "file is empty: want a %s %s document", APIVersion, Kind)
		return nil
	case yamlBroken:
		return nil
	}
	// The file names the CA relative to itself, so that a cluster directory
	// can be moved or checked out anywhere.
	if c.CAFile != "" && !filepath.IsAbs(c.CAFile) {
		c.CAFile = filepath.Join(filepath.Dir(file), c.CAFile)
	}
	for i, f := range c.Extras.Butane {
		if f != "" && !filepath.IsAbs(f) {
			c.Extras.Butane[i] = filepath.Join(filepath.Dir(file), f)
		}
	}
	if f := c.Extras.CloudConfig; f != "" && !filepath.IsAbs(f) {
		c.Extras.CloudConfig = filepath.Join(filepath.Dir(file), f)
	}
	return &c
}

type yamlResult int

const (
	yamlOK     yamlResult = iota
	yamlEmpty             // no document at all (empty, or only comments)
	yamlBroken            // syntax error, or a root of the wrong kind
)

// decodeYAML decodes the single YAML document in data into out, strictly:
// unknown and duplicate keys and values of the wrong kind are problems, located
// by line. It records the line of every path under root in r.pos, and marks
// paths whose value could not be decoded in r.bad.
func decodeYAML(file string, data []byte, root string, out any, r *report) yamlResult {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return yamlEmpty
	} else if err != nil {
		r.add(yamlSyntaxProblem(file, err))
		return yamlBroken
	}
	if len(doc.Content) == 0 {
		return yamlEmpty
	}
	w := &yamlWalker{
		file: file, r: r, lines: map[int]string{}, flagged: map[int]bool{}, seen: map[Problem]bool{},
		limit: walkBudget(len(data)),
	}
	w.budget = w.limit
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		r.add(yamlSyntaxProblem(file, err))
	default:
		w.problem(extra.Line, "", "only one YAML document is allowed; this one starts a second")
	}

	content := doc.Content[0]
	w.walk(content, reflect.TypeOf(out).Elem(), root)
	if w.over || r.bad[root] || (root == "" && w.rootBad) {
		// yaml.v3 would expand the same aliases again, or fail on the root.
		return yamlBroken
	}

	var terr *yaml.TypeError
	if err := content.Decode(out); errors.As(err, &terr) {
		for _, msg := range terr.Errors {
			line, text := splitYAMLLine(msg)
			if w.flagged[line] {
				// The walker already said it, in terms of the input.
				continue
			}
			path := w.lines[line]
			r.bad[path] = true
			r.add(Problem{Pos: Pos{File: file, Line: line}, Path: path, Msg: text})
		}
	} else if err != nil {
		r.add(Problem{Pos: Pos{File: file}, Msg: err.Error()})
	}
	return yamlOK
}

// walkBudget is how many nodes the walker visits in a document of size bytes
// before it stops. Without aliases a document has fewer nodes than bytes;
// aliases and merge keys ("<<: *defaults") legitimately reuse a few blocks,
// but chained ones double at each link, so a 1 KB file could otherwise expand
// to millions of nodes, each one checked and each unknown key reported.
func walkBudget(size int) int { return 10_000 + 2*size }

// splitYAMLLine splits yaml.v3's "yaml: line 6: ..." and "line 6: ..." into
// the line and the rest.
func splitYAMLLine(msg string) (int, string) {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return n, text
			}
		}
	}
	return 0, msg
}

func yamlSyntaxProblem(file string, err error) Problem {
	line, text := splitYAMLLine(err.Error())
	if isYAMLParserProblem(text) {
		// yaml.v3 (v3.0.1, its last release) numbers lines from 0 for
		// parser errors but from 1 for scanner errors; the parser's line
		// is where the construct it could not finish began.
		line++
	}
	return Problem{Pos: Pos{File: file, Line: line}, Msg: text}
}

// isYAMLParserProblem recognises the messages of yaml.v3's parser (parserc.go),
// as opposed to its scanner's.
func isYAMLParserProblem(msg string) bool {
	switch msg {
	case "did not find expected ',' or ']'",
		"did not find expected ',' or '}'",
		"did not find expected '-' indicator",
		"did not find expected <document start>",
		"did not find expected <stream-start>",
		"did not find expected key",
		"did not find expected node content",
		"found duplicate %TAG directive",
		"found duplicate %YAML directive",
		"found incompatible YAML document",
		"found undefined tag handle":
		return true
	}
	return false
}

// yamlWalker checks a yaml.Node tree against a Go type through its yaml tags.
// yaml.v3's KnownFields does not apply to Node.Decode and reports no paths, so
// strictness is done here, where both the path and the line are known.
type yamlWalker struct {
	file string
	r    *report
	// lines maps a line to the deepest path whose value starts on it, to put
	// a path on the decoder's "line N: cannot unmarshal" errors.
	lines map[int]string
	// flagged lines already have a problem that the decoder would repeat.
	flagged map[int]bool
	// aliased counts the aliases the walk is inside. Each use of an alias
	// brings the same values, positions and problems back: positions are
	// recorded for the alias's own path only, and problems once (seen).
	aliased int
	seen    map[Problem]bool
	rootBad bool
	// budget counts down the visits left of limit; over stops the walk.
	budget, limit int
	over          bool
}

func (w *yamlWalker) problem(line int, path, format string, args ...any) {
	p := Problem{Pos: Pos{File: w.file, Line: line}, Path: path, Msg: fmt.Sprintf(format, args...)}
	w.flagged[line] = true
	if w.aliased > 0 {
		if w.seen[p] || len(w.seen) >= maxAliasProblems {
			return
		}
		w.seen[p] = true
	}
	w.r.add(p)
}

// maxAliasProblems caps the problems recorded inside aliases, where each new
// use of an alias repeats the problems of the last at another path.
const maxAliasProblems = 10_000

// enter and leave track whether the walk is inside an alias.
func (w *yamlWalker) enter(n *yaml.Node) {
	if n.Kind == yaml.AliasNode {
		w.aliased++
	}
}

func (w *yamlWalker) leave(n *yaml.Node) {
	if n.Kind == yaml.AliasNode {
		w.aliased--
	}
}

// record notes where path's value is, outside aliases: inside one, the
// alias's own position serves, and recording each use would cost memory in
// proportion to the expansion rather than to the input.
func (w *yamlWalker) record(path string, line int) {
	if w.aliased == 0 {
		w.r.pos[path] = Pos{File: w.file, Line: line}
	}
}

// visit spends n's share of the budget and reports whether the walk goes on.
// A long scalar costs more than a short one, since whatever reads the decoded
// value pays for its length at every place an alias puts it.
func (w *yamlWalker) visit(n *yaml.Node) bool {
	if w.over {
		return false
	}
	w.budget -= 1 + len(n.Value)/32
	if w.budget < 0 {
		w.over = true
		// No line: the place where the budget ran out is arbitrary, and the
		// problem must sort before the ones the expansion produced.
		w.r.add(Problem{Pos: Pos{File: w.file}, Msg: fmt.Sprintf(
			"the document expands to more than %d nodes through aliases and merge keys; write the repeated parts out, or reuse them less", w.limit)})
		return false
	}
	return true
}

// anyType is the type of kubelet.config's values: trees of mappings, lists and scalars.
var anyType = reflect.TypeFor[any]()

func (w *yamlWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	w.enter(n)
	defer w.leave(n)
	n = resolveAlias(n)
	if !w.visit(n) {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if w.aliased == 0 {
		w.lines[n.Line] = path
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if want, ok := kindFits(n, t); !ok {
		w.problem(n.Line, path, "want %s, got %s", want, describeNode(n))
		w.markBad(path)
		if n.Kind == yaml.MappingNode {
			// The decoder compares its keys before it sees the kind.
			if pairs := len(n.Content) / 2; pairs > maxMappingKeys {
				n.Content = nil
			} else {
				w.budget -= pairs * pairs / 64
			}
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		w.mapping(n, path, false, func(key string) (reflect.Type, bool) {
			ft, ok := fields[key]
			return ft, ok
		})
	case reflect.Map:
		w.mapping(n, path, false, func(string) (reflect.Type, bool) { return t.Elem(), true })
	case reflect.Slice:
		w.sequence(n, t.Elem(), path)
	case reflect.Interface:
		// kubelet.config: record where each nested value is, so that its
		// problems (found later, by decoding it as a KubeletConfiguration)
		// have lines too.
		switch n.Kind {
		case yaml.MappingNode:
			w.mapping(n, path, true, func(string) (reflect.Type, bool) { return anyType, true })
		case yaml.SequenceNode:
			w.sequence(n, anyType, path)
		}
	}
}

var digestsType = reflect.TypeOf(Digests(nil))

func (w *yamlWalker) sequence(n *yaml.Node, elem reflect.Type, path string) {
	for i, item := range n.Content {
		if w.over {
			return
		}
		p := indexPath(path, i)
		if !w.followable(item.Line, path, p) {
			// Nor may the decoder.
			n.Content = n.Content[:i]
			return
		}
		w.record(p, item.Line)
		w.walk(item, elem, p)
	}
}

// mapping checks n's keys; stringKeys is for untyped trees, which become JSON:
// yaml.v3 would decode a mapping with a key like 1 or true into a
// map[any]any, which has no JSON form.
func (w *yamlWalker) mapping(n *yaml.Node, path string, stringKeys bool, field func(string) (reflect.Type, bool)) {
	pairs := len(n.Content) / 2
	if pairs > maxMappingKeys {
		w.problem(n.Line, path, "a mapping of %d keys: kubestrap takes at most %d in one", pairs, maxMappingKeys)
		w.markBad(path)
		n.Content = nil
		return
	}
	// yaml.v3 compares every pair of keys of each mapping it decodes, once
	// per alias that brings the mapping in.
	w.budget -= pairs * pairs / 64
	seen := map[string]int{}
	// kept holds what yaml.v3 will decode. It drops the repeats of duplicate
	// keys, since yaml.v3 refuses to decode a mapping with one at all, which
	// would hide every other problem in it; and the pairs refused here, which
	// the decoder would only refuse again, or spend time on.
	kept := n.Content[:0:0]
	defer func() { n.Content = kept }()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !w.visit(k) {
			// The document is not decoded (yamlBroken).
			return
		}
		if k.Kind == yaml.ScalarNode {
			if first, dup := seen[k.Value]; dup {
				w.problem(k.Line, childPath(path, k.Value), "duplicate key (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
		}
		if k.Tag == "!!merge" {
			// "<<: *defaults" brings another mapping's keys in at this path.
			kept = append(kept, k, v)
			w.merge(v, path, stringKeys, field)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.problem(k.Line, path, "want a plain key, got %s", describeNode(k))
			w.markBad(path)
			continue
		}
		p := childPath(path, k.Value)
		if stringKeys && k.Tag != "!!str" {
			w.problem(k.Line, path, "want a string key, got %s (write %s to mean the string)", k.Value, quote(k.Value))
			w.markBad(path)
			continue
		}
		kept = append(kept, k, v)
		t, known := field(k.Value)
		if !known {
			w.problem(k.Line, p, "unknown field")
			continue
		}
		if !w.followable(k.Line, path, p) {
			kept = kept[:len(kept)-2]
			return
		}
		w.record(p, k.Line)
		w.walk(v, t, p)
	}
}

// maxMappingKeys caps the keys of one mapping. yaml.v3 compares every pair
// of them, so a mapping of a million keys (a few MB) would take hours; no
// Cluster needs more than a few hundred (KubeletConfiguration has some 120
// fields, Kubernetes some 250 feature gates).
const maxMappingKeys = 500

func (w *yamlWalker) markBad(path string) {
	if path == "" {
		w.rootBad = true
	} else {
		w.r.bad[path] = true
	}
}

// maxPathLen bounds the path of any value Load follows. Every value's path
// is recorded, and every later check builds it again, so nesting under a long
// key would cost that key's length once per value below it: a few MB of
// input could make gigabytes of paths. No setting needs more (the longest
// label key, 317 bytes, makes a path of some 350).
const maxPathLen = 512

// followable reports whether the walk may go on to child p of path, and
// marks path bad when it may not.
func (w *yamlWalker) followable(line int, path, p string) bool {
	if len(p) <= maxPathLen {
		return true
	}
	w.problem(line, printable(path, maxPathLen), "nested too deeply, or under too long a key: kubestrap follows no value whose path is longer than %d bytes", maxPathLen)
	w.markBad(path)
	return false
}

func (w *yamlWalker) merge(v *yaml.Node, path string, stringKeys bool, field func(string) (reflect.Type, bool)) {
	w.enter(v)
	defer w.leave(v)
	v = resolveAlias(v)
	if !w.visit(v) {
		return
	}
	switch v.Kind {
	case yaml.MappingNode:
		w.mapping(v, path, stringKeys, field)
	case yaml.SequenceNode:
		for _, item := range v.Content {
			w.merge(item, path, stringKeys, field)
		}
	}
}

// resolveAlias follows *alias references; yaml.v3 refuses alias cycles while
// parsing, so this terminates.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// yamlFields collects the keys a struct accepts, following yaml.v3's rules.
func yamlFields(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, inline, ok := yamlName(f)
		switch {
		case !ok:
		case inline:
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				yamlFields(ft, into)
			}
		default:
			into[name] = f.Type
		}
	}
}

// yamlName is a field's key under yaml.v3's rules: the tag's name or the
// lowercased field name; inline for ",inline" structs, whose fields are
// their parent's; ok is false for unexported fields and "-".
func yamlName(f reflect.StructField) (name string, inline, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return "", false, false
	}
	if slices.Contains(strings.Split(opts, ","), "inline") {
		return "", true, true
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false, true
}

// kindFits checks only the node's shape; whether a scalar parses as the
// field's type is the decoder's business.
func kindFits(n *yaml.Node, t reflect.Type) (want string, ok bool) {
	if t == digestsType {
		return "a hex digest or a mapping of arch to digest", n.Kind == yaml.ScalarNode || n.Kind == yaml.MappingNode
	}
	switch t.Kind() {
	case reflect.Interface:
		return "", true
	case reflect.Struct, reflect.Map:
		return "a mapping", n.Kind == yaml.MappingNode
	case reflect.Slice, reflect.Array:
		return "a list", n.Kind == yaml.SequenceNode
	case reflect.Bool:
		return "true or false", n.Kind == yaml.ScalarNode
	case reflect.String:
		return "a string", n.Kind == yaml.ScalarNode
	default:
		return "a number", n.Kind == yaml.ScalarNode
	}
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return quote(n.Value)
	}
}
