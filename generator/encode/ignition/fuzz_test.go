package ignition

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	butaneutil "github.com/coreos/butane/base/util"
	"github.com/vincent-petithory/dataurl"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// fuzzSeeds are contents for a file or a unit that sit where mimics of
// Butane's encoding go wrong: JSON's short escapes, NUL, JavaScript's line
// separators, a lone newline, a leading tab, CRLF, invalid UTF-8.
var fuzzSeeds = []string{
	"\b", "\f", "\x00", "\u2028", "\u2029", "\n", "\tleading tab\n", "crlf\r\n", "\xff\xfe",
	"<&>", "\x7f", "\x1b[0m", "é ключ ✓ 🚀", `"quoted" \ back\slash`, "",
}

// FuzzTemplateMatchesButane puts any contents in the sample's shape (three
// files and a unit, as render makes them), for any accepted Butane spec, and
// requires Fill to give exactly Encode's bytes, and a document that
// Ignition's parser reads back as the assets. Where Fill refuses the assets
// as of another shape, Encode must still encode them, or fail for a reason
// it names.
//
// The fuzzed contents go in one slot (or all of them), which slot picks:
// 0-2 a file, 3 the unit as it is (seldom a valid unit), 4 the unit inside a
// valid unit's Description, 5 every file and the unit as in 4. One value and
// small seeds keep minimizing cheap: each input that finds new code is
// minimized, at one Butane translation per attempt and a number of attempts
// that grows with the square of the input's length. The sample's real
// contents are in TestTemplateMatchesButane.
//
//	go test -run '^$' -fuzz '^FuzzTemplateMatchesButane$' -fuzztime 30s ./generator/encode/ignition
func FuzzTemplateMatchesButane(f *testing.F) {
	for i, s := range fuzzSeeds {
		for slot := range uint8(6) {
			f.Add(uint8(i), slot, []byte(s))
		}
	}
	f.Add(uint8(0), uint8(3), []byte("[Unit]\nDescription=\b\f\n[Install]\nWantedBy=multi-user.target\n"))
	f.Add(uint8(1), uint8(3), []byte("[Service]\nExecStart=/bin/true\n"))
	f.Add(uint8(2), uint8(3), []byte("[Service\n"))
	// One per Butane spec: their templates are made once per fuzzing
	// process, which takes a few Butane translations each.
	templates := map[Options]*Template{}
	f.Fuzz(func(t *testing.T, spec, slot uint8, contents []byte) {
		o := allOptions[int(spec)%len(allOptions)]
		tmpl := templates[o]
		if tmpl == nil {
			var err error
			if tmpl, err = NewTemplate(sample.Assets(), o); err != nil {
				t.Fatal(err)
			}
			templates[o] = tmpl
		}
		a := sample.Assets()
		wrapped := []byte("[Unit]\nDescription=" + string(contents) + "\n[Install]\nWantedBy=multi-user.target\n")
		switch slot % 6 {
		case 0, 1, 2:
			a.Files[slot%6].Contents = contents
		case 3:
			a.Units[0].Contents = contents
		case 4:
			a.Units[0].Contents = wrapped
		case 5:
			for i := range a.Files {
				a.Files[i].Contents = contents
			}
			a.Units[0].Contents = wrapped
		}
		unit := a.Units[0].Contents

		got, gotWarnings, err := tmpl.Fill(a)
		want, wantErr := Encode(a, o)
		switch {
		case err == nil:
			if wantErr != nil {
				t.Fatalf("Fill accepts what Encode rejects (%v)", wantErr)
			}
			if !bytes.Equal(got, want.Ignition) {
				t.Fatalf("Fill differs from Encode:\n%s", firstDiff(got, want.Ignition))
			}
			// The warnings are worded differently (Butane's point into
			// config.bu), but there must be as many.
			if len(gotWarnings) != len(want.Warnings) {
				t.Fatalf("Fill warns %q, Encode %q", gotWarnings, want.Warnings)
			}
			checkReadsBack(t, got, a)
		case errors.Is(err, ErrShape):
			// Only contents that are not text change the shape here.
			textUnit := layout.IsText(unit)
			if textUnit && layout.IsText(contents) {
				t.Fatalf("Fill: %v, for assets of the template's shape", err)
			}
			if !textUnit {
				if !errors.Is(wantErr, ErrInvalidGenerated) || !strings.Contains(wantErr.Error(), "not valid UTF-8") {
					t.Fatalf("Encode of a unit that is not UTF-8: %v", wantErr)
				}
				return
			}
			// Binary files go as base64 data URLs: Encode must take them
			// unless the unit is wrong, which Fill tells with the files
			// made text.
			text := a
			text.Files = []render.File{a.Files[0], a.Files[1], a.Files[2]}
			for i := range text.Files {
				text.Files[i].Contents = []byte("x\n")
			}
			if _, _, err := tmpl.Fill(text); err != nil {
				if !errors.Is(wantErr, ErrInvalidGenerated) {
					t.Fatalf("Encode: %v, Fill of the same unit: %v", wantErr, err)
				}
				return
			}
			if wantErr != nil {
				t.Fatalf("Encode rejects binary files: %v", wantErr)
			}
			checkReadsBack(t, want.Ignition, a)
		case errors.Is(err, ErrInvalidGenerated):
			if !errors.Is(wantErr, ErrInvalidGenerated) {
				t.Fatalf("Fill rejects what Encode does not (%v): %v", wantErr, err)
			}
		default:
			t.Fatalf("Fill: %v", err)
		}
	})
}

// checkReadsBack parses ign with Ignition's parser and requires it to do
// what a asks for.
func checkReadsBack(t *testing.T, ign []byte, a render.Assets) {
	t.Helper()
	doc, err := parseback.Ignition(ign)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := parseback.Diff(doc, a); len(diffs) > 0 {
		t.Fatal(strings.Join(diffs, "\n"))
	}
}

// FuzzMakeDataURL requires makeDataURL to be Butane's MakeDataURL for
// uncompressed contents, and its data URL to decode to the contents.
//
//	go test -run '^$' -fuzz '^FuzzMakeDataURL$' -fuzztime 30s ./generator/encode/ignition
func FuzzMakeDataURL(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, c := range sample.TrickyContents() {
		f.Add([]byte(c.Contents))
	}
	f.Add([]byte(sample.Kubeconfig))
	f.Add([]byte(sample.KubeletConfig))
	f.Fuzz(func(t *testing.T, contents []byte) {
		want, compression, err := butaneutil.MakeDataURL(contents, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if compression == nil || *compression != "" {
			t.Fatalf("Butane compressed without being allowed to: %v", compression)
		}
		got := makeDataURL(contents)
		if got != want {
			t.Fatalf("makeDataURL(%q) = %q, Butane says %q", contents, got, want)
		}
		u, err := dataurl.DecodeString(got)
		if err != nil {
			t.Fatalf("%q: %v", got, err)
		}
		if !bytes.Equal(u.Data, contents) {
			t.Fatalf("%q decodes to %q", got, u.Data)
		}
	})
}
