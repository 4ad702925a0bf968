package ignition

// Snippets are users' own Butane configs, merged into every node's Ignition
// config with Ignition's merge, as if each were a config the node's config
// merges (ignition.config.merge) in order: the same rules Ignition applies at
// boot, applied once at generation time so the result can be validated and
// reviewed.

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	cjson "github.com/clarketm/json"
	butane "github.com/coreos/butane/config"
	"github.com/coreos/ignition/v2/config/merge"
	ign33 "github.com/coreos/ignition/v2/config/v3_3"
	types33 "github.com/coreos/ignition/v2/config/v3_3/types"
	ign34 "github.com/coreos/ignition/v2/config/v3_4"
	types34 "github.com/coreos/ignition/v2/config/v3_4/types"
	ign35 "github.com/coreos/ignition/v2/config/v3_5"
	types35 "github.com/coreos/ignition/v2/config/v3_5/types"
	ign36 "github.com/coreos/ignition/v2/config/v3_6"
	types36 "github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/coreos/vcontext/report"
	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

// ErrSnippet means a user's snippet cannot be used: Butane or Ignition
// rejects it, it is for another variant or a newer spec than the output, or
// it would change what kubestrap writes. It is an input error, never a
// kubestrap bug.
var ErrSnippet = errors.New("invalid Ignition snippet")

// MaxSnippetSize bounds a snippet's source. Butane holds a few copies of its
// input (YAML tree, Go structs, JSON), and a snippet is merged into every
// node's config, so anything much larger is a mistake rather than a config.
const MaxSnippetSize = 1 << 20

// Snippet is a user's Butane config, translated once per run for the run's
// Options and ready to merge into each node's config with MergeInto. It is
// read-only after NewSnippet, so one Snippet may be merged into many nodes
// concurrently.
type Snippet struct {
	// Name identifies the snippet in messages (normally its file name).
	Name string

	variant, spec string
	// cfg is the snippet as the types.Config of spec's Ignition package,
	// translated up from the snippet's own spec if that is older.
	cfg any
	// writes are the snippet's storage entries and units, for Owned.
	writes []write
	units  []unitWrite
	// reported are the messages of the snippet's own report entries, so
	// MergeInto does not repeat them for every node.
	reported map[string]bool
}

// write is a storage entry of the snippet.
type write struct {
	at   string // "name:12:9: storage.files[2]"
	kind string // "file", "directory" or "link"
	path string // cleaned
}

// unitWrite is a systemd unit entry of the snippet.
type unitWrite struct {
	at      string
	name    string
	sets    []string // which of contents, enabled, mask it sets
	dropins []string
}

// snippetClaims is the part of a translated snippet Owned and NewSnippet
// look at. Butane's JSON carries these fields under the same names in every
// Ignition 3.x spec, so one struct reads them all.
type snippetClaims struct {
	Ignition struct {
		Version string `json:"version"`
		Config  struct {
			Replace json.RawMessage `json:"replace"`
		} `json:"config"`
	} `json:"ignition"`
	Storage struct {
		Files       []struct{ Path string } `json:"files"`
		Directories []struct{ Path string } `json:"directories"`
		Links       []struct{ Path string } `json:"links"`
	} `json:"storage"`
	Systemd struct {
		Units []struct {
			Name     string                  `json:"name"`
			Contents *string                 `json:"contents"`
			Enabled  *bool                   `json:"enabled"`
			Mask     *bool                   `json:"mask"`
			Dropins  []struct{ Name string } `json:"dropins"`
		} `json:"units"`
	} `json:"systemd"`
}

// NewSnippet translates a user's Butane source src, named name in messages,
// for the output o describes. It returns the warnings of Butane's report
// (one line each, "name:LINE:COL: warning: ..."), which `butane --strict`
// would fail on.
//
// The snippet must declare o's variant, and a Butane version whose Ignition
// spec is o's or older: older ones are translated up by Ignition's own
// parser, as Ignition on the node translates a merged config. It must not
// set ignition.config.replace, which would throw kubestrap's config away.
// Errors wrap ErrInvalidOptions for bad options and ErrSnippet for
// everything about src.
func NewSnippet(name string, src []byte, o Options) (s *Snippet, warnings []string, err error) {
	r, err := o.resolve()
	if err != nil {
		return nil, nil, err
	}
	if err := checkSnippetText(name, src); err != nil {
		return nil, nil, err
	}
	// Butane is not written for hostile input; a panic in it is that input's
	// fault, and must not take the whole run down.
	defer func() {
		if p := recover(); p != nil {
			s, warnings, err = nil, nil, fmt.Errorf("%w: %s: Butane failed on it: %v", ErrSnippet, name, p)
		}
	}()
	return newSnippet(name, src, r)
}

// checkSnippetText refuses what no Butane config has in it, before any
// parser sees it.
func checkSnippetText(name string, src []byte) error {
	if len(src) > MaxSnippetSize {
		return fmt.Errorf("%w: %s: %d bytes, more than the %d a snippet may have", ErrSnippet, name, len(src), MaxSnippetSize)
	}
	line, col := 1, 1
	for i := 0; i < len(src); {
		c, size := utf8.DecodeRune(src[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			return fmt.Errorf("%w: %s:%d:%d: not valid UTF-8", ErrSnippet, name, line, col)
		case c == '\n':
			line, col = line+1, 0
		case c < 0x20 && c != '\t' && c != '\r', c == 0x7f:
			return fmt.Errorf("%w: %s:%d:%d: control character %U", ErrSnippet, name, line, col, c)
		}
		i += size
		col++
	}
	return nil
}

func newSnippet(name string, src []byte, r resolved) (*Snippet, []string, error) {
	head, positions, err := readSnippetYAML(name, src)
	if err != nil {
		return nil, nil, err
	}
	if head.variant != r.variant {
		return nil, nil, fmt.Errorf("%w: %s%s: variant %q, but the output is %q: a snippet must use the output's Butane variant",
			ErrSnippet, name, head.variantAt, head.variant, r.variant)
	}

	ign, rpt, err := butane.TranslateBytes(src, translateOptions())
	if err != nil {
		var lines []string
		for _, e := range rpt.Entries {
			if e.Kind.IsFatal() {
				lines = append(lines, entryString(name, e))
			}
		}
		if len(lines) == 0 {
			// Errors before translation (unknown version, YAML that
			// does not decode into Butane's types) come without a
			// report.
			return nil, nil, fmt.Errorf("%w: %s: Butane: %w", ErrSnippet, name, err)
		}
		return nil, nil, fmt.Errorf("%w: %s: Butane rejected it (%w):\n%s", ErrSnippet, name, err, strings.Join(lines, "\n"))
	}
	s := &Snippet{Name: name, variant: r.variant, spec: r.ignition, reported: map[string]bool{}}
	var warnings []string
	for _, e := range rpt.Entries {
		s.reported[e.Message] = true
		warnings = append(warnings, entryString(name, e))
	}

	var claims snippetClaims
	if err := json.Unmarshal(ign, &claims); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: reading Butane's output: %w", ErrSnippet, name, err)
	}
	spec := claims.Ignition.Version
	if strings.Contains(spec, "-") {
		return nil, nil, fmt.Errorf("%w: %s%s: Butane %s %s is experimental (Ignition %s); experimental specs are not accepted",
			ErrSnippet, name, head.versionAt, head.variant, head.version, spec)
	}
	if newer, ok := specNewer(spec, r.ignition); !ok || newer {
		return nil, nil, fmt.Errorf("%w: %s%s: Butane %s %s translates to Ignition %s, newer than the output's %s (Butane %s %s): write the snippet for Butane %s or older",
			ErrSnippet, name, head.versionAt, head.variant, head.version, spec, r.ignition, r.variant, r.butane, r.butane)
	}
	if len(claims.Ignition.Config.Replace) > 0 && string(claims.Ignition.Config.Replace) != "null" {
		return nil, nil, fmt.Errorf("%w: %s%s: ignition.config.replace would replace kubestrap's whole config; use a snippet's own entries, or ignition.config.merge",
			ErrSnippet, name, positions.at(replaceKey))
	}

	ops, ok := specOpsFor(r.ignition)
	if !ok {
		return nil, nil, fmt.Errorf("no Ignition parser wired up for spec %s", r.ignition)
	}
	cfg, crpt, err := ops.compatible(ign)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: Ignition %s parser rejected Butane's output for it: %w\n%s",
			ErrSnippet, name, r.ignition, err, strings.TrimSpace(crpt.String()))
	}
	s.cfg = cfg

	for i, f := range claims.Storage.Files {
		s.writes = append(s.writes, write{at: positions.storage(name, "files", i, f.Path), kind: "file", path: path.Clean(f.Path)})
	}
	for i, d := range claims.Storage.Directories {
		s.writes = append(s.writes, write{at: positions.storage(name, "directories", i, d.Path), kind: "directory", path: path.Clean(d.Path)})
	}
	for i, l := range claims.Storage.Links {
		s.writes = append(s.writes, write{at: positions.storage(name, "links", i, l.Path), kind: "link", path: path.Clean(l.Path)})
	}
	for i, u := range claims.Systemd.Units {
		uw := unitWrite{at: fmt.Sprintf("%s%s: systemd.units[%d]", name, positions.at(u.Name), i), name: u.Name}
		if u.Contents != nil {
			uw.sets = append(uw.sets, "contents")
		}
		if u.Enabled != nil {
			uw.sets = append(uw.sets, "enabled")
		}
		if u.Mask != nil {
			uw.sets = append(uw.sets, "mask")
		}
		for _, d := range u.Dropins {
			uw.dropins = append(uw.dropins, d.Name)
		}
		s.units = append(s.units, uw)
	}
	return s, warnings, nil
}

// entryString formats a Butane report entry as "name:LINE:COL: kind: message
// (at $.json.path)", positions pointing into the snippet's source.
func entryString(name string, e report.Entry) string {
	at := name
	if p := e.Marker.StartP; p != nil {
		at = fmt.Sprintf("%s:%d:%d", name, p.Line, p.Column)
	}
	msg := fmt.Sprintf("%s: %s: %s", at, e.Kind, e.Message)
	if e.Context.Len() > 0 {
		msg += " (at " + e.Context.String() + ")"
	}
	return msg
}

// snippetHead is the snippet's variant and version, where they are written.
type snippetHead struct {
	variant, version     string
	variantAt, versionAt string // ":LINE:COL" or ""
}

// yamlPositions maps the scalar values of "path" and "name" keys (and a
// "replace" key) to where they first appear, so Owned can point at the line
// of an entry Butane's JSON only gives by index. Butane's sugar can add
// entries the source does not spell out; those get no position.
type yamlPositions map[string]string

func (p yamlPositions) at(value string) string { return p[value] }

// replaceKey is where yamlPositions keeps the position of a "replace" key:
// a NUL cannot be in a snippet, so no path or name collides with it.
const replaceKey = "\x00replace"

func (p yamlPositions) storage(name, list string, i int, raw string) string {
	return fmt.Sprintf("%s%s: storage.%s[%d]", name, p[raw], list, i)
}

// readSnippetYAML parses src with yaml.v3 (Butane's parser) into nodes, which
// does not expand aliases, for the header and positions; Butane then parses
// it again, bounded by yaml.v3's own alias limits.
func readSnippetYAML(name string, src []byte) (snippetHead, yamlPositions, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return snippetHead{}, nil, fmt.Errorf("%w: %s: %w", ErrSnippet, name, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return snippetHead{}, nil, fmt.Errorf("%w: %s: not a Butane config (a YAML mapping with variant and version)", ErrSnippet, name)
	}
	root := doc.Content[0]
	var head snippetHead
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			continue
		}
		switch k.Value {
		case "variant":
			head.variant, head.variantAt = v.Value, pos(v)
		case "version":
			head.version, head.versionAt = v.Value, pos(v)
		}
	}
	if head.variant == "" || head.version == "" {
		return snippetHead{}, nil, fmt.Errorf("%w: %s:%d:%d: a Butane config needs variant and version at the top", ErrSnippet, name, root.Line, root.Column)
	}
	positions := yamlPositions{}
	var walk func(n *yaml.Node, depth int)
	walk = func(n *yaml.Node, depth int) {
		// yaml.v3 refuses documents nested this deep anyway; the bound
		// keeps this walk from trusting it.
		if depth > 64 {
			return
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				switch {
				case k.Value == "replace":
					if _, ok := positions[replaceKey]; !ok {
						positions[replaceKey] = pos(k)
					}
				case (k.Value == "path" || k.Value == "name") && v.Kind == yaml.ScalarNode:
					if _, ok := positions[v.Value]; !ok {
						positions[v.Value] = pos(v)
					}
				}
			}
		}
		for _, c := range n.Content {
			walk(c, depth+1)
		}
	}
	walk(root, 0)
	return head, positions, nil
}

func pos(n *yaml.Node) string {
	return fmt.Sprintf(":%d:%d", n.Line, n.Column)
}

// specNewer reports whether Ignition spec a ("3.4.0") is newer than b; ok
// is false if either is not three numbers.
func specNewer(a, b string) (newer, ok bool) {
	pa, oka := specParts(a)
	pb, okb := specParts(b)
	if !oka || !okb {
		return false, false
	}
	return slices.Compare(pa, pb) > 0, true
}

func specParts(v string) ([]int, bool) {
	fields := strings.Split(v, ".")
	if len(fields) != 3 {
		return nil, false
	}
	parts := make([]int, 3)
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, false
		}
		parts[i] = n
	}
	return parts, true
}

// OwnedPaths returns what kubestrap's Ignition config ign (Encode's output
// for a node) writes, in the form Owned takes: the paths of its files,
// directories and links and of its units' drop-ins, and the names of its
// units, including those it only enables. Reading them from the config
// rather than the Assets takes in whatever the encoder adds on its own (a
// network file, a fetched binary's link). Nodes of one cluster normally
// have the same paths, so a caller may check each snippet once per run.
// Errors wrap ErrInvalidGenerated.
func OwnedPaths(ign []byte) (paths, units []string, err error) {
	var c snippetClaims
	if err := json.Unmarshal(ign, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: reading kubestrap's Ignition config: %w", ErrInvalidGenerated, err)
	}
	for _, list := range [][]struct{ Path string }{c.Storage.Directories, c.Storage.Files, c.Storage.Links} {
		for _, e := range list {
			paths = append(paths, e.Path)
		}
	}
	for _, u := range c.Systemd.Units {
		units = append(units, u.Name)
		for _, d := range u.Dropins {
			paths = append(paths, path.Join(render.UnitDir, u.Name+".d", d.Name))
		}
	}
	return paths, units, nil
}

// Owned refuses a snippet that would change what kubestrap writes, given
// the paths (files and directories) and unit names kubestrap writes, plus
// render.HostnamePath, which it always owns (layout.Claims). Ignition's merge would let the snippet
// win, silently replacing a kubeconfig or a unit. Refused are:
//
//   - a file, directory or link at one of those paths, or at the path of one
//     of the units (Ignition merges files, directories and links by path
//     across the three lists, so even a link replaces a file);
//   - a file or link at a directory that holds one of those paths;
//   - a unit kubestrap writes, if the snippet sets its contents, enabled or
//     mask; drop-ins for it are the supported way to adjust it, unless the
//     drop-in's path is among the paths;
//   - any unit or drop-in of the snippet whose file is at one of the paths.
//
// Errors wrap ErrSnippet and list every problem, each with the snippet's
// name and, where Butane's sugar did not make the entry up, its line.
func (s *Snippet) Owned(paths, units []string) error {
	ownedUnits := make(map[string]bool, len(units))
	for _, u := range units {
		ownedUnits[u] = true
		paths = append(paths, layout.UnitPath(u))
	}
	claims := layout.NewClaims(paths...)

	var problems []string
	for _, w := range s.writes {
		if claims.Claimed(w.path) {
			problems = append(problems, fmt.Sprintf("%s: %s %s is written by kubestrap", w.at, w.kind, w.path))
		} else if under, ok := claims.Holds(w.path); ok && w.kind != "directory" {
			problems = append(problems, fmt.Sprintf("%s: %s %s would replace the directory kubestrap writes %s in", w.at, w.kind, w.path, under))
		}
	}
	for _, u := range s.units {
		if ownedUnits[u.name] && len(u.sets) > 0 {
			problems = append(problems, fmt.Sprintf("%s: unit %s is written and enabled by kubestrap; a snippet may add drop-ins to it but not set its %s",
				u.at, u.name, strings.Join(u.sets, ", ")))
		} else if p := layout.UnitPath(u.name); !ownedUnits[u.name] && claims.Claimed(p) && slices.Contains(u.sets, "contents") {
			problems = append(problems, fmt.Sprintf("%s: unit %s would be written to %s, which kubestrap writes", u.at, u.name, p))
		}
		for _, d := range u.dropins {
			if p := path.Join(render.UnitDir, u.name+".d", d); claims.Claimed(p) {
				problems = append(problems, fmt.Sprintf("%s: drop-in %s of unit %s would be written to %s, which kubestrap writes", u.at, d, u.name, p))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: it would change what kubestrap writes:\n%s", ErrSnippet, strings.Join(problems, "\n"))
	}
	return nil
}

// specOps are the operations on one Ignition spec's types.Config that
// MergeInto and NewSnippet need, behind an interface so one code path serves
// every spec.
type specOps struct {
	// decode reads a config of exactly this spec, unvalidated, returning
	// the types.Config and its ignition.version.
	decode func([]byte) (cfg any, version string, err error)
	// compatible parses a config of this spec or an older one, translated
	// up to this one, as Ignition does with a config it is told to merge.
	compatible func([]byte) (any, report.Report, error)
}

func specOpsFor(spec string) (specOps, bool) {
	switch spec {
	case "3.3.0":
		return makeSpecOps(ign33.ParseCompatibleVersion, func(c types33.Config) string { return c.Ignition.Version }), true
	case "3.4.0":
		return makeSpecOps(ign34.ParseCompatibleVersion, func(c types34.Config) string { return c.Ignition.Version }), true
	case "3.5.0":
		return makeSpecOps(ign35.ParseCompatibleVersion, func(c types35.Config) string { return c.Ignition.Version }), true
	case "3.6.0":
		return makeSpecOps(ign36.ParseCompatibleVersion, func(c types36.Config) string { return c.Ignition.Version }), true
	}
	return specOps{}, false
}

func makeSpecOps[T any](compatible func([]byte) (T, report.Report, error), version func(T) string) specOps {
	return specOps{
		decode: func(raw []byte) (any, string, error) {
			var c T
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, "", err
			}
			return c, version(c), nil
		},
		compatible: func(raw []byte) (any, report.Report, error) {
			c, r, err := compatible(raw)
			return c, r, err
		},
	}
}

// MergeInto merges snippets into base, kubestrap's Ignition config for one
// node (spec o.IgnitionSpec(), as Encode wrote it), with Ignition's own
// merge: base is the parent and each snippet a child, in order, so a later
// snippet wins over an earlier one where they set the same thing. Callers
// check the snippets with Owned first; MergeInto does not.
//
// The result is pretty-printed as Butane prints (two-space indented JSON
// with no final newline) and parsed with o's exact-spec Ignition parser,
// Encode's last check. With no snippets, base is returned as it is. The
// warnings are the merged config's report entries that are not the
// snippets' own (NewSnippet returned those). Errors wrap ErrInvalidOptions
// for bad options or snippets made for other options, ErrInvalidGenerated if
// base does not decode, and ErrSnippet if Ignition rejects the merged config,
// which both halves being valid does not rule out.
func MergeInto(base []byte, snippets []*Snippet, o Options) ([]byte, []string, error) {
	r, err := o.resolve()
	if err != nil {
		return nil, nil, err
	}
	if len(snippets) == 0 {
		return base, nil, nil
	}
	for _, s := range snippets {
		if s.variant != r.variant || s.spec != r.ignition {
			return nil, nil, fmt.Errorf("%w: snippet %s was made for %s Ignition %s, not %s Ignition %s",
				ErrInvalidOptions, s.Name, s.variant, s.spec, r.variant, r.ignition)
		}
	}
	ops, ok := specOpsFor(r.ignition)
	if !ok {
		return nil, nil, fmt.Errorf("no Ignition parser wired up for spec %s", r.ignition)
	}
	// base is Encode's output, already validated there; decoding without
	// validating saves a second full validation per node, the merged
	// config's below.
	merged, version, err := ops.decode(base)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: decoding the config to merge snippets into: %w", ErrInvalidGenerated, err)
	}
	if version != r.ignition {
		return nil, nil, fmt.Errorf("%w: the config to merge snippets into is Ignition %q, not %s", ErrInvalidGenerated, version, r.ignition)
	}
	for _, s := range snippets {
		// Both are the same types.Config, which is all it requires.
		merged, _ = merge.MergeStructTranscribe(merged, s.cfg)
	}
	out, err := cjson.MarshalIndent(merged, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("marshalling the merged config: %w", err)
	}
	rpt, err := parse(out, r.ignition)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: merging %s: %w", ErrSnippet, snippetNames(snippets), err)
	}
	var warnings []string
	for _, e := range rpt.Entries {
		if !reported(snippets, e.Message) {
			warnings = append(warnings, "ignition: "+e.String())
		}
	}
	return out, warnings, nil
}

func reported(snippets []*Snippet, msg string) bool {
	for _, s := range snippets {
		if s.reported[msg] {
			return true
		}
	}
	return false
}

func snippetNames(snippets []*Snippet) string {
	names := make([]string, len(snippets))
	for i, s := range snippets {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}
