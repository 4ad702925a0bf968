package model

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
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
	data, err := os.ReadFile(file)
	if err != nil {
		r.addAt(flagPos(flagClusterFile), "", "%v", err)
		return nil
	}
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
		r.probs = append(r.probs, yamlSyntaxProblem(file, err))
		return yamlBroken
	}
	if len(doc.Content) == 0 {
		return yamlEmpty
	}
	w := &yamlWalker{file: file, r: r, lines: map[int]string{}, flagged: map[int]bool{}}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		w.probs = append(w.probs, yamlSyntaxProblem(file, err))
	default:
		w.problem(extra.Line, "", "only one YAML document is allowed; this one starts a second")
	}

	content := doc.Content[0]
	w.walk(content, reflect.TypeOf(out).Elem(), root)
	if r.bad[root] || (root == "" && w.rootBad) {
		r.probs = append(r.probs, w.probs...)
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
			w.probs = append(w.probs, Problem{Pos: Pos{File: file, Line: line}, Path: path, Msg: text})
		}
	} else if err != nil {
		w.probs = append(w.probs, Problem{Pos: Pos{File: file}, Msg: err.Error()})
	}
	// The walker and the decoder each go in document order; merge them.
	slices.SortStableFunc(w.probs, func(a, b Problem) int { return a.Pos.Line - b.Pos.Line })
	r.probs = append(r.probs, w.probs...)
	return yamlOK
}

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
	file  string
	r     *report
	probs []Problem
	// lines maps a line to the deepest path whose value starts on it, to put
	// a path on the decoder's "line N: cannot unmarshal" errors.
	lines map[int]string
	// flagged lines already have a problem that the decoder would repeat.
	flagged map[int]bool
	rootBad bool
}

func (w *yamlWalker) problem(line int, path, format string, args ...any) {
	w.probs = append(w.probs, Problem{Pos: Pos{File: w.file, Line: line}, Path: path, Msg: fmt.Sprintf(format, args...)})
	w.flagged[line] = true
}

func (w *yamlWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	n = resolveAlias(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	w.lines[n.Line] = path
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if want, ok := kindFits(n, t); !ok {
		w.problem(n.Line, path, "want %s, got %s", want, describeNode(n))
		if path == "" {
			w.rootBad = true
		} else {
			w.r.bad[path] = true
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		w.mapping(n, path, func(key string) (reflect.Type, bool) {
			ft, ok := fields[key]
			return ft, ok
		})
	case reflect.Map:
		w.mapping(n, path, func(string) (reflect.Type, bool) { return t.Elem(), true })
	case reflect.Slice:
		for i, item := range n.Content {
			p := indexPath(path, i)
			w.r.pos[p] = Pos{File: w.file, Line: item.Line}
			w.walk(item, t.Elem(), p)
		}
	}
}

func (w *yamlWalker) mapping(n *yaml.Node, path string, field func(string) (reflect.Type, bool)) {
	seen := map[string]int{}
	// kept drops the repeats of duplicate keys: yaml.v3 refuses to decode a
	// mapping with one at all, which would hide every other problem in it.
	kept := n.Content[:0:0]
	defer func() { n.Content = kept }()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode {
			if first, dup := seen[k.Value]; dup {
				w.problem(k.Line, childPath(path, k.Value), "duplicate key (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
		}
		kept = append(kept, k, v)
		if k.Tag == "!!merge" {
			// "<<: *defaults" brings another mapping's keys in at this path.
			w.merge(v, path, field)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.problem(k.Line, path, "want a plain key, got %s", describeNode(k))
			continue
		}
		p := childPath(path, k.Value)
		t, known := field(k.Value)
		if !known {
			w.problem(k.Line, p, "unknown field")
			continue
		}
		w.r.pos[p] = Pos{File: w.file, Line: k.Line}
		w.walk(v, t, p)
	}
}

func (w *yamlWalker) merge(v *yaml.Node, path string, field func(string) (reflect.Type, bool)) {
	v = resolveAlias(v)
	switch v.Kind {
	case yaml.MappingNode:
		w.mapping(v, path, field)
	case yaml.SequenceNode:
		for _, item := range v.Content {
			w.merge(item, path, field)
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

// yamlFields collects the keys a struct accepts, following yaml.v3's rules:
// the tag's name or the lowercased field name, "-" skipped, ",inline" structs
// flattened into their parent.
func yamlFields(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				yamlFields(ft, into)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		into[name] = f.Type
	}
}

// kindFits checks only the node's shape; whether a scalar parses as the
// field's type is the decoder's business.
func kindFits(n *yaml.Node, t reflect.Type) (want string, ok bool) {
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
		return strconv.Quote(n.Value)
	}
}
