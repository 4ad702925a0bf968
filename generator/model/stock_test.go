package model

import (
	"context"
	"slices"
	"strings"
	"testing"
)

var (
	sha256A = strings.Repeat("a", 64)
	sha256B = strings.Repeat("b", 64)
)

// stockYAML is baseYAML on a stock image: no kubelet.binary, an install,
// an arm64 node, keys and a static network.
func stockYAML(install string) string {
	return edit(baseYAML,
		"kubernetesVersion: v1.37.2\n", "kubernetesVersion: v1.37.2\nos: flatcar\nsshAuthorizedKeys: [\"ssh-ed25519 AAAAkey ops@example\"]\n",
		"  binary: /opt/k8s/bin/kubelet\n", install,
		"- name: kube-node2\n  ip: 172.27.129.111\n", "- name: kube-node2\n  arch: arm64\n  network:\n    addresses: [172.27.129.111/24]\n    gateway: 172.27.129.1\n    dns: [172.27.129.2]\n",
	)
}

// TestLoadStock checks what a stock image's nodes resolve to: the install
// path the OS table gives, the per-arch digest and URL, the ip from the
// static network, and binaries that follow the install.
func TestLoadStock(t *testing.T) {
	tests := []struct {
		name, install string
		binary        []string // per node
		fetch         []Fetch  // node 0's and node 1's first
	}{
		{
			name: "url, digest per arch",
			install: "  install:\n    url: https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet\n" +
				"    sha256: {amd64: " + sha256A + ", arm64: " + strings.ToUpper(sha256B) + "}\n",
			binary: []string{"/opt/bin/kubelet", "/opt/bin/kubelet"},
			fetch: []Fetch{
				{Path: "/opt/bin/kubelet", Mode: 0o755, URL: "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet", Hash: "sha256-" + sha256A},
				{Path: "/opt/bin/kubelet", Mode: 0o755, URL: "https://dl.k8s.io/release/v1.37.2/bin/linux/arm64/kubelet", Hash: "sha256-" + sha256B},
			},
		},
		{
			name:    "sysext over plain http, one digest",
			install: "  install:\n    sysext:\n      url: http://mirror/kubernetes-{version}-{sysextArch}.raw\n      sha256: " + sha256A + "\n",
			binary:  []string{SysextKubelet, SysextKubelet},
			fetch: []Fetch{
				{Path: SysextDir + "/kubernetes-v1.37.2-x86-64.raw", Mode: 0o644, URL: "http://mirror/kubernetes-v1.37.2-x86-64.raw", Hash: "sha256-" + sha256A, Link: SysextLink, Sysext: true},
				{Path: SysextDir + "/kubernetes-v1.37.2-arm64.raw", Mode: 0o644, URL: "http://mirror/kubernetes-v1.37.2-arm64.raw", Hash: "sha256-" + sha256A, Link: SysextLink, Sysext: true},
			},
		},
		{
			name:    "no install: the image's kubelet",
			install: "",
			binary:  []string{DefaultKubeletBinary, DefaultKubeletBinary},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, map[string]string{"cluster.yaml": stockYAML(tt.install)})
			c := mustLoad(t, yamlSrc)
			for i, want := range tt.binary {
				if got := c.Nodes[i].KubeletBinary(); got != want {
					t.Errorf("node %d: binary %s, want %s", i, got, want)
				}
			}
			var got []Fetch
			for _, n := range c.Nodes[:2] {
				got = append(got, n.Fetches()...)
			}
			if !slices.Equal(got, tt.fetch) {
				t.Errorf("fetches\n got %+v\nwant %+v", got, tt.fetch)
			}
			n := c.Nodes[1]
			if n.Arch != "arm64" || c.Nodes[0].Arch != DefaultArch || n.IP != "172.27.129.111" || n.Network.MAC != "52:54:00:12:34:57" {
				t.Errorf("node 1: arch %s, ip %s, network %+v", n.Arch, n.IP, n.Network)
			}
			if kc, _ := c.KubeletBase(); kc["resolvConf"] != "/run/systemd/resolve/resolv.conf" {
				t.Errorf("flatcar resolvConf %v", kc["resolvConf"])
			}
		})
	}
}

func TestLoadStockBad(t *testing.T) {
	url := "  install:\n    url: https://dl.k8s.io/{version}/{arch}/kubelet\n"
	tests := []struct{ name, yaml, want string }{
		{"no hash", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", url),
			"cluster.yaml:14: kubelet.install.sha256: required: nothing is fetched without its hash"},
		{"short hash", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", url+"    sha256: abc\n"),
			`cluster.yaml:16: kubelet.install.sha256: "abc" is not a sha256 digest (64 hex digits)`},
		{"no digest for a node's arch", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", url+"    sha256: {amd64: "+sha256A+"}\n",
			"  ip: 172.27.129.112\n", "  ip: 172.27.129.112\n  arch: arm64\n"),
			"kubelet.install.sha256: has no digest for arch arm64, which node kube-node3 uses"},
		{"cgroup driver", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  binary: /opt/k8s/bin/kubelet\n  config: {cgroupDriver: cgroupv2}\n"),
			`cluster.yaml:15: kubelet.config.cgroupDriver: "cgroupv2" is not a cgroup driver: want systemd or cgroupfs`},
		{"uppercase scheme", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: HTTPS://x/kubelet\n    sha256: "+sha256A+"\n"),
			`kubelet.install.url: "HTTPS://x/kubelet" must be an http:// or https:// URL`},
		{"port", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: https://x:99999/kubelet\n    sha256: "+sha256A+"\n"),
			`kubelet.install.url: "https://x:99999/kubelet" has an invalid port`},
		{"sysext on debian", edit(baseYAML, "kubernetesVersion: v1.37.2\n", "kubernetesVersion: v1.37.2\nos: debian\n",
			"  binary: /opt/k8s/bin/kubelet\n", "  install:\n    sysext: {url: https://x/k.raw, sha256: "+sha256A+"}\n"),
			"kubelet.install.sysext: Flatcar's kubernetes sysext is for os flatcar, not debian"},
		{"binary with a sysext", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  binary: /opt/k8s/bin/kubelet\n  install:\n    sysext: {url: https://x/k.raw, sha256: "+sha256A+"}\n"),
			"kubelet.binary: /opt/k8s/bin/kubelet: with a sysext the kubelet is the extension's, /usr/bin/kubelet"},
		{"binary in /usr on flatcar", edit(baseYAML, "kubernetesVersion: v1.37.2\n", "kubernetesVersion: v1.37.2\nos: flatcar\n",
			"  binary: /opt/k8s/bin/kubelet\n", "  binary: /usr/bin/kubelet\n  install:\n    url: https://x/kubelet\n    sha256: "+sha256A+"\n"),
			"kubelet.binary: /usr/bin/kubelet: /usr is read-only on flatcar"},
		{"network ip taken twice", edit(baseYAML, "  ip: 172.27.129.112\n", "  network: {interface: eth0, addresses: [172.27.129.105/24]}\n"),
			"nodes[2].ip: duplicate IP 172.27.129.105 (first used by nodes[0], cluster.yaml:17)"},
		{"network ip in serviceCIDR", edit(baseYAML, "  ip: 172.27.129.112\n", "  network: {interface: eth0, addresses: [10.254.0.9/16]}\n"),
			"cluster.yaml:25: nodes[2].ip: 10.254.0.9 is inside serviceCIDR 10.254.0.0/16"},
		{"network loopback", edit(baseYAML, "  ip: 172.27.129.112\n", "  network: {interface: eth0, addresses: [127.0.0.5/8]}\n"),
			"nodes[2].network.addresses[0]: 127.0.0.5 cannot be a node's address"},
		{"network mac of another node", edit(baseYAML, "  ip: 172.27.129.112\n", "  ip: 172.27.129.112\n  network: {mac: \"52:54:00:12:34:57\", addresses: [172.27.129.112/24]}\n"),
			"nodes[2].network.mac: duplicate MAC 52:54:00:12:34:57 (first used by nodes[1]"},
		{"ftp", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: ftp://x/kubelet\n    sha256: "+sha256A+"\n"),
			`kubelet.install.url: "ftp://x/kubelet" must be an http:// or https:// URL`},
		{"credentials", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: https://u:p@x/kubelet\n    sha256: "+sha256A+"\n"),
			"must not carry credentials"},
		{"placeholder", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: https://x/{os}/kubelet\n    sha256: "+sha256A+"\n"),
			"has an unknown placeholder"},
		{"both", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: https://x/kubelet\n    sha256: "+sha256A+"\n    sysext: {url: https://x/k.raw, sha256: "+sha256A+"}\n"),
			"kubelet.install: give url or sysext, not both"},
		{"unknown os", edit(baseYAML, "kubernetesVersion: v1.37.2\n", "kubernetesVersion: v1.37.2\nos: windows\n"),
			`cluster.yaml:10: os: "windows" is not a known OS (known: fcos, flatcar, ubuntu, debian)`},
		{"arch", edit(baseYAML, "  ip: 172.27.129.112\n", "  ip: 172.27.129.112\n  arch: riscv64\n"),
			`nodes[2].arch: "riscv64" is not a supported arch (amd64, arm64)`},
		{"private key", edit(baseYAML, "kubernetesVersion: v1.37.2\n", "kubernetesVersion: v1.37.2\nsshAuthorizedKeys: [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]\n"),
			"sshAuthorizedKeys[0]"},
		{"network without ip's address", edit(baseYAML, "  ip: 172.27.129.112\n", "  ip: 172.27.129.112\n  network: {mac: \"52:54:00:00:00:01\", addresses: [10.9.0.5/24]}\n"),
			"nodes[2].network.addresses: none is the node's ip 172.27.129.112"},
		{"network address", edit(baseYAML, "  ip: 172.27.129.112\n", "  network: {mac: \"52:54:00:00:00:01\", addresses: [10.9.0.0/24]}\n"),
			`nodes[2].network.addresses[0]: "10.9.0.0/24" is a network address`},
		{"gateway elsewhere", edit(baseYAML, "  ip: 172.27.129.112\n", "  network: {mac: \"52:54:00:00:00:01\", addresses: [10.9.0.5/24], gateway: 10.8.0.1}\n"),
			"nodes[2].network.gateway: 10.8.0.1 is in none of the node's address ranges"},
		{"network for which interface", edit(baseYAML, "  ip: 172.27.129.112\n", "  network: {addresses: [10.9.0.5/24]}\n"),
			"nodes[2].network: give mac or interface"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, map[string]string{"cluster.yaml": tt.yaml})
			_, err := Load(context.Background(), yamlSrc, testNow)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: %v\nwant a problem containing %q", err, tt.want)
			}
		})
	}
}

// TestStockAccepts: hosters' static setups (a link-local IPv6 gateway, an
// on-link gateway for a /32) load, and what kubestrap cannot check is a
// warning.
func TestStockAccepts(t *testing.T) {
	yaml := edit(baseYAML, "kubernetesVersion: v1.37.2\n", "kubernetesVersion: v1.37.2\nos: flatcar\n",
		"  binary: /opt/k8s/bin/kubelet\n", "  install:\n    url: https://x/kubelet\n    sha256: "+sha256A+"\n  config: {cgroupDriver: cgroupfs}\n",
		"  ip: 172.27.129.111\n", "  network: {interface: eth0, addresses: [\"172.27.129.111/32\", \"2a01:4f8:1:2::5/64\"], gateway: fe80::1}\n",
		"  ip: 172.27.129.112\n", "  network: {interface: eth0, addresses: [172.27.129.112/32], gateway: 172.27.128.1}\n")
	inDir(t, map[string]string{"cluster.yaml": yaml})
	c := mustLoad(t, yamlSrc)
	if c.Nodes[1].IP != "172.27.129.111" {
		t.Errorf("node 1 ip %q", c.Nodes[1].IP)
	}
	var got []string
	for _, w := range c.Warnings {
		got = append(got, w.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`cluster.yaml:18: kubelet cgroupDriver "cgroupfs": Flatcar's containerd uses the systemd cgroup driver`,
		"2 node(s) with a static network (first kube-node2) install the kubelet",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings\n%s\nlack %q", all, want)
		}
	}
}

// TestNodeWithoutIP: DHCP nodes load, with no ip.
func TestNodeWithoutIP(t *testing.T) {
	inDir(t, map[string]string{"cluster.yaml": edit(baseYAML, "  ip: 172.27.129.112\n", "")})
	c := mustLoad(t, yamlSrc)
	if c.Nodes[2].IP != "" || c.Nodes[2].Addr().IsValid() {
		t.Errorf("node 2 ip %q", c.Nodes[2].IP)
	}
}
