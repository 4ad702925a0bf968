package ignition

import (
	"strings"
	"testing"
)

// TestParseIsVersionExact checks the last gate in Encode: a config that is
// valid but carries another spec version than promised is rejected, which
// ignition/v2/config.Parse (it upgrades older versions) would not do.
func TestParseIsVersionExact(t *testing.T) {
	cfg := func(v string) []byte { return []byte(`{"ignition":{"version":"` + v + `"}}`) }
	for _, spec := range []string{"3.3.0", "3.4.0", "3.5.0", "3.6.0"} {
		if _, err := parse(cfg(spec), spec); err != nil {
			t.Errorf("parse(%s, %s) = %v", spec, spec, err)
		}
	}
	tests := []struct {
		raw     []byte
		spec    string
		mention string
	}{
		{cfg("3.4.0"), "3.5.0", "unsupported config version"},
		{cfg("3.5.0"), "3.4.0", "unsupported config version"},
		{cfg("3.5.0"), "9.9.9", "no Ignition parser"},
		{[]byte(`{"ignition":{"version":"3.5.0"},"storage":{"files":[{"path":"rel"}]}}`), "3.5.0", "path not absolute"},
	}
	for _, tt := range tests {
		_, err := parse(tt.raw, tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("parse(%s, %s) = %v, want an error mentioning %q", tt.raw, tt.spec, err, tt.mention)
		}
	}
}
