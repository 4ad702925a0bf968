package ignition

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	butaneutil "github.com/coreos/butane/base/util"

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
