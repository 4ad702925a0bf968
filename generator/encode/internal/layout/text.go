package layout

import (
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
