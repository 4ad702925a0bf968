package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

var update = flag.Bool("update", false, "rewrite the golden trees under fixtures/golden")

// fixedNow is after the fixture CA's notBefore, so the CA is valid.
var fixedNow = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

// repeatable makes a run's clock and tokens fixed, so its output can be golden.
func repeatable() deps {
	n := 0
	return deps{
		now: func() time.Time { return fixedNow },
		generateToken: func() (string, error) {
			n++
			return fmt.Sprintf("tok%03d.%016d", n, n), nil
		},
	}
}

var scenarios = []struct {
	name string
	args []string
}{
	{"guide-cluster", []string{"-f", "../../fixtures/guide/cluster.yaml", "--butane"}},
	{"guide-env", []string{"--env", "../../fixtures/guide/environment.sh", "--ca-file", "../../fixtures/pki/ca.pem", "--kubelet-binary", "/opt/k8s/bin/kubelet"}},
	{"guide-flatcar", []string{"-f", "../../fixtures/guide/cluster.yaml", "--variant", "flatcar"}},
	{"guide-legacy", []string{"-f", "../../fixtures/guide/cluster.yaml", "--profile", "legacy", "--format", "cloud-init"}},
	{"stock-flatcar", []string{"-f", "../../fixtures/stock/flatcar.yaml", "--butane"}},
	{"stock-debian", []string{"-f", "../../fixtures/stock/debian.yaml"}},
}

func generateScenario(t *testing.T, args []string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	argv := append([]string{"kubestrap", "generate", "--offline", "--out", out}, args...)
	if code := run(context.Background(), argv, stdio{out: &stdout, err: &stderr}, repeatable()); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout is for data, and generate writes none: %q", stdout.String())
	}
	return out
}

func readTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	tree := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		tree[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestFixtures generates every fixture scenario and compares the whole output
// tree with fixtures/golden; then checks what the documents mean, with the
// real validators and by parsing them back, so a golden file cannot be wrong
// and still pass.
func TestFixtures(t *testing.T) {
	trees := map[string]map[string][]byte{}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			out := generateScenario(t, sc.args)
			got := readTree(t, out)
			trees[sc.name] = got
			golden := filepath.Join("../../fixtures/golden", sc.name)
			if *update {
				os.RemoveAll(golden)
				for rel, data := range got {
					p := filepath.Join(golden, rel)
					os.MkdirAll(filepath.Dir(p), 0o755)
					if err := os.WriteFile(p, data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := readTree(t, golden)
			for _, rel := range slices.Sorted(keys(got, want)) {
				if !bytes.Equal(got[rel], want[rel]) {
					t.Errorf("%s/%s differs from the golden file (go test ./cmd/kubestrap -run TestFixtures -update, then review the diff)", sc.name, rel)
				}
			}
			checkMeaning(t, got)
			if strings.HasPrefix(sc.name, "stock-") {
				checkStock(t, got)
			}
		})
	}
	// The guide's environment.sh and its cluster.yaml describe one cluster:
	// the kubelet configs are the same, and so is every unit but kube-node1's
	// (cluster.yaml gives it a label).
	cl, env := trees["guide-cluster"], trees["guide-env"]
	if cl == nil || env == nil {
		return
	}
	for _, node := range []string{"kube-node1", "kube-node2", "kube-node3"} {
		a := docFiles(t, cl[node+"/user-data"])
		b := docFiles(t, env[node+"/user-data"])
		if !bytes.Equal(a[render.KubeletConfigPath], b[render.KubeletConfigPath]) {
			t.Errorf("%s: kubelet config differs between cluster.yaml and environment.sh", node)
		}
		sameUnit := bytes.Equal(a[render.DropInPath], b[render.DropInPath])
		if sameUnit != (node != "kube-node1") {
			t.Errorf("%s: units equal = %v", node, sameUnit)
		}
	}
}

func keys(maps ...map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range maps {
			for k := range m {
				if !seen[k] {
					seen[k] = true
					if !yield(k) {
						return
					}
				}
			}
		}
	}
}

// docFiles returns what a cloud-init document writes, path → contents.
func docFiles(t *testing.T, userData []byte) map[string][]byte {
	t.Helper()
	doc, err := parseback.CloudInit(userData)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range doc.Entries {
		if e.Kind == parseback.File {
			files[e.Path] = e.Contents
		}
	}
	return files
}

func checkMeaning(t *testing.T, tree map[string][]byte) {
	t.Helper()
	secrets := tokensByNode(t, tree["tokens.yaml"])
	ca, err := os.ReadFile("../../fixtures/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	nodes := 0
	for rel, data := range tree {
		node, name := filepath.Split(rel)
		node = strings.TrimSuffix(node, "/")
		var doc parseback.Doc
		switch name {
		case "config.ign":
			nodes++
			validate(t, rel, "ignition-validate", sample.IgnitionValidateEnv, data)
			if doc, err = parseback.Ignition(data); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
		case "user-data":
			nodes++
			validate(t, rel, "cloud-init", "", data, "schema", "-c")
			if doc, err = parseback.CloudInit(data); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
		default:
			continue
		}
		// The kubelet, and what installs it: cloud-init's install unit
		// (first), Ignition's systemd-sysext for a sysext.
		install := cloudinit.InstallUnitName(render.UnitName)
		if !slices.Equal(doc.Enabled, []string{render.UnitName}) && !slices.Equal(doc.Enabled, []string{install, render.UnitName}) &&
			!slices.Equal(doc.Enabled, []string{render.UnitName, render.SysextUnit}) {
			t.Errorf("%s: enabled units %v", rel, doc.Enabled)
		}
		if slices.Contains(doc.Enabled, install) {
			if _, ok := doc.Lookup(cloudinit.FetchScriptPath); !ok {
				t.Errorf("%s: %s without %s", rel, install, cloudinit.FetchScriptPath)
			}
		}
		kc, ok := doc.Lookup(render.BootstrapKubeconfigPath)
		if !ok || kc.Mode != 0o600 || kc.Owner != "root:root" {
			t.Fatalf("%s: bootstrap kubeconfig %+v", rel, kc)
		}
		cfg, err := clientcmd.Load(kc.Contents)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		secret, ok := secrets[node]
		if !ok {
			t.Fatalf("%s: tokens.yaml has no Secret for %s", rel, node)
		}
		wantToken := string(secret.Data["token-id"]) + "." + string(secret.Data["token-secret"])
		if got := cfg.AuthInfos[render.KubeconfigUser].Token; got != wantToken {
			t.Errorf("%s: kubeconfig token is not the one tokens.yaml creates for %s", rel, node)
		}
		if !bytes.Equal(cfg.Clusters[render.KubeconfigCluster].CertificateAuthorityData, ca) {
			t.Errorf("%s: kubeconfig CA is not the cluster CA", rel)
		}
		kcfg, ok := doc.Lookup(render.KubeletConfigPath)
		if !ok {
			t.Fatalf("%s: no kubelet config", rel)
		}
		var kubelet kubeletv1beta1.KubeletConfiguration
		if strict, err := sigsjson.UnmarshalStrict(kcfg.Contents, &kubelet); err != nil || len(strict) > 0 {
			t.Errorf("%s: kubelet config: %v %v", rel, err, strict)
		}
		// The command line is in kubestrap's drop-in, after a reset that
		// drops any vendor drop-in's; the machine gets its node's name.
		if d, ok := doc.Lookup(render.DropInPath); !ok {
			t.Errorf("%s: no %s", rel, render.DropInPath)
		} else if execs := execStarts(t, d.Contents); len(execs) != 2 || execs[0] != "" || !strings.Contains(execs[1], "--hostname-override="+node+" ") {
			t.Errorf("%s: drop-in ExecStart lines %q, want a reset and the node's command line", rel, execs)
		}
		if h, _ := doc.Lookup(render.HostnamePath); string(h.Contents) != node+"\n" {
			t.Errorf("%s: %s holds %q, want the node's name", rel, render.HostnamePath, h.Contents)
		}
		if ca2, _ := doc.Lookup(render.CAPath); !bytes.Equal(ca2.Contents, ca) || ca2.Mode != 0o644 {
			t.Errorf("%s: CA file %04o", rel, ca2.Mode)
		}
		// Says, in -v output, that these checks ran whether or not the
		// validator subtests were skipped.
		t.Logf("%s: read back; units, kubeconfig (token, CA), kubelet config and CA checked", rel)
	}
	if nodes == 0 {
		t.Fatal("no documents checked")
	}
}

// checkStock checks what the stock fixtures add: every node fetches its
// kubelet with a hash (Ignition natively, cloud-init by its install unit),
// the user's additions are merged in after kubestrap's, the keys are there,
// and a static network has its file.
func checkStock(t *testing.T, tree map[string][]byte) {
	t.Helper()
	for rel, data := range tree {
		node, name := filepath.Split(rel)
		switch name {
		case "config.ign":
			doc, err := parseback.Ignition(data)
			if err != nil {
				t.Fatal(err)
			}
			fetched := 0
			for _, e := range doc.Entries {
				if e.Kind == parseback.Fetched {
					fetched++
					if f := strings.Fields(string(e.Contents)); len(f) != 2 || !strings.HasPrefix(f[1], "sha256-") || !strings.HasPrefix(f[0], "https://") {
						t.Errorf("%s: fetched %s from %q", rel, e.Path, e.Contents)
					}
				}
			}
			if fetched != 1 {
				t.Errorf("%s: %d fetched files, want the kubelet or its sysext", rel, fetched)
			}
			if _, ok := doc.Lookup("/etc/sysctl.d/90-inotify.conf"); !ok || !slices.Contains(doc.Masked, "locksmithd.service") {
				t.Errorf("%s: the snippet's file or masked unit is missing (masked %v)", rel, doc.Masked)
			}
			if len(doc.SSHKeys["core"]) == 0 {
				t.Errorf("%s: no keys for core", rel)
			}
			if _, ok := doc.Lookup(ignition.NetworkdPath); ok != (node == "worker-2/") {
				t.Errorf("%s: networkd file present = %v", rel, ok)
			}
		case "user-data":
			doc, err := parseback.CloudInit(data)
			if err != nil {
				t.Fatal(err)
			}
			if doc.Enabled[0] != cloudinit.InstallUnitName(render.UnitName) {
				t.Errorf("%s: enabled %v", rel, doc.Enabled)
			}
			if !slices.EqualFunc(doc.Commands, [][]string{{"sysctl", "--system"}}, slices.Equal) || doc.Other["timezone"] != "Etc/UTC" {
				t.Errorf("%s: the user's runcmd %q (after kubestrap's) or timezone %v", rel, doc.Commands, doc.Other["timezone"])
			}
			if f, ok := doc.Lookup("/etc/sysctl.d/90-inotify.conf"); !ok || f.Owner != "root:root" {
				t.Errorf("%s: the user's file %+v", rel, f)
			}
			if _, ok := tree[node+"network-config"]; ok != (node == "worker-2/") {
				t.Errorf("%s: network-config present = %v", rel, ok)
			}
		}
	}
}

// execStarts lists a unit file's ExecStart values in order.
func execStarts(t *testing.T, unitFile []byte) []string {
	t.Helper()
	opts, err := unit.Deserialize(bytes.NewReader(unitFile))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range opts {
		if o.Section == "Service" && o.Name == "ExecStart" {
			out = append(out, o.Value)
		}
	}
	return out
}

func tokensByNode(t *testing.T, data []byte) map[string]corev1.Secret {
	t.Helper()
	out := map[string]corev1.Secret{}
	for _, doc := range strings.Split(string(data), "---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var s corev1.Secret
		if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
			t.Fatal(err)
		}
		node := s.Annotations[token.AnnotationNode]
		if want := fixedNow.Add(24 * time.Hour).Format(time.RFC3339); string(s.Data["expiration"]) != want {
			t.Errorf("%s: expiration %s, want %s", node, s.Data["expiration"], want)
		}
		out[node] = s
	}
	if len(out) != 3 {
		t.Fatalf("tokens.yaml has %d Secrets, want 3", len(out))
	}
	return out
}

// validate runs the real validator tool (found as sample.Tool finds it) on
// the document rel in a subtest of its own, so that a missing tool skips
// only that subtest (or fails it when CI=true) and never the checks of
// checkMeaning that need no tool.
func validate(t *testing.T, rel, tool, env string, data []byte, args ...string) {
	t.Helper()
	t.Run(tool+"/"+rel, func(t *testing.T) {
		runValidator(t, sample.Tool(t, tool, env), data, args...)
	})
}

// runValidator feeds a document to a real validator through a file, as a
// user would.
func runValidator(t *testing.T, tool string, data []byte, args ...string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, append(args, f)...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s rejected the document: %v\n%s", filepath.Base(tool), strings.Join(args, " "), err, out)
	}
}

// The Ignition fast path (one Butane translation per run, contents filled in
// per node) must write what Butane writes for each node: checked here on the
// fixtures' real nodes, for every variant the fixtures use.
func TestFastPathMatchesButane(t *testing.T) {
	for _, src := range []model.Sources{
		{ClusterFile: "../../fixtures/guide/cluster.yaml"},
		{ClusterFile: "../../fixtures/guide/cluster.yaml", Overrides: model.Overrides{Profile: "legacy"}},
		{EnvFile: "../../fixtures/guide/environment.sh", Overrides: model.Overrides{CAFile: "../../fixtures/pki/ca.pem"}},
	} {
		c, err := model.Load(context.Background(), src, fixedNow)
		if err != nil {
			t.Fatal(err)
		}
		r, err := render.New(c)
		if err != nil {
			t.Fatal(err)
		}
		gen := repeatable().generateToken
		for _, opts := range []ignition.Options{{}, {Variant: "flatcar"}, {Version: "1.5.0"}} {
			var tmpl *ignition.Template
			for _, n := range c.Nodes {
				value, _ := gen()
				tok, err := token.New(value, n.Name, fixedNow, false)
				if err != nil {
					t.Fatal(err)
				}
				a, err := r.Node(n, tok)
				if err != nil {
					t.Fatal(err)
				}
				if tmpl == nil {
					if tmpl, err = ignition.NewTemplate(a, opts); err != nil {
						t.Fatal(err)
					}
				}
				fast, _, err := tmpl.Fill(a)
				if err != nil {
					t.Fatal(err)
				}
				slow, err := ignition.Encode(a, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(fast, slow.Ignition) {
					t.Errorf("%v %+v %s: the fast path differs from Butane", src, opts, n.Name)
				}
			}
		}
	}
}
