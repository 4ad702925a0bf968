package cloudinit

import (
	"bytes"
	"errors"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// SampleUserConfig has what people add to a node: packages, files (one a drop-in
// for kubestrap's kubelet.service), commands early and late, keys, a user,
// and settings that are not lists. It is exported for the external tests.
const SampleUserConfig = `#cloud-config
# The admins' additions.
package_update: true
packages:
  - htop
  - jq
timezone: Europe/Paris
write_files:
  - path: /etc/motd
    permissions: "0644"
    content: |
      Welcome to a kubestrap node.
  - path: /etc/systemd/system/kubelet.service.d/20-proxy.conf
    content: |
      [Service]
      Environment=HTTPS_PROXY=http://proxy.example.com:3128
runcmd:
  - [touch, /var/lib/user-ran]
  - echo "runs after the kubelet is enabled"
bootcmd:
  - [sh, -c, "echo early > /run/early"]
ssh_authorized_keys: # the admins' key
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5VbJ1Gv0cZl7g0BbbBqSxXXiOp0ZuV3uY5mTtm9kR admin@example.com
users:
  - default
  - name: ops
    groups: [sudo]
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
`

// mergeBases are kubestrap documents of every shape MergeUserData meets:
// the sample's, the tricky assets' (marshalled by yaml.v3), one with SSH
// keys, one with a scalar key and a flow list (which the text path must
// leave to yaml.v3), and an empty one.
func mergeBases(t testing.TB) [][]byte {
	t.Helper()
	ssh := sample.Assets()
	ssh.SSHAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5VbJ1Gv0cZl7g0BbbBqSxXXiOp0ZuV3uY5mTtm9kR kubestrap"}
	var bases [][]byte
	for _, a := range []render.Assets{sample.Assets(), sample.TrickyAssets(), ssh} {
		ud, err := UserData(a)
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, ud)
	}
	return append(bases,
		append(bytes.Clone(bases[0]), "timezone: UTC\npackages: [curl]\n"...),
		[]byte(Header+"{}\n"))
}

var mergeSeeds = []string{
	"package_update: true\npackages: [htop]\n",
	"write_files:\n  - path: /etc/motd\n    content: |\n      hi\n",
	"write_files:\n  - path: /etc/kubernetes/kubelet.config.json\n    content: x\n",
	"runcmd:\n  - [touch, /x]\n  - echo 1:20\nbootcmd: [[sh, -c, 'echo a']]\n",
	"ssh_authorized_keys:\n  - ssh-ed25519 AAAA user\n",
	"timezone: Europe/Paris\npackages: []\nruncmd:\n",
	"users:\n  - default\n  - name: ops\n    groups: [sudo]\n",
	"write_files:\n  - path: /etc/y\n    content: |+\n      kept\n\n",
	"write_files:\n  - path: /etc/x\n    content: !!binary aGk=\n",
	"a: yes\nb: 0644\nc: '0644'\nd: \"\\t\"\ne: ~\nf: 1e3\ng: .nan\n",
	"# only a comment\n",
	"merge_how: [list]\n",
	"a: &x 1\nb: *x\n",
	"runcmd: [ls]\nruncmd: [rm]\n",
	"? [a]\n: b\n",
	"- a\n",
	"---\nx: 1\n---\ny: 2\n",
	"k: \"\\u2028\"\n",
	"\"quoted key\": 1\n'write_files': []\n",
	"write_files:\n  - path: /x\n    content: \"line\\n  indented\\n\"\n",
}

// FuzzMergeUserData parses any cloud-config body (after the #cloud-config
// line) and merges whatever ParseUserConfig accepts into each of
// mergeBases. It requires refusals to be ErrUserConfig; the text path,
// wherever it applies, to write mergeYAML's bytes; and the merged document
// to mean kubestrap's keys in their order, then the user's, with the list
// keys' entries appended and the other keys' values the user's.
//
//	go test -run '^$' -fuzz '^FuzzMergeUserData$' -fuzztime 30s ./generator/encode/cloudinit
func FuzzMergeUserData(f *testing.F) {
	for _, s := range mergeSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(SampleUserConfig[len(Header):]))
	for _, s := range fuzzSeeds {
		f.Add([]byte("k: " + s + "\n"))
	}
	bases := mergeBases(f)
	paths, err := OwnedPaths(sample.Assets())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		src := append([]byte(Header), body...)
		u, err := ParseUserConfig("fuzz", src)
		if err != nil {
			if !errors.Is(err, ErrUserConfig) {
				t.Fatalf("ParseUserConfig: %v, not ErrUserConfig", err)
			}
			return
		}
		if err := u.Owned(paths); err != nil && !errors.Is(err, ErrUserConfig) {
			t.Fatalf("Owned: %v, not ErrUserConfig", err)
		}
		for _, base := range bases {
			checkMerge(t, base, src, u)
		}
	})
}

// checkMerge merges u (parsed from src) into base and checks the result as
// FuzzMergeUserData describes.
func checkMerge(t *testing.T, base, src []byte, u *UserConfig) {
	t.Helper()
	got, err := MergeUserData(base, u)
	if err != nil {
		t.Fatalf("MergeUserData: %v\nbase:\n%s", err, base)
	}
	if !bytes.HasPrefix(got, []byte(Header)) {
		t.Fatalf("no #cloud-config line:\n%s", got)
	}
	if len(u.keys) > 0 {
		slow, err := mergeYAML(base, u)
		if err != nil {
			t.Fatalf("mergeYAML: %v", err)
		}
		if spliced, ok := spliceUserData(base, u); ok && !bytes.Equal(spliced, slow) {
			t.Fatalf("the text path differs from yaml.v3:\ntext:\n%s\nyaml.v3:\n%s", spliced, slow)
		}
	}

	baseKeys, baseValues := decodeTop(t, base)
	userKeys, userValues := decodeTop(t, src)
	keys, values := decodeTop(t, got)
	var wantKeys []string
	want := map[string]any{}
	for _, k := range baseKeys {
		wantKeys = append(wantKeys, k)
		want[k] = baseValues[k]
	}
	for _, k := range userKeys {
		b, inBase := baseValues[k]
		switch {
		case !inBase:
			wantKeys = append(wantKeys, k)
			want[k] = userValues[k]
		case listKey(k):
			list, _ := b.([]any)
			user, _ := userValues[k].([]any)
			if len(user) > 0 {
				want[k] = append(append([]any(nil), list...), user...)
			}
		default:
			want[k] = userValues[k]
		}
	}
	if !equalStrings(keys, wantKeys) {
		t.Fatalf("keys %q, want %q\nmerged:\n%s", keys, wantKeys, got)
	}
	for _, k := range keys {
		if g, w := canonical(t, values[k]), canonical(t, want[k]); !bytes.Equal(g, w) {
			t.Fatalf("%s is\n%s\nwant\n%s\nmerged:\n%s", k, g, w, got)
		}
	}
}

// decodeTop decodes a document's top-level keys and values in order; a
// user's list key without a value is an empty list.
func decodeTop(t *testing.T, doc []byte) ([]string, map[string]any) {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	values := map[string]any{}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, values
	}
	var keys []string
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		var v any
		if err := m.Content[i+1].Decode(&v); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		k := m.Content[i].Value
		if v == nil && listKey(k) {
			v = []any{}
		}
		keys = append(keys, k)
		values[k] = v
	}
	return keys, values
}

// canonical is v as yaml.v3 writes it, which compares NaNs and maps of any
// order alike.
func canonical(t *testing.T, v any) []byte {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMergeUserDataPaths checks the seeds on every base, and that the text
// path is the one taken for kubestrap's own documents.
func TestMergeUserDataPaths(t *testing.T) {
	bases := mergeBases(t)
	for _, s := range append(mergeSeeds, "runcmd: [ls]\nwrite_files:\n  - path: /etc/motd\n    content: hi\n") {
		src := []byte(Header + s)
		u, err := ParseUserConfig("seed", src)
		if err != nil {
			continue
		}
		for i, base := range bases {
			checkMerge(t, base, src, u)
			// The documents UserData writes for assets of the shape
			// render makes take the text path; the tricky assets',
			// the empty one and the flow list (when appended to) may
			// not.
			if _, ok := spliceUserData(base, u); !ok && len(u.keys) > 0 && !u.slowOnly && (i == 0 || i == 2) {
				t.Errorf("seed %q, base %d: the text path was not taken", s, i)
			}
		}
	}
}

// BenchmarkMergeUserDataYAML is MergeUserData through yaml.v3 only, what
// the text path saves.
func BenchmarkMergeUserDataYAML(b *testing.B) {
	base, err := UserData(sample.Assets())
	if err != nil {
		b.Fatal(err)
	}
	u, err := ParseUserConfig("user.yaml", []byte(SampleUserConfig))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mergeYAML(base, u); err != nil {
			b.Fatal(err)
		}
	}
}
