package serve

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseBootProfile(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		want       string // a part of the error; "" for none
	}{
		{"valid", validProfile, ""},
		{"kernel only", "kernel: http://10.0.0.2/vmlinuz\n", ""},
		{"placeholder in a URL", "kernel: https://x/{node}/kernel\ninitrd: [\"https://x/{node}/initrd\"]\n", ""},
		{"missing kernel", "initrd: [https://x/initrd]\nargs: [a]\n", "kernel: required"},
		{"empty kernel", "kernel: \"\"\n", "kernel: required"},
		{"ftp kernel", "kernel: ftp://x/kernel\n", `kernel: "ftp://x/kernel" is not an http or https URL`},
		{"tftp kernel", "kernel: tftp://x/kernel\n", "is not an http or https URL"},
		{"relative kernel", "kernel: /boot/kernel\n", "is not an http or https URL"},
		{"kernel without host", "kernel: http:///kernel\n", "is not an http or https URL"},
		{"ftp initrd", "kernel: http://x/k\ninitrd: [ftp://x/i]\n", "initrd[0]"},
		{"empty initrd", "kernel: http://x/k\ninitrd: [\"\"]\n", "initrd[0]: required"},
		{"empty arg", "kernel: http://x/k\nargs: [\"\"]\n", "args[0]: required"},
		{"arg with a space", "kernel: http://x/k\nargs: [ok, \"a b\"]\n", "args[1]: \"a b\" holds a space or control character"},
		{"arg with a newline", "kernel: http://x/k\nargs: [\"a\\nboot\"]\n", "args[0]: \"a\\nboot\" holds a space or control character"},
		{"arg with a tab", "kernel: http://x/k\nargs: [\"a\\tb\"]\n", "holds a space or control character"},
		{"arg with a CR", "kernel: http://x/k\nargs: [\"a\\rb\"]\n", "holds a space or control character"},
		{"arg with NUL", "kernel: http://x/k\nargs: [\"a\\0b\"]\n", "holds a space or control character"},
		{"arg with DEL", "kernel: http://x/k\nargs: [\"a\\x7fb\"]\n", "holds a space or control character"},
		{"arg with ESC", "kernel: http://x/k\nargs: [\"a\\eb\"]\n", "holds a space or control character"},
		{"kernel with a space", "kernel: \"http://x/k ernel\"\n", "kernel: \"http://x/k ernel\" holds a space"},
		{"unknown placeholder", "kernel: http://x/k\nargs: [\"x={foo}\"]\n", "args[0]: unknown placeholder {foo}"},
		{"iPXE setting as a placeholder", "kernel: http://x/k\nargs: [\"ip=${net0/ip}\"]\n", "unknown placeholder {net0/ip}"},
		{"unknown placeholder in the kernel", "kernel: http://x/{arch}/k\n", "kernel: unknown placeholder {arch}"},
		{"unknown field", "kernel: http://x/k\ncmdline: quiet\n", "field cmdline not found"},
		{"misspelt field", "kernel: http://x/k\ninitrds: [http://x/i]\n", "field initrds not found"},
		{"args not a list", "kernel: http://x/k\nargs: quiet splash\n", "cannot unmarshal"},
		{"not YAML", "kernel: [\n", "yaml"},
		{"empty", "", "EOF"},
		{"every problem at once", "kernel: ftp://x/k\nargs: [\"a b\", \"{x}\"]\n", "args[1]: unknown placeholder {x}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseBootProfile("profile.yaml", []byte(tt.yaml))
			if tt.want == "" {
				if err != nil || p == nil {
					t.Fatalf("ParseBootProfile = %v, %v", p, err)
				}
				return
			}
			if err == nil || p != nil {
				t.Fatalf("ParseBootProfile = %+v, %v; want an error with %q", p, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "profile.yaml") {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	p := testProfile(t)
	if p.Kernel != "https://builds.example.com/fcos/kernel-x86_64" || len(p.Initrd) != 2 || len(p.Args) != 6 || p.Args[3] != "ignition.config.url={ignition_url}" {
		t.Errorf("profile %+v", p)
	}
}

func TestLoadBootProfile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(validProfile), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := LoadBootProfile(good); err != nil || p.Kernel == "" {
		t.Errorf("LoadBootProfile = %+v, %v", p, err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(validProfile+"#"+strings.Repeat("x", maxProfileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBootProfile(big); err == nil || !strings.Contains(err.Error(), "not a boot profile") {
		t.Errorf("a profile over the limit: %v", err)
	}
	if _, err := LoadBootProfile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestScript(t *testing.T) {
	p := &BootProfile{
		Kernel: "http://x/{node}/kernel",
		Initrd: []string{"http://x/a", "http://x/{node}/b"},
		Args:   []string{"a", "url={ignition_url}", "seed={nocloud_url}", "n={node}{node}", "lit={}", "x={"},
	}
	got := string(p.script(map[string]string{"{ignition_url}": "http://s/ignition?mac=m", "{nocloud_url}": "http://s/nocloud/m/", "{node}": "n1"}))
	want := "#!ipxe\n" +
		"kernel http://x/n1/kernel a url=http://s/ignition?mac=m seed=http://s/nocloud/m/ n=n1n1 lit= x={\n" +
		"initrd http://x/a\n" +
		"initrd http://x/n1/b\n" +
		"boot\n"
	if got != want {
		t.Errorf("script\n%s\nwant\n%s", got, want)
	}
	// Without initrds or args.
	if got := string((&BootProfile{Kernel: "http://x/k"}).script(nil)); got != "#!ipxe\nkernel http://x/k\nboot\n" {
		t.Errorf("script %q", got)
	}
}

// FuzzBootProfile: a profile ParseBootProfile accepts renders a script of
// exactly its lines: "#!ipxe", one kernel line, one line per initrd and
// "boot", whatever the profile held.
func FuzzBootProfile(f *testing.F) {
	f.Add([]byte(validProfile))
	f.Add([]byte("kernel: http://x/k\n"))
	f.Add([]byte("kernel: http://x/{node}\ninitrd: [\"http://x/{ignition_url}\"]\nargs: [\"a={nocloud_url}\", \"b\\u00a0c\"]\n"))
	f.Add([]byte("kernel: &a http://x/k\ninitrd: [*a, *a]\nargs: [*a]\n"))
	vars := map[string]string{
		"{ignition_url}": "http://10.0.0.2:8080/ignition?mac=52:54:00:aa:00:01",
		"{nocloud_url}":  "http://10.0.0.2:8080/nocloud/52:54:00:aa:00:01/",
		"{node}":         "node-a",
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseBootProfile("profile.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatalf("a profile with the error %v", err)
			}
			return
		}
		clean := func(field, v string) {
			if v == "" {
				t.Fatalf("%s is empty", field)
			}
			for i := 0; i < len(v); i++ {
				if v[i] <= 0x20 || v[i] == 0x7f {
					t.Fatalf("%s %q holds byte %#x", field, v, v[i])
				}
			}
			for _, ph := range placeholder.FindAllString(v, -1) {
				if !knownPlaceholders[ph] {
					t.Fatalf("%s %q holds the unknown placeholder %s", field, v, ph)
				}
			}
		}
		clean("kernel", p.Kernel)
		isURL := func(field, v string) {
			if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("%s %q is no http(s) URL", field, v)
			}
		}
		isURL("kernel", p.Kernel)
		for _, v := range p.Initrd {
			clean("initrd", v)
			isURL("initrd", v)
		}
		for _, v := range p.Args {
			clean("arg", v)
		}
		script := string(p.script(vars))
		lines := strings.Split(script, "\n")
		if want := 2 + len(p.Initrd) + 1; len(lines) != want+1 || lines[want] != "" {
			t.Fatalf("%d lines, want %d:\n%s", len(lines)-1, want, script)
		}
		if lines[0] != "#!ipxe" || lines[len(lines)-2] != "boot" {
			t.Fatalf("script\n%s", script)
		}
		// iPXE splits a line at ASCII spaces only.
		kernel := strings.Split(lines[1], " ")
		if len(kernel) != 2+len(p.Args) || kernel[0] != "kernel" {
			t.Fatalf("kernel line %q: %d words for %d args", lines[1], len(kernel), len(p.Args))
		}
		for i, l := range lines[2 : 2+len(p.Initrd)] {
			if w := strings.Split(l, " "); len(w) != 2 || w[0] != "initrd" {
				t.Fatalf("initrd line %d %q", i, l)
			}
		}
		if slices.ContainsFunc([]byte(script), func(b byte) bool { return b < 0x20 && b != '\n' || b == 0x7f }) {
			t.Fatalf("script holds a control character:\n%q", script)
		}
	})
}
