package ignition

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

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

// ErrShape means Assets do not have the shape a Template was made for; the
// caller encodes them with Encode instead.
var ErrShape = errors.New("assets differ in shape from the template's")

// Template encodes many nodes whose Assets have one shape (the same
// directories, file paths and modes, and units, with any contents) at a
// fraction of Encode's cost: Butane translates, and Ignition's parser checks,
// a stand-in node once; each node's config is then that output with the
// contents of its files and units put in, encoded exactly as Butane encodes
// them. Only those contents differ between nodes, so only they are checked
// again per node, with Ignition's own validators for them. Tests prove Fill
// and Encode give identical bytes.
type Template struct {
	// last remembers each file slot's latest contents and data URL: files
	// that are the same on every node (the CA) are encoded once.
	last     sync.Map // slot index → encoded
	opts     resolved
	shape    string
	parts    [][]byte // the stand-in's JSON around the slots
	slots    []slot   // what goes between parts[i] and parts[i+1]
	warnings []string // the stand-in's (Butane's and Ignition's) warnings
}

type encoded struct {
	contents []byte
	url      string
	report   report.Report // Ignition's validation of url
}

type slot struct {
	unit  bool
	index int // into Assets.Files or Assets.Units
}

// NewTemplate translates a stand-in with a's shape.
func NewTemplate(a render.Assets, o Options) (*Template, error) {
	r, err := o.resolve()
	if err != nil {
		return nil, err
	}
	shape, ok := shapeOf(a)
	if !ok {
		return nil, fmt.Errorf("%w: contents that are not text have no template", ErrShape)
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
		m := fmt.Sprintf("KUBESTRAPFILE%dSLOT", i)
		stand.Files[i].Contents = []byte(m)
		markers = append(markers, `"data:,`+m+`"`)
	}
	for i := range stand.Units {
		m := fmt.Sprintf("KUBESTRAPUNIT%dSLOT", i)
		stand.Units[i].Contents = []byte("[Unit]\nDescription=" + m + "\n[Install]\nWantedBy=multi-user.target\n")
		q, _ := json.Marshal(string(stand.Units[i].Contents))
		markers = append(markers, string(q))
	}
	res, err := Encode(stand, o)
	if err != nil {
		return nil, err
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

// shapeOf is what must match between Assets for one Template to encode them.
func shapeOf(a render.Assets) (string, bool) {
	var b strings.Builder
	for _, d := range a.Dirs {
		fmt.Fprintf(&b, "d %s %o\n", d.Path, d.Mode)
	}
	for _, f := range a.Files {
		if !layout.IsText(f.Contents) {
			return "", false
		}
		fmt.Fprintf(&b, "f %s %o\n", f.Path, f.Mode)
	}
	for _, u := range a.Units {
		fmt.Fprintf(&b, "u %s\n", u.Name)
	}
	return b.String(), true
}

// Fill returns a's Ignition config, the same bytes Encode would return, and
// the warnings Ignition's validators have for it.
func (t *Template) Fill(a render.Assets) ([]byte, []string, error) {
	if shape, ok := shapeOf(a); !ok || shape != t.shape {
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
		var v string
		if s.unit {
			u := a.Units[s.index]
			v = string(u.Contents)
			rpt.Merge(validateUnit(t.opts.ignition, u.Name, v, path.New("json", "systemd", "units", s.index)))
		} else {
			e := t.dataURL(s.index, a.Files[s.index].Contents)
			v = e.url
			rpt.Merge(e.report)
		}
		// Butane marshals with a fork of encoding/json that escapes strings
		// the same way (HTML characters included).
		q, err := json.Marshal(v)
		if err != nil {
			return nil, nil, err
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

// dataURL is a file slot's data URL, as Butane makes it, and what
// Ignition's validator says of it; contents the slot had for the previous
// node (the CA, on every node) are neither encoded nor validated again.
func (t *Template) dataURL(slot int, contents []byte) encoded {
	if e, ok := t.last.Load(slot); ok && bytes.Equal(e.(encoded).contents, contents) {
		return e.(encoded)
	}
	e := encoded{contents: contents, url: makeDataURL(contents)}
	e.report = validateSource(t.opts.ignition, e.url, path.New("json", "storage", "files", slot, "contents"))
	t.last.Store(slot, e)
	return e
}

// makeDataURL is Butane's MakeDataURL(contents, nil, false): the shorter of
// the percent-escaped and the base64 data URL, the escaped one on a tie. It
// is redone here because Butane's escaper formats every escaped byte with
// fmt, which made it the largest cost of a node's Ignition config; tests
// check it against Butane's for every byte value and random contents.
func makeDataURL(contents []byte) string {
	escaped := 0
	for _, b := range contents {
		if !unreserved(b) {
			escaped++
		}
	}
	percentLen := len(",") + len(contents) + 2*escaped
	if len(";base64,")+base64.StdEncoding.EncodedLen(len(contents)) < percentLen {
		return "data:;base64," + base64.StdEncoding.EncodeToString(contents)
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len("data:")+percentLen)
	out = append(out, "data:,"...)
	for _, b := range contents {
		if unreserved(b) {
			out = append(out, b)
		} else {
			out = append(out, '%', hex[b>>4], hex[b&15])
		}
	}
	return string(out)
}

// unreserved is RFC 2396's unreserved set, which the dataurl package (and so
// Butane) leaves unescaped.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-_.!~*'()", c) >= 0
}

// validateSource runs the Ignition spec's own validator for a file's contents.
func validateSource(spec, source string, c path.ContextPath) report.Report {
	src, none := &source, util.StrToPtr("")
	switch spec {
	case "3.3.0":
		return ign33.Resource{Source: src, Compression: none}.Validate(c)
	case "3.4.0":
		return ign34.Resource{Source: src, Compression: none}.Validate(c)
	case "3.5.0":
		return ign35.Resource{Source: src, Compression: none}.Validate(c)
	default:
		return ign36.Resource{Source: src, Compression: none}.Validate(c)
	}
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
