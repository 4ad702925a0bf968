package token

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		v, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if !bootstraputil.IsValidBootstrapToken(v) {
			t.Fatalf("%q is not a bootstrap token", v)
		}
		if seen[v] {
			t.Fatalf("%q generated twice", v)
		}
		seen[v] = true
	}
}

// Each character is drawn from one random byte: the 252 values below 252
// map to the 36 characters 7 each, and 252-255 are dropped (a plain b%36
// would make 0-3 likelier), so every character is equally likely.
func TestGenerateIsUniform(t *testing.T) {
	perChar := map[byte]int{}
	for v := range 256 {
		src := bytes.NewReader(append([]byte{252, 253, 254, 255}, bytes.Repeat([]byte{byte(v)}, 64)...))
		if v >= 252 {
			continue // a source of only these would never yield a token
		}
		tok, err := generate(src)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Repeat(string(tokenChars[v%36]), 6) + "." + strings.Repeat(string(tokenChars[v%36]), 16)
		if tok != want {
			t.Fatalf("byte %d gives %q, want %q", v, tok, want)
		}
		perChar[tokenChars[v%36]]++
	}
	for _, c := range []byte(tokenChars) {
		if perChar[c] != 7 {
			t.Errorf("%c is drawn from %d byte values, want 7", c, perChar[c])
		}
	}
	if _, err := generate(iotest.ErrReader(errors.New("no entropy"))); err == nil || !strings.Contains(err.Error(), "no entropy") {
		t.Errorf("err = %v", err)
	}
}

func BenchmarkGenerate(b *testing.B) {
	for b.Loop() {
		if _, err := Generate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerateClusterBootstrap(b *testing.B) {
	for b.Loop() {
		if _, err := bootstraputil.GenerateBootstrapToken(); err != nil {
			b.Fatal(err)
		}
	}
}
