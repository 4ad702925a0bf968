package model

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// withKubelet adds lines under baseYAML's kubelet: block, from line 15 on.
func withKubelet(lines string) string {
	return edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  binary: /opt/k8s/bin/kubelet\n"+lines)
}

// nodesYAML is a --nodes file; kubelet settings of its second node start at line 7.
func nodesYAML(node2Kubelet string) string {
	return "- name: n1\n  ip: 172.27.129.105\n" +
		"- name: n2\n  ip: 172.27.129.111\n  kubelet:\n    config:\n" + node2Kubelet
}

func nodesCase(name, nodes string, want ...string) badCase {
	return badCase{
		name:  name,
		files: map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": nodes},
		src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"},
		want:  want,
	}
}

func withVersion(c badCase, v string) badCase {
	c.src.Overrides.KubernetesVersion = v
	return c
}

// TestLoadKubeletSettings checks that Load finds what the kubelet would
// refuse, each at its line: it used to be render, without lines, in a run of
// its own after every other problem was fixed.
func TestLoadKubeletSettings(t *testing.T) {
	for _, tc := range []badCase{
		yamlCase("wrong type", withKubelet("  config:\n    maxPods: lots\n"),
			`cluster.yaml:16: kubelet.config.maxPods: want a number (int32), got "lots"`),
		yamlCase("fraction for an integer", withKubelet("  config:\n    maxPods: 1.5\n"),
			"cluster.yaml:16: kubelet.config.maxPods: want a number (int32), got 1.5"),
		yamlCase("bad duration", withKubelet("  config:\n    authentication:\n      webhook:\n        cacheTTL: soon\n"),
			`cluster.yaml:18: kubelet.config.authentication.webhook.cacheTTL: want a duration like 5m0s, got "soon"`),
		yamlCase("number in a map of strings", withKubelet("  config:\n    evictionHard:\n      memory.available: 5\n"),
			`cluster.yaml:17: kubelet.config.evictionHard["memory.available"]: want a string, got 5`),
		yamlCase("number in a list of strings", withKubelet("  config:\n    tlsCipherSuites: [TLS_AES_128_GCM_SHA256, 7]\n"),
			"cluster.yaml:16: kubelet.config.tlsCipherSuites[1]: want a string, got 7"),
		yamlCase("bad quantity", withKubelet("  config:\n    reservedMemory:\n    - numaNode: 0\n      limits: {memory: lots}\n"),
			`cluster.yaml:18: kubelet.config.reservedMemory[0].limits.memory: invalid value "lots": `+
				`quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`),
		yamlCase("mapping for a string", withKubelet("  config:\n    cgroupDriver: {systemd: true}\n"),
			"cluster.yaml:16: kubelet.config.cgroupDriver: want a string, got a mapping"),
		yamlCase("no JSON form", withKubelet("  config:\n    cpuCFSQuotaPeriod: .nan\n"),
			"cluster.yaml:16: kubelet.config.cpuCFSQuotaPeriod: NaN has no JSON form"),
		yamlCase("key that is not a string", withKubelet("  config:\n    evictionHard: {1: 2}\n"),
			`cluster.yaml:16: kubelet.config.evictionHard: want a string key, got 1 (write "1" to mean the string)`),
		yamlCase("unknown field", withKubelet("  config:\n    readOnlyPrt: 0\n"),
			"cluster.yaml:16: kubelet.config.readOnlyPrt: unknown KubeletConfiguration field"),
		yamlCase("every wrong value and unknown field", withKubelet("  config:\n    maxPods: lots\n    podPidsLimit: many\n    authentication: {foo: 1}\n    bar: 2\n"),
			`cluster.yaml:16: kubelet.config.maxPods: want a number (int32), got "lots"`,
			`cluster.yaml:17: kubelet.config.podPidsLimit: want a number (int64), got "many"`,
			"cluster.yaml:18: kubelet.config.authentication.foo: unknown KubeletConfiguration field",
			"cluster.yaml:19: kubelet.config.bar: unknown KubeletConfiguration field"),
		nodesCase("unknown field on a node", nodesYAML("      authentication:\n        foo: 1\n"),
			"nodes.yaml:8: nodes[1].kubelet.config.authentication.foo: unknown KubeletConfiguration field"),
		nodesCase("wrong type on a node", nodesYAML("      maxPods: lots\n"),
			`nodes.yaml:7: nodes[1].kubelet.config.maxPods: want a number (int32), got "lots"`),

		// Removed settings, for the target version.
		yamlCase("removed flag", withKubelet("  extraArgs:\n    cadvisor-port: \"4194\"\n"),
			"cluster.yaml:16: kubelet.extraArgs.cadvisor-port: kubelet 1.37.2 refuses --cadvisor-port: removed in Kubernetes v1.12.0 "+
				"(kubernetes/kubernetes#65707 (CHANGELOG-1.12; the cAdvisor web UI on port 4194 is gone))"),
		withVersion(yamlCase("flag removed before the oldest version", withKubelet("  extraArgs:\n    container-runtime: remote\n"),
			"cluster.yaml:16: kubelet.extraArgs.container-runtime: kubelet 1.33.0 refuses --container-runtime: removed in Kubernetes v1.27.0 "+
				"(kubernetes/kubernetes#114017 (CHANGELOG-1.27))"), "v1.33.0"),
		withVersion(yamlCase("flag removed by the target version", withKubelet("  extraArgs:\n    pod-infra-container-image: registry.k8s.io/pause:3.10\n"),
			"cluster.yaml:16: kubelet.extraArgs.pod-infra-container-image: kubelet 1.35.0 refuses --pod-infra-container-image: "+
				"removed in Kubernetes v1.35.0 (kubernetes/kubernetes#133779 (CHANGELOG-1.35; the runtime pins the sandbox image))"), "v1.35.0"),
		nodesCase("removed field on a node", nodesYAML("      cadvisorPort: 4194\n"),
			"nodes.yaml:7: nodes[1].kubelet.config.cadvisorPort: kubelet 1.37.2 has no such setting: removed in Kubernetes v1.12.0 "+
				"(kubernetes/kubernetes#65707 (CHANGELOG-1.12))"),
		yamlCase("removed feature gate", withKubelet("  config:\n    featureGates:\n      RotateKubeletClientCertificate: true\n"),
			"cluster.yaml:17: kubelet.config.featureGates.RotateKubeletClientCertificate: kubelet 1.37.2 refuses this gate: "+
				"removed in Kubernetes v1.21.0 (GA in v1.19 (kubernetes/kubernetes#91780), gate removed by kubernetes/kubernetes#97306)"),
		yamlCase("fields kubestrap sets", withKubelet("  config:\n    address: 0.0.0.0\n    authentication:\n      x509:\n        clientCAFile: /etc/other-ca.pem\n"),
			"cluster.yaml:16: kubelet.config.address: set by kubestrap: it is the node's ip",
			"cluster.yaml:19: kubelet.config.authentication.x509.clientCAFile: set by kubestrap: it is the cluster CA the document writes"),
		nodesCase("field kubestrap sets, on a node", nodesYAML("      clusterDNS: [10.0.0.10]\n"),
			"nodes.yaml:7: nodes[1].kubelet.config.clusterDNS: set by kubestrap: it is the cluster's clusterDNS"),
		yamlCase("flags that would weaken the config unchecked", withKubelet("  extraArgs:\n    anonymous-auth: \"true\"\n    read-only-port: \"10255\"\n"),
			"cluster.yaml:16: kubelet.extraArgs.anonymous-auth: --anonymous-auth would override the kubelet config's authentication.anonymous.enabled "+
				"from the command line, unchecked: set it in kubelet.config, where kubestrap checks and warns about what it opens",
			"cluster.yaml:17: kubelet.extraArgs.read-only-port: --read-only-port would override the kubelet config's readOnlyPort "+
				"from the command line, unchecked: set it in kubelet.config, where kubestrap checks and warns about what it opens"),
		nodesCase("a config field kubestrap sets, as a flag on a node", "- name: n1\n  ip: 172.27.129.105\n  kubelet:\n    extraArgs: {address: 0.0.0.0}\n",
			"nodes.yaml:4: nodes[0].kubelet.extraArgs.address: --address is set by kubestrap, in the kubelet config: it is the node's ip"),
		nodesCase("flag kubestrap sets, on a node", "- name: n1\n  ip: 172.27.129.105\n  kubelet:\n    extraArgs: {kubeconfig: /tmp/x}\n",
			"nodes.yaml:4: nodes[0].kubelet.extraArgs.kubeconfig: --kubeconfig is set by kubestrap: it names the files that TLS bootstrapping reads and writes"),
	} {
		t.Run(tc.name, func(t *testing.T) {
			inDir(t, tc.files)
			_, err := Load(context.Background(), tc.src, testNow)
			if got := problemStrings(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	// What the table removed later is still accepted by an older target.
	inDir(t, map[string]string{"cluster.yaml": withKubelet("  extraArgs:\n    pod-infra-container-image: registry.k8s.io/pause:3.10\n")})
	mustLoad(t, Sources{ClusterFile: "cluster.yaml", Overrides: Overrides{KubernetesVersion: "v1.34.4"}})
}

// TestLoadReportsEveryProblemInOneRun mixes problems of every kind and
// source: all come out of one run, sorted by position, files in the order they
// were read and flags after them.
func TestLoadReportsEveryProblemInOneRun(t *testing.T) {
	cluster := withKubelet("  extraArgs:\n    cadvisor-port: \"4194\"\n  config:\n    maxPods: lots\n    readOnlyPrt: 0\n")
	cluster = edit(cluster, "podCIDR: 172.30.0.0/16", "podCIDR: 172.30.0.0/16\ncolor: blue")
	nodes := nodesYAML("      authentication: {foo: 1}\n") + "- name: n3\n  ip: 10.0.0.300\n"
	inDir(t, map[string]string{"cluster.yaml": cluster, "nodes.yaml": nodes})
	src := Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml", Overrides: Overrides{TokenTTL: "forever"}}
	want := []string{
		"cluster.yaml:9: color: unknown field",
		"cluster.yaml:17: kubelet.extraArgs.cadvisor-port: kubelet 1.37.2 refuses --cadvisor-port: removed in Kubernetes v1.12.0 " +
			"(kubernetes/kubernetes#65707 (CHANGELOG-1.12; the cAdvisor web UI on port 4194 is gone))",
		`cluster.yaml:19: kubelet.config.maxPods: want a number (int32), got "lots"`,
		"cluster.yaml:20: kubelet.config.readOnlyPrt: unknown KubeletConfiguration field",
		"nodes.yaml:7: nodes[1].kubelet.config.authentication.foo: unknown KubeletConfiguration field",
		`nodes.yaml:9: nodes[2].ip: "10.0.0.300" is not an IP address`,
		`flag --token-ttl: token.ttl: "forever" is not a duration like 24h or 90m`,
	}
	for range 3 {
		_, err := Load(context.Background(), src, testNow)
		if got := problemStrings(t, err); !reflect.DeepEqual(got, want) {
			t.Fatalf("problems:\n got %q\nwant %q", got, want)
		}
	}
}

// TestLoadWarnings checks that every setting that opens the kubelet is
// reported, at whoever set it, in the one table's words.
func TestLoadWarnings(t *testing.T) {
	legacy := []string{
		"profile legacy: authentication.anonymous.enabled=true: anyone who reaches port 10250 can call the kubelet API (logs, exec, port-forward) without credentials",
		"profile legacy: authorization.mode=AlwaysAllow: every authenticated or anonymous request to the kubelet API is allowed, including exec into any pod on the node",
		"profile legacy: readOnlyPort=10255: pods, specs and metrics are served over plain HTTP without authentication to anyone who reaches that port",
		"profile legacy: authentication.webhook.enabled=false: bearer tokens sent to the kubelet are not checked with the API server",
	}
	const gateLeftOut = "profile legacy: feature gate RotateKubeletClientCertificate left out: removed in Kubernetes v1.21.0 " +
		"(GA in v1.19 (kubernetes/kubernetes#91780), gate removed by kubernetes/kubernetes#97306)"
	tests := []struct {
		name  string
		files map[string]string
		src   Sources
		want  []string
	}{
		{"hardened", map[string]string{"cluster.yaml": baseYAML}, yamlSrc, nil},
		{"read-only port over hardened", map[string]string{"cluster.yaml": withKubelet("  config:\n    readOnlyPort: 10255\n")}, yamlSrc, []string{
			"cluster.yaml:16: kubelet.config.readOnlyPort=10255: pods, specs and metrics are served over plain HTTP without authentication to anyone who reaches that port",
		}},
		{"every opening over hardened", map[string]string{"cluster.yaml": withKubelet("  config:\n" +
			"    authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}\n" +
			"    authorization: {mode: AlwaysAllow}\n" +
			"    healthzBindAddress: 0.0.0.0\n" +
			"    tlsMinVersion: VersionTLS10\n")}, yamlSrc, []string{
			"cluster.yaml:16: kubelet.config.authentication.anonymous.enabled=true: anyone who reaches port 10250 can call the kubelet API (logs, exec, port-forward) without credentials",
			"cluster.yaml:17: kubelet.config.authorization.mode=AlwaysAllow: every authenticated or anonymous request to the kubelet API is allowed, including exec into any pod on the node",
			"cluster.yaml:16: kubelet.config.authentication.webhook.enabled=false: bearer tokens sent to the kubelet are not checked with the API server",
			"cluster.yaml:18: kubelet.config.healthzBindAddress=0.0.0.0: the kubelet's /healthz endpoint is served over plain HTTP without authentication beyond the node itself",
			"cluster.yaml:19: kubelet.config.tlsMinVersion=VersionTLS10: clients may connect with TLS 1.0 or 1.1, whose known weaknesses TLS 1.2 fixes",
		}},
		{"healthz on IPv6 any, on a node", map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": nodesYAML("      healthzBindAddress: \"::\"\n")},
			Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"}, []string{
				"nodes.yaml:7: nodes[1].kubelet.config.healthzBindAddress=::: the kubelet's /healthz endpoint is served over plain HTTP without authentication beyond the node itself",
			}},
		{"legacy", map[string]string{"cluster.yaml": edit(baseYAML, "  profile: hardened", "  profile: legacy")}, yamlSrc, append(legacy, gateLeftOut)},
		{"legacy from the flag", map[string]string{"cluster.yaml": baseYAML}, Sources{ClusterFile: "cluster.yaml", Overrides: Overrides{Profile: "legacy"}}, append(legacy, gateLeftOut)},
		{"legacy with a port of the user's", map[string]string{"cluster.yaml": edit(withKubelet("  config:\n    readOnlyPort: 10256\n    authorization: {mode: Webhook}\n"),
			"  profile: hardened", "  profile: legacy")}, yamlSrc, []string{
			legacy[0],
			"cluster.yaml:16: kubelet.config.readOnlyPort=10256: pods, specs and metrics are served over plain HTTP without authentication to anyone who reaches that port",
			legacy[3],
			gateLeftOut,
		}},
		{"legacy closed by the user", map[string]string{"cluster.yaml": edit(withKubelet("  config:\n    readOnlyPort: 0\n"+
			"    authentication: {anonymous: {enabled: false}, webhook: {enabled: true}}\n    authorization: {mode: Webhook}\n"),
			"  profile: hardened", "  profile: legacy")}, yamlSrc, []string{gateLeftOut}},
		{"a node re-opens what the cluster closed", map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": nodesYAML("      readOnlyPort: 10255\n")},
			Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"}, []string{
				"nodes.yaml:7: nodes[1].kubelet.config.readOnlyPort=10255: pods, specs and metrics are served over plain HTTP without authentication to anyone who reaches that port",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, tt.files)
			c := mustLoad(t, tt.src)
			var got []string
			for _, w := range c.Warnings {
				got = append(got, w.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("warnings:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestKubeletBase checks the effective config that render starts from.
func TestKubeletBase(t *testing.T) {
	inDir(t, map[string]string{"cluster.yaml": edit(withKubelet("  config:\n    maxPods: 50\n    featureGates: {NodeSwap: true}\n"), "  profile: hardened", "  profile: legacy")})
	c := mustLoad(t, yamlSrc)
	base, err := c.KubeletBase()
	if err != nil {
		t.Fatal(err)
	}
	gates := featureGates(base)
	// The profile's numbers are JSON's (float64), the user's YAML's (int).
	if base["maxPods"] != 50 || base["readOnlyPort"] != 10255.0 || gates["NodeSwap"] != true || gates["RotateKubeletServerCertificate"] != true {
		t.Errorf("base = %v, want legacy's with maxPods and the gate merged on top", base)
	}
	if _, ok := gates["RotateKubeletClientCertificate"]; ok {
		t.Errorf("base keeps the gate v1.37 removed: %v", gates)
	}
	base["maxPods"] = 1
	gates["NodeSwap"] = false
	again, _ := c.KubeletBase()
	if again["maxPods"] != 50 || featureGates(again)["NodeSwap"] != true {
		t.Error("KubeletBase hands out the cluster's own map")
	}
	// A Cluster built by hand gets the same.
	byHand := &Cluster{KubernetesVersion: c.KubernetesVersion, Kubelet: c.Kubelet}
	if got, err := byHand.KubeletBase(); err != nil || !reflect.DeepEqual(got, again) {
		t.Errorf("by hand: %v, %v\nwant %v", got, err, again)
	}
	node := MergeKubeletConfig(again, map[string]any{"maxPods": 10, "featureGates": map[string]any{"NodeSwap": false}})
	if node["maxPods"] != 10 || featureGates(node)["NodeSwap"] != false || featureGates(node)["RotateKubeletServerCertificate"] != true ||
		again["maxPods"] != 50 {
		t.Errorf("merge: %v over %v", node, again)
	}
	byHand.Kubelet.Profile = "paranoid"
	if _, err := byHand.KubeletBase(); err == nil || !strings.Contains(err.Error(), `unknown profile "paranoid"`) {
		t.Errorf("unknown profile: %v", err)
	}
}

// Strings that are not valid UTF-8 (a !!binary scalar can carry any bytes)
// and a kubelet path with invisible or look-alike characters are refused at
// their line; they would reach the documents garbled, or fail at boot for
// no visible reason.
func TestLoadRefusesGarbledStrings(t *testing.T) {
	for _, tc := range []badCase{
		yamlCase("not UTF-8", withKubelet("  extraArgs:\n    v: !!binary //4=\n"),
			`cluster.yaml:16: kubelet.extraArgs.v: is not valid UTF-8: "\xff\xfe"`),
		yamlCase("a no-break space in the kubelet's path", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet\n", "  binary: \"/opt/k8s/bin/kubelet\\u00a0\"\n"),
			`cluster.yaml:14: kubelet.binary: "/opt/k8s/bin/kubelet\u00a0" must be printable ASCII`),
	} {
		t.Run(tc.name, func(t *testing.T) {
			inDir(t, tc.files)
			_, err := Load(context.Background(), tc.src, testNow)
			if got := problemStrings(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// A spreadsheet's CSV export starts with a byte order mark, which is not
// part of the first node's name.
func TestLoadNodesCSVWithBOM(t *testing.T) {
	inDir(t, map[string]string{"cluster.yaml": baseYAML, "nodes.csv": "\ufeffname,ip\r\nn1,10.1.0.1\r\n"})
	c, err := Load(context.Background(), Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.csv"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Nodes) != 1 || c.Nodes[0].Name != "n1" {
		t.Errorf("nodes %+v", c.Nodes)
	}
}

// With kubestrap's approver the hardened kubelet asks for a serving
// certificate: its CSR now has an approver. kubelet.config may still say no,
// and the legacy profile is left as the guide had it.
func TestBoundServingBootstrap(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       any
	}{
		{"kube-controller-manager approves", baseYAML, false},
		{"kubestrap approves", edit(baseYAML, "kind: Cluster\n", "kind: Cluster\napprover: kubestrap\n"), true},
		{"kubestrap approves, kubelet.config says no", edit(withKubelet("  config:\n    serverTLSBootstrap: false\n"), "kind: Cluster\n", "kind: Cluster\napprover: kubestrap\n"), false},
		{"kubestrap approves, legacy profile", edit(baseYAML, "kind: Cluster\n", "kind: Cluster\napprover: kubestrap\n", "profile: hardened", "profile: legacy"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inDir(t, map[string]string{"cluster.yaml": tc.yaml})
			c := mustLoad(t, yamlSrc)
			base, err := c.KubeletBase()
			if err != nil {
				t.Fatal(err)
			}
			if got := base["serverTLSBootstrap"]; got != tc.want {
				t.Errorf("serverTLSBootstrap = %v, want %v", got, tc.want)
			}
		})
	}
}
