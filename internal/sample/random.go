package sample

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/kubestrap/kubestrap/generator/render"
)

// IntN is the random source of the generators below: it returns a number in
// [0, n). Both (*math/rand.Rand).Intn, which testing/quick hands out, and
// (*math/rand/v2.Rand).IntN fit.
type IntN func(n int) int

// plainPieces are what generated text is made of: printable characters,
// YAML indicators, document markers, non-ASCII characters that YAML prints
// as they are, and line breaks.
var plainPieces = []string{
	"a", "Z", "0", "kubelet", "x509", " ", "  ", "\n", "\n", "\n\n",
	"#", "# ", ":", ": ", "- ", "-", "---", "...", "|", "|-", ">", "'", "\"",
	"\\", "\\n", "{", "}", "[", "]", ",", "&", "*", "!", "!!str", "%", "@", "`",
	"?", "=", "~", "null", "yes", "0644", "é", "ключ", "✓", "\u00a0", "\ufffd",
	"\ue000", "\ud7ff", "\u3000",
	"MIIBnzCCAUWgAwIBAgIUdeRl6x4hlN9i0uiySehgLcpv5ukwCgYIKoZIzj0EAwIw",
}

// trickyPieces are characters YAML treats as line breaks, escapes or
// refuses, and invalid UTF-8.
var trickyPieces = []string{
	"\t", "\r", "\r\n", "\u0085", "\u2028", "\u2029", "\ufeff", "\x00", "\x1b",
	"\x7f", "\u0080", "\u009f", "\ufffe", "\uffff", "🚀", "\xff", "\xc3",
}

// RandomText returns a random file body. If plain, it is made only of
// plainPieces and shaped the way text files usually are: it starts with
// neither a space nor a newline, no line ends in a space, and it ends in
// exactly one newline. Otherwise anything goes, tricky pieces included, and
// the shaping is applied only sometimes.
func RandomText(intN IntN, plain bool) string {
	var b strings.Builder
	n := intN(40)
	if intN(8) == 0 {
		n = intN(400)
	}
	for range n {
		if !plain && intN(6) == 0 {
			b.WriteString(trickyPieces[intN(len(trickyPieces))])
		} else {
			b.WriteString(plainPieces[intN(len(plainPieces))])
		}
	}
	s := b.String()
	if plain || intN(2) == 0 {
		s = shape(s)
	}
	return s
}

// shape makes s start and end the way text files do.
func shape(s string) string {
	s = strings.TrimLeft(s, " \n")
	s = strings.TrimRight(s, " \n")
	for strings.Contains(s, " \n") {
		s = strings.ReplaceAll(s, " \n", "\n")
	}
	if s == "" {
		s = "x"
	}
	return s + "\n"
}

// wordBytes are what generated path components and unit names are made of:
// the characters that appear in real paths, plus (unless plain) ones YAML or
// a shell would treat specially.
const (
	plainWordBytes  = "abcxyzABCXYZ0123456789._-+@="
	trickyWordBytes = " :#,[]{}'\"\\~!&*%|>?`$é"
)

func randomWord(intN IntN, plain bool) string {
	var b strings.Builder
	for range 1 + intN(12) {
		if !plain && intN(5) == 0 {
			r := []rune(trickyWordBytes)
			b.WriteRune(r[intN(len(r))])
		} else {
			b.WriteByte(plainWordBytes[intN(len(plainWordBytes))])
		}
	}
	return b.String()
}

var unitSuffixes = []string{".service", ".socket", ".mount", ".timer", ".path", ".target", ".slice"}

// RandomAssets returns random assets that render could produce, with up to
// maxFiles files, any modes, and paths, unit names and contents from
// RandomText and randomWord (all of them plain if plain is set, and then
// with a node name that needs no quoting either). They are valid for both
// encoders: paths are absolute, clean and distinct, unit names are plain
// file names with a type suffix, and unit contents are valid UTF-8.
func RandomAssets(intN IntN, maxFiles int, plain bool) render.Assets {
	nodes := []string{"kube-node1", "worker-7.example.com", "n1"}
	if !plain {
		nodes = append(nodes, "yes", "off", "1234", "0x1f", "null", "y", "node 1", "a:b", "é")
	}
	a := render.Assets{Node: nodes[intN(len(nodes))]}
	text := func() []byte {
		switch intN(10) {
		case 0:
			return []byte(CAPEM)
		case 1:
			return []byte(KubeletConfig)
		}
		return []byte(RandomText(intN, plain))
	}
	for i := range intN(5) {
		a.Dirs = append(a.Dirs, render.Dir{
			Path: fmt.Sprintf("/var/lib/gen/d%d%s", i, randomWord(intN, plain)),
			Mode: fs.FileMode(intN(0o1000)),
		})
	}
	for i := range intN(maxFiles + 1) {
		f := render.File{
			Path: fmt.Sprintf("/etc/gen/f%d%s", i, randomWord(intN, plain)),
			Mode: fs.FileMode(intN(0o1000)),
		}
		if intN(6) == 0 {
			// Binary. If plain, it starts with 0xff (so it is not UTF-8
			// and its base64 starts with '/') and has at least five bytes
			// (eight base64 digits); else it can be anything, even UTF-8.
			f.Contents = make([]byte, intN(48))
			if plain {
				f.Contents = make([]byte, 5+intN(44))
			}
			for j := range f.Contents {
				f.Contents[j] = byte(intN(256))
			}
			if plain {
				f.Contents[0] = 0xff
			}
		} else {
			f.Contents = text()
		}
		a.Files = append(a.Files, f)
	}
	for i := range intN(4) {
		body := text()
		if !plain {
			body = []byte(strings.ToValidUTF8(string(body), "?"))
		}
		a.Units = append(a.Units, render.Unit{
			// No spaces: systemctl would not take the name.
			Name:     fmt.Sprintf("u%d%s%s", i, strings.ReplaceAll(randomWord(intN, plain), " ", "_"), unitSuffixes[intN(len(unitSuffixes))]),
			Contents: body,
		})
	}
	if plain && len(a.Files)+len(a.Units)+len(a.Dirs) == 0 {
		a.Units = append(a.Units, render.Unit{Name: "kubelet.service", Contents: []byte(KubeletUnit)})
	}
	return a
}
