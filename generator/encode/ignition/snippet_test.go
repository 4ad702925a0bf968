package ignition_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	ignconfig "github.com/coreos/ignition/v2/config"
	"github.com/coreos/ignition/v2/config/v3_5/types"
	"github.com/vincent-petithory/dataurl"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// header is the variant and version lines of o's own Butane source, which a
// snippet for o starts with.
func header(t testing.TB, o ignition.Options) string {
	t.Helper()
	bu, err := ignition.Butane(sample.Assets(), o)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfterN(string(bu), "\n", 3)
	return lines[0] + lines[1]
}

// userSnippet adds a file, a directory, a link, an enabled unit, a drop-in
// for kubestrap's kubelet.service, and ssh keys for the core user: the
// additions people make.
const userSnippet = `passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5VbJ1Gv0cZl7g0BbbBqSxXXiOp0ZuV3uY5mTtm9kR admin@example.com
storage:
  directories:
    - path: /var/lib/extra
      mode: 0750
  files:
    - path: /etc/motd
      mode: 0644
      contents:
        inline: |
          Welcome to a kubestrap node.
    - path: /etc/kubernetes/extra.conf
      contents:
        inline: user's own file in kubestrap's directory
  links:
    - path: /usr/local/bin/kubectl
      target: /opt/k8s/bin/kubectl
systemd:
  units:
    - name: extra.service
      enabled: true
      contents: |
        [Unit]
        Description=An addition of the user's
        [Service]
        Type=oneshot
        ExecStart=/usr/bin/true
        [Install]
        WantedBy=multi-user.target
    - name: kubelet.service
      dropins:
        - name: 20-proxy.conf
          contents: |
            [Service]
            Environment=HTTPS_PROXY=http://proxy.example.com:3128
`

func newSnippet(t testing.TB, name, src string, o ignition.Options) *ignition.Snippet {
	t.Helper()
	s, warnings, err := ignition.NewSnippet(name, []byte(src), o)
	if err != nil {
		t.Fatalf("NewSnippet(%s): %v", name, err)
	}
	if len(warnings) > 0 {
		t.Fatalf("NewSnippet(%s) warns:\n%s", name, strings.Join(warnings, "\n"))
	}
	return s
}

// merged encodes the sample for o and merges snippets into it, checking
// them with Owned first as a caller must.
func merged(t testing.TB, o ignition.Options, snippets ...*ignition.Snippet) (base, out []byte) {
	t.Helper()
	res, err := ignition.Encode(sample.Assets(), o)
	if err != nil {
		t.Fatal(err)
	}
	paths, units, err := ignition.OwnedPaths(res.Ignition)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snippets {
		if err := s.Owned(paths, units); err != nil {
			t.Fatalf("Owned: %v", err)
		}
	}
	out, warnings, err := ignition.MergeInto(res.Ignition, snippets, o)
	if err != nil {
		t.Fatalf("MergeInto: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("MergeInto warns:\n%s", strings.Join(warnings, "\n"))
	}
	return res.Ignition, out
}

func TestSnippetMerge(t *testing.T) {
	for _, c := range combos {
		t.Run(name(c.opts), func(t *testing.T) {
			s := newSnippet(t, "extra.bu", header(t, c.opts)+userSnippet, c.opts)
			base, out := merged(t, c.opts, s)
			cfg := checkIntact(t, base, out)
			if got := versionOf(t, out); got != c.spec {
				t.Errorf("merged ignition.version = %q, want %q", got, c.spec)
			}
			checkUserSnippet(t, cfg)
		})
	}
}

// checkUserSnippet finds userSnippet's additions in cfg.
func checkUserSnippet(t *testing.T, cfg types.Config) {
	t.Helper()
	file := func(p string) *types.File {
		for i := range cfg.Storage.Files {
			if cfg.Storage.Files[i].Path == p {
				return &cfg.Storage.Files[i]
			}
		}
		return nil
	}
	if f := file("/etc/motd"); f == nil || contents(t, f) != "Welcome to a kubestrap node.\n" || f.Mode == nil || *f.Mode != 0o644 {
		t.Errorf("/etc/motd is missing or wrong: %+v", f)
	}
	if f := file("/etc/kubernetes/extra.conf"); f == nil || contents(t, f) != "user's own file in kubestrap's directory" {
		t.Errorf("/etc/kubernetes/extra.conf is missing or wrong: %+v", f)
	}
	dirOK := false
	for _, d := range cfg.Storage.Directories {
		dirOK = dirOK || d.Path == "/var/lib/extra" && d.Mode != nil && *d.Mode == 0o750
	}
	if !dirOK {
		t.Errorf("directory /var/lib/extra is missing: %+v", cfg.Storage.Directories)
	}
	if len(cfg.Storage.Links) != 1 || cfg.Storage.Links[0].Path != "/usr/local/bin/kubectl" ||
		cfg.Storage.Links[0].Target == nil || *cfg.Storage.Links[0].Target != "/opt/k8s/bin/kubectl" {
		t.Errorf("storage.links = %+v", cfg.Storage.Links)
	}
	if len(cfg.Passwd.Users) != 1 || cfg.Passwd.Users[0].Name != "core" || len(cfg.Passwd.Users[0].SSHAuthorizedKeys) != 1 ||
		!strings.HasSuffix(string(cfg.Passwd.Users[0].SSHAuthorizedKeys[0]), " admin@example.com") {
		t.Errorf("passwd.users = %+v", cfg.Passwd.Users)
	}
	var names []string
	for _, u := range cfg.Systemd.Units {
		names = append(names, u.Name)
		switch u.Name {
		case "extra.service":
			if u.Enabled == nil || !*u.Enabled || u.Contents == nil || !strings.Contains(*u.Contents, "WantedBy=") {
				t.Errorf("extra.service = %+v", u)
			}
		case "kubelet.service":
			if len(u.Dropins) != 1 || u.Dropins[0].Name != "20-proxy.conf" || u.Dropins[0].Contents == nil ||
				!strings.Contains(*u.Dropins[0].Contents, "HTTPS_PROXY") {
				t.Errorf("kubelet.service drop-ins = %+v", u.Dropins)
			}
		}
	}
	// kubestrap's units first, in its order, then the snippet's.
	if want := []string{"kubelet.service", "extra.service"}; !reflect.DeepEqual(names, want) {
		t.Errorf("units %q, want %q", names, want)
	}
}

func contents(t *testing.T, f *types.File) string {
	t.Helper()
	if f.Contents.Source == nil {
		return ""
	}
	u, err := dataurl.DecodeString(*f.Contents.Source)
	if err != nil {
		t.Fatal(err)
	}
	return string(u.Data)
}

func versionOf(t testing.TB, ign []byte) string {
	t.Helper()
	var head struct{ Ignition struct{ Version string } }
	if err := json.Unmarshal(ign, &head); err != nil {
		t.Fatal(err)
	}
	return head.Ignition.Version
}

// checkIntact parses base and out with Ignition's parser (translated up to
// one spec, so every combination compares alike) and requires every
// directory, file and unit of base to be in out unchanged, in base's order
// and before anything else; a unit may have gained drop-ins. It returns
// out's config.
func checkIntact(t testing.TB, base, out []byte) types.Config {
	t.Helper()
	b := parseLatest(t, base)
	m := parseLatest(t, out)
	if len(m.Storage.Directories) < len(b.Storage.Directories) || len(m.Storage.Files) < len(b.Storage.Files) || len(m.Systemd.Units) < len(b.Systemd.Units) {
		t.Fatalf("the merged config lost entries of kubestrap's:\n%s", out)
	}
	for i, d := range b.Storage.Directories {
		if !reflect.DeepEqual(m.Storage.Directories[i], d) {
			t.Errorf("directory %s changed: %+v", d.Path, m.Storage.Directories[i])
		}
	}
	for i, f := range b.Storage.Files {
		if !reflect.DeepEqual(m.Storage.Files[i], f) {
			t.Errorf("file %s changed: %+v", f.Path, m.Storage.Files[i])
		}
	}
	for i, u := range b.Systemd.Units {
		got := m.Systemd.Units[i]
		got.Dropins = u.Dropins
		if !reflect.DeepEqual(got, u) {
			t.Errorf("unit %s changed: %+v", u.Name, m.Systemd.Units[i])
		}
	}
	return m
}

// parseLatest parses ign with Ignition's version-translating parser, as
// Ignition on the node would; the tests compare configs of every spec in
// spec 3.5.0's types.
func parseLatest(t testing.TB, ign []byte) types.Config {
	t.Helper()
	cfg, rpt, err := ignconfig.Parse(ign)
	if err != nil || rpt.IsFatal() {
		t.Fatalf("Ignition's parser rejects the config: %v\n%s\n%s", err, rpt.String(), ign)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The newest stable types may be newer than 3.5.0's; go through JSON,
	// whose field names the specs share.
	var c types.Config
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSnippetOlderSpec merges snippets of older Butane versions, which
// Ignition's parser translates up to the output's spec.
func TestSnippetOlderSpec(t *testing.T) {
	tests := []struct {
		out     ignition.Options
		snippet string
	}{
		{ignition.Options{Version: "1.7.0"}, "variant: fcos\nversion: 1.0.0\n"},
		{ignition.Options{Version: "1.7.0"}, "variant: fcos\nversion: 1.4.0\n"},
		{ignition.Options{}, "variant: fcos\nversion: 1.3.0\n"},
		{ignition.Options{Version: "1.4.0"}, "variant: fcos\nversion: 1.2.0\n"},
		{ignition.Options{Variant: "flatcar"}, "variant: flatcar\nversion: 1.0.0\n"},
	}
	const body = `storage:
  files:
    - path: /etc/motd
      contents:
        inline: old but fine
`
	for _, tt := range tests {
		t.Run(name(tt.out)+"/"+strings.ReplaceAll(strings.TrimSpace(tt.snippet), "\n", ","), func(t *testing.T) {
			s := newSnippet(t, "old.bu", tt.snippet+body, tt.out)
			base, out := merged(t, tt.out, s)
			checkIntact(t, base, out)
			if got, want := versionOf(t, out), tt.out.IgnitionSpec(); got != want {
				t.Errorf("merged ignition.version = %q, want the output's %q", got, want)
			}
			if !bytes.Contains(out, []byte(`"path": "/etc/motd"`)) {
				t.Errorf("the snippet's file is missing:\n%s", out)
			}
		})
	}
}

func TestSnippetRefused(t *testing.T) {
	const fcos = "variant: fcos\nversion: 1.6.0\n"
	tests := []struct {
		name     string
		src      string
		opts     ignition.Options
		mentions []string
	}{
		{"newer spec", "variant: fcos\nversion: 1.7.0\n", ignition.Options{},
			[]string{"x.bu:2:10", "1.7.0", "Ignition 3.6.0", "newer than the output's 3.5.0", "1.6.0 or older"}},
		{"newer flatcar spec", "variant: flatcar\nversion: 1.1.0\n", ignition.Options{Variant: "flatcar", Version: "1.0.0"},
			[]string{"x.bu:2:10", "Ignition 3.4.0", "newer than the output's 3.3.0"}},
		{"experimental spec", "variant: fcos\nversion: 1.8.0-experimental\n", ignition.Options{Version: "1.7"},
			[]string{"x.bu:2:10", "experimental"}},
		{"wrong variant", "variant: flatcar\nversion: 1.1.0\n", ignition.Options{},
			[]string{"x.bu:1:10", `variant "flatcar"`, `output is "fcos"`}},
		{"wrong variant for flatcar", fcos, ignition.Options{Variant: "flatcar"},
			[]string{`variant "fcos"`, `output is "flatcar"`}},
		{"openshift", "variant: openshift\nversion: 4.16.0\nmetadata:\n  name: x\n  labels:\n    machineconfiguration.openshift.io/role: worker\n", ignition.Options{},
			[]string{`variant "openshift"`}},
		{"no variant", "version: 1.6.0\n", ignition.Options{}, []string{"x.bu:1:1", "variant and version"}},
		{"unknown version", "variant: fcos\nversion: 9.9.0\n", ignition.Options{}, []string{"x.bu", "9.9.0"}},
		{"not a mapping", "- variant: fcos\n", ignition.Options{}, []string{"x.bu", "YAML mapping"}},
		{"empty", "", ignition.Options{}, []string{"x.bu", "YAML mapping"}},
		{"YAML syntax", fcos + "storage: [\n", ignition.Options{}, []string{"x.bu", "yaml:"}},
		{"Butane error", fcos + "storage:\n  files:\n    - path: relative\n", ignition.Options{},
			[]string{"x.bu:5:13: error: path not absolute", "$.storage.files.0.path"}},
		{"local file", fcos + "storage:\n  files:\n    - path: /x\n      contents:\n        local: secret.txt\n", ignition.Options{},
			[]string{"x.bu:7:16", "files directory"}},
		{"wrong type", fcos + "storage:\n  files: yes\n", ignition.Options{}, []string{"x.bu"}},
		{"replace", fcos + "ignition:\n  config:\n    replace:\n      source: https://example.com/other.ign\n", ignition.Options{},
			[]string{"x.bu:5:5", "ignition.config.replace"}},
		{"control character", fcos + "storage:\n  files:\n    - path: /x\x01\n", ignition.Options{}, []string{"x.bu:5:15", "U+0001"}},
		{"NUL", fcos + "#\x00\n", ignition.Options{}, []string{"x.bu:3:2", "U+0000"}},
		{"DEL", "\x7f", ignition.Options{}, []string{"x.bu:1:1", "U+007F"}},
		{"invalid UTF-8", fcos + "# \xff\n", ignition.Options{}, []string{"x.bu:3:3", "UTF-8"}},
		{"too big", fcos + "#" + strings.Repeat("x", ignition.MaxSnippetSize) + "\n", ignition.Options{}, []string{"x.bu", "1048576"}},
		{"alias bomb", fcos + "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
			"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n" +
			"g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nkernel_arguments:\n  should_exist: *g\n", ignition.Options{}, []string{"x.bu", "line 8: cannot unmarshal"}},
		{"unclean path", fcos + "storage:\n  files:\n    - path: /etc//kubernetes/./bootstrap.kubeconfig\n", ignition.Options{},
			[]string{"x.bu:5:13: error: path is not fully simplified"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, err := ignition.NewSnippet("x.bu", []byte(tt.src), tt.opts)
			if !errors.Is(err, ignition.ErrSnippet) {
				t.Fatalf("NewSnippet() = %v, %v; want ErrSnippet", s, err)
			}
			if errors.Is(err, ignition.ErrInvalidGenerated) {
				t.Errorf("a user's error must not look like a kubestrap bug: %v", err)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error lacks %q:\n%v", m, err)
				}
			}
		})
	}
	if _, _, err := ignition.NewSnippet("x.bu", []byte(fcos), ignition.Options{Variant: "rhcos"}); !errors.Is(err, ignition.ErrInvalidOptions) {
		t.Errorf("NewSnippet with bad options = %v, want ErrInvalidOptions", err)
	}
}

func TestSnippetWarnings(t *testing.T) {
	src := "variant: fcos\nversion: 1.6.0\nunknown_key: 1\nsystemd:\n  units:\n    - name: a.service\n      enabled: true\n      contents: \"[Service]\\nExecStart=/bin/true\\n\"\n"
	s, warnings, err := ignition.NewSnippet("w.bu", []byte(src), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"w.bu:3:1: warning: unused key unknown_key", "w.bu:8:17: warning: unit \"a.service\" is enabled, but has no install section"}
	if len(warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", warnings, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(warnings[i], w) {
			t.Errorf("warning %q, want it to start with %q", warnings[i], w)
		}
	}
	// The snippet's warnings are NewSnippet's, once per run, not
	// MergeInto's for every node.
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, mw, err := ignition.MergeInto(res.Ignition, []*ignition.Snippet{s}, ignition.Options{}); err != nil || len(mw) > 0 {
		t.Errorf("MergeInto = %q, %v; want no warnings", mw, err)
	}
}

func TestSnippetOwned(t *testing.T) {
	const fcos = "variant: fcos\nversion: 1.6.0\n"
	file := func(p string) string {
		return fcos + "storage:\n  files:\n    - path: " + p + "\n      contents:\n        inline: x\n"
	}
	tests := []struct {
		name     string
		src      string
		mentions []string // none: accepted
	}{
		{"kubelet config", file("/etc/kubernetes/kubelet.config.json"),
			[]string{"x.bu:5:13: storage.files[0]: file /etc/kubernetes/kubelet.config.json is written by kubestrap"}},
		{"hostname", file("/etc/hostname"), []string{"/etc/hostname is written by kubestrap"}},
		{"unit file", file("/etc/systemd/system/kubelet.service"), []string{"file /etc/systemd/system/kubelet.service is written by kubestrap"}},
		{"file over a directory", file("/etc/kubernetes/pki"), []string{"file /etc/kubernetes/pki is written by kubestrap"}},
		{"file over a parent", file("/var/lib"), []string{"file /var/lib would replace the directory kubestrap writes /var/lib/kubelet in"}},
		{"directory", fcos + "storage:\n  directories:\n    - path: /etc/kubernetes/pki\n      mode: 0700\n",
			[]string{"storage.directories[0]: directory /etc/kubernetes/pki is written by kubestrap"}},
		{"link", fcos + "storage:\n  links:\n    - path: /etc/kubernetes/bootstrap.kubeconfig\n      target: /tmp/x\n",
			[]string{"storage.links[0]: link /etc/kubernetes/bootstrap.kubeconfig is written by kubestrap"}},
		{"link over a parent", fcos + "storage:\n  links:\n    - path: /etc/kubernetes\n      target: /tmp\n",
			[]string{"link /etc/kubernetes is written by kubestrap"}},
		{"append", fcos + "storage:\n  files:\n    - path: /etc/kubernetes/kubelet.config.json\n      append:\n        - inline: x\n",
			[]string{"/etc/kubernetes/kubelet.config.json is written by kubestrap"}},
		{"unit contents", fcos + "systemd:\n  units:\n    - name: kubelet.service\n      contents: \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\"\n",
			[]string{"x.bu:5:13: systemd.units[0]: unit kubelet.service is written and enabled by kubestrap", "not set its contents"}},
		{"unit disabled", fcos + "systemd:\n  units:\n    - name: kubelet.service\n      enabled: false\n", []string{"not set its enabled"}},
		{"unit masked", fcos + "systemd:\n  units:\n    - name: kubelet.service\n      mask: true\n", []string{"not set its mask"}},
		{"several", file("/etc/kubernetes/kubelet.config.json") + "    - path: /etc/kubernetes/pki/ca.crt\n",
			[]string{"storage.files[0]: file /etc/kubernetes/kubelet.config.json", "x.bu:8:13: storage.files[1]: file /etc/kubernetes/pki/ca.crt"}},
		{"kubelet drop-in", fcos + "systemd:\n  units:\n    - name: kubelet.service\n      dropins:\n        - name: 20-x.conf\n          contents: \"[Service]\\n\"\n", nil},
		{"drop-in file", file("/etc/systemd/system/kubelet.service.d/20-x.conf"), nil},
		{"file in a kubestrap directory", file("/etc/kubernetes/extra.conf"), nil},
		{"directory above kubestrap's", fcos + "storage:\n  directories:\n    - path: /var/lib\n      mode: 0755\n", nil},
		{"lookalike", file("/etc/kubernetes/kubelet.config.json.d/x"), nil},
	}
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	paths, units, err := ignition.OwnedPaths(res.Ignition)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, err := ignition.NewSnippet("x.bu", []byte(tt.src), ignition.Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Owned(paths, units)
			if tt.mentions == nil {
				if err != nil {
					t.Fatalf("Owned: %v", err)
				}
				base, out := merged(t, ignition.Options{}, s)
				checkIntact(t, base, out)
				return
			}
			if !errors.Is(err, ignition.ErrSnippet) {
				t.Fatalf("Owned() = %v, want ErrSnippet", err)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error lacks %q:\n%v", m, err)
				}
			}
		})
	}
}

// TestOwnedPaths: what the sample's config writes is what its Assets say.
func TestOwnedPaths(t *testing.T) {
	a := sample.Assets()
	res, err := ignition.Encode(a, ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	paths, units, err := ignition.OwnedPaths(res.Ignition)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range a.Dirs {
		want = append(want, d.Path)
	}
	for _, f := range a.Files {
		want = append(want, f.Path)
	}
	if !reflect.DeepEqual(paths, want) || !reflect.DeepEqual(units, []string{"kubelet.service"}) {
		t.Errorf("OwnedPaths = %q, %q; want %q, [kubelet.service]", paths, units, want)
	}
	if _, _, err := ignition.OwnedPaths([]byte("{")); !errors.Is(err, ignition.ErrInvalidGenerated) {
		t.Errorf("OwnedPaths of a broken config = %v, want ErrInvalidGenerated", err)
	}
}

// TestMergeRejected merges a snippet that is valid alone, without Owned,
// into a config it conflicts with: Ignition's validator must refuse the
// result, as a snippet error.
func TestMergeRejected(t *testing.T) {
	s := newSnippet(t, "x.bu", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/systemd/system/kubelet.service\n      contents:\n        inline: x\n", ignition.Options{})
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ignition.MergeInto(res.Ignition, []*ignition.Snippet{s}, ignition.Options{})
	if !errors.Is(err, ignition.ErrSnippet) || !strings.Contains(err.Error(), "x.bu") || !strings.Contains(err.Error(), "systemd") {
		t.Errorf("MergeInto() = %v, want ErrSnippet naming x.bu and the conflict with systemd", err)
	}
}

func TestMergeIntoOptions(t *testing.T) {
	s := newSnippet(t, "x.bu", "variant: fcos\nversion: 1.6.0\n", ignition.Options{})
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []ignition.Options{{Variant: "flatcar"}, {Version: "1.5.0"}, {Variant: "rhcos"}} {
		if _, _, err := ignition.MergeInto(res.Ignition, []*ignition.Snippet{s}, o); !errors.Is(err, ignition.ErrInvalidOptions) {
			t.Errorf("MergeInto(%+v) of a snippet made for the default = %v, want ErrInvalidOptions", o, err)
		}
	}
	if _, _, err := ignition.MergeInto([]byte(`{"ignition":{"version":"3.4.0"}}`), []*ignition.Snippet{s}, ignition.Options{}); !errors.Is(err, ignition.ErrInvalidGenerated) {
		t.Errorf("MergeInto of a base of another spec = %v, want ErrInvalidGenerated", err)
	}
	if _, _, err := ignition.MergeInto([]byte(`{`), []*ignition.Snippet{s}, ignition.Options{}); !errors.Is(err, ignition.ErrInvalidGenerated) {
		t.Errorf("MergeInto of a broken base = %v, want ErrInvalidGenerated", err)
	}
}

// TestMergeIdentity: no snippets give base itself, and an empty snippet
// base's bytes, which shows the merged config is printed as Butane prints.
func TestMergeIdentity(t *testing.T) {
	for _, c := range combos {
		t.Run(name(c.opts), func(t *testing.T) {
			res, err := ignition.Encode(sample.TrickyAssets(), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := ignition.MergeInto(res.Ignition, nil, c.opts)
			if err != nil || !bytes.Equal(out, res.Ignition) {
				t.Errorf("MergeInto without snippets = %v, changed: %v", err, !bytes.Equal(out, res.Ignition))
			}
			empty := newSnippet(t, "empty.bu", header(t, c.opts), c.opts)
			out, _, err = ignition.MergeInto(res.Ignition, []*ignition.Snippet{empty, empty}, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, res.Ignition) {
				t.Errorf("merging an empty snippet changed the config:\n%s", firstLineDiff(out, res.Ignition))
			}
		})
	}
}

func firstLineDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n got  %q\n want %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d lines", len(al), len(bl))
}

// TestMergeOrder: snippets merge in the order given, later ones winning,
// and the same inputs always give the same bytes, also concurrently (the
// caller merges nodes in parallel with shared Snippets).
func TestMergeOrder(t *testing.T) {
	const fcos = "variant: fcos\nversion: 1.6.0\n"
	motd := func(text string) string {
		return fcos + "storage:\n  files:\n    - path: /etc/motd\n      overwrite: true\n      contents:\n        inline: " + text + "\n"
	}
	a := newSnippet(t, "a.bu", motd("from a"), ignition.Options{})
	b := newSnippet(t, "b.bu", motd("from b"), ignition.Options{})
	extra := newSnippet(t, "extra.bu", fcos+userSnippet, ignition.Options{})
	_, ab := merged(t, ignition.Options{}, a, extra, b)
	_, ba := merged(t, ignition.Options{}, b, extra, a)
	if got := motdOf(t, ab); got != "from b" {
		t.Errorf("a, extra, b: /etc/motd = %q, want b's", got)
	}
	if got := motdOf(t, ba); got != "from a" {
		t.Errorf("b, extra, a: /etc/motd = %q, want a's", got)
	}
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	outs := make([][]byte, 8)
	for i := range outs {
		wg.Go(func() {
			outs[i], _, _ = ignition.MergeInto(res.Ignition, []*ignition.Snippet{a, extra, b}, ignition.Options{})
		})
	}
	wg.Wait()
	for i, out := range outs {
		if !bytes.Equal(out, ab) {
			t.Errorf("merge %d differs:\n%s", i, firstLineDiff(out, ab))
		}
	}
}

func motdOf(t *testing.T, ign []byte) string {
	t.Helper()
	cfg := parseLatest(t, ign)
	for i, f := range cfg.Storage.Files {
		if f.Path == "/etc/motd" {
			return contents(t, &cfg.Storage.Files[i])
		}
	}
	return ""
}

// TestSnippetIgnitionValidate runs the real ignition-validate on merged
// configs of every combination.
func TestSnippetIgnitionValidate(t *testing.T) {
	tool := sample.Tool(t, "ignition-validate", sample.IgnitionValidateEnv)
	dir := t.TempDir()
	for _, c := range combos {
		t.Run(name(c.opts), func(t *testing.T) {
			s := newSnippet(t, "extra.bu", header(t, c.opts)+userSnippet, c.opts)
			_, out := merged(t, c.opts, s)
			p := filepath.Join(dir, "config.ign")
			if err := os.WriteFile(p, out, 0o600); err != nil {
				t.Fatal(err)
			}
			res, err := exec.Command(tool, p).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(res)) > 0 {
				t.Errorf("ignition-validate: %v\n%s", err, res)
			}
		})
	}
}

// FuzzSnippet feeds any source to NewSnippet for the default options, and
// whatever it and Owned accept to MergeInto with the sample's config. It
// requires every refusal to be ErrSnippet, and every merged config to parse
// with Ignition's parser and hold kubestrap's entries unchanged.
//
//	go test -run '^$' -fuzz '^FuzzSnippet$' -fuzztime 30s ./generator/encode/ignition
func FuzzSnippet(f *testing.F) {
	const fcos = "variant: fcos\nversion: 1.6.0\n"
	for _, s := range []string{
		fcos + userSnippet,
		fcos,
		"variant: fcos\nversion: 1.0.0\n" + "storage:\n  files:\n    - path: /etc/motd\n",
		"variant: fcos\nversion: 1.7.0\n",
		"variant: flatcar\nversion: 1.1.0\n",
		fcos + "storage:\n  files:\n    - path: /etc/kubernetes/kubelet.config.json\n",
		fcos + "storage:\n  links:\n    - path: /etc/kubernetes\n      target: /tmp\n",
		fcos + "storage:\n  files:\n    - path: /etc/systemd/system/kubelet.service\n",
		fcos + "systemd:\n  units:\n    - name: kubelet.service\n      dropins:\n        - name: x.conf\n",
		fcos + "ignition:\n  config:\n    replace:\n      source: https://x\n",
		fcos + "ignition:\n  config:\n    merge:\n      - source: https://x\n",
		fcos + "a: &a [x]\nb: *a\n",
		fcos + "storage:\n  trees:\n    - local: x\n",
		fcos + "boot_device:\n  mirror:\n    devices: [/dev/sda, /dev/sdb]\n",
		"{variant: fcos, version: 1.6.0, storage: {files: [{path: /x, contents: {inline: y}}]}}",
	} {
		f.Add([]byte(s))
	}
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		f.Fatal(err)
	}
	paths, units, err := ignition.OwnedPaths(res.Ignition)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		s, _, err := ignition.NewSnippet("fuzz.bu", src, ignition.Options{})
		if err != nil {
			if !errors.Is(err, ignition.ErrSnippet) {
				t.Fatalf("NewSnippet: %v, not ErrSnippet", err)
			}
			return
		}
		if err := s.Owned(paths, units); err != nil {
			if !errors.Is(err, ignition.ErrSnippet) {
				t.Fatalf("Owned: %v, not ErrSnippet", err)
			}
			return
		}
		out, _, err := ignition.MergeInto(res.Ignition, []*ignition.Snippet{s}, ignition.Options{})
		if err != nil {
			if !errors.Is(err, ignition.ErrSnippet) {
				t.Fatalf("MergeInto: %v, not ErrSnippet", err)
			}
			return
		}
		if v := versionOf(t, out); v != "3.5.0" {
			t.Fatalf("merged ignition.version %q", v)
		}
		checkIntact(t, res.Ignition, out)
	})
}

// BenchmarkMergeInto is the per-node cost of merging userSnippet, to set
// beside BenchmarkEncoder's for making the node's config.
func BenchmarkMergeInto(b *testing.B) {
	o := ignition.Options{}
	s := newSnippet(b, "extra.bu", header(b, o)+userSnippet, o)
	res, err := ignition.Encode(sample.Assets(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ignition.MergeInto(res.Ignition, []*ignition.Snippet{s}, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewSnippet is the once-per-run cost of a snippet.
func BenchmarkNewSnippet(b *testing.B) {
	o := ignition.Options{}
	src := []byte(header(b, o) + userSnippet)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ignition.NewSnippet("extra.bu", src, o); err != nil {
			b.Fatal(err)
		}
	}
}
