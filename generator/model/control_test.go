package model

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// controlChars is every character checkControl refuses: C0 and DEL.
func controlChars() []rune {
	var cs []rune
	for c := rune(0); c < 0x20; c++ {
		cs = append(cs, c)
	}
	return append(cs, 0x7f)
}

// controlCase puts one control character into one field through one source.
type controlCase struct {
	name string
	// files maps a file name to its content; "@" stands for the character,
	// written the way the source carries it.
	files map[string]string
	src   Sources
	// carry writes the character for the source ("\x01" for YAML's
	// double-quoted escapes, the raw byte for CSV and shell quotes).
	carry func(c rune) string
	// skip lists characters the source itself consumes before the model
	// sees them, with why.
	skip map[rune]string
	// override, for flag cases, sets the flag to value.
	override func(o *Overrides, value string)
	value    string
	wantPos  string
	wantPath string
	// key: the character is in a map key, reported at the map's path.
	key bool
}

func yamlEscape(c rune) string { return fmt.Sprintf(`\x%02x`, c) }
func raw(c rune) string        { return string(c) }

// ansiC writes the character as bash's $'\xNN' inside a single-quoted value.
func ansiC(c rune) string { return fmt.Sprintf(`'$'\x%02x''`, c) }

func controlCases() []controlCase {
	var cases []controlCase
	// cluster.yaml: every string field, through double-quoted escapes
	// (yaml.v3 refuses most raw control bytes itself).
	cy := func(name, old, new, pos, path string, key bool) {
		cases = append(cases, controlCase{
			name: "cluster.yaml " + name, files: map[string]string{"cluster.yaml": edit(baseYAML, old, new)},
			src: yamlSrc, carry: yamlEscape, wantPos: pos, wantPath: path, key: key,
		})
	}
	const binLine = "  binary: /opt/k8s/bin/kubelet"
	cy("apiVersion", "apiVersion: kubestrap.dev/v1alpha1", `apiVersion: "kubestrap.dev/v1@alpha1"`, "cluster.yaml:1", "apiVersion", false)
	cy("kind", "kind: Cluster", `kind: "Clu@ster"`, "cluster.yaml:2", "kind", false)
	cy("apiServer", "apiServer: https://172.27.129.80:6443", `apiServer: "https://172.27@.129.80:6443"`, "cluster.yaml:3", "apiServer", false)
	cy("caFile", "caFile: ca.pem", `caFile: "ca@.pem"`, "cluster.yaml:4", "caFile", false)
	cy("clusterDNS", "clusterDNS: [10.254.0.2]", `clusterDNS: ["10.254@.0.2"]`, "cluster.yaml:5", "clusterDNS[0]", false)
	cy("clusterDomain", "clusterDomain: cluster.local", `clusterDomain: "cluster@.local"`, "cluster.yaml:6", "clusterDomain", false)
	cy("serviceCIDR", "serviceCIDR: 10.254.0.0/16", `serviceCIDR: "10.254.0.0@/16"`, "cluster.yaml:7", "serviceCIDR", false)
	cy("podCIDR", "podCIDR: 172.30.0.0/16", `podCIDR: "172.30.0.0/16@"`, "cluster.yaml:8", "podCIDR", false)
	cy("kubernetesVersion", "kubernetesVersion: v1.37.2", `kubernetesVersion: "v1.37@.2"`, "cluster.yaml:9", "kubernetesVersion", false)
	cy("token.ttl", "  ttl: 24h", `  ttl: "24@h"`, "cluster.yaml:11", "token.ttl", false)
	cy("kubelet.profile", "  profile: hardened", `  profile: "hard@ened"`, "cluster.yaml:13", "kubelet.profile", false)
	cy("kubelet.binary", binLine, `  binary: "/opt/k8s/bin/kubelet@"`, "cluster.yaml:14", "kubelet.binary", false)
	cy("kubelet.extraArgs value", binLine, binLine+"\n  extraArgs:\n    v: \"2@ExecStartPre=/bin/sh -c id\"", "cluster.yaml:16", "kubelet.extraArgs.v", false)
	cy("kubelet.extraArgs key", binLine, binLine+"\n  extraArgs:\n    \"v@\": \"2\"", "cluster.yaml:16", "kubelet.extraArgs", true)
	cy("kubelet.config key", binLine, binLine+"\n  config:\n    \"maxPods@\": 10", "cluster.yaml:16", "kubelet.config", true)
	cy("kubelet.config value", binLine, binLine+"\n  config:\n    containerRuntimeEndpoint: \"unix:///run/c@.sock\"", "cluster.yaml:16", "kubelet.config.containerRuntimeEndpoint", false)
	cy("kubelet.config nested value", binLine, binLine+"\n  config:\n    evictionHard:\n      memory.available: \"100@Mi\"",
		"cluster.yaml:17", `kubelet.config.evictionHard["memory.available"]`, false)
	cy("kubelet.config nested key", binLine, binLine+"\n  config:\n    evictionHard:\n      \"memory@.available\": 100Mi",
		"cluster.yaml:17", "kubelet.config.evictionHard", true)
	cy("kubelet.config list value", binLine, binLine+"\n  config:\n    tlsCipherSuites:\n    - \"TLS_AES@_128_GCM_SHA256\"",
		"cluster.yaml:17", "kubelet.config.tlsCipherSuites[0]", false)
	cy("nodes[i].name", "- name: kube-node2", `- name: "kube-node2@"`, "cluster.yaml:21", "nodes[1].name", false)
	cy("nodes[i].ip", "  ip: 172.27.129.111", `  ip: "172.27.129.111@"`, "cluster.yaml:22", "nodes[1].ip", false)
	cy("nodes[i].mac", `  mac: "52:54:00:12:34:57"`, `  mac: "52:54:00@:12:34:57"`, "cluster.yaml:23", "nodes[1].mac", false)
	cy("labels key", "    rack: r1", `    "ra@ck": r1`, "cluster.yaml:20", "nodes[0].labels", true)
	cy("labels value", "    rack: r1", `    rack: "r@1"`, "cluster.yaml:20", "nodes[0].labels.rack", false)
	cy("nodes[i].kubelet.extraArgs value", "    rack: r1", "    rack: r1\n  kubelet:\n    extraArgs: {v: \"2@\"}", "cluster.yaml:22", "nodes[0].kubelet.extraArgs.v", false)
	cy("nodes[i].kubelet.extraArgs key", "    rack: r1", "    rack: r1\n  kubelet:\n    extraArgs: {\"@v\": \"2\"}", "cluster.yaml:22", "nodes[0].kubelet.extraArgs", true)
	cy("nodes[i].kubelet.config value", "    rack: r1", "    rack: r1\n  kubelet:\n    config:\n      containerRuntimeEndpoint: \"unix:///@\"",
		"cluster.yaml:23", "nodes[0].kubelet.config.containerRuntimeEndpoint", false)
	cy("nodes[i].kubelet.config key", "    rack: r1", "    rack: r1\n  kubelet:\n    config:\n      \"@maxPods\": 1",
		"cluster.yaml:23", "nodes[0].kubelet.config", true)

	// A --nodes YAML file: the same node fields, with its own lines.
	const nodeYAML = "- name: n1\n  ip: 172.27.129.105\n  mac: \"52:54:00:12:34:56\"\n  labels: {rack: r1}\n  kubelet:\n    extraArgs: {v: \"2\"}\n    config: {maxPods: 10}\n"
	ny := func(name, old, new, pos, path string, key bool) {
		cases = append(cases, controlCase{
			name:  "nodes.yaml " + name,
			files: map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": edit(nodeYAML, old, new)},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"}, carry: yamlEscape,
			wantPos: pos, wantPath: path, key: key,
		})
	}
	ny("name", "- name: n1", `- name: "n@1"`, "nodes.yaml:1", "nodes[0].name", false)
	ny("ip", "  ip: 172.27.129.105", `  ip: "172.27.129.105@"`, "nodes.yaml:2", "nodes[0].ip", false)
	ny("mac", `  mac: "52:54:00:12:34:56"`, `  mac: "52:54:00:12:34:56@"`, "nodes.yaml:3", "nodes[0].mac", false)
	ny("labels key", "{rack: r1}", `{"@rack": r1}`, "nodes.yaml:4", "nodes[0].labels", true)
	ny("labels value", "{rack: r1}", `{rack: "r1@"}`, "nodes.yaml:4", "nodes[0].labels.rack", false)
	ny("extraArgs value", `{v: "2"}`, `{v: "2@"}`, "nodes.yaml:6", "nodes[0].kubelet.extraArgs.v", false)
	ny("extraArgs key", `{v: "2"}`, `{"v@": "2"}`, "nodes.yaml:6", "nodes[0].kubelet.extraArgs", true)
	ny("config value", "{maxPods: 10}", `{containerRuntimeEndpoint: "unix:///@"}`, "nodes.yaml:7", "nodes[0].kubelet.config.containerRuntimeEndpoint", false)
	ny("config key", "{maxPods: 10}", `{"max@Pods": 10}`, "nodes.yaml:7", "nodes[0].kubelet.config", true)

	// A CSV nodes file: raw bytes, in quoted fields so that CR and LF are
	// carried too.
	nc := func(name, row, path string) {
		cases = append(cases, controlCase{
			name:  "nodes.csv " + name,
			files: map[string]string{"cluster.yaml": baseYAML, "nodes.csv": row + "\n"},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.csv"}, carry: raw,
			wantPos: "nodes.csv:1", wantPath: path,
		})
	}
	nc("name", `"kube@node1",172.27.129.105`, "nodes[0].name")
	nc("ip", `kube-node1,"172.27@.129.105"`, "nodes[0].ip")
	nc("mac", `kube-node1,172.27.129.105,"52:54@:00:12:34:56"`, "nodes[0].mac")

	// environment.sh: raw bytes in single quotes, and bash's $'\xNN'.
	for _, form := range []struct {
		name  string
		carry func(rune) string
		skip  map[rune]string
	}{
		{"quoted", raw, map[rune]string{0: "mvdan.cc/sh's lexer drops raw NUL bytes"}},
		{"ANSI-C", ansiC, map[rune]string{0: `$'\x00' ends the string there, in mvdan.cc/sh as in bash`}},
	} {
		ev := func(name, old, new, pos, path string) {
			cases = append(cases, controlCase{
				name:  "environment.sh " + form.name + " " + name,
				files: map[string]string{"environment.sh": edit(baseEnv, old, new)},
				src:   envSrc, carry: form.carry, skip: form.skip, wantPos: pos, wantPath: path,
			})
		}
		ev("KUBE_APISERVER", `export KUBE_APISERVER="https://${MASTER_IP}:6443"`, `export KUBE_APISERVER='https://172.27.129.80@:6443'`, "environment.sh:5", "apiServer")
		ev("CLUSTER_DNS_SVC_IP", `export CLUSTER_DNS_SVC_IP="10.254.0.2"`, `export CLUSTER_DNS_SVC_IP=('10.254.0.2@')`, "environment.sh:8", "clusterDNS[0]")
		ev("CLUSTER_DNS_DOMAIN", `export CLUSTER_DNS_DOMAIN="cluster.local."`, `export CLUSTER_DNS_DOMAIN='cluster@.local.'`, "environment.sh:9", "clusterDomain")
		ev("SERVICE_CIDR", `SERVICE_CIDR="10.254.0.0/16"`, `SERVICE_CIDR='10.254.0.0@/16'`, "environment.sh:6", "serviceCIDR")
		ev("CLUSTER_CIDR", `CLUSTER_CIDR="172.30.0.0/16"`, `CLUSTER_CIDR='172.30@.0.0/16'`, "environment.sh:7", "podCIDR")
		ev("NODE_NAMES", "kube-node2 kube-node3)", "'kube-node2@' kube-node3)", "environment.sh:3", "nodes[1].name")
		ev("NODE_IPS", "(172.27.129.105 172.27.129.111", "(172.27.129.105 '172.27.129.111@'", "environment.sh:2", "nodes[1].ip")
	}

	// Flags.
	flag := func(name string, set func(*Overrides, string), value, path string) {
		cases = append(cases, controlCase{
			name: "flag " + name, files: map[string]string{"cluster.yaml": baseYAML},
			src: yamlSrc, carry: raw, override: set, value: value, wantPos: "flag " + name, wantPath: path,
		})
	}
	flag(flagAPIServer, func(o *Overrides, v string) { o.APIServer = v }, "https://10.0.0.1@:6443", "apiServer")
	flag(flagCAFile, func(o *Overrides, v string) { o.CAFile = v }, "ca@.pem", "caFile")
	flag(flagVersion, func(o *Overrides, v string) { o.KubernetesVersion = v }, "v1.34@.1", "kubernetesVersion")
	flag(flagProfile, func(o *Overrides, v string) { o.Profile = v }, "leg@acy", "kubelet.profile")
	flag(flagTokenTTL, func(o *Overrides, v string) { o.TokenTTL = v }, "2h@", "token.ttl")
	flag(flagKubeletBinary, func(o *Overrides, v string) { o.KubeletBinary = v }, "/usr/local/bin/kubelet@", "kubelet.binary")
	flag(flagClusterDomain, func(o *Overrides, v string) { o.ClusterDomain = v }, "k8s@.internal", "clusterDomain")
	return cases
}

// TestControlCharacters feeds each control character to each string field
// from each source that can carry it, and wants exactly one problem: at the
// value's position and path, naming the character.
func TestControlCharacters(t *testing.T) {
	cases := controlCases()
	flags := 0
	for _, tc := range cases {
		if tc.override != nil {
			flags++
		}
	}
	if want := reflect.TypeFor[Overrides]().NumField(); flags != want {
		t.Fatalf("%d flag cases, want one per Overrides field (%d)", flags, want)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inDir(t, nil)
			for _, c := range controlChars() {
				if why, ok := tc.skip[c]; ok {
					t.Logf("%U: not carried: %s", c, why)
					continue
				}
				src := tc.src
				if tc.override != nil {
					tc.override(&src.Overrides, strings.ReplaceAll(tc.value, "@", tc.carry(c)))
				}
				for name, content := range tc.files {
					content = strings.ReplaceAll(content, "@", tc.carry(c))
					if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				_, err := Load(context.Background(), src, testNow)
				got := problemStrings(t, err)
				msg := fmt.Sprintf("contains the control character %U; %s: ", c, controlWhy)
				if tc.key {
					msg = "a key " + msg
				}
				want := tc.wantPos + ": " + tc.wantPath + ": " + msg
				if len(got) != 1 || !strings.HasPrefix(got[0], want) {
					t.Errorf("%U: problems\n%s\nwant one, starting %q", c, strings.Join(got, "\n"), want)
				}
				if len(got) == 1 && strings.ContainsFunc(got[0], isControl) {
					t.Errorf("%U: the message holds the character itself: %q", c, got[0])
				}
			}
		})
	}
}
