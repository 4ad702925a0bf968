// Package layout holds the checks and conversions that the Ignition and
// cloud-init encoders share, so that both documents accept the same Assets and
// create the same files with the same modes.
package layout

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/kubestrap/kubestrap/generator/render"
)

// UnixMode converts an fs.FileMode to the numeric mode chmod(2) takes.
// Only permission bits are accepted. Type bits make no sense for a mode to
// set, and setuid/setgid/sticky are refused because Ignition before spec
// 3.6.0 does not apply them (its validator only warns), so the Ignition and
// cloud-init documents would disagree on the node.
func UnixMode(m fs.FileMode) (uint32, error) {
	if extra := m &^ fs.ModePerm; extra != 0 {
		return 0, fmt.Errorf("mode %v has bits other than permissions (%v); setuid, setgid, sticky and type bits are not supported", m, extra)
	}
	return uint32(m), nil
}

// UnitPath is where a unit named name is installed.
func UnitPath(name string) string {
	return path.Join(render.UnitDir, name)
}

// Check rejects Assets that one encoder would take and the other would not (or
// would take differently): Ignition refuses relative paths and duplicates,
// while cloud-init would write a relative path under its working directory
// and let the last duplicate win.
func Check(a render.Assets) error {
	seen := map[string]string{}
	claim := func(p, what string) error {
		if err := checkPath(p); err != nil {
			return fmt.Errorf("%s %q: %w", what, p, err)
		}
		if prev, ok := seen[p]; ok {
			return fmt.Errorf("%s %q: path already used by a %s", what, p, prev)
		}
		seen[p] = what
		return nil
	}
	for _, d := range a.Dirs {
		if err := claim(d.Path, "directory"); err != nil {
			return err
		}
		if _, err := UnixMode(d.Mode); err != nil {
			return fmt.Errorf("directory %q: %w", d.Path, err)
		}
	}
	for _, f := range a.Files {
		if err := claim(f.Path, "file"); err != nil {
			return err
		}
		if _, err := UnixMode(f.Mode); err != nil {
			return fmt.Errorf("file %q: %w", f.Path, err)
		}
	}
	for _, u := range a.Units {
		if err := checkUnitName(u.Name); err != nil {
			return fmt.Errorf("unit %q: %w", u.Name, err)
		}
		if err := claim(UnitPath(u.Name), "unit"); err != nil {
			return err
		}
	}
	for _, f := range a.Fetches {
		if err := claim(f.Path, "fetched file"); err != nil {
			return err
		}
		if _, err := UnixMode(f.Mode); err != nil {
			return fmt.Errorf("fetched file %q: %w", f.Path, err)
		}
		if err := checkFetch(f); err != nil {
			return fmt.Errorf("fetched file %q: %w", f.Path, err)
		}
		if f.Link != "" {
			if err := claim(f.Link, "link"); err != nil {
				return err
			}
		}
	}
	for _, u := range a.Restart {
		if err := checkUnitName(u); err != nil {
			return fmt.Errorf("unit to restart %q: %w", u, err)
		}
	}
	return nil
}

// checkFetch accepts what both documents can carry unquoted: an http(s) URL
// without spaces, quotes, backslashes or $ (it is an ExecStart argument in
// cloud-init's install unit), a hash in Ignition's form, and a unit that
// requires it.
func checkFetch(f render.Fetch) error {
	if !strings.HasPrefix(f.URL, "http://") && !strings.HasPrefix(f.URL, "https://") || strings.ContainsAny(f.URL, " \t\n\"'\\$`") {
		return fmt.Errorf("URL %q is not an http(s) URL without spaces, quotes, backslashes or $", f.URL)
	}
	alg, digest, _ := strings.Cut(f.Hash, "-")
	want := map[string]int{"sha256": 64, "sha512": 128}[alg]
	if want == 0 || len(digest) != want || strings.Trim(digest, "0123456789abcdef") != "" {
		return fmt.Errorf("hash %q is not sha256-<64 hex digits> or sha512-<128 hex digits>", f.Hash)
	}
	if err := checkUnitName(f.RequiredBy); err != nil {
		return fmt.Errorf("required by %q: %w", f.RequiredBy, err)
	}
	return nil
}

func checkPath(p string) error {
	switch {
	case !path.IsAbs(p):
		return fmt.Errorf("path is not absolute")
	case path.Clean(p) != p:
		return fmt.Errorf("path is not clean (want %q)", path.Clean(p))
	case p == "/":
		return fmt.Errorf("path is the root directory")
	case strings.ContainsAny(p, "\x00\n"):
		return fmt.Errorf("path contains a NUL or newline")
	case !utf8.ValidString(p):
		// JSON would carry it as U+FFFD, another path, and YAML only as
		// !!binary, which cloud-init's schema refuses.
		return fmt.Errorf("path is not valid UTF-8")
	}
	return nil
}

// checkUnitName accepts what both Ignition's validator and `systemctl enable`
// accept, so a name cannot pass one document and fail the other at boot.
func checkUnitName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00\n ") || strings.HasPrefix(name, ".") || !utf8.ValidString(name) {
		return fmt.Errorf("not a plain unit file name")
	}
	switch path.Ext(name) {
	case ".service", ".socket", ".device", ".mount", ".automount", ".swap",
		".target", ".path", ".timer", ".slice", ".scope":
		return nil
	}
	return fmt.Errorf("unit name has no systemd unit type suffix such as .service")
}
