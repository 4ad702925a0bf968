package layout

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// IsText reports whether b can be carried as a YAML string at all. Anything
// else (invalid UTF-8) must travel base64-encoded: yaml.v3 would otherwise
// silently emit a !!binary node, which Butane would decode but cloud-init's
// schema rejects (content must be a string).
func IsText(b []byte) bool {
	return utf8.Valid(b)
}

// Text is file or unit contents that must survive a YAML round trip byte for
// byte, through yaml.v3 (Butane) and PyYAML (cloud-init) alike. It marshals as
// a literal block when that is unambiguous, for readable documents, and as a
// double-quoted string with escapes otherwise.
type Text string

// MarshalYAML picks the scalar style. yaml.v3 chooses a literal block for any
// string with a newline, but that is not always safe: a lone "\n" comes back
// as "", a leading tab produces YAML that does not parse, and CR, NEL, U+2028
// and U+2029 are line breaks to a YAML parser and get normalised.
func (t Text) MarshalYAML() (any, error) {
	s := string(t)
	if IsPlainLiteral(s) {
		// The common case (PEM, JSON, YAML, unit files), which needs no
		// checking: see IsPlainLiteral.
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.LiteralStyle}, nil
	}
	return checkedNode(s)
}

// checkedNode is MarshalYAML for any string: it asks the emitter itself
// (roundTrips) whether a literal block is safe.
func checkedNode(s string) (any, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("contents are not valid UTF-8; encode them as base64 instead")
	}
	if !strings.Contains(s, "\n") && literalSafe(s) {
		// One line: yaml.v3's own choice (plain, or quoted when it would read
		// as another type) is safe and reads best.
		return s, nil
	}
	if literalSafe(s) {
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.LiteralStyle}
		if roundTrips(n, s) {
			return n, nil
		}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}, nil
}

// literalSafe accepts multi-line text made only of printable characters and
// newlines, with something other than whitespace in it; everything else is
// where YAML emitters and parsers disagree.
func literalSafe(s string) bool {
	if len(s) == 0 {
		return false
	}
	visible := false
	for _, r := range s {
		switch {
		case r == '\n':
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0,
			r == 0x2028, r == 0x2029, r == 0xfeff:
			return false
		case r != ' ':
			visible = true
		}
	}
	return visible
}

// roundTrips is the last line of defence against the emitter's corner cases
// that literalSafe does not know about: it costs one small marshal per file.
func roundTrips(n *yaml.Node, want string) bool {
	out, err := yaml.Marshal(map[string]*yaml.Node{"t": n})
	if err != nil {
		return false
	}
	var back map[string]string
	if err := yaml.Unmarshal(out, &back); err != nil {
		return false
	}
	return back["t"] == want
}

// IsPlainLiteral reports whether s belongs to the class of text that is
// written as a literal block with no indentation or chomping indicator ("|"
// alone) and that AppendLiteral may therefore write without an emitter. That
// is what PEM, kubeconfig YAML, JSON and unit files look like:
//
//   - s ends with exactly one "\n" (so the default "clip" chomping restores
//     it) and starts with neither a space nor a newline (so the indentation
//     of the block is that of its first line);
//   - no line ends in a space (yaml.v3 would refuse a block for it);
//   - every other character is printable in the sense of both yaml.v3's
//     emitter and PyYAML's reader, and none is a YAML line break other than
//     "\n": ASCII 0x20-0x7E, or U+00A0-U+D7FF and U+E000-U+FFFD except
//     U+2028, U+2029 and U+FEFF. Tabs, CR, NEL, C0/C1 controls, DEL, BOMs,
//     characters beyond the BMP (which yaml.v3 escapes) and invalid UTF-8 are
//     all out.
//
// Such text is literalSafe, and yaml.v3 emits it as a "|" block that reads
// back exactly; the tests check both against the emitter and parser.
func IsPlainLiteral[T string | []byte](s T) bool {
	n := len(s)
	if n < 2 || s[n-1] != '\n' || s[n-2] == '\n' || s[0] == ' ' || s[0] == '\n' {
		return false
	}
	prevSpace := false
	for i := 0; i < n; {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\n':
				if prevSpace {
					return false
				}
			case c < 0x20 || c == 0x7f:
				return false
			}
			prevSpace = c == ' '
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, n)]))
		switch {
		case r == utf8.RuneError && size == 1:
			// Invalid UTF-8 (a real U+FFFD is three bytes).
			return false
		case r < 0xa0, r > 0xfffd, r >= 0xd800 && r < 0xe000,
			r == 0x2028, r == 0x2029, r == 0xfeff:
			return false
		}
		prevSpace = false
		i += size
	}
	return true
}

// AppendLiteral appends s, which must satisfy IsPlainLiteral, as the literal
// block yaml.v3 writes for a mapping value: "|", then every line indented by
// indent spaces (the indentation of the block, which must be deeper than
// that of its key), with empty lines left empty. The caller has written the
// key and ": ". For text that is not IsPlainLiteral the result is
// unspecified.
func AppendLiteral(dst, s []byte, indent int) []byte {
	dst = append(dst, '|', '\n')
	for len(s) > 0 {
		line := s
		if i := bytes.IndexByte(s, '\n'); i >= 0 {
			line = s[:i+1]
		}
		s = s[len(line):]
		if len(line) > 1 {
			dst = appendSpaces(dst, indent)
		}
		dst = append(dst, line...)
	}
	return dst
}

const spaces = "                "

func appendSpaces(dst []byte, n int) []byte {
	for n > len(spaces) {
		dst = append(dst, spaces...)
		n -= len(spaces)
	}
	return append(dst, spaces[:n]...)
}
