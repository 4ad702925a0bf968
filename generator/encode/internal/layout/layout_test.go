package layout

import (
	"io/fs"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/render"
)

func TestUnixMode(t *testing.T) {
	tests := []struct {
		in      fs.FileMode
		want    uint32
		wantErr string
	}{
		{0o644, 0o644, ""},
		{0o700, 0o700, ""},
		{0, 0, ""},
		{fs.ModeSetuid | 0o755, 0, "setuid"},
		{fs.ModeSticky | 0o777, 0, "sticky"},
		{fs.ModeDir | 0o755, 0, "type bits"},
	}
	for _, tt := range tests {
		got, err := UnixMode(tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("UnixMode(%v) error = %v, want one mentioning %q", tt.in, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("UnixMode(%v) = %o, %v, want %o", tt.in, got, err, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	ok := render.Assets{
		Dirs:  []render.Dir{{Path: "/a", Mode: 0o755}},
		Files: []render.File{{Path: "/a/b", Mode: 0o600}},
		Units: []render.Unit{{Name: "x.service"}},
	}
	if err := Check(ok); err != nil {
		t.Fatalf("Check(valid) = %v", err)
	}
	tests := []struct {
		name    string
		modify  func(*render.Assets)
		mention string
	}{
		{"root", func(a *render.Assets) { a.Dirs[0].Path = "/" }, "root directory"},
		{"dot-dot", func(a *render.Assets) { a.Files[0].Path = "/a/../b" }, "not clean"},
		{"newline", func(a *render.Assets) { a.Files[0].Path = "/a/b\nc" }, "newline"},
		{"invalid UTF-8 path", func(a *render.Assets) { a.Dirs[0].Path = "/a\xff" }, "not valid UTF-8"},
		{"invalid UTF-8 unit", func(a *render.Assets) { a.Units[0].Name = "x\xc3.service" }, "plain unit file name"},
		{"dir and file", func(a *render.Assets) { a.Files[0].Path = "/a" }, "already used by a directory"},
		{"two units", func(a *render.Assets) { a.Units = append(a.Units, a.Units[0]) }, "already used by a unit"},
		{"hidden unit", func(a *render.Assets) { a.Units[0].Name = ".service" }, "plain unit file name"},
		{"unit type", func(a *render.Assets) { a.Units[0].Name = "x.conf" }, "suffix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := ok
			a.Dirs = append([]render.Dir(nil), ok.Dirs...)
			a.Files = append([]render.File(nil), ok.Files...)
			a.Units = append([]render.Unit(nil), ok.Units...)
			tt.modify(&a)
			if err := Check(a); err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("Check() = %v, want an error mentioning %q", err, tt.mention)
			}
		})
	}
}

func TestTextStyle(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"a\nb\n", "t: |\n    a\n    b\n"},
		{"a\nb", "t: |-\n    a\n    b\n"},
		{"plain", "t: plain\n"},
		{"0644", "t: \"0644\"\n"},
		{"\n", "t: \"\\n\"\n"},
		{"\tx\n", "t: \"\\tx\\n\"\n"},
		{"a\r\n", "t: \"a\\r\\n\"\n"},
	}
	for _, tt := range tests {
		out, err := yaml.Marshal(map[string]Text{"t": Text(tt.in)})
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != tt.want {
			t.Errorf("Text(%q) marshals as %q, want %q", tt.in, out, tt.want)
		}
		var back map[string]string
		if err := yaml.Unmarshal(out, &back); err != nil || back["t"] != tt.in {
			t.Errorf("Text(%q) reads back as %q, %v", tt.in, back["t"], err)
		}
	}
	if _, err := yaml.Marshal(map[string]Text{"t": "\xff"}); err == nil {
		t.Error("invalid UTF-8 marshalled without error")
	}
}
