package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
	"k8s.io/client-go/tools/clientcmd"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

var update = flag.Bool("update", false, "rewrite golden files")

const testToken = "abcdef.0123456789abcdef"

// guideCluster is the guide's cluster, as the model holds it after Load.
func guideCluster(t *testing.T, profile string) *model.Cluster {
	t.Helper()
	ca, err := os.ReadFile("../../fixtures/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return &model.Cluster{
		APIVersion:        model.APIVersion,
		Kind:              model.Kind,
		APIServer:         "https://172.27.129.80:6443",
		ClusterDNS:        []string{"10.254.0.2"},
		ClusterDomain:     "cluster.local",
		ServiceCIDR:       "10.254.0.0/16",
		PodCIDR:           "172.30.0.0/16",
		KubernetesVersion: "v1.37.2",
		Token:             model.TokenSpec{TTL: "24h"},
		Kubelet:           model.Kubelet{Profile: profile, Binary: "/opt/k8s/bin/kubelet"},
		Nodes: []model.Node{
			{Name: "kube-node1", IP: "172.27.129.105", Labels: map[string]string{"rack": "r1", "node.kubernetes.io/pool": "general"}},
		},
		CAPEM: ca,
	}
}

func testTok(t *testing.T, node string) token.Token {
	t.Helper()
	tok, err := token.New(testToken, node, mustTime(t), false)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func renderNode(t *testing.T, c *model.Cluster) (Assets, *Renderer) {
	t.Helper()
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Node(c.Nodes[0], testTok(t, c.Nodes[0].Name))
	if err != nil {
		t.Fatal(err)
	}
	return a, r
}

func file(t *testing.T, a Assets, path string) File {
	t.Helper()
	for _, f := range a.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("no file %s in %v", path, a.Files)
	return File{}
}

// Golden files pin the exact bytes; the parse-back tests below check what
// they mean, so a wrong golden cannot pass by being regenerated.
func TestGolden(t *testing.T) {
	for _, profile := range []string{"hardened", "legacy"} {
		t.Run(profile, func(t *testing.T) {
			a, _ := renderNode(t, guideCluster(t, profile))
			got := map[string][]byte{
				"bootstrap-kubelet.kubeconfig": file(t, a, BootstrapKubeconfigPath).Contents,
				"kubelet.config.json":          file(t, a, KubeletConfigPath).Contents,
				"kubelet.service":              a.Units[0].Contents,
				"99-kubestrap.conf":            file(t, a, DropInPath).Contents,
			}
			for name, data := range got {
				golden := filepath.Join("testdata", profile, name)
				if *update {
					os.MkdirAll(filepath.Dir(golden), 0o755)
					if err := os.WriteFile(golden, data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(data, want) {
					t.Errorf("%s differs from %s (run go test -update and review the diff):\n%s", name, golden, data)
				}
			}
		})
	}
}

func TestBootstrapKubeconfigParsesBack(t *testing.T) {
	c := guideCluster(t, "hardened")
	a, _ := renderNode(t, c)
	f := file(t, a, BootstrapKubeconfigPath)
	if f.Mode != 0o600 || !f.Secret {
		t.Errorf("mode %v secret %v, want 0600 and secret", f.Mode, f.Secret)
	}
	cfg, err := clientcmd.Load(f.Contents)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CurrentContext != "default" {
		t.Errorf("current-context %q", cfg.CurrentContext)
	}
	ctx := cfg.Contexts["default"]
	if ctx == nil || ctx.Cluster != "kubernetes" || ctx.AuthInfo != "kubelet-bootstrap" {
		t.Fatalf("context default = %+v", ctx)
	}
	cl := cfg.Clusters["kubernetes"]
	if cl.Server != c.APIServer || !bytes.Equal(cl.CertificateAuthorityData, c.CAPEM) {
		t.Errorf("cluster = %s, CA embedded %v", cl.Server, bytes.Equal(cl.CertificateAuthorityData, c.CAPEM))
	}
	if got := cfg.AuthInfos["kubelet-bootstrap"].Token; got != testToken {
		t.Errorf("token = %q", got)
	}
	// The same config through the client-side loader a kubelet uses.
	if _, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig(); err != nil {
		t.Errorf("client config: %v", err)
	}
}

func decodeKubelet(t *testing.T, data []byte) kubeletv1beta1.KubeletConfiguration {
	t.Helper()
	var kc kubeletv1beta1.KubeletConfiguration
	strict, err := sigsjson.UnmarshalStrict(data, &kc)
	if err != nil || len(strict) > 0 {
		t.Fatalf("kubelet config does not decode strictly: %v %v", err, strict)
	}
	return kc
}

func TestKubeletConfig(t *testing.T) {
	c := guideCluster(t, "hardened")
	c.Kubelet.Config = map[string]any{"maxPods": 150, "podPidsLimit": 2048, "evictionHard": map[string]any{"memory.available": "200Mi"}}
	c.Nodes[0].Kubelet.Config = map[string]any{"maxPods": 60}
	a, _ := renderNode(t, c)
	f := file(t, a, KubeletConfigPath)
	kc := decodeKubelet(t, f.Contents)
	if kc.Kind != "KubeletConfiguration" || kc.APIVersion != "kubelet.config.k8s.io/v1beta1" {
		t.Errorf("kind/apiVersion %q %q", kc.Kind, kc.APIVersion)
	}
	if kc.Address != "172.27.129.105" || !slices.Equal(kc.ClusterDNS, []string{"10.254.0.2"}) || kc.ClusterDomain != "cluster.local" {
		t.Errorf("address %q clusterDNS %v clusterDomain %q", kc.Address, kc.ClusterDNS, kc.ClusterDomain)
	}
	if kc.Authentication.X509.ClientCAFile != CAPath {
		t.Errorf("clientCAFile %q, want the CA the document writes (%s)", kc.Authentication.X509.ClientCAFile, CAPath)
	}
	// profile → cluster → node: the node wins, the cluster beats the profile,
	// nested maps merge rather than replace.
	if kc.MaxPods != 60 || *kc.PodPidsLimit != 2048 || kc.EvictionHard["memory.available"] != "200Mi" {
		t.Errorf("merge: maxPods %d podPidsLimit %d evictionHard %v", kc.MaxPods, *kc.PodPidsLimit, kc.EvictionHard)
	}
	if *kc.Authentication.Anonymous.Enabled || kc.Authorization.Mode != "Webhook" || !*kc.Authentication.Webhook.Enabled {
		t.Error("hardened authn/authz lost in the merge")
	}
	// Explicit zeros stay visible in the file, not only in the typed value.
	var raw map[string]any
	json.Unmarshal(f.Contents, &raw)
	if v, ok := raw["readOnlyPort"]; !ok || v != 0.0 {
		t.Errorf("readOnlyPort in file = %v (present %v), want an explicit 0", v, ok)
	}
	if kc.ServerTLSBootstrap {
		t.Error("serverTLSBootstrap on without being asked")
	}
	c.Kubelet.ServerTLSBootstrap = true
	a, _ = renderNode(t, c)
	if !decodeKubelet(t, file(t, a, KubeletConfigPath).Contents).ServerTLSBootstrap {
		t.Error("serverTLSBootstrap asked for but off")
	}
}

// The legacy profile's warnings are model's (TestLoadWarnings there); here,
// what it renders.
func TestLegacyProfile(t *testing.T) {
	a, _ := renderNode(t, guideCluster(t, "legacy"))
	kc := decodeKubelet(t, file(t, a, KubeletConfigPath).Contents)
	if !*kc.Authentication.Anonymous.Enabled || kc.Authorization.Mode != "AlwaysAllow" || kc.ReadOnlyPort != 10255 ||
		kc.CgroupDriver != "cgroupfs" || kc.HairpinMode != "promiscuous-bridge" || *kc.SerializeImagePulls {
		t.Errorf("legacy settings not reproduced: %+v", kc)
	}
	// The guide's client-rotation gate is gone since v1.21; its server gate is not.
	if _, ok := kc.FeatureGates["RotateKubeletClientCertificate"]; ok {
		t.Error("RotateKubeletClientCertificate emitted for v1.37")
	}
	if !kc.FeatureGates["RotateKubeletServerCertificate"] {
		t.Error("RotateKubeletServerCertificate dropped")
	}
}

// execStart is the kubelet's command line: the drop-in's last ExecStart,
// which must follow an empty one (the reset that makes vendor drop-ins'
// command lines go away). The unit itself has none.
func execStart(t *testing.T, a Assets) []string {
	t.Helper()
	if opts, err := unit.Deserialize(bytes.NewReader(a.Units[0].Contents)); err != nil {
		t.Fatal(err)
	} else if slices.ContainsFunc(opts, func(o *unit.UnitOption) bool { return o.Name == "ExecStart" }) {
		t.Errorf("%s has an ExecStart of its own", a.Units[0].Name)
	}
	opts, err := unit.Deserialize(bytes.NewReader(file(t, a, DropInPath).Contents))
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, o := range opts {
		if o.Section == "Service" && o.Name == "ExecStart" {
			values = append(values, o.Value)
		}
	}
	if len(values) != 2 || values[0] != "" {
		t.Fatalf("drop-in ExecStart values %q, want a reset and a command line", values)
	}
	return strings.Fields(strings.ReplaceAll(values[1], "\\\n", " "))
}

func TestUnit(t *testing.T) {
	c := guideCluster(t, "hardened")
	c.Kubelet.ExtraArgs = map[string]string{"max-open-files": "1000000"}
	a, _ := renderNode(t, c)
	opts, err := unit.Deserialize(bytes.NewReader(a.Units[0].Contents))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range opts {
		got[o.Section+"."+o.Name] = o.Value
	}
	if got["Service.Restart"] != "on-failure" || !strings.Contains(got["Unit.After"], "containerd.service") || got["Install.WantedBy"] != "multi-user.target" {
		t.Errorf("unit options %v", got)
	}
	args := execStart(t, a)
	want := []string{
		"/opt/k8s/bin/kubelet",
		"--config=" + KubeletConfigPath,
		"--bootstrap-kubeconfig=" + BootstrapKubeconfigPath,
		"--kubeconfig=" + KubeletKubeconfigPath,
		"--cert-dir=" + CertDir,
		"--hostname-override=kube-node1",
		"--node-ip=172.27.129.105",
		"--node-labels=node.kubernetes.io/pool=general,rack=r1",
		"--max-open-files=1000000",
		"--v=2",
	}
	if !slices.Equal(args, want) {
		t.Errorf("ExecStart\n got %q\nwant %q", args, want)
	}
}

// Every path a unit flag names must exist on the node: written by the
// document, or created by the kubelet itself once it is bootstrapped.
func TestUnitPathsExist(t *testing.T) {
	a, _ := renderNode(t, guideCluster(t, "hardened"))
	written := map[string]bool{}
	for _, f := range a.Files {
		written[f.Path] = true
	}
	for _, d := range a.Dirs {
		written[d.Path] = true
	}
	createdByKubelet := map[string]bool{KubeletKubeconfigPath: true, CertDir: true}
	for _, arg := range execStart(t, a) {
		name, value, ok := strings.Cut(arg, "=")
		if !ok || !strings.HasPrefix(value, "/") {
			continue
		}
		if !written[value] && !createdByKubelet[value] {
			t.Errorf("%s names %s, which nothing creates", name, value)
		}
		if createdByKubelet[value] && !written[filepath.Dir(value)] {
			t.Errorf("%s: the kubelet creates %s but its parent is not written", name, value)
		}
	}
	kc := decodeKubelet(t, file(t, a, KubeletConfigPath).Contents)
	if !written[kc.Authentication.X509.ClientCAFile] {
		t.Errorf("clientCAFile %s not written", kc.Authentication.X509.ClientCAFile)
	}
}

// Load refuses bad kubelet settings, each at its line (model's
// TestLoadKubeletSettings). Settings that reach render unchecked, in a
// Cluster built by hand, still never make a bad document: render's decode
// refuses them, as a bug rather than as the user's input.
func TestUncheckedSettingsAreABug(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(c *model.Cluster)
		wantErr string
	}{
		{"unknown field", func(c *model.Cluster) { c.Kubelet.Config = map[string]any{"readOnlyPrt": 0} },
			`kubelet config is not a KubeletConfiguration (a kubestrap bug: model.Load should have refused the settings): unknown field "readOnlyPrt"`},
		{"wrong type on a node", func(c *model.Cluster) { c.Nodes[0].Kubelet.Config = map[string]any{"maxPods": "many"} },
			"node kube-node1: kubelet config is not a KubeletConfiguration (a kubestrap bug"},
		{"unknown profile", func(c *model.Cluster) { c.Kubelet.Profile = "paranoid" },
			`kubelet config: unknown profile "paranoid"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := guideCluster(t, "hardened")
			tt.mutate(c)
			r, err := New(c)
			if err == nil {
				if cerr := r.Check(c.Nodes[0]); cerr != nil {
					t.Errorf("Check = %v, want nil: Load does the checking", cerr)
				}
				_, err = r.Node(c.Nodes[0], testTok(t, c.Nodes[0].Name))
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrInput) || errors.Is(err, model.ErrInvalid) {
				t.Errorf("err is an input error, want a bug: %v", err)
			}
		})
	}
}

// The profile's feature gates that the target version removed are left out
// (model.KubeletBase); the others stay.
func TestRemovedProfileGatesLeftOut(t *testing.T) {
	c := guideCluster(t, "legacy")
	c.KubernetesVersion = "v1.33.0"
	a, _ := renderNode(t, c)
	kc := decodeKubelet(t, file(t, a, KubeletConfigPath).Contents)
	if _, ok := kc.FeatureGates["RotateKubeletClientCertificate"]; ok || !kc.FeatureGates["RotateKubeletServerCertificate"] {
		t.Errorf("featureGates = %v, want RotateKubeletServerCertificate alone", kc.FeatureGates)
	}
}

// A render must not share state between nodes or modify the cluster.
func TestNodesIndependent(t *testing.T) {
	c := guideCluster(t, "hardened")
	c.Nodes = append(c.Nodes, model.Node{Name: "kube-node2", IP: "172.27.129.111", Kubelet: model.KubeletOverrides{Config: map[string]any{"maxPods": 10}}})
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := r.Node(c.Nodes[1], testTok(t, "kube-node2"))
	if err != nil {
		t.Fatal(err)
	}
	a1, err := r.Node(c.Nodes[0], testTok(t, "kube-node1"))
	if err != nil {
		t.Fatal(err)
	}
	k1 := decodeKubelet(t, file(t, a1, KubeletConfigPath).Contents)
	k2 := decodeKubelet(t, file(t, a2, KubeletConfigPath).Contents)
	if k1.MaxPods != 0 || k2.MaxPods != 10 || k1.Address == k2.Address {
		t.Errorf("node settings leaked: node1 maxPods %d address %s, node2 maxPods %d address %s", k1.MaxPods, k1.Address, k2.MaxPods, k2.Address)
	}
}

func TestExecQuote(t *testing.T) {
	for in, want := range map[string]string{
		"--v=2":               "--v=2",
		"--a=b c":             `"--a=b c"`,
		`--a="q"`:             `"--a=\"q\""`,
		"--pct=100%":          "--pct=100%%",
		"--var=$HOME":         "--var=$$HOME",
		`--path=C:\dir`:       `"--path=C:\\dir"`,
		"--eviction=a<1%,b<2": "--eviction=a<1%%,b<2",
	} {
		if got := execQuote(in); got != want {
			t.Errorf("execQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// The shared fast path must give the full path's bytes: for tokens that start
// with a letter or a digit (the latter take the full path), IPv4 and IPv6
// addresses, and nodes with and without their own kubelet settings.
func TestSharedMatchesFull(t *testing.T) {
	c := guideCluster(t, "hardened")
	c.Nodes = []model.Node{
		{Name: "v4", IP: "10.1.2.3"},
		{Name: "v6", IP: "fd00::1:2"},
		{Name: "own", IP: "10.1.2.4", Kubelet: model.KubeletOverrides{Config: map[string]any{"maxPods": 12}}},
	}
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, value := range []string{"abcdef.0123456789abcdef", "z00000.0000000000000000", "123456.1234567890123456", "0e5000.1111111111111111",
		"123456.1234e56789012345", "000000.000000000000000a", "1e1000.0000000000000000"} {
		for _, n := range c.Nodes {
			tok, err := token.New(value, n.Name, mustTime(t), false)
			if err != nil {
				t.Fatal(err)
			}
			fast, err := r.node(n, tok, true)
			if err != nil {
				t.Fatal(err)
			}
			full, err := r.node(n, tok, false)
			if err != nil {
				t.Fatal(err)
			}
			for i := range full.Files {
				if !bytes.Equal(fast.Files[i].Contents, full.Files[i].Contents) {
					t.Errorf("%s %s: %s differs:\nfast %s\nfull %s", value, n.Name, full.Files[i].Path, fast.Files[i].Contents, full.Files[i].Contents)
				}
			}
			if !bytes.Equal(fast.Units[0].Contents, full.Units[0].Contents) {
				t.Errorf("%s %s: unit differs", value, n.Name)
			}
			cfg, err := clientcmd.Load(file(t, fast, BootstrapKubeconfigPath).Contents)
			if err != nil || cfg.AuthInfos[KubeconfigUser].Token != value {
				t.Errorf("%s: token does not load back: %v", value, err)
			}
		}
	}
}

// TestStockNode: a DHCP node on Debian. The kubelet gets no --node-ip and
// listens everywhere; containerd gets a config whose cgroup driver is the
// kubelet's, and is restarted to read it; an image prepared for kubestrap
// (no os) keeps its own containerd config.
func TestStockNode(t *testing.T) {
	c := guideCluster(t, "hardened")
	c.OS = "debian"
	c.Nodes[0].IP = ""
	a, _ := renderNode(t, c)
	for _, arg := range execStart(t, a) {
		if strings.HasPrefix(arg, "--node-ip") {
			t.Errorf("DHCP node has %s", arg)
		}
	}
	if kc := decodeKubelet(t, file(t, a, KubeletConfigPath).Contents); kc.Address != "0.0.0.0" || kc.CgroupDriver != "systemd" {
		t.Errorf("address %q, cgroupDriver %q", kc.Address, kc.CgroupDriver)
	}
	cfg := string(file(t, a, ContainerdConfigPath).Contents)
	if !strings.Contains(cfg, "SystemdCgroup = true") || !strings.Contains(cfg, `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]`) {
		t.Errorf("containerd config:\n%s", cfg)
	}
	if !slices.Equal(a.Restart, []string{ContainerdUnit}) {
		t.Errorf("restart %v", a.Restart)
	}
	if h := file(t, a, HostnamePath); string(h.Contents) != "kube-node1\n" {
		t.Errorf("hostname %q", h.Contents)
	}

	// A node's own cgroup driver gets its own containerd config.
	c.Nodes[0].Kubelet.Config = map[string]any{"cgroupDriver": "cgroupfs"}
	a, _ = renderNode(t, c)
	if cfg := string(file(t, a, ContainerdConfigPath).Contents); !strings.Contains(cfg, "SystemdCgroup = false") {
		t.Errorf("node with cgroupfs, containerd config:\n%s", cfg)
	}

	legacy := guideCluster(t, "legacy")
	legacy.OS = "ubuntu"
	a, _ = renderNode(t, legacy)
	if cfg := string(file(t, a, ContainerdConfigPath).Contents); !strings.Contains(cfg, "SystemdCgroup = false") {
		t.Errorf("legacy (cgroupfs) containerd config:\n%s", cfg)
	}

	a, _ = renderNode(t, guideCluster(t, "hardened"))
	for _, f := range a.Files {
		if f.Path == ContainerdConfigPath {
			t.Error("no os, yet containerd's config is written")
		}
	}
	if len(a.Restart) > 0 {
		t.Errorf("restart %v", a.Restart)
	}
}
