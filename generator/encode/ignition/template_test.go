package ignition

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	butaneutil "github.com/coreos/butane/base/util"
	butanecommon "github.com/coreos/butane/config/common"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/sample"
)

var allOptions = []Options{
	{VariantFCOS, "1.4.0"}, {VariantFCOS, "1.5.0"}, {VariantFCOS, "1.6.0"}, {VariantFCOS, "1.7.0"},
	{VariantFlatcar, "1.0.0"}, {VariantFlatcar, "1.1.0"},
}

// textAssets is TrickyAssets without the contents that are not text (those
// have no template and always take Encode).
func textAssets() render.Assets {
	a := sample.TrickyAssets()
	var files []render.File
	for _, f := range a.Files {
		if !strings.Contains(f.Path, "invalid UTF-8") {
			files = append(files, f)
		}
	}
	a.Files = files
	return a
}

// The fast path must give Butane's bytes exactly, for every spec and for
// contents that stress every encoding choice Butane makes (percent-encoding
// against base64, JSON escapes, empty files).
func TestTemplateMatchesButane(t *testing.T) {
	for _, o := range allOptions {
		t.Run(o.Variant+"-"+o.Version, func(t *testing.T) {
			shape := textAssets()
			tmpl, err := NewTemplate(shape, o)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range 20 {
				a := textAssets()
				// Shuffle contents between files (keeping the shape) and
				// vary the unit, so each slot sees many encodings.
				rng.Shuffle(len(a.Files), func(i, j int) { a.Files[i].Contents, a.Files[j].Contents = a.Files[j].Contents, a.Files[i].Contents })
				a.Units[0].Contents = []byte(strings.Replace(sample.KubeletUnit, "kube-node1", fmt.Sprintf("node-%d <&> \u2028 \"q\"", i), 1))
				want, err := Encode(a, o)
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := tmpl.Fill(a)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want.Ignition) {
					t.Fatalf("round %d: Fill differs from Encode:\n%s", i, firstDiff(got, want.Ignition))
				}
			}
		})
	}
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			lo := max(i-60, 0)
			return fmt.Sprintf("at byte %d:\n got …%s…\nwant …%s…", i, a[lo:min(i+60, len(a))], b[lo:min(i+60, len(b))])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

func TestTemplateShape(t *testing.T) {
	tmpl, err := NewTemplate(sample.Assets(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(a *render.Assets){
		"another path":    func(a *render.Assets) { a.Files[0].Path = "/etc/other" },
		"another mode":    func(a *render.Assets) { a.Files[1].Mode = 0o640 },
		"extra dir":       func(a *render.Assets) { a.Dirs = append(a.Dirs, render.Dir{Path: "/x", Mode: 0o755}) },
		"another unit":    func(a *render.Assets) { a.Units[0].Name = "other.service" },
		"binary contents": func(a *render.Assets) { a.Files[0].Contents = []byte{0xff, 0xfe} },
	} {
		a := sample.Assets()
		change(&a)
		if _, _, err := tmpl.Fill(a); !errors.Is(err, ErrShape) {
			t.Errorf("%s: err = %v, want ErrShape", name, err)
		}
	}
	if _, err := NewTemplate(render.Assets{Node: "n", Files: []render.File{{Path: "/b", Mode: 0o644, Contents: []byte{0xff}}}}, Options{}); !errors.Is(err, ErrShape) {
		t.Errorf("binary shape: %v", err)
	}
}

// Per node, Ignition's own validators still check what changed.
func TestTemplateValidatesEachNode(t *testing.T) {
	tmpl, err := NewTemplate(sample.Assets(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := sample.Assets()
	a.Units[0].Contents = []byte("[Service\nExecStart=/bin/true\n")
	if _, _, err := tmpl.Fill(a); !errors.Is(err, ErrInvalidGenerated) {
		t.Errorf("broken unit: err = %v", err)
	}
	a = sample.Assets()
	a.Units[0].Contents = []byte("[Service]\nExecStart=/bin/true\n")
	_, warnings, err := tmpl.Fill(a)
	if err != nil || !strings.Contains(strings.Join(warnings, "\n"), "has no install section") {
		t.Errorf("unit without [Install]: err %v, warnings %v", err, warnings)
	}
}

// escapeCases are contents whose JSON or data URL encoding a mimic of Butane
// can get wrong: every C0 control character alone (encoding/json writes \b
// and \f where Butane writes \u0008 and \u000c), DEL, the characters Butane
// escapes for HTML and JavaScript, other non-ASCII text, and the shapes of
// text YAML mangles.
func escapeCases() []string {
	var cases []string
	for b := range byte(0x20) {
		cases = append(cases, string([]byte{b}))
	}
	return append(cases, "\x7f", "<", ">", "&", "\u2028", "\u2029", "\u0080", "\u009f", "\u00a0", "\ufeff", "\ufffd",
		"é ключ ✓ 🚀", `"`, `\`, "/", "'", "%", "+", "\n", "\tleading tab", "crlf\r\n", "\r", "")
}

// Every character Butane escapes, in a unit (a JSON string) and in a file (a
// data URL), must come out of Fill as Butane writes it.
func TestTemplateEscapes(t *testing.T) {
	for _, o := range []Options{{}, {VariantFlatcar, "1.0.0"}} {
		tmpl, err := NewTemplate(sample.Assets(), o)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range escapeCases() {
			a := sample.Assets()
			// In a value, where a unit parser keeps it; CR and LF end
			// the line, which is then a comment.
			a.Units[0].Contents = []byte(strings.Replace(sample.KubeletUnit, "Description=", "Description=x"+c+"#y\n#", 1))
			a.Files[0].Contents = []byte(c)
			a.Files[1].Contents = []byte("line " + c + " line\n")
			want, err := Encode(a, o)
			if err != nil {
				t.Errorf("%+v %q: Encode: %v", o, c, err)
				continue
			}
			got, _, err := tmpl.Fill(a)
			if err != nil {
				t.Errorf("%+v %q: Fill: %v", o, c, err)
				continue
			}
			if !bytes.Equal(got, want.Ignition) {
				t.Errorf("%+v %q: Fill differs from Encode:\n%s", o, c, firstDiff(got, want.Ignition))
			}
		}
	}
}

// The probe must pass with the Butane kubestrap is built with: if it does
// not, every node takes Butane's path, about a hundred times slower.
func TestTemplateProbePasses(t *testing.T) {
	for _, o := range allOptions {
		r, err := o.resolve()
		if err != nil {
			t.Fatal(err)
		}
		if err := probe(r, translateOptions(), jsonString); err != nil {
			t.Errorf("%+v: the Ignition fast path is gone: %v", o, err)
		}
	}
}

// The probe must catch what it is there for: a JSON encoder other than
// Butane's, compression, options other than Encode's.
func TestTemplateProbeFails(t *testing.T) {
	r, err := Options{}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	// encoding/json, which Fill used before, writes \b and \f.
	err = probe(r, translateOptions(), func(s string) ([]byte, error) { return stdjson.Marshal(s) })
	if !errors.Is(err, ErrTemplateUnsafe) || !strings.Contains(err.Error(), "unit kubestrap-probe.service") {
		t.Errorf("probe with encoding/json: %v", err)
	}
	// An encoder that does not escape HTML characters.
	err = probe(r, translateOptions(), func(s string) ([]byte, error) {
		var buf bytes.Buffer
		enc := stdjson.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		err := enc.Encode(s)
		return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
	})
	if !errors.Is(err, ErrTemplateUnsafe) {
		t.Errorf("probe with unescaped HTML: %v", err)
	}
	compress := translateOptions()
	compress.NoResourceAutoCompression = false
	if err := probe(r, compress, jsonString); !errors.Is(err, ErrTemplateUnsafe) || !strings.Contains(err.Error(), "compressed") {
		t.Errorf("probe with compression: %v", err)
	}
	notPretty := translateOptions()
	notPretty.Pretty = false
	for name, topts := range map[string]butanecommon.TranslateBytesOptions{"compression": compress, "not pretty": notPretty} {
		if _, err := newTemplate(sample.Assets(), r, topts); !errors.Is(err, ErrTemplateUnsafe) {
			t.Errorf("%s: newTemplate: %v, want ErrTemplateUnsafe", name, err)
		}
	}
	for name, ign := range map[string]string{
		"gzip":       `{"storage":{"files":[{"path":"/a","contents":{"compression":"gzip","source":"data:;base64,H4sI"}}]}}`,
		"no source":  `{"storage":{"files":[{"path":"/a","contents":{"compression":""}}]}}`,
		"remote":     `{"storage":{"files":[{"path":"/a","contents":{"source":"https://example.com/a"}}]}}`,
		"not a JSON": `{`,
	} {
		if err := checkUncompressed([]byte(ign), nil); err == nil {
			t.Errorf("checkUncompressed accepts %s", name)
		}
	}
	if err := checkUncompressed([]byte(`{"storage":{"files":[{"path":"/a","contents":{"compression":"","source":"data:,a"}},{"path":"/b","contents":{"source":"data:,b"}}]}}`), nil); err != nil {
		t.Errorf("checkUncompressed: %v", err)
	}
}

// The probe covers what it claims to: every C0 control character, DEL, the
// HTML characters and U+2028/U+2029 in a unit, long lines, and files whose
// shorter data URL is percent-escaped and ones whose is base64.
func TestProbeCoverage(t *testing.T) {
	p := probeAssets()
	unit := string(p.Units[0].Contents)
	for b := range byte(0x20) {
		if !strings.ContainsRune(unit, rune(b)) {
			t.Errorf("the probe unit lacks %q", b)
		}
	}
	for _, c := range []string{"\x7f", "<", ">", "&", "\u2028", "\u2029", "é", `"`, `\`} {
		if !strings.Contains(unit, c) {
			t.Errorf("the probe unit lacks %q", c)
		}
	}
	kinds := map[bool]int{}
	longest := 0
	for _, f := range p.Files {
		kinds[strings.HasPrefix(makeDataURL(f.Contents), "data:;base64,")]++
		for _, l := range bytes.Split(f.Contents, []byte("\n")) {
			longest = max(longest, len(l))
		}
		if !layout.IsText(f.Contents) {
			t.Errorf("probe file %s is not text, which a template never holds", f.Path)
		}
	}
	if kinds[true] == 0 || kinds[false] == 0 {
		t.Errorf("the probe exercises one data URL encoding only: %v", kinds)
	}
	if longest < 2048 {
		t.Errorf("the probe's longest line has %d bytes", longest)
	}
}

func BenchmarkEncode(b *testing.B) {
	a := sample.Assets()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(a, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTemplateFill(b *testing.B) {
	a := sample.Assets()
	tmpl, err := NewTemplate(a, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := tmpl.Fill(a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewTemplate is the fixed cost of a run's fast path: the probe's
// and the stand-in's translations.
func BenchmarkNewTemplate(b *testing.B) {
	a := sample.Assets()
	for b.Loop() {
		if _, err := NewTemplate(a, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// makeDataURL must be Butane's MakeDataURL for uncompressed contents.
func TestMakeDataURLIsButanes(t *testing.T) {
	inputs := [][]byte{nil, {}, []byte("a"), []byte(sample.Kubeconfig), []byte(sample.CAPEM), []byte(sample.KubeletUnit)}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
		inputs = append(inputs, []byte{byte(i)}, []byte{byte(i), 'x', byte(i)})
	}
	inputs = append(inputs, all)
	for _, c := range sample.TrickyContents() {
		inputs = append(inputs, []byte(c.Contents))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			// Mostly text, sometimes anything: both encodings must win sometimes.
			if rng.IntN(4) == 0 {
				b[i] = byte(rng.IntN(256))
			} else {
				const text = "abc XYZ09-_.!~*'()%\n{}\":"
				b[i] = text[rng.IntN(len(text))]
			}
		}
		inputs = append(inputs, b)
	}
	kinds := map[bool]int{}
	for _, in := range inputs {
		want, _, err := butaneutil.MakeDataURL(in, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		got := makeDataURL(in)
		if got != want {
			t.Fatalf("makeDataURL(%q) = %q, Butane says %q", in, got, want)
		}
		kinds[strings.HasPrefix(got, "data:;base64,")]++
	}
	if kinds[true] == 0 || kinds[false] == 0 {
		t.Errorf("only one encoding exercised: %v", kinds)
	}
}
