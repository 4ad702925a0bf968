package cloudinit_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// userConfig is what people add to a node (see SampleUserConfig).
const userConfig = cloudinit.SampleUserConfig

func parseUser(t testing.TB, name, src string) *cloudinit.UserConfig {
	t.Helper()
	u, err := cloudinit.ParseUserConfig(name, []byte(src))
	if err != nil {
		t.Fatalf("ParseUserConfig: %v", err)
	}
	return u
}

func userData(t testing.TB, a render.Assets) []byte {
	t.Helper()
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	return ud
}

// mergeChecked checks u against a's paths, as a caller must, and merges it
// into base.
func mergeChecked(t testing.TB, a render.Assets, base []byte, u *cloudinit.UserConfig) []byte {
	t.Helper()
	paths, err := cloudinit.OwnedPaths(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Owned(paths); err != nil {
		t.Fatalf("Owned: %v", err)
	}
	out, err := cloudinit.MergeUserData(base, u)
	if err != nil {
		t.Fatalf("MergeUserData: %v", err)
	}
	if !bytes.HasPrefix(out, []byte("#cloud-config\n")) {
		t.Fatalf("merged user-data does not start with #cloud-config:\n%s", out)
	}
	return out
}

// topLevel decodes doc's top-level keys and values, in order.
func topLevel(t testing.TB, doc []byte) (keys []string, values map[string]any) {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	if len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		t.Fatalf("not a mapping:\n%s", doc)
	}
	values = map[string]any{}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		var v any
		if err := m.Content[i+1].Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, m.Content[i].Value)
		values[m.Content[i].Value] = v
	}
	return keys, values
}

func TestMergeUserData(t *testing.T) {
	a := sample.Assets()
	base := userData(t, a)
	out := mergeChecked(t, a, base, parseUser(t, "user.yaml", userConfig))

	keys, got := topLevel(t, out)
	baseKeys, want := topLevel(t, base)
	_, user := topLevel(t, []byte(userConfig))
	wantKeys := append(slices.Clone(baseKeys), "package_update", "packages", "timezone", "bootcmd", "ssh_authorized_keys", "users")
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("keys %q, want kubestrap's then the user's in order: %q", keys, wantKeys)
	}

	// kubestrap's files first and intact, then the user's.
	files := got["write_files"].([]any)
	baseFiles := want["write_files"].([]any)
	if len(files) != len(baseFiles)+2 || !reflect.DeepEqual(files[:len(baseFiles)], baseFiles) ||
		!reflect.DeepEqual(files[len(baseFiles):], user["write_files"]) {
		t.Errorf("write_files:\n%v\nwant kubestrap's\n%v\nthen the user's", files, baseFiles)
	}
	// The user's commands run after kubestrap has started the kubelet.
	cmds := got["runcmd"].([]any)
	enable := slices.IndexFunc(cmds, func(c any) bool { return fmt.Sprint(c) == "[systemctl enable --now kubelet.service]" })
	touch := slices.IndexFunc(cmds, func(c any) bool { return fmt.Sprint(c) == "[touch /var/lib/user-ran]" })
	if enable < 0 || touch != enable+1 || touch != len(cmds)-2 || !reflect.DeepEqual(cmds[:len(cmds)-2], want["runcmd"]) {
		t.Errorf("runcmd %q: want kubestrap's, ending in enabling the kubelet, then the user's", cmds)
	}
	for _, k := range []string{"package_update", "packages", "timezone", "bootcmd", "ssh_authorized_keys", "users"} {
		if !reflect.DeepEqual(got[k], user[k]) {
			t.Errorf("%s = %v, want the user's %v", k, got[k], user[k])
		}
	}
	// Comments are the user's notes on their own document.
	if bytes.Contains(out, []byte("admins")) {
		t.Errorf("the user's comments are in the merged user-data:\n%s", out)
	}
}

// TestMergeUserDataOverrides: for keys that are not lists, the user's value
// wins, in kubestrap's place; the lists are appended to, also when
// kubestrap's has one the user's does not.
func TestMergeUserDataOverrides(t *testing.T) {
	a := sample.Assets()
	base := append(userData(t, a), "timezone: UTC\npackages:\n  - curl\npackage_update: false\n"...)
	user := "#cloud-config\npackage_update: true\npackages: [jq]\ntimezone: Europe/Paris\nlocale: C.UTF-8\n"
	out := mergeChecked(t, a, base, parseUser(t, "user.yaml", user))
	keys, got := topLevel(t, out)
	if want := []string{"write_files", "runcmd", "timezone", "packages", "package_update", "locale"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	if got["timezone"] != "Europe/Paris" || got["package_update"] != true || got["locale"] != "C.UTF-8" ||
		!reflect.DeepEqual(got["packages"], []any{"curl", "jq"}) {
		t.Errorf("merged values %v", got)
	}
}

func TestMergeUserDataEmpty(t *testing.T) {
	base := userData(t, sample.Assets())
	for _, src := range []string{"#cloud-config\n", "#cloud-config\n# nothing yet\n", "#cloud-config\n---\n", "#cloud-config\n~\n"} {
		out, err := cloudinit.MergeUserData(base, parseUser(t, "user.yaml", src))
		if err != nil || !bytes.Equal(out, base) {
			t.Errorf("merging %q: %v, changed: %v", src, err, !bytes.Equal(out, base))
		}
	}
	// An empty list adds nothing to kubestrap's, and is kept where
	// kubestrap has none.
	out := mergeChecked(t, sample.Assets(), base, parseUser(t, "user.yaml", "#cloud-config\nruncmd: []\nwrite_files:\nbootcmd: []\n"))
	if want := append(slices.Clone(base), "bootcmd: []\n"...); !bytes.Equal(out, want) {
		t.Errorf("merged:\n%s\nwant\n%s", out, want)
	}
	if _, err := cloudinit.MergeUserData([]byte("runcmd: []\n"), parseUser(t, "user.yaml", userConfig)); err == nil {
		t.Error("MergeUserData accepted a base without the #cloud-config line")
	}
}

func TestMergeUserDataDeterministic(t *testing.T) {
	base := userData(t, sample.TrickyAssets())
	u := parseUser(t, "user.yaml", userConfig)
	first, err := cloudinit.MergeUserData(base, u)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	outs := make([][]byte, 8)
	for i := range outs {
		wg.Go(func() {
			outs[i], _ = cloudinit.MergeUserData(base, parseUser(t, "user.yaml", userConfig))
			if i%2 == 0 {
				outs[i], _ = cloudinit.MergeUserData(base, u)
			}
		})
	}
	wg.Wait()
	for i, out := range outs {
		if !bytes.Equal(out, first) {
			t.Errorf("merge %d differs", i)
		}
	}
}

func TestParseUserConfigRefused(t *testing.T) {
	const h = "#cloud-config\n"
	tests := []struct {
		name, src, want string
	}{
		{"no header", "runcmd: [ls]\n", "u.yaml:1: the first line must be #cloud-config"},
		{"header not first", "\n#cloud-config\n", "u.yaml:1: the first line must be #cloud-config"},
		{"jinja", "## template: jinja\n#cloud-config\n", "u.yaml:1: the first line must be #cloud-config"},
		{"shell script", "#!/bin/sh\necho hi\n", "u.yaml:1: the first line must be #cloud-config"},
		{"too big", h + "#" + strings.Repeat("x", cloudinit.MaxUserConfigSize) + "\n", "u.yaml: 1048592 bytes, more than the 1048576 a cloud-config may have"},
		{"control character", h + "a: 1\nb: \x1b[0m\n", "u.yaml:3: control character U+001B"},
		{"NUL", h + "a: \"\x00\"\n", "u.yaml:2: control character U+0000"},
		{"NEL", h + "a: x\u0085b\n", "u.yaml:2: control character U+0085"},
		{"line separator", h + "a: x\u2028b\n", "u.yaml:2: control character U+2028"},
		{"BOM", h + "\ufeffa: x\n", "u.yaml:2: control character U+FEFF"},
		{"invalid UTF-8", h + "a: 1\n\n# \xff\n", "u.yaml:4: not valid UTF-8"},
		{"syntax", h + "a: [1,\n", "u.yaml:2: did not find expected node content"},
		{"tab indent", h + "runcmd:\n\t- ls\n", "u.yaml:3: found character that cannot start any token"},
		{"list", h + "- ls\n", "u.yaml:2: the cloud-config is not a YAML mapping of keys to values"},
		{"scalar", h + "hello\n", "u.yaml:2: the cloud-config is not a YAML mapping of keys to values"},
		{"two documents", h + "a: 1\n---\nb: 2\n", "u.yaml:3: a second YAML document; a cloud-config is one"},
		{"anchor", h + "a: &x [1]\n", "u.yaml:2: YAML anchor &x: anchors and aliases are not supported"},
		{"alias", h + "runcmd:\n  - &x ls\n  - *x\n", "u.yaml:3: YAML anchor &x: anchors and aliases are not supported"},
		{"billion laughs", h + "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "u.yaml:2: YAML anchor &a: anchors and aliases are not supported"},
		{"merge key", h + "write_files:\n  - <<: {path: /etc/kubernetes/kubelet.config.json}\n    content: x\n", "u.yaml:3: YAML merge keys (<<) are not supported"},
		{"repeated key", h + "runcmd: [ls]\ntimezone: UTC\nruncmd: [rm]\n", "u.yaml:4: runcmd repeats the key of line 2"},
		{"repeated nested key", h + "write_files:\n  - path: /tmp/x\n    content: x\n    path: /etc/kubernetes/kubelet.config.json\n", "u.yaml:5: path repeats the key of line 3"},
		{"complex key", h + "? [a, b]\n: c\n", "u.yaml:2: a key that is not a plain value"},
		{"tag", h + "a: !python/object x\n", "u.yaml:2: YAML tag !python/object is not supported"},
		{"merge_how", h + "merge_how:\n  - name: list\n    settings: [append]\n", "u.yaml:2: merge_how: kubestrap merges the cloud-config into its own itself; remove merge_how"},
		{"merge_type", h + "timezone: UTC\nmerge_type: 'list(append)+dict(recurse_array)+str()'\n", "u.yaml:3: merge_type: kubestrap merges"},
		{"runcmd not a list", h + "runcmd: reboot\n", "u.yaml:2: runcmd must be a list"},
		{"write_files not a list", h + "write_files:\n  path: /x\n", "u.yaml:3: write_files must be a list"},
		{"write_files entry not a mapping", h + "write_files:\n  - /etc/x\n", "u.yaml:3: write_files[0]: an entry must be a mapping with a path"},
		{"no path", h + "write_files:\n  - path: /a\n  - content: x\n", "u.yaml:4: write_files[1]: no path"},
		{"path not a string", h + "write_files:\n  - path: [a]\n", "u.yaml:3: write_files[0].path: must be a string"},
		{"relative path", h + "write_files:\n  - path: etc/kubernetes/kubelet.config.json\n", `u.yaml:3: write_files[0].path: "etc/kubernetes/kubelet.config.json" is not absolute`},
		{"deep", h + "a: " + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "\n", "u.yaml:2: nested more than 100 levels deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := cloudinit.ParseUserConfig("u.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("ParseUserConfig accepted it: %+v", u)
			}
			if !errors.Is(err, cloudinit.ErrUserConfig) {
				t.Errorf("error %v does not match ErrUserConfig", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error\n %q\nwant it to start with\n %q", err, tt.want)
			}
		})
	}
}

func TestUserConfigOwned(t *testing.T) {
	const h = "#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: hi\n"
	file := func(p string) string { return h + "  - path: " + p + "\n    content: x\n" }
	tests := []struct {
		name, src string
		want      []string // none: accepted
	}{
		{"kubelet config", file("/etc/kubernetes/kubelet.config.json"),
			[]string{"u.yaml:5: write_files[1].path: /etc/kubernetes/kubelet.config.json is written by kubestrap"}},
		{"unclean path", file("/etc/kubernetes/../kubernetes//bootstrap.kubeconfig"),
			[]string{"u.yaml:5: write_files[1].path: /etc/kubernetes/bootstrap.kubeconfig is written by kubestrap"}},
		{"unit", file("/etc/systemd/system/kubelet.service"),
			[]string{"u.yaml:5: write_files[1].path: /etc/systemd/system/kubelet.service is written by kubestrap"}},
		{"hostname", file("/etc/hostname"), []string{"u.yaml:5: write_files[1].path: /etc/hostname is written by kubestrap"}},
		{"directory", file("/var/lib/kubelet"), []string{"u.yaml:5: write_files[1].path: /var/lib/kubelet is written by kubestrap"}},
		{"parent", file("/etc/kubernetes/pki"), []string{"/etc/kubernetes/pki is written by kubestrap"}},
		{"parent of a parent", file("/var/lib"), []string{"u.yaml:5: write_files[1].path: /var/lib would replace the directory kubestrap writes /var/lib/kubelet in"}},
		{"several", file("/etc/kubernetes/pki/ca.crt") + "  - path: /etc/kubernetes/bootstrap.kubeconfig\n",
			[]string{"u.yaml:5: write_files[1].path: /etc/kubernetes/pki/ca.crt is written", "\nu.yaml:7: write_files[2].path: /etc/kubernetes/bootstrap.kubeconfig is written"}},
		{"drop-in", file("/etc/systemd/system/kubelet.service.d/20-x.conf"), nil},
		{"beside kubestrap's", file("/etc/kubernetes/extra.conf"), nil},
		{"lookalike", file("/etc/kubernetes/kubelet.config.json.bak"), nil},
	}
	a := sample.Assets()
	paths, err := cloudinit.OwnedPaths(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseUser(t, "u.yaml", tt.src).Owned(paths)
			if tt.want == nil {
				if err != nil {
					t.Errorf("Owned: %v", err)
				}
				return
			}
			if !errors.Is(err, cloudinit.ErrUserConfig) {
				t.Fatalf("Owned() = %v, want an ErrUserConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestOwnedPaths: every path the user-data writes is owned, for the sample
// and for assets with fetched files, whose script and install units the
// encoder adds by itself.
func TestOwnedPaths(t *testing.T) {
	fetching := sample.Assets()
	fetching.Fetches = []render.Fetch{{
		Path: "/opt/k8s/bin/kubelet", Mode: 0o755, URL: "https://dl.example.com/kubelet",
		Hash: "sha256-" + strings.Repeat("ab", 32), Link: "/usr/local/bin/kubelet", RequiredBy: "kubelet.service",
	}}
	for _, a := range []render.Assets{sample.Assets(), sample.TrickyAssets(), fetching} {
		paths, err := cloudinit.OwnedPaths(a)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			WriteFiles []struct{ Path string } `yaml:"write_files"`
		}
		if err := yaml.Unmarshal(userData(t, a), &doc); err != nil {
			t.Fatal(err)
		}
		for _, f := range doc.WriteFiles {
			if !slices.Contains(paths, f.Path) {
				t.Errorf("user-data writes %s, which OwnedPaths lacks", f.Path)
			}
		}
		for _, d := range a.Dirs {
			if !slices.Contains(paths, d.Path) {
				t.Errorf("directory %s is not owned", d.Path)
			}
		}
		for _, f := range a.Fetches {
			if !slices.Contains(paths, f.Path) || !slices.Contains(paths, f.Link) {
				t.Errorf("fetched %s or its link %s is not owned", f.Path, f.Link)
			}
		}
	}
}

// mergedCases are merged documents for the real cloud-init to check: the
// user's config on the sample, on the tricky assets (whose base is not
// spliced as text) and on assets of the shape render makes, and settings
// that replace kubestrap's.
func mergedCases(t *testing.T) map[string][]byte {
	t.Helper()
	u := parseUser(t, "user.yaml", userConfig)
	cases := map[string][]byte{}
	for name, a := range map[string]render.Assets{"sample": sample.Assets(), "tricky": sample.TrickyAssets(), "generated": generatedAssets(t)} {
		cases[name] = mergeChecked(t, a, userData(t, a), u)
	}
	base := append(userData(t, sample.Assets()), "timezone: UTC\npackage_update: false\n"...)
	cases["overrides"] = mergeChecked(t, sample.Assets(), base, parseUser(t, "user.yaml", "#cloud-config\ntimezone: Europe/Paris\npackage_update: yes\nruncmd: [ls]\n"))
	return cases
}

// TestMergeUserDataCloudInitSchema runs the real `cloud-init schema` on
// merged documents.
func TestMergeUserDataCloudInitSchema(t *testing.T) {
	tool := sample.Tool(t, "cloud-init", "")
	dir := t.TempDir()
	for name, ud := range mergedCases(t) {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, ud, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(tool, "schema", "--config-file", p).CombinedOutput()
			if err != nil || strings.Contains(strings.ToLower(string(out)), "deprecated") {
				t.Errorf("cloud-init schema: %v\n%s\nuser-data:\n%s", err, out, ud)
			}
		})
	}
}

// mergeMeaningScript loads kubestrap's document, the user's and the merged
// one with cloud-init's own YAML loader (YAML 1.1, unlike yaml.v3), and
// requires the merged one to mean kubestrap's with the user's list entries
// appended and the user's other keys winning, in the documented key order.
const mergeMeaningScript = `
import sys
from cloudinit import util
def load(p):
    with open(p) as f:
        return util.load_yaml(f.read())
base, user, merged = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
lists = {"write_files", "runcmd", "packages", "ssh_authorized_keys", "bootcmd"}
want = dict(base)
for k, v in user.items():
    want[k] = base.get(k, []) + v if k in lists and k in base else v
if merged != want:
    raise SystemExit("merged:\n%r\nwant:\n%r" % (merged, want))
order = list(base) + [k for k in user if k not in base]
if list(merged) != order:
    raise SystemExit("keys %r, want %r" % (list(merged), order))
`

func TestMergeUserDataCloudInitLoads(t *testing.T) {
	python := cloudInitPython(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// YAML 1.1 readers take yes, 0644 and 1:20 for a bool and numbers;
	// the merge must keep what the user wrote, not turn them into strings.
	tricky := "#cloud-config\npackage_update: yes\nruncmd:\n  - [chmod, 0644, /etc/motd]\n  - echo 1:20\n" +
		"write_files:\n  - path: /etc/x\n    permissions: '0600'\n    content: !!binary aGk=\n  - path: /etc/y\n    content: |+\n      kept\n\n"
	for _, src := range []string{userConfig, tricky} {
		u := parseUser(t, "user.yaml", src)
		for _, a := range []render.Assets{sample.Assets(), sample.TrickyAssets()} {
			base := userData(t, a)
			merged := mergeChecked(t, a, base, u)
			out, err := exec.Command(python, "-c", mergeMeaningScript,
				write("base", base), write("user", []byte(src)), write("merged", merged)).CombinedOutput()
			if err != nil {
				t.Errorf("%v\n%s\nmerged:\n%s", err, out, merged)
			}
		}
	}
}

// BenchmarkMergeUserData is the cost of merging the user's config into one
// node's user-data, to set beside BenchmarkUserData's for making it.
func BenchmarkMergeUserData(b *testing.B) {
	base := userData(b, sample.Assets())
	u := parseUser(b, "user.yaml", userConfig)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudinit.MergeUserData(base, u); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseUserConfig is the once-per-run cost.
func BenchmarkParseUserConfig(b *testing.B) {
	src := []byte(userConfig)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudinit.ParseUserConfig("user.yaml", src); err != nil {
			b.Fatal(err)
		}
	}
}
