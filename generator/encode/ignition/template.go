package ignition

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	// Butane marshals its output with this fork of encoding/json, whose
	// string escapes differ from today's encoding/json (\u0008 against \b):
	// Fill must write strings exactly as Butane does.
	"github.com/clarketm/json"
	butanecommon "github.com/coreos/butane/config/common"
	"github.com/coreos/ignition/v2/config/util"
	ign33 "github.com/coreos/ignition/v2/config/v3_3/types"
	ign34 "github.com/coreos/ignition/v2/config/v3_4/types"
	ign35 "github.com/coreos/ignition/v2/config/v3_5/types"
	ign36 "github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/coreos/vcontext/path"
	"github.com/coreos/vcontext/report"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

var (
	// ErrShape means Assets do not have the shape a Template was made for;
	// the caller encodes them with Encode instead.
	ErrShape = errors.New("assets differ in shape from the template's")
	// ErrTemplateUnsafe means Butane does not behave as a Template assumes
	// (see NewTemplate), so a Template could write other bytes than Encode:
	// the caller encodes every node with Encode instead. It is never the
	// user's fault, but always worth a bug report, since it takes the fast
	// path away.
	ErrTemplateUnsafe = errors.New("Butane does not behave as the Ignition template assumes")
)

// Template encodes many nodes whose Assets have one shape (the same
// directories, file paths and modes, and units, with any contents) at a
// fraction of Encode's cost: Butane translates, and Ignition's parser checks,
// a stand-in node once; each node's config is then that output with the
// contents of its files and units put in, encoded exactly as Butane encodes
// them. Only those contents differ between nodes: each node's units are
// checked again with Ignition's own unit validator, and its files' data URLs
// are Butane's by construction (see Template.file). NewTemplate checks
// that the Butane linked in still encodes contents that way, and tests and
// fuzzing check that Fill and Encode give identical bytes.
type Template struct {
	// last remembers each file slot's latest contents and encoding: files
	// that are the same on every node (the CA) are encoded once.
	last     sync.Map // slot index → encoded
	opts     resolved
	shape    shape
	parts    [][]byte // the stand-in's JSON around the slots
	slots    []slot   // what goes between parts[i] and parts[i+1]
	warnings []string // the stand-in's (Butane's and Ignition's) warnings
}

type encoded struct {
	contents []byte
	json     []byte // the data URL as the JSON string Butane writes
}

type slot struct {
	unit  bool
	index int // into Assets.Files or Assets.Units
}

// jsonString is how Fill writes every slot, a data URL or a unit's contents:
// a JSON string as Butane's marshaller writes it (HTML characters, U+2028
// and U+2029 escaped, other controls as \u00XX except \t, \n and \r).
// NewTemplate's probe holds it to Butane's actual output.
func jsonString(s string) ([]byte, error) {
	return json.Marshal(s)
}

// NewTemplate translates a stand-in with a's shape. It first has Butane
// translate a probe, to check that what the Template relies on holds for the
// Butane linked in: that Butane writes the probe's contents, which cover
// every character JSON escapes (and more), as jsonString and makeDataURL
// encode them, and leaves every file's contents an uncompressed data URL.
// When that fails, the error wraps ErrTemplateUnsafe. Errors wrap ErrShape
// for assets that have no template (files that are not text), and
// ErrInvalidOptions or ErrInvalidGenerated as Encode's do.
func NewTemplate(a render.Assets, o Options) (*Template, error) {
	r, err := o.resolve()
	if err != nil {
		return nil, err
	}
	if a, err = lower(a, r.variant); err != nil {
		return nil, err
	}
	return newTemplate(a, r, translateOptions())
}

// newTemplate is NewTemplate with the translate options given, so tests can
// show which options it refuses.
func newTemplate(a render.Assets, r resolved, topts butanecommon.TranslateBytesOptions) (*Template, error) {
	shape, ok := shapeOf(a)
	if !ok {
		return nil, fmt.Errorf("%w: contents that are not text have no template", ErrShape)
	}
	// Fill gives Encode's bytes only if the stand-in was translated as
	// Encode translates: the parts are Butane's bytes in Encode's layout
	// (pretty-printed), and a slot holds the contents' uncompressed data
	// URL, while whether Butane compresses them, and the compression field
	// that says so, is in the parts. The probe below checks the latter
	// against Butane's behaviour, this against Encode's options.
	if want := translateOptions(); topts != want {
		return nil, fmt.Errorf("%w: translate options %+v are not Encode's, %+v", ErrTemplateUnsafe, topts, want)
	}
	if !topts.NoResourceAutoCompression {
		return nil, fmt.Errorf("%w: Butane may compress contents (NoResourceAutoCompression is off)", ErrTemplateUnsafe)
	}
	if err := probe(r, topts, jsonString); err != nil {
		return nil, err
	}
	// The stand-in's contents are markers that Butane passes through
	// unchanged (plain percent-encoded data URLs, JSON strings without
	// escapes) and that cannot occur elsewhere in the output. The unit marker
	// is a valid unit with an [Install] section, so it draws no diagnostics
	// that the real unit would not.
	stand := a
	stand.Files = append([]render.File(nil), a.Files...)
	stand.Units = append([]render.Unit(nil), a.Units...)
	var markers []string
	for i := range stand.Files {
		stand.Files[i].Contents = fmt.Appendf(nil, "KUBESTRAPFILE%dSLOT", i)
		markers = append(markers, string(dataURLJSON(stand.Files[i].Contents)))
	}
	for i := range stand.Units {
		stand.Units[i].Contents = fmt.Appendf(nil, "[Unit]\nDescription=KUBESTRAPUNIT%dSLOT\n[Install]\nWantedBy=multi-user.target\n", i)
		q, err := jsonString(string(stand.Units[i].Contents))
		if err != nil {
			return nil, fmt.Errorf("%w: encoding a unit marker: %w", ErrInvalidGenerated, err)
		}
		markers = append(markers, string(q))
	}
	res, err := encode(stand, r, topts)
	if err != nil {
		return nil, err
	}
	if err := checkUncompressed(res.Ignition, stand.Fetches); err != nil {
		return nil, fmt.Errorf("%w: stand-in for node %q: %w", ErrTemplateUnsafe, a.Node, err)
	}
	t := &Template{opts: r, shape: shape, warnings: res.Warnings}
	rest := res.Ignition
	for len(rest) > 0 {
		at, which := -1, -1
		for i, m := range markers {
			if j := bytes.Index(rest, []byte(m)); j >= 0 && (at < 0 || j < at) {
				at, which = j, i
			}
		}
		if at < 0 {
			break
		}
		t.parts = append(t.parts, rest[:at])
		if which < len(stand.Files) {
			t.slots = append(t.slots, slot{index: which})
		} else {
			t.slots = append(t.slots, slot{unit: true, index: which - len(stand.Files)})
		}
		rest = rest[at+len(markers[which]):]
	}
	t.parts = append(t.parts, rest)
	if len(t.slots) != len(markers) {
		return nil, fmt.Errorf("%w: Butane's output holds %d of the %d content markers", ErrInvalidGenerated, len(t.slots), len(markers))
	}
	return t, nil
}

// probeAssets are contents that exercise every choice Fill makes in Butane's
// stead: every C0 control character and DEL (which JSON escapes, some with
// short forms that Butane's marshaller does not use), the HTML characters
// and U+2028/U+2029 (which it escapes too), other non-ASCII text, quotes and
// backslashes, a leading tab and CRLF, data URLs that come out shorter
// percent-escaped and ones that come out shorter in base64, and a long line
// that Butane would compress if it were allowed to.
func probeAssets() render.Assets {
	var c0 strings.Builder
	for b := range byte(0x20) {
		c0.WriteByte(b)
	}
	specials := "\x7f<>&'\"\\/%+=;,\u0080\u009f\u00a0é ключ ✓\u2028\u2029\ufeff\ufffd🚀"
	long := strings.Repeat("kubestrap probe ", 128)
	// The unit must pass Ignition's unit parser: no line of 2048 bytes or
	// more, and no line that is neither a section, an option nor a comment
	// (a CR ends a line for it, as LF does).
	var unit strings.Builder
	unit.WriteString("[Unit]\nDescription=probe ")
	for b := range byte(0x20) {
		if b != '\n' && b != '\r' {
			unit.WriteByte(b)
		}
	}
	unit.WriteString(specials + "\r\nDocumentation=" + long[:1500] + "\n\t# indented\n[Install]\r\nWantedBy=multi-user.target\n")
	return render.Assets{
		Node: "kubestrap-probe",
		Files: []render.File{
			{Path: "/kubestrap-probe/specials", Mode: 0o644, Contents: []byte(c0.String() + specials)},
			{Path: "/kubestrap-probe/long-line", Mode: 0o644, Contents: []byte(long + "\n")},
			{Path: "/kubestrap-probe/mixed", Mode: 0o600, Contents: []byte("\tleading tab\r\n" + specials + "\n" + long + c0.String())},
			{Path: "/kubestrap-probe/empty", Mode: 0o644},
		},
		Units: []render.Unit{{Name: "kubestrap-probe.service", Contents: []byte(unit.String())}},
	}
}

// probe has Butane translate probeAssets and checks that its output holds
// each file's contents as dataURLJSON(contents) and each unit's as
// quote(contents), exactly once, and no compressed contents: that Fill,
// which writes them so, writes Butane's bytes. The errors wrap
// ErrTemplateUnsafe.
func probe(r resolved, topts butanecommon.TranslateBytesOptions, quote func(string) ([]byte, error)) error {
	p := probeAssets()
	res, err := encode(p, r, topts)
	if err != nil {
		return fmt.Errorf("%w: Butane %s %s rejects the probe: %w", ErrTemplateUnsafe, r.variant, r.butane, err)
	}
	if err := checkUncompressed(res.Ignition, nil); err != nil {
		return fmt.Errorf("%w: probe: %w", ErrTemplateUnsafe, err)
	}
	check := func(what, name, value string) error {
		q, err := quote(value)
		if err != nil {
			return fmt.Errorf("%w: probe %s %s: %w", ErrTemplateUnsafe, what, name, err)
		}
		if n := bytes.Count(res.Ignition, q); n != 1 {
			return fmt.Errorf("%w: probe %s %s: Butane %s %s writes its contents otherwise than the template would (the template's encoding is in its output %d times, want once)",
				ErrTemplateUnsafe, what, name, r.variant, r.butane, n)
		}
		return nil
	}
	for _, f := range p.Files {
		if n := bytes.Count(res.Ignition, dataURLJSON(f.Contents)); n != 1 {
			return fmt.Errorf("%w: probe file %s: Butane %s %s writes its contents otherwise than the template would (the template's encoding is in its output %d times, want once)",
				ErrTemplateUnsafe, f.Path, r.variant, r.butane, n)
		}
	}
	for _, u := range p.Units {
		if err := check("unit", u.Name, string(u.Contents)); err != nil {
			return err
		}
	}
	return nil
}

// checkUncompressed requires every file of the Ignition config ign but the
// fetched ones to have uncompressed contents from a data URL, the only kind
// of contents a slot holds.
func checkUncompressed(ign []byte, fetches []render.Fetch) error {
	var cfg struct {
		Storage struct {
			Files []struct {
				Path     string
				Contents struct {
					Compression *string
					Source      *string
				}
			}
		}
	}
	if err := json.Unmarshal(ign, &cfg); err != nil {
		return fmt.Errorf("reading Butane's output: %w", err)
	}
	for _, f := range cfg.Storage.Files {
		c := f.Contents
		if slices.ContainsFunc(fetches, func(fe render.Fetch) bool { return fe.Path == f.Path }) {
			continue
		}
		switch {
		case c.Compression != nil && *c.Compression != "":
			return fmt.Errorf("file %s: Butane compressed its contents (%s)", f.Path, *c.Compression)
		case c.Source == nil || !strings.HasPrefix(*c.Source, "data:"):
			return fmt.Errorf("file %s: its contents are not a data URL", f.Path)
		}
	}
	return nil
}

// shape is what must match between Assets for one Template to encode them:
// the directories, the files' paths and modes, and the units' names, all
// in order.
type shape struct {
	dirs  []render.Dir
	files []render.File // Contents unset
	units []string
	// What the parts hold verbatim: fetched files, the login user's keys.
	fetches []render.Fetch
	user    string
	keys    []string
}

// shapeOf returns a's shape; false when a has contents that are not text.
func shapeOf(a render.Assets) (shape, bool) {
	sh := shape{
		dirs: slices.Clone(a.Dirs), fetches: slices.Clone(a.Fetches),
		user: a.SSHUser, keys: slices.Clone(a.SSHAuthorizedKeys),
	}
	for _, f := range a.Files {
		if !layout.IsText(f.Contents) {
			return shape{}, false
		}
		sh.files = append(sh.files, render.File{Path: f.Path, Mode: f.Mode})
	}
	for _, u := range a.Units {
		sh.units = append(sh.units, u.Name)
	}
	return sh, true
}

// fits reports whether a has the shape sh, without building one: it runs
// for every node.
func (sh shape) fits(a render.Assets) bool {
	if !slices.Equal(sh.dirs, a.Dirs) || len(sh.files) != len(a.Files) || len(sh.units) != len(a.Units) ||
		!slices.Equal(sh.fetches, a.Fetches) || !slices.Equal(sh.keys, a.SSHAuthorizedKeys) ||
		len(a.SSHAuthorizedKeys) > 0 && sh.user != a.SSHUser || a.Network != nil {
		return false
	}
	for i, f := range a.Files {
		if f.Path != sh.files[i].Path || f.Mode != sh.files[i].Mode || !layout.IsText(f.Contents) {
			return false
		}
	}
	for i, u := range a.Units {
		if u.Name != sh.units[i] {
			return false
		}
	}
	return true
}

// Fill returns a's Ignition config, the same bytes Encode would return, and
// the warnings Ignition's validators have for it.
func (t *Template) Fill(a render.Assets) ([]byte, []string, error) {
	a, err := lower(a, t.opts.variant)
	if err != nil {
		return nil, nil, err
	}
	if !t.shape.fits(a) {
		return nil, nil, ErrShape
	}
	for _, u := range a.Units {
		if !layout.IsText(u.Contents) {
			return nil, nil, ErrShape
		}
	}
	size := 0
	for _, p := range t.parts {
		size += len(p)
	}
	values := make([][]byte, len(t.slots))
	var rpt report.Report
	for i, s := range t.slots {
		if !s.unit {
			values[i] = t.file(s.index, a.Files[s.index].Contents)
			size += len(values[i])
			continue
		}
		u := a.Units[s.index]
		v := string(u.Contents)
		rpt.Merge(validateUnit(t.opts.ignition, u.Name, v, path.New("json", "systemd", "units", s.index)))
		q, err := jsonString(v)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: node %q: unit %q: %w", ErrInvalidGenerated, a.Node, u.Name, err)
		}
		values[i] = q
		size += len(q)
	}
	if rpt.IsFatal() {
		return nil, nil, fmt.Errorf("%w: node %q: Ignition %s validation failed:\n%s", ErrInvalidGenerated, a.Node, t.opts.ignition, strings.TrimSpace(rpt.String()))
	}
	out := make([]byte, 0, size)
	for i, p := range t.parts {
		out = append(out, p...)
		if i < len(values) {
			out = append(out, values[i]...)
		}
	}
	warnings := append([]string(nil), t.warnings...)
	for _, e := range rpt.Entries {
		warnings = append(warnings, "ignition: "+e.String())
	}
	return out, warnings, nil
}

// file is a file slot's data URL, as Butane makes and writes it; contents
// the slot had for the previous node (the CA, on every node) are not
// encoded again.
//
// The URL is not put through Ignition's validator per node, as the stand-in
// was: makeDataURL is Butane's MakeDataURL byte for byte and its URLs decode
// back to the contents with the data URL parser Ignition validates with
// (FuzzMakeDataURL holds it to both), so the validator could only say yes,
// and parsing every node's URLs back cost a quarter of Fill.
func (t *Template) file(slot int, contents []byte) []byte {
	if e, ok := t.last.Load(slot); ok && bytes.Equal(e.(encoded).contents, contents) {
		return e.(encoded).json
	}
	// A copy: the caller may reuse its buffer for the next node, and a
	// cached slice that changed under the cache would match contents whose
	// encoding it does not hold.
	e := encoded{contents: bytes.Clone(contents), json: dataURLJSON(contents)}
	t.last.Store(slot, e)
	return e.json
}

// makeDataURL is Butane's MakeDataURL(contents, nil, false): the shorter of
// the percent-escaped and the base64 data URL, the escaped one on a tie. It
// is redone here because Butane's escaper formats every escaped byte with
// fmt, which made it the largest cost of a node's Ignition config; tests
// check it against Butane's for every byte value and random contents.
func makeDataURL(contents []byte) string {
	q := dataURLJSON(contents)
	return string(q[1 : len(q)-1])
}

// dataURLJSON is makeDataURL(contents) as the JSON string Butane writes it.
// A data URL made of RFC 2396's unreserved characters, '%' and hex digits,
// or of "data:;base64," and base64's alphabet, holds nothing JSON escapes
// (no quote, backslash, control character, HTML character or U+2028/9), so
// the string is the URL in quotes; NewTemplate's probe holds that to
// Butane's output.
func dataURLJSON(contents []byte) []byte {
	escaped := 0
	for _, b := range contents {
		if !unreserved(b) {
			escaped++
		}
	}
	percentLen := len(",") + len(contents) + 2*escaped
	if b64 := base64.StdEncoding.EncodedLen(len(contents)); len(";base64,")+b64 < percentLen {
		out := make([]byte, 0, len(`"data:;base64,"`)+b64)
		out = append(out, `"data:;base64,`...)
		out = base64.StdEncoding.AppendEncode(out, contents)
		return append(out, '"')
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(`"data:"`)+percentLen)
	out = append(out, `"data:,`...)
	for _, b := range contents {
		if unreserved(b) {
			out = append(out, b)
		} else {
			out = append(out, '%', hex[b>>4], hex[b&15])
		}
	}
	return append(out, '"')
}

// unreserved is RFC 2396's unreserved set, which the dataurl package (and so
// Butane) leaves unescaped: letters, digits and "-_.!~*'()". It is asked of
// every byte of every file of every node, so it is a bit test.
func unreserved(c byte) bool {
	// Bits 0-63 and 64-127 of the set, by byte value.
	const (
		low  = 1<<'!' | 1<<'\'' | 1<<'(' | 1<<')' | 1<<'*' | 1<<'-' | 1<<'.' | 0x3ff<<'0'
		high = 0x3ffffff<<('A'-64) | 1<<('_'-64) | 0x3ffffff<<('a'-64) | 1<<('~'-64)
	)
	switch {
	case c < 64:
		return low>>c&1 != 0
	case c < 128:
		return high>>(c-64)&1 != 0
	}
	return false
}

// validateUnit runs the Ignition spec's own validator for an enabled unit.
func validateUnit(spec, name, contents string, c path.ContextPath) report.Report {
	enabled := util.BoolToPtr(true)
	switch spec {
	case "3.3.0":
		return ign33.Unit{Name: name, Contents: &contents, Enabled: enabled}.Validate(c)
	case "3.4.0":
		return ign34.Unit{Name: name, Contents: &contents, Enabled: enabled}.Validate(c)
	case "3.5.0":
		return ign35.Unit{Name: name, Contents: &contents, Enabled: enabled}.Validate(c)
	default:
		return ign36.Unit{Name: name, Contents: &contents, Enabled: enabled}.Validate(c)
	}
}
