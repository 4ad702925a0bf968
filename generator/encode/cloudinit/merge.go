package cloudinit

// A user's own #cloud-config, merged into every node's user-data: kubestrap
// does the merge itself, so the result is one plain document that can be
// validated and reviewed, rather than leaving it to cloud-init's merge_how
// rules at boot.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

// ErrUserConfig is what every error about a user's cloud-config matches
// (errors.Is): an input error, never a kubestrap bug.
var ErrUserConfig = errors.New("invalid user cloud-config")

// MaxUserConfigSize bounds a user's cloud-config, which is copied into every
// node's user-data: anything larger is a mistake, not a config.
const MaxUserConfigSize = 1 << 20

// UserConfigError is one problem with a user's cloud-config, at a line of
// it (Line 0 when it is about the whole document).
type UserConfigError struct {
	Name string
	Line int
	Msg  string
}

func (e *UserConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Name, e.Line, e.Msg)
	}
	return e.Name + ": " + e.Msg
}

// Is makes every UserConfigError match ErrUserConfig.
func (e *UserConfigError) Is(target error) bool { return target == ErrUserConfig }

// listKey reports whether the user's entries for top-level key k are
// appended to kubestrap's (after them, so kubestrap's files are in place and
// its units started before the user's commands run), rather than replacing
// kubestrap's value as every other key's does.
func listKey(k string) bool {
	switch k {
	case "write_files", "runcmd", "packages", "ssh_authorized_keys", "bootcmd":
		return true
	}
	return false
}

// UserConfig is a user's #cloud-config, parsed and checked once per run, to
// merge into each node's user-data with MergeUserData. It is read-only
// after ParseUserConfig, so one UserConfig may be merged concurrently.
type UserConfig struct {
	name  string
	keys  []userKey
	index map[string]int // key -> index in keys
	files []userFile
	// slowOnly is set when a rendered key would end the document (see
	// render), which only the yaml.v3 path handles.
	slowOnly bool
}

type userKey struct {
	key   string
	key0  *yaml.Node // the key node
	value *yaml.Node // comments stripped, sequences of list keys in block style
	// full is the key and its value as yaml.v3 writes them at the top of
	// a document; items, for list keys, the entries alone (the lines
	// after "key:"), empty when there are none.
	full, items []byte
}

// userFile is a write_files entry of the user's.
type userFile struct {
	line  int
	index int
	path  string // cleaned
}

// Name is the name the UserConfig's messages use.
func (u *UserConfig) Name() string { return u.name }

// spellNulls writes out the nulls n leaves implicit ("k:" with nothing
// after it): yaml.v3 encodes such a node as ” inside a flow collection,
// which would turn the user's null into an empty string.
// Keys are left alone: a key is a plain scalar (checkNodes), which yaml.v3
// writes back as it was.
//
// It also quotes the block scalars yaml.v3 does not write back as they
// were: one with nothing but line breaks ("|+" and an empty line) comes
// back empty. Only a block whose lines are plain text, ending in exactly
// one line break, stays a block.
func spellNulls(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Value == "" && n.ShortTag() == "!!null" && n.Style&yaml.TaggedStyle == 0 {
		n.Value = "null"
	}
	if n.Kind == yaml.ScalarNode && n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 && !plainBlock(n.Value) {
		n.Style = n.Style&^(yaml.LiteralStyle|yaml.FoldedStyle) | yaml.DoubleQuotedStyle
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			continue
		}
		spellNulls(c)
	}
}

// plainBlock reports whether v is text yaml.v3 writes as a block scalar and
// reads back the same: lines that start and end with a visible character
// (none empty), without tabs or carriage returns, and one final line break.
func plainBlock(v string) bool {
	body, ok := strings.CutSuffix(v, "\n")
	if !ok || body == "" || strings.ContainsAny(body, "\t\r") {
		return false
	}
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || line[0] == ' ' || line[len(line)-1] == ' ' {
			return false
		}
	}
	return true
}

// ParseUserConfig reads the user's cloud-config src, named name in
// messages. It must begin with the #cloud-config line and be one YAML
// mapping, of at most MaxUserConfigSize bytes, valid UTF-8 without control
// characters other than tab, newline and carriage return (nor the line and
// paragraph separators and byte order mark, which YAML 1.1 readers such as
// cloud-init's treat differently from yaml.v3). It refuses what could make
// cloud-init read it otherwise than the checks here do: anchors and aliases
// (which also bounds its size once expanded), merge keys (<<), repeated
// keys, keys that are not scalars, and explicit tags other than YAML's own
// scalar and collection ones. merge_how and merge_type are refused: kubestrap
// merges the document itself, and there is nothing left for them to act on.
// The list keys (write_files, runcmd, packages, ssh_authorized_keys,
// bootcmd) must be lists (one with no value counts as an empty list), and
// every write_files entry needs an absolute path. Errors match ErrUserConfig and are "name:LINE: what".
func ParseUserConfig(name string, src []byte) (*UserConfig, error) {
	fail := func(line int, format string, args ...any) error {
		return &UserConfigError{Name: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if len(src) > MaxUserConfigSize {
		return nil, fail(0, "%d bytes, more than the %d a cloud-config may have", len(src), MaxUserConfigSize)
	}
	first, _, _ := bytes.Cut(src, []byte("\n"))
	if string(bytes.TrimRight(first, " \t\r")) != strings.TrimSpace(Header) {
		return nil, fail(1, "the first line must be %s", strings.TrimSpace(Header))
	}
	if line, r, ok := badRune(src); !ok {
		if r == utf8.RuneError {
			return nil, fail(line, "not valid UTF-8")
		}
		return nil, fail(line, "control character %U", r)
	}

	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case err == io.EOF:
		// Only the header and comments: nothing to merge.
		return &UserConfig{name: name, index: map[string]int{}}, nil
	case err != nil:
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		line := extra.Line
		if err != nil {
			return nil, yamlError(name, err)
		}
		return nil, fail(line, "a second YAML document; a cloud-config is one")
	}
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null" && doc.Content[0].Style&yaml.TaggedStyle == 0 {
		// An empty document ("---" alone, or "~").
		return &UserConfig{name: name, index: map[string]int{}}, nil
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fail(doc.Line, "the cloud-config is not a YAML mapping of keys to values")
	}
	root := doc.Content[0]
	if err := checkNodes(name, root, 0); err != nil {
		return nil, err
	}
	spellNulls(root)

	u := &UserConfig{name: name, index: map[string]int{}}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "merge_how", "merge_type":
			return nil, fail(k.Line, "%s: kubestrap merges the cloud-config into its own itself; remove %s", k.Value, k.Value)
		}
		if listKey(k.Value) {
			switch {
			case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
				// "runcmd:" with nothing after it adds nothing.
				v = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: v.Line, Column: v.Column}
			case v.Kind != yaml.SequenceNode:
				return nil, fail(v.Line, "%s must be a list", k.Value)
			}
		}
		if k.Value == "write_files" {
			files, err := writeFiles(name, v)
			if err != nil {
				return nil, err
			}
			u.files = files
		}
		stripComments(k)
		stripComments(v)
		uk := userKey{key: k.Value, key0: k, value: v}
		if listKey(k.Value) {
			// The entries are appended to kubestrap's block list, so
			// they are written as a block list too.
			v.Style &^= yaml.FlowStyle
		}
		full, openEnded, err := renderPair(k, v)
		if err != nil {
			return nil, fail(k.Line, "%s: %v", k.Value, err)
		}
		u.slowOnly = u.slowOnly || openEnded
		uk.full = full
		if listKey(k.Value) && len(v.Content) > 0 {
			// "key:\n" then the entries, indented under it.
			_, uk.items, _ = bytes.Cut(full, []byte("\n"))
		}
		u.index[k.Value] = len(u.keys)
		u.keys = append(u.keys, uk)
	}
	return u, nil
}

// badRune returns the line of the first rune of src that is not valid
// UTF-8 or is a control character other than tab, LF and CR; DEL, the C1
// controls (NEL among them, a line break to YAML 1.1), U+2028, U+2029 and
// U+FEFF count as control characters. ok is true if there is none.
func badRune(src []byte) (line int, r rune, ok bool) {
	line = 1
	for i := 0; i < len(src); {
		r, size := utf8.DecodeRune(src[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return line, r, false
		case r == '\n':
			line++
		case r == '\t' || r == '\r':
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfeff:
			return line, r, false
		}
		i += size
	}
	return 0, 0, true
}

// yamlLine matches the position yaml.v3 puts in its error messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlError rewrites a yaml.v3 error as "name:LINE: what".
func yamlError(name string, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &UserConfigError{Name: name, Line: line, Msg: msg[len(m[0]):]}
	}
	return &UserConfigError{Name: name, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// maxDepth bounds nesting; cloud-config is a handful of levels deep, and
// yaml.v3's own bound (10000) is far beyond what a recursive walk should
// trust.
const maxDepth = 100

// checkNodes refuses, anywhere under n, what yaml.v3 and cloud-init's YAML
// 1.1 loader could read differently, or what would let the document grow
// when loaded: see ParseUserConfig.
func checkNodes(name string, n *yaml.Node, depth int) error {
	fail := func(n *yaml.Node, format string, args ...any) error {
		return &UserConfigError{Name: name, Line: n.Line, Msg: fmt.Sprintf(format, args...)}
	}
	if depth > maxDepth {
		return fail(n, "nested more than %d levels deep", maxDepth)
	}
	if n.Kind == yaml.AliasNode {
		return fail(n, "YAML alias *%s: anchors and aliases are not supported", n.Value)
	}
	if n.Anchor != "" {
		return fail(n, "YAML anchor &%s: anchors and aliases are not supported", n.Anchor)
	}
	if n.Style&yaml.TaggedStyle != 0 {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float", "!!bool", "!!null", "!!binary", "!!seq", "!!map":
		default:
			return fail(n, "YAML tag %s is not supported", n.Tag)
		}
		// A tagged scalar must be what its tag says (!!binary 0 is not
		// base64): the merge decodes it, and so does cloud-init.
		if n.Kind == yaml.ScalarNode {
			var v any
			if err := n.Decode(&v); err != nil {
				return fail(n, "%s %q: %v", n.ShortTag(), n.Value, strings.TrimPrefix(err.Error(), "yaml: "))
			}
		}
	}
	if n.Kind == yaml.MappingNode {
		seen := make(map[string]int, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			switch {
			case k.Kind != yaml.ScalarNode:
				return fail(k, "a key that is not a plain value")
			case k.ShortTag() == "!!merge":
				return fail(k, "YAML merge keys (<<) are not supported")
			}
			if prev, ok := seen[k.Value]; ok {
				return fail(k, "%s repeats the key of line %d", k.Value, prev)
			}
			seen[k.Value] = k.Line
		}
	}
	for _, c := range n.Content {
		if err := checkNodes(name, c, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// writeFiles checks the user's write_files entries and returns their paths.
func writeFiles(name string, list *yaml.Node) ([]userFile, error) {
	var files []userFile
	for i, e := range list.Content {
		fail := func(line int, format string, args ...any) error {
			return &UserConfigError{Name: name, Line: line, Msg: fmt.Sprintf("write_files[%d]", i) + fmt.Sprintf(format, args...)}
		}
		if e.Kind != yaml.MappingNode {
			return nil, fail(e.Line, ": an entry must be a mapping with a path")
		}
		var p *yaml.Node
		for j := 0; j+1 < len(e.Content); j += 2 {
			if e.Content[j].Value == "path" {
				p = e.Content[j+1]
			}
		}
		switch {
		case p == nil:
			return nil, fail(e.Line, ": no path")
		case p.Kind != yaml.ScalarNode || p.ShortTag() != "!!str":
			return nil, fail(p.Line, ".path: must be a string")
		case !path.IsAbs(p.Value):
			// cloud-init would write it under its working directory.
			return nil, fail(p.Line, ".path: %q is not absolute", p.Value)
		}
		files = append(files, userFile{line: p.Line, index: i, path: path.Clean(p.Value)})
	}
	return files, nil
}

func stripComments(n *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		stripComments(c)
	}
}

// renderPair writes key k and its value v as yaml.v3 writes them in a
// document's top-level mapping, indented as UserData indents. openEnded
// reports a document end marker ("...") after them, which yaml.v3 writes
// after some block scalars at the end of a document; such a rendering cannot
// be spliced into the middle of one.
func renderPair(k, v *yaml.Node) (out []byte, openEnded bool, err error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{k, v}}); err != nil {
		return nil, false, err
	}
	if err := enc.Close(); err != nil {
		return nil, false, err
	}
	out = buf.Bytes()
	return out, bytes.HasSuffix(out, []byte("\n...\n")) || bytes.HasPrefix(out, []byte("...\n")), nil
}

// OwnedPaths returns the paths kubestrap's user-data for a writes, in the
// form Owned takes: its directories, files and links, and its units' files,
// taken after UserData's own lowering of a (the fetch script, install units
// and fetched files), so what the encoder adds by itself is covered too.
// Nodes of one cluster normally have the same paths, so a caller may check a
// UserConfig once per run.
func OwnedPaths(a render.Assets) ([]string, error) {
	var paths []string
	// The fetched files are written by the install units lowering makes,
	// so they are not among its output's Files.
	for _, f := range a.Fetches {
		paths = append(paths, f.Path)
		if f.Link != "" {
			paths = append(paths, f.Link)
		}
	}
	a, err := lower(a)
	if err != nil {
		return nil, err
	}
	for _, d := range a.Dirs {
		paths = append(paths, d.Path)
	}
	for _, f := range a.Files {
		paths = append(paths, f.Path)
	}
	for _, u := range a.Units {
		paths = append(paths, layout.UnitPath(u.Name))
	}
	return paths, nil
}

// Owned refuses write_files entries that would replace what kubestrap
// writes: one at any of paths or render.HostnamePath (layout.Claims), or at a
// directory that holds one of them. Drop-ins for kubestrap's units
// (/etc/systemd/system/kubelet.service.d/...) are not among the paths, and
// are allowed. The error lists every such entry, each as "name:LINE:
// write_files[3].path: /etc/kubernetes/kubelet.config.json is written by
// kubestrap", and matches ErrUserConfig.
func (u *UserConfig) Owned(paths []string) error {
	if len(u.files) == 0 {
		return nil
	}
	claims := layout.NewClaims(paths...)
	var errs []error
	for _, f := range u.files {
		at := fmt.Sprintf("write_files[%d].path: %s", f.index, f.path)
		if claims.Claimed(f.path) {
			errs = append(errs, &UserConfigError{Name: u.name, Line: f.line, Msg: at + " is written by kubestrap"})
		} else if under, ok := claims.Holds(f.path); ok {
			errs = append(errs, &UserConfigError{Name: u.name, Line: f.line, Msg: at + " would replace the directory kubestrap writes " + under + " in"})
		}
	}
	return errors.Join(errs...)
}

// MergeUserData merges u into base, kubestrap's user-data for one node (a
// document UserData wrote): kubestrap's keys stay first, in their order,
// then come u's other keys in u's order. For the list keys (write_files,
// runcmd, packages, ssh_authorized_keys, bootcmd) u's entries are appended
// after kubestrap's, so a user's runcmd runs after kubestrap's `systemctl
// enable --now`; for every other key u's value replaces kubestrap's. u's
// comments are dropped. The result starts with the #cloud-config line and
// depends only on base and u. Callers check u with Owned first;
// MergeUserData does not. A node's meta-data must be made from the merged
// user-data, whose hash its instance-id carries.
//
// Documents in the shape UserData writes (every line at the left margin a
// key, the lists of the keys u adds to written as block lists) are spliced
// together as text, which is what yaml.v3 would write for the merged
// document; anything else is merged through yaml.v3 (mergeYAML).
func MergeUserData(base []byte, u *UserConfig) ([]byte, error) {
	if !bytes.HasPrefix(base, []byte(Header)) {
		return nil, fmt.Errorf("merging %s: the user-data given is not a %s document", u.name, strings.TrimSpace(Header))
	}
	if len(u.keys) == 0 {
		return base, nil
	}
	if out, ok := spliceUserData(base, u); ok {
		return out, nil
	}
	return mergeYAML(base, u)
}

// section is one top-level key of a document and its value, as text.
type section struct {
	key  string
	text []byte // from the key to the next key, newline included
	// block is set if text is "key:\n" followed by a block list
	// indented by two spaces.
	block bool
}

// spliceUserData is MergeUserData by text, for a base whose sections
// splitSections can find; false if it cannot, or if u must be merged with
// yaml.v3.
func spliceUserData(base []byte, u *UserConfig) ([]byte, bool) {
	if u.slowOnly {
		return nil, false
	}
	var buf [8]section
	sections, ok := splitSections(base[len(Header):], buf[:0])
	if !ok {
		return nil, false
	}
	size := len(base)
	for _, k := range u.keys {
		size += len(k.full)
	}
	out := make([]byte, 0, size)
	out = append(out, Header...)
	inBase := 0
	for _, s := range sections {
		i, ok := u.index[s.key]
		switch {
		case !ok:
			out = append(out, s.text...)
		case listKey(s.key):
			if len(u.keys[i].items) > 0 && !s.block {
				return nil, false
			}
			out = append(out, s.text...)
			out = append(out, u.keys[i].items...)
			inBase++
		default:
			out = append(out, u.keys[i].full...)
			inBase++
		}
	}
	if inBase < len(u.keys) {
		for _, k := range u.keys {
			if !hasSection(sections, k.key) {
				out = append(out, k.full...)
			}
		}
	}
	return out, true
}

func hasSection(sections []section, key string) bool {
	for _, s := range sections {
		if s.key == key {
			return true
		}
	}
	return false
}

// splitSections splits body, a document's text after its header, into its
// top-level keys, appending them to dst. It reports false unless every line
// at the left margin is a plain key ("write_files:" or "name: value", the
// key made of letters, digits and "_-"), each key appears once, and every
// other line is empty or indented: then those lines are exactly the
// document's top-level keys, since yaml.v3 indents everything nested in
// them, continuation lines of multi-line scalars included.
func splitSections(body []byte, dst []section) ([]section, bool) {
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return nil, false
	}
	for len(body) > 0 {
		line, _, _ := bytes.Cut(body, []byte("\n"))
		key, ok := plainKey(line)
		if !ok {
			return nil, false
		}
		for _, s := range dst {
			if s.key == key {
				return nil, false
			}
		}
		// The section runs to the next line at the left margin.
		end := len(line) + 1
		for end < len(body) && (body[end] == ' ' || body[end] == '\n') {
			next := bytes.IndexByte(body[end:], '\n')
			end += next + 1
		}
		text := body[:end]
		block := len(line) == len(key)+1 && bytes.HasPrefix(text[len(line)+1:], []byte("  - "))
		dst = append(dst, section{key: key, text: text, block: block})
		body = body[end:]
	}
	return dst, true
}

// plainKey returns the key of line if it is "key:" or "key: value" with a
// key of ASCII letters, digits, '_' and '-' starting with a letter: a key
// yaml.v3 writes unquoted and reads back as itself.
func plainKey(line []byte) (string, bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || (colon+1 < len(line) && line[colon+1] != ' ') {
		return "", false
	}
	for i, c := range line[:colon] {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '_' || c == '-'):
		default:
			return "", false
		}
	}
	return string(line[:colon]), true
}

// mergeYAML is MergeUserData through yaml.v3: base is parsed, merged with u
// as nodes and written again. It handles any base that is one YAML mapping,
// at many times the cost of spliceUserData, and is the reference that one is
// tested against.
func mergeYAML(base []byte, u *UserConfig) ([]byte, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("merging %s into kubestrap's user-data: %s", u.name, fmt.Sprintf(format, args...))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(base, &doc); err != nil {
		return nil, fail("%v", err)
	}
	// The #cloud-config line is a comment to yaml.v3, which would write
	// it again; kubestrap's documents have no others.
	stripComments(&doc)
	var pairs []*yaml.Node
	if len(doc.Content) == 1 {
		root := doc.Content[0]
		switch {
		case root.Kind == yaml.MappingNode:
			pairs = root.Content
		case root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null":
		default:
			return nil, fail("kubestrap's user-data is not a mapping")
		}
	}
	merged := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	seen := map[string]bool{}
	for i := 0; i+1 < len(pairs); i += 2 {
		k, v := pairs[i], pairs[i+1]
		if seen[k.Value] {
			return nil, fail("kubestrap's user-data has %s twice", k.Value)
		}
		seen[k.Value] = true
		j, ok := u.index[k.Value]
		switch {
		case !ok:
		case listKey(k.Value):
			if len(u.keys[j].value.Content) == 0 {
				break
			}
			if v.Kind != yaml.SequenceNode {
				return nil, fail("kubestrap's %s is not a list", k.Value)
			}
			list := *v
			list.Style &^= yaml.FlowStyle
			list.Content = append(append([]*yaml.Node(nil), v.Content...), u.keys[j].value.Content...)
			v = &list
		default:
			k, v = u.keys[j].key0, u.keys[j].value
		}
		merged.Content = append(merged.Content, k, v)
	}
	for _, uk := range u.keys {
		if !seen[uk.key] {
			merged.Content = append(merged.Content, uk.key0, uk.value)
		}
	}

	var buf bytes.Buffer
	buf.WriteString(Header)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(merged); err != nil {
		return nil, fail("%v", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fail("%v", err)
	}
	return buf.Bytes(), nil
}
