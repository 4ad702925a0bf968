package layout

import (
	"bytes"
	"fmt"
	"math/rand"
	randv2 "math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/quick"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/internal/sample"
)

// literalContext is a place where the encoders write a literal block: the
// YAML before the block, the indentation of its lines, and how to marshal
// and read back a document with a node in that place.
type literalContext struct {
	name    string
	prefix  string
	indent  int
	marshal func(n *yaml.Node) ([]byte, error)
	read    func(doc []byte) (string, error)
}

func encodeIndent2(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	err := enc.Close()
	return buf.Bytes(), err
}

func readT(doc []byte) (string, error) {
	var m map[string]string
	err := yaml.Unmarshal(doc, &m)
	return m["t"], err
}

var literalContexts = []literalContext{
	{
		// yaml.Marshal's default indentation, as for Butane.
		name: "mapping value, indent 4", prefix: "t: ", indent: 4,
		marshal: func(n *yaml.Node) ([]byte, error) { return yaml.Marshal(map[string]*yaml.Node{"t": n}) },
		read:    readT,
	},
	{
		name: "mapping value, indent 2", prefix: "t: ", indent: 2,
		marshal: func(n *yaml.Node) ([]byte, error) { return encodeIndent2(map[string]*yaml.Node{"t": n}) },
		read:    readT,
	},
	{
		// Where cloud-init's write_files content goes.
		name: "mapping in a sequence, indent 2", prefix: "l:\n  - t: ", indent: 6,
		marshal: func(n *yaml.Node) ([]byte, error) {
			return encodeIndent2(map[string][]map[string]*yaml.Node{"l": {{"t": n}}})
		},
		read: func(doc []byte) (string, error) {
			var m map[string][]map[string]string
			if err := yaml.Unmarshal(doc, &m); err != nil {
				return "", err
			}
			if len(m["l"]) != 1 {
				return "", fmt.Errorf("read back %d list items", len(m["l"]))
			}
			return m["l"][0]["t"], nil
		},
	},
}

// literalErr checks, for an s that IsPlainLiteral accepts, what the fast
// emitters rely on: that the checked path (literalSafe, then the emitter
// round trip) would take a literal block too, that AppendLiteral writes the
// very bytes yaml.v3 writes for that block in every context, and that those
// bytes read back as s.
func literalErr(s string) error {
	if !IsPlainLiteral([]byte(s)) {
		return fmt.Errorf("IsPlainLiteral accepts %q as a string but not as bytes", s)
	}
	if !literalSafe(s) {
		return fmt.Errorf("IsPlainLiteral accepts %q, literalSafe does not", s)
	}
	v, err := checkedNode(s)
	if n, ok := v.(*yaml.Node); err != nil || !ok || n.Style != yaml.LiteralStyle {
		return fmt.Errorf("the checked path does not write %q as a literal block: %#v, %v", s, v, err)
	}
	n := v.(*yaml.Node)
	for _, c := range literalContexts {
		want, err := c.marshal(n)
		if err != nil {
			return fmt.Errorf("%s: yaml.v3 cannot marshal %q: %v", c.name, s, err)
		}
		got := AppendLiteral([]byte(c.prefix), []byte(s), c.indent)
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s: for %q AppendLiteral writes\n%q\nyaml.v3 writes\n%q", c.name, s, got, want)
		}
		back, err := c.read(got)
		if err != nil || back != s {
			return fmt.Errorf("%s: %q reads back as %q, %v from\n%q", c.name, s, back, err, got)
		}
	}
	// And Text, the type the encoders marshal, writes the same.
	want, err := yaml.Marshal(map[string]Text{"t": Text(s)})
	if got := AppendLiteral([]byte("t: "), []byte(s), 4); err != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("Text(%q) marshals as %q, %v; AppendLiteral writes %q", s, want, err, got)
	}
	return nil
}

func TestIsPlainLiteral(t *testing.T) {
	in := []string{
		"a\n", "a\nb\n", "a\n\nb\n", "a\n\n\nb\n", "x\n  indented\n", "# not a comment\n",
		"---\n...\n", "- a\n", "|\n", ">-\n", "a: b\n", "'q'\n", "\"dq\"\n", "!!binary\n",
		"%YAML 1.2\n", "@x\n", "`x`\n", "{\n}\n", "a \\\n  b\n", "0644\n",
		"ключ ✓\n", "\u00a0\n", "a\u00a0\n", "\ufffd\n", "\ue000\n", "\ud7ff\n", "\u3000x\n",
		sample.CAPEM, sample.Kubeconfig, sample.KubeletConfig, sample.KubeletUnit,
		strings.Repeat("QUJD", 5000) + "\n",
	}
	out := []string{
		"", "\n", "\n\n", "a", "a\nb", "a\n\n", "a\n\n\n", "\na\n", " a\n", "  a\nb\n",
		"a \n", "a \nb\n", "a\n \nb\n", "a\tb\n", "\ta\n", "{\n\t\"a\": 1\n}\n",
		"a\r\n", "a\rb\n", "a\u0085b\n", "a\u2028b\n", "a\u2029b\n", "\ufeffa\n", "a\ufeff\n",
		"a\x00\n", "a\x1b\n", "a\x7f\n", "a\u0080\n", "a\u009f\n", "🚀\n", "a\ufffe\n",
		"a\uffff\n", "\xff\n", "a\xc3\n", "a\xed\xa0\x80\n", "a\xef\xbf\n",
	}
	for _, s := range in {
		if !IsPlainLiteral(s) {
			t.Errorf("IsPlainLiteral(%q) = false, want true", s)
			continue
		}
		if err := literalErr(s); err != nil {
			t.Error(err)
		}
	}
	for _, s := range out {
		if IsPlainLiteral(s) || IsPlainLiteral([]byte(s)) {
			t.Errorf("IsPlainLiteral(%q) = true, want false", s)
		}
	}
	for _, c := range sample.TrickyContents() {
		if IsPlainLiteral(c.Contents) {
			if err := literalErr(c.Contents); err != nil {
				t.Errorf("%s: %v", c.Name, err)
			}
		}
	}
}

// TestPlainLiteralRandom checks literalErr on seeded random text: shaped
// text made of printable pieces, which must all be IsPlainLiteral, and
// arbitrary text, of which only what IsPlainLiteral accepts is checked.
func TestPlainLiteralRandom(t *testing.T) {
	n := 6000
	if testing.Short() {
		n = 600
	}
	r := randv2.New(randv2.NewPCG(1, 2))
	checked := 0
	for i := range n {
		plain := i%2 == 0
		s := sample.RandomText(r.IntN, plain)
		if !IsPlainLiteral(s) {
			if plain {
				t.Fatalf("IsPlainLiteral rejects generated plain text %q", s)
			}
			continue
		}
		checked++
		if err := literalErr(s); err != nil {
			t.Fatal(err)
		}
	}
	if checked <= n/2 {
		// Every plain text counts, and some arbitrary ones should.
		t.Errorf("only %d of %d random texts were IsPlainLiteral", checked, n)
	}
	t.Logf("checked %d of %d random texts", checked, n)
}

// plainText is a testing/quick generator of the shaped, printable text that
// IsPlainLiteral is meant to accept.
type plainText string

func (plainText) Generate(r *rand.Rand, _ int) reflect.Value {
	return reflect.ValueOf(plainText(sample.RandomText(r.Intn, true)))
}

func TestPlainLiteralQuick(t *testing.T) {
	cfg := &quick.Config{MaxCount: 2000}
	if testing.Short() {
		cfg.MaxCount = 200
	}
	prop := func(p plainText) bool {
		s := string(p)
		if !IsPlainLiteral(s) {
			t.Logf("IsPlainLiteral rejects %q", s)
			return false
		}
		if err := literalErr(s); err != nil {
			t.Log(err)
			return false
		}
		return true
	}
	if err := quick.Check(prop, cfg); err != nil {
		t.Error(err)
	}
	// Arbitrary strings, most of which IsPlainLiteral must reject, and
	// the same with a newline added or shaped like a text file.
	anything := func(s string) bool {
		for _, s := range []string{s, s + "\n", shaped(s)} {
			if IsPlainLiteral(s) != IsPlainLiteral([]byte(s)) {
				t.Logf("IsPlainLiteral(%q) differs for string and bytes", s)
				return false
			}
			if IsPlainLiteral(s) {
				if err := literalErr(s); err != nil {
					t.Log(err)
					return false
				}
			}
		}
		return true
	}
	if err := quick.Check(anything, cfg); err != nil {
		t.Error(err)
	}
}

// FuzzLiteral checks literalErr on whatever IsPlainLiteral accepts:
//
//	go test -fuzz FuzzLiteral ./generator/encode/internal/layout
func FuzzLiteral(f *testing.F) {
	for _, s := range []string{
		sample.CAPEM, sample.Kubeconfig, sample.KubeletConfig, sample.KubeletUnit,
		"a\n", "a\nb\n", "a\n\nb\n", "a \nb\n", "ключ ✓\n", "\u00a0\n", "---\n", "a\tb\n",
		"x\n  y\n", "\ufffd\n", "🚀\n", "a\u2028\n",
	} {
		f.Add(s)
	}
	for _, c := range sample.TrickyContents() {
		f.Add(c.Contents)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Also try s shaped like a text file, which is more often in
		// the class.
		for _, s := range []string{s, shaped(s)} {
			if IsPlainLiteral(s) != IsPlainLiteral([]byte(s)) {
				t.Fatalf("IsPlainLiteral(%q) differs for string and bytes", s)
			}
			if !IsPlainLiteral(s) {
				continue
			}
			if err := literalErr(s); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// shaped trims leading and trailing blanks and newlines and the spaces at the
// ends of lines from s, and ends it with one newline.
func shaped(s string) string {
	s = strings.Trim(s, " \n")
	for strings.Contains(s, " \n") {
		s = strings.ReplaceAll(s, " \n", "\n")
	}
	return s + "\n"
}

func TestIsPlainLiteralAllocs(t *testing.T) {
	b := []byte("ключ: значение ✓\n" + sample.KubeletUnit)
	if n := testing.AllocsPerRun(100, func() { IsPlainLiteral(b) }); n != 0 {
		t.Errorf("IsPlainLiteral allocates %v times", n)
	}
	dst := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { AppendLiteral(dst, b, 6) }); n != 0 {
		t.Errorf("AppendLiteral allocates %v times", n)
	}
}
