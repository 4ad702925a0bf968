package ignition

import (
	"strings"
	"testing"
)

// The bit sets in unreserved are RFC 2396's unreserved characters, for
// every byte value.
func TestUnreserved(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		want := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("-_.!~*'()", b) >= 0
		if got := unreserved(b); got != want {
			t.Errorf("unreserved(%q) = %v, want %v", b, got, want)
		}
	}
}
