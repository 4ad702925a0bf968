package model

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testNow is when the tests run: the fixture CA is valid from 2026-11-27 03:21:12 UTC.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// baseYAML is a valid cluster.yaml; cases edit single lines of it, so the line
// numbers below are the ones the expected messages use.
const baseYAML = `apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
apiServer: https://172.27.129.80:6443
caFile: ca.pem
clusterDNS: [10.254.0.2]
clusterDomain: cluster.local
serviceCIDR: 10.254.0.0/16
podCIDR: 172.30.0.0/16
kubernetesVersion: v1.37.2
token:
  ttl: 24h
kubelet:
  profile: hardened
  binary: /opt/k8s/bin/kubelet
nodes:
- name: kube-node1
  ip: 172.27.129.105
  mac: "52:54:00:12:34:56"
  labels:
    rack: r1
- name: kube-node2
  ip: 172.27.129.111
  mac: "52:54:00:12:34:57"
- name: kube-node3
  ip: 172.27.129.112
`

// baseEnv is a valid environment.sh in the guide's style, with the lines that
// kubestrap must ignore (10, 11).
const baseEnv = `#!/usr/bin/bash
export NODE_IPS=(172.27.129.105 172.27.129.111 172.27.129.112)
export NODE_NAMES=(kube-node1 kube-node2 kube-node3)
export MASTER_IP=172.27.129.80
export KUBE_APISERVER="https://${MASTER_IP}:6443"
SERVICE_CIDR="10.254.0.0/16"
CLUSTER_CIDR="172.30.0.0/16"
export CLUSTER_DNS_SVC_IP="10.254.0.2"
export CLUSTER_DNS_DOMAIN="cluster.local."
export ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export PATH=/opt/k8s/bin:$PATH
`

const baseCSV = `# name,ip[,mac]
kube-node1,172.27.129.105,52:54:00:12:34:56
kube-node2,172.27.129.111
`

// edit replaces each old line (or text) of s, which must occur exactly once,
// so that a case cannot silently test the unedited input.
func edit(s string, pairs ...string) string {
	for i := 0; i+1 < len(pairs); i += 2 {
		if n := strings.Count(s, pairs[i]); n != 1 {
			panic(fmt.Sprintf("edit: %q occurs %d times", pairs[i], n))
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

// envSrc and yamlSrc are the usual sources; cases with other sources say so.
var (
	yamlSrc = Sources{ClusterFile: "cluster.yaml"}
	envSrc  = Sources{EnvFile: "environment.sh", Overrides: Overrides{CAFile: "ca.pem"}}
)

// inDir writes files into a fresh directory, with copies of the PKI fixtures,
// and makes it the working directory so messages carry short names.
func inDir(t *testing.T, files map[string]string) {
	t.Helper()
	pki, err := filepath.Abs("../../fixtures/pki")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	all := map[string]string{}
	for _, name := range []string{"ca.pem", "not-ca.pem", "expired-ca.pem", "garbage.pem"} {
		data, err := os.ReadFile(filepath.Join(pki, name))
		if err != nil {
			t.Fatal(err)
		}
		all[name] = string(data)
	}
	maps.Copy(all, files)
	for name, content := range all {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
}

func problemStrings(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is %T, not Problems: %v", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(err, ErrInvalid) = false")
	}
	if got, want := err.Error(), strings.Join(toStrings(ps), "\n"); got != want {
		t.Errorf("Problems.Error() = %q, want the problems joined by newlines %q", got, want)
	}
	return toStrings(ps)
}

func toStrings(ps Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Error()
	}
	return out
}

type badCase struct {
	name  string
	files map[string]string
	src   Sources
	now   time.Time // zero means testNow
	want  []string
}

func yamlCase(name, content string, want ...string) badCase {
	return badCase{name: name, files: map[string]string{"cluster.yaml": content}, src: yamlSrc, want: want}
}

func envCase(name, content string, want ...string) badCase {
	return badCase{name: "env " + name, files: map[string]string{"environment.sh": content}, src: envSrc, want: want}
}

const dns1123Msg = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', " +
	"and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is " +
	`'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`

const labelNamespaceMsg = "the kubelet refuses to start with --node-labels in the kubernetes.io and k8s.io namespaces " +
	"(except kubelet.kubernetes.io/*, node.kubernetes.io/* and a few well-known keys such as topology.kubernetes.io/zone); " +
	"set this label with kubectl after the node joins"

const cmdSubstMsg = "needs a command substitution ($(...)); kubestrap never runs commands from this file"

func badCases() []badCase {
	withSrc := func(c badCase, src Sources) badCase { c.src = src; return c }
	return []badCase{
		// --- form of cluster.yaml
		yamlCase("unknown key", edit(baseYAML, "  profile: hardened", "  profle: hardened"),
			"cluster.yaml:13: kubelet.profle: unknown field"),
		yamlCase("unknown key in a node", edit(baseYAML, "  ip: 172.27.129.112", "  ip: 172.27.129.112\n  hostnme: x"),
			"cluster.yaml:26: nodes[2].hostnme: unknown field"),
		yamlCase("unknown top-level key", "foo: 1\n"+baseYAML,
			"cluster.yaml:1: foo: unknown field"),
		yamlCase("wrong apiVersion", edit(baseYAML, "apiVersion: kubestrap.dev/v1alpha1", "apiVersion: v1"),
			`cluster.yaml:1: apiVersion: want kubestrap.dev/v1alpha1, got "v1"`),
		yamlCase("missing kind", edit(baseYAML, "kind: Cluster\n", ""),
			"cluster.yaml: kind: required (want Cluster)"),
		yamlCase("duplicate key", edit(baseYAML, "kind: Cluster\n", "kind: Cluster\nkind: Cluster\n"),
			"cluster.yaml:3: kind: duplicate key (first at line 2)"),
		yamlCase("type error", edit(baseYAML, "  ttl: 24h", "  ttl: 24h\n  signing: maybe"),
			"cluster.yaml:12: token.signing: cannot unmarshal !!str `maybe` into bool"),
		yamlCase("list expected", edit(baseYAML, "clusterDNS: [10.254.0.2]", "clusterDNS: 10.254.0.2"),
			`cluster.yaml:5: clusterDNS: want a list, got "10.254.0.2"`),
		yamlCase("mapping expected", edit(baseYAML, "    rack: r1", "    - r1"),
			"cluster.yaml:20: nodes[0].labels: want a mapping, got a list"),
		yamlCase("syntax error", edit(baseYAML, "  profile: hardened", "  profile: [hardened"),
			"cluster.yaml:13: did not find expected ',' or ']'"),
		yamlCase("empty file", "# nothing yet\n",
			"cluster.yaml:1: file is empty: want a kubestrap.dev/v1alpha1 Cluster document"),
		yamlCase("two documents", baseYAML+"---\nkind: Cluster\n",
			"cluster.yaml:26: only one YAML document is allowed; this one starts a second"),
		yamlCase("not a mapping", "- a\n- b\n",
			"cluster.yaml:1: want a mapping, got a list"),
		yamlCase("unknown approver", edit(baseYAML, "kind: Cluster\n", "kind: Cluster\napprover: kcm\n"),
			`cluster.yaml:3: approver: "kcm" is not controller-manager or kubestrap`),

		// --- nodes
		yamlCase("bad IP", edit(baseYAML, "  ip: 172.27.129.111", "  ip: 10.0.0.300"),
			`cluster.yaml:22: nodes[1].ip: "10.0.0.300" is not an IP address`),
		yamlCase("duplicate name", edit(baseYAML, "- name: kube-node2", "- name: kube-node1"),
			`cluster.yaml:21: nodes[1].name: duplicate name "kube-node1" (first used by nodes[0], cluster.yaml:16)`),
		yamlCase("duplicate IP", edit(baseYAML, "  ip: 172.27.129.112", "  ip: 172.27.129.105"),
			"cluster.yaml:25: nodes[2].ip: duplicate IP 172.27.129.105 (first used by nodes[0], cluster.yaml:17)"),
		yamlCase("bad MAC", edit(baseYAML, `  mac: "52:54:00:12:34:56"`, `  mac: "52:54:00:12:34"`),
			`cluster.yaml:18: nodes[0].mac: "52:54:00:12:34" is not a 48-bit MAC address like 52:54:00:12:34:56`),
		yamlCase("64-bit MAC", edit(baseYAML, `  mac: "52:54:00:12:34:56"`, `  mac: "02:00:5e:10:00:00:00:01"`),
			`cluster.yaml:18: nodes[0].mac: "02:00:5e:10:00:00:00:01" is not a 48-bit MAC address like 52:54:00:12:34:56`),
		yamlCase("duplicate MAC in another notation", edit(baseYAML, `  mac: "52:54:00:12:34:57"`, `  mac: "52-54-00-12-34-56"`),
			"cluster.yaml:23: nodes[1].mac: duplicate MAC 52:54:00:12:34:56 (first used by nodes[0], cluster.yaml:18)"),
		yamlCase("bad uuid", edit(baseYAML, `  mac: "52:54:00:12:34:56"`, `  mac: "52:54:00:12:34:56"`+"\n  uuid: 4c4c4544-0037"),
			`cluster.yaml:19: nodes[0].uuid: "4c4c4544-0037" is not a UUID like 4c4c4544-0037-3010-8030-b7c04f4e4e32`),
		yamlCase("duplicate uuid in another case", edit(edit(baseYAML,
			`  mac: "52:54:00:12:34:56"`, `  mac: "52:54:00:12:34:56"`+"\n  uuid: 4C4C4544-0037-3010-8030-B7C04F4E4E32"),
			`  mac: "52:54:00:12:34:57"`, `  mac: "52:54:00:12:34:57"`+"\n  uuid: 4c4c4544-0037-3010-8030-b7c04f4e4e32"),
			`cluster.yaml:25: nodes[1].uuid: duplicate uuid "4c4c4544-0037-3010-8030-b7c04f4e4e32" (first used by nodes[0], cluster.yaml:19)`),
		yamlCase("nil uuid", edit(baseYAML, `  mac: "52:54:00:12:34:56"`, `  mac: "52:54:00:12:34:56"`+"\n  uuid: 00000000-0000-0000-0000-000000000000"),
			`cluster.yaml:19: nodes[0].uuid: "00000000-0000-0000-0000-000000000000" is the UUID firmware reports when it has none: it names no one machine`),
		yamlCase("serial with a space", edit(baseYAML, "  ip: 172.27.129.112", "  ip: 172.27.129.112\n  serial: \"SN 1\""),
			`cluster.yaml:26: nodes[2].serial: "SN 1" is not a serial number: at most 64 printable ASCII characters without spaces`),
		yamlCase("duplicate hostname", edit(edit(baseYAML, "  ip: 172.27.129.112", "  ip: 172.27.129.112\n  hostname: Rack1-A."),
			"  ip: 172.27.129.111", "  ip: 172.27.129.111\n  hostname: rack1-a"),
			`cluster.yaml:27: nodes[2].hostname: duplicate hostname "rack1-a" (first used by nodes[1], cluster.yaml:23)`),
		yamlCase("uppercase name", edit(baseYAML, "- name: kube-node1", "- name: Kube-Node1"),
			`cluster.yaml:16: nodes[0].name: "Kube-Node1" is not a valid node name: `+dns1123Msg),
		yamlCase("underscore name", edit(baseYAML, "- name: kube-node3", "- name: kube_node3"),
			`cluster.yaml:24: nodes[2].name: "kube_node3" is not a valid node name: `+dns1123Msg),
		yamlCase("node IP inside serviceCIDR", edit(baseYAML, "  ip: 172.27.129.105", "  ip: 10.254.3.4"),
			"cluster.yaml:17: nodes[0].ip: 10.254.3.4 is inside serviceCIDR 10.254.0.0/16"),
		yamlCase("node IP inside podCIDR", edit(baseYAML, "  ip: 172.27.129.105", "  ip: 172.30.1.1"),
			"cluster.yaml:17: nodes[0].ip: 172.30.1.1 is inside podCIDR 172.30.0.0/16"),
		yamlCase("loopback node IP", edit(baseYAML, "  ip: 172.27.129.105", "  ip: 127.0.0.1"),
			"cluster.yaml:17: nodes[0].ip: 127.0.0.1 cannot be a node's address"),
		yamlCase("no nodes", edit(baseYAML, baseYAML[strings.Index(baseYAML, "nodes:"):], "nodes: []\n"),
			"cluster.yaml:15: nodes: at least one node is required"),
		yamlCase("label in kubernetes.io namespace", edit(baseYAML, "    rack: r1", `    node-role.kubernetes.io/worker: ""`),
			`cluster.yaml:20: nodes[0].labels["node-role.kubernetes.io/worker"]: `+labelNamespaceMsg),
		yamlCase("label in k8s.io namespace", edit(baseYAML, "    rack: r1", `    example.k8s.io/tier: a`),
			`cluster.yaml:20: nodes[0].labels["example.k8s.io/tier"]: `+labelNamespaceMsg),
		yamlCase("bad label value", edit(baseYAML, "    rack: r1", `    rack: "r 1"`),
			`cluster.yaml:20: nodes[0].labels.rack: "r 1" is not a valid label value: a valid label must be an empty string or `+
				`consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character `+
				`(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`),
		yamlCase("bad label key", edit(baseYAML, "    rack: r1", `    "rack/": r1`),
			`cluster.yaml:20: nodes[0].labels["rack/"]: "rack/" is not a valid label key: name part must be non-empty; `+
				`name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric `+
				`character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`),

		// --- cluster fields
		yamlCase("http apiServer", edit(baseYAML, "apiServer: https://", "apiServer: http://"),
			`cluster.yaml:3: apiServer: "http://172.27.129.80:6443" must be an https:// URL like https://10.0.0.1:6443`),
		yamlCase("apiServer with a path", edit(baseYAML, "apiServer: https://172.27.129.80:6443", "apiServer: https://172.27.129.80:6443/api"),
			`cluster.yaml:3: apiServer: "https://172.27.129.80:6443/api" must be an https:// URL without a path, query or fragment`),
		yamlCase("apiServer with a bad port", edit(baseYAML, "apiServer: https://172.27.129.80:6443", "apiServer: https://172.27.129.80:99999"),
			`cluster.yaml:3: apiServer: "https://172.27.129.80:99999" has an invalid port`),
		yamlCase("missing apiServer", edit(baseYAML, "apiServer: https://172.27.129.80:6443\n", ""),
			"cluster.yaml: apiServer: required: the https:// URL that nodes dial (or give --api-server)"),
		yamlCase("DNS IP outside serviceCIDR", edit(baseYAML, "clusterDNS: [10.254.0.2]", "clusterDNS: [10.254.0.2, 10.0.0.10]"),
			"cluster.yaml:5: clusterDNS[1]: 10.0.0.10 is outside serviceCIDR 10.254.0.0/16"),
		yamlCase("no DNS IP", edit(baseYAML, "clusterDNS: [10.254.0.2]", "clusterDNS: []"),
			"cluster.yaml:5: clusterDNS: at least one DNS server IP is required (the cluster DNS Service's IP, inside serviceCIDR)"),
		yamlCase("overlapping CIDRs", edit(baseYAML, "podCIDR: 172.30.0.0/16", "podCIDR: 10.254.128.0/17"),
			"cluster.yaml:8: podCIDR: 10.254.128.0/17 overlaps serviceCIDR 10.254.0.0/16"),
		yamlCase("non-canonical CIDR", edit(baseYAML, "serviceCIDR: 10.254.0.0/16", "serviceCIDR: 10.254.0.1/16"),
			`cluster.yaml:7: serviceCIDR: "10.254.0.1/16" has host bits set; write 10.254.0.0/16`),
		yamlCase("not a CIDR", edit(baseYAML, "podCIDR: 172.30.0.0/16", "podCIDR: 172.30.0.0/33"),
			`cluster.yaml:8: podCIDR: "172.30.0.0/33" is not a CIDR like 10.254.0.0/16`),
		yamlCase("mixed families", edit(baseYAML, "podCIDR: 172.30.0.0/16", "podCIDR: fd00:10::/56"),
			"cluster.yaml:8: podCIDR: fd00:10::/56 and serviceCIDR 10.254.0.0/16 must be the same IP family"),
		yamlCase("bad domain", edit(baseYAML, "clusterDomain: cluster.local", "clusterDomain: Cluster_Local"),
			`cluster.yaml:6: clusterDomain: "Cluster_Local" is not a valid DNS domain: `+dns1123Msg),
		yamlCase("bad version", edit(baseYAML, "kubernetesVersion: v1.37.2", "kubernetesVersion: v1.37"),
			`cluster.yaml:9: kubernetesVersion: "v1.37" is not a Kubernetes version like v1.37.2`),
		yamlCase("version too old", edit(baseYAML, "kubernetesVersion: v1.37.2", "kubernetesVersion: 1.32.4"),
			"cluster.yaml:9: kubernetesVersion: v1.32.4 is not supported (kubestrap supports v1.33.0 <= version < v1.38.0)"),
		withSrc(yamlCase("version too new, by flag", baseYAML,
			"flag --kubernetes-version: kubernetesVersion: v1.38.0-alpha.1 is not supported (kubestrap supports v1.33.0 <= version < v1.38.0)"),
			Sources{ClusterFile: "cluster.yaml", Overrides: Overrides{KubernetesVersion: "1.38.0-alpha.1"}}),
		yamlCase("ttl 0", edit(baseYAML, "  ttl: 24h", "  ttl: 0"),
			`cluster.yaml:11: token.ttl: "0" must be more than zero`),
		yamlCase("negative ttl", edit(baseYAML, "  ttl: 24h", "  ttl: -1h"),
			`cluster.yaml:11: token.ttl: "-1h" must be more than zero`),
		yamlCase("unparsable ttl", edit(baseYAML, "  ttl: 24h", "  ttl: 1day"),
			`cluster.yaml:11: token.ttl: "1day" is not a duration like 24h or 90m`),
		withSrc(yamlCase("bad ttl by flag", baseYAML,
			`flag --token-ttl: token.ttl: "soon" is not a duration like 24h or 90m`),
			Sources{ClusterFile: "cluster.yaml", Overrides: Overrides{TokenTTL: "soon"}}),
		yamlCase("unknown profile", edit(baseYAML, "  profile: hardened", "  profile: hardend"),
			`cluster.yaml:13: kubelet.profile: "hardend" is not a known profile (known: hardened, legacy)`),
		yamlCase("relative binary", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet", "  binary: bin/kubelet"),
			`cluster.yaml:14: kubelet.binary: "bin/kubelet" must be an absolute path on the node`),
		yamlCase("extraArgs sets --kubeconfig", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet", "  binary: /opt/k8s/bin/kubelet\n  extraArgs:\n    kubeconfig: /etc/k.conf"),
			"cluster.yaml:16: kubelet.extraArgs.kubeconfig: --kubeconfig is set by kubestrap: it names the files that TLS bootstrapping reads and writes"),
		yamlCase("extraArgs with dashes", edit(baseYAML, "  binary: /opt/k8s/bin/kubelet", "  binary: /opt/k8s/bin/kubelet\n  extraArgs:\n    --v: \"2\""),
			`cluster.yaml:16: kubelet.extraArgs["--v"]: write flag names without the leading dashes: v`),
		yamlCase("node extraArgs sets --node-labels", edit(baseYAML, "  ip: 172.27.129.112", "  ip: 172.27.129.112\n  kubelet:\n    extraArgs: {node-labels: a=b}"),
			"cluster.yaml:27: nodes[2].kubelet.extraArgs.node-labels: --node-labels is set by kubestrap: use the node's labels"),

		// --- CA
		yamlCase("CA is not a CA", edit(baseYAML, "caFile: ca.pem", "caFile: not-ca.pem"),
			`cluster.yaml:4: caFile: not-ca.pem: certificate "CN=not-a-ca" is not a CA (its basic constraints lack CA:TRUE)`),
		yamlCase("expired CA", edit(baseYAML, "caFile: ca.pem", "caFile: expired-ca.pem"),
			`cluster.yaml:4: caFile: expired-ca.pem: certificate "CN=expired-ca" expired on 2011-01-01`),
		yamlCase("garbage CA", edit(baseYAML, "caFile: ca.pem", "caFile: garbage.pem"),
			"cluster.yaml:4: caFile: garbage.pem: no PEM CERTIFICATE block"),
		yamlCase("missing CA file", edit(baseYAML, "caFile: ca.pem", "caFile: missing.pem"),
			"cluster.yaml:4: caFile: open missing.pem: no such file or directory"),
		yamlCase("no caFile", edit(baseYAML, "caFile: ca.pem\n", ""),
			"cluster.yaml: caFile: required: the CA certificate nodes verify the API server with (or give --ca-file)"),
		{
			name: "CA file with a private key",
			files: map[string]string{
				"cluster.yaml": edit(baseYAML, "caFile: ca.pem", "caFile: bundle.pem"),
				"bundle.pem":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
			},
			src:  yamlSrc,
			want: []string{"cluster.yaml:4: caFile: bundle.pem: holds a PRIVATE KEY block; give the CA certificate alone"},
		},
		{
			name: "CA not yet valid",
			files: map[string]string{
				"cluster.yaml": baseYAML,
			},
			src:  yamlSrc,
			now:  time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
			want: []string{`cluster.yaml:4: caFile: ca.pem: certificate "CN=kubestrap-test-ca" is not valid before 2026-11-27T03:21:12Z`},
		},
		{
			name:  "missing CA file by flag",
			files: map[string]string{"cluster.yaml": baseYAML},
			src:   Sources{ClusterFile: "cluster.yaml", Overrides: Overrides{CAFile: "nope.pem"}},
			want:  []string{"flag --ca-file: caFile: open nope.pem: no such file or directory"},
		},

		// --- environment.sh
		envCase("command substitution in KUBE_APISERVER",
			edit(baseEnv, `export KUBE_APISERVER="https://${MASTER_IP}:6443"`, `export KUBE_APISERVER=$(cat /etc/apiserver-url)`),
			"environment.sh:5: KUBE_APISERVER: value "+cmdSubstMsg),
		envCase("command substitution one step away",
			edit(baseEnv, "export MASTER_IP=172.27.129.80", "export MASTER_IP=$(hostname -i)"),
			"environment.sh:5: KUBE_APISERVER: value needs MASTER_IP (line 4), whose value "+cmdSubstMsg),
		envCase("process substitution in NODE_IPS",
			edit(baseEnv, "export NODE_IPS=(172.27.129.105 172.27.129.111 172.27.129.112)", "export NODE_IPS=(<(cat ips))"),
			"environment.sh:2: NODE_IPS: value needs a process substitution (<(...)); kubestrap never runs commands from this file"),
		envCase("arrays of different length",
			edit(baseEnv, "export NODE_NAMES=(kube-node1 kube-node2 kube-node3)", "export NODE_NAMES=(kube-node1 kube-node2)"),
			"environment.sh:3: NODE_NAMES: has 2 names but NODE_IPS (line 2) has 3 IPs; they pair up by position"),
		envCase("missing variable",
			edit(baseEnv, `export KUBE_APISERVER="https://${MASTER_IP}:6443"`+"\n", ""),
			"environment.sh: KUBE_APISERVER: not set (or give --api-server)"),
		envCase("assignment inside if does not count",
			edit(baseEnv, `SERVICE_CIDR="10.254.0.0/16"`, `if true; then SERVICE_CIDR="10.254.0.0/16"; fi`),
			"environment.sh: SERVICE_CIDR: not set"),
		envCase("bad IP in a multi-line array",
			edit(baseEnv, "export NODE_IPS=(172.27.129.105 172.27.129.111 172.27.129.112)",
				"export NODE_IPS=(\n  172.27.129.105\n  172.27.129.311\n  172.27.129.112\n)"),
			`environment.sh:4: nodes[1].ip: "172.27.129.311" is not an IP address`),
		envCase("http apiServer", edit(baseEnv, `"https://${MASTER_IP}:6443"`, `"http://${MASTER_IP}:6443"`),
			`environment.sh:5: apiServer: "http://172.27.129.80:6443" must be an https:// URL like https://10.0.0.1:6443`),
		envCase("DNS IP outside serviceCIDR, as an array",
			edit(baseEnv, `export CLUSTER_DNS_SVC_IP="10.254.0.2"`, "export CLUSTER_DNS_SVC_IP=(10.254.0.2\n  10.0.0.2)"),
			"environment.sh:9: clusterDNS[1]: 10.0.0.2 is outside serviceCIDR 10.254.0.0/16"),
		envCase("syntax error", baseEnv+"if true; then\n",
			"environment.sh:12: `then` must be followed by a statement list"),
		{
			name:  "no CA for an env file",
			files: map[string]string{"environment.sh": baseEnv},
			src:   Sources{EnvFile: "environment.sh"},
			want:  []string{"environment.sh: caFile: required: give --ca-file"},
		},

		// --- nodes file
		{
			name:  "CSV wrong column count",
			files: map[string]string{"cluster.yaml": baseYAML, "nodes.csv": baseCSV + "kube-node3,172.27.129.112,52:54:00:12:34:58,extra\n"},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.csv"},
			want:  []string{"nodes.csv:4: want name,ip[,mac], got 4 columns"},
		},
		{
			name:  "CSV with header, bad IP, sniffed",
			files: map[string]string{"cluster.yaml": baseYAML, "nodes.txt": "name,ip,mac\n\nkube-node1,172.27.129.105\nkube-node2,172.27.129.1111\n"},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.txt"},
			want:  []string{`nodes.txt:4: nodes[1].ip: "172.27.129.1111" is not an IP address`},
		},
		{
			name:  "YAML nodes file with an unknown key",
			files: map[string]string{"environment.sh": baseEnv, "nodes.yaml": "- name: a\n  ip: 172.27.129.9\n  hostnme: a\n"},
			src:   Sources{EnvFile: "environment.sh", NodesFile: "nodes.yaml", Overrides: Overrides{CAFile: "ca.pem"}},
			want:  []string{"nodes.yaml:3: nodes[0].hostnme: unknown field"},
		},
		{
			name:  "YAML nodes file that is not a list",
			files: map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": "nodes:\n- name: a\n"},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"},
			want:  []string{"nodes.yaml:1: nodes: want a list, got a mapping"},
		},
		{
			name:  "empty nodes file",
			files: map[string]string{"cluster.yaml": baseYAML, "nodes.csv": "# none\n"},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.csv"},
			want:  []string{"nodes.csv: nodes: at least one node is required"},
		},
		{
			name:  "missing nodes file",
			files: map[string]string{"cluster.yaml": baseYAML},
			src:   Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.csv"},
			want:  []string{"flag --nodes: open nodes.csv: no such file or directory"},
		},

		// --- sources
		{
			name:  "both -f and --env",
			files: map[string]string{"cluster.yaml": baseYAML, "environment.sh": baseEnv},
			src:   Sources{ClusterFile: "cluster.yaml", EnvFile: "environment.sh"},
			want:  []string{"flag --env: give either -f cluster.yaml or --env environment.sh, not both"},
		},
		{
			name: "neither -f nor --env",
			src:  Sources{NodesFile: "nodes.csv"},
			want: []string{"no cluster given: give -f cluster.yaml or --env environment.sh"},
		},
		{
			name: "missing cluster file",
			src:  Sources{ClusterFile: "nope.yaml"},
			want: []string{"flag -f: open nope.yaml: no such file or directory"},
		},
		{
			name: "cluster file is a directory",
			src:  Sources{ClusterFile: "."},
			want: []string{"flag -f: read .: is a directory"},
		},
	}
}

func TestLoadBadInput(t *testing.T) {
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			inDir(t, tc.files)
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			c, err := Load(context.Background(), tc.src, now)
			if err == nil {
				t.Fatalf("Load succeeded, want problems:\n%s", strings.Join(tc.want, "\n"))
			}
			if c != nil {
				t.Errorf("Load returned a Cluster along with problems")
			}
			got := problemStrings(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got: %q\nwant: %q", got, tc.want)
			}
		})
	}
}

// TestLoadReportsEveryProblem checks that one bad input yields all of its
// problems, sorted by line whatever check found them.
func TestLoadReportsEveryProblem(t *testing.T) {
	input := edit(baseYAML,
		"kind: Cluster", "kind: Clutser",
		"apiServer: https://", "apiServer: http://",
		"clusterDNS: [10.254.0.2]", "clusterDNS: [10.0.0.2]",
		"  ttl: 24h", "  ttl: 0s",
		"  profile: hardened", "  profle: hardened\n  profile: nope",
		"  ip: 172.27.129.111", "  ip: 172.27.129.105",
		"    rack: r1", "    rack: r1\n    kubernetes.io/role: x\n    zone: \"a b\"",
		"  ip: 172.27.129.112", "  ip: 172.27.129.112\n  mac: \"52:54:00:12:34:56\"\n  color: blue",
	)
	want := []string{
		`cluster.yaml:2: kind: want Cluster, got "Clutser"`,
		`cluster.yaml:3: apiServer: "http://172.27.129.80:6443" must be an https:// URL like https://10.0.0.1:6443`,
		"cluster.yaml:5: clusterDNS[0]: 10.0.0.2 is outside serviceCIDR 10.254.0.0/16",
		`cluster.yaml:11: token.ttl: "0s" must be more than zero`,
		"cluster.yaml:13: kubelet.profle: unknown field",
		`cluster.yaml:14: kubelet.profile: "nope" is not a known profile (known: hardened, legacy)`,
		`cluster.yaml:22: nodes[0].labels["kubernetes.io/role"]: ` + labelNamespaceMsg,
		`cluster.yaml:23: nodes[0].labels.zone: "a b" is not a valid label value: a valid label must be an empty string or ` +
			`consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character ` +
			`(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`,
		"cluster.yaml:25: nodes[1].ip: duplicate IP 172.27.129.105 (first used by nodes[0], cluster.yaml:18)",
		"cluster.yaml:29: nodes[2].mac: duplicate MAC 52:54:00:12:34:56 (first used by nodes[0], cluster.yaml:19)",
		"cluster.yaml:30: nodes[2].color: unknown field",
	}
	// Several runs, since map iteration (labels) must not leak into the order.
	inDir(t, map[string]string{"cluster.yaml": input})
	for range 5 {
		_, err := Load(context.Background(), yamlSrc, testNow)
		got := problemStrings(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("problems:\n got: %q\nwant: %q", got, want)
		}
	}
}

// clusterCore is what cluster.yaml and environment.sh can both express.
type clusterCore struct {
	APIServer, ClusterDomain, ServiceCIDR, PodCIDR, KubernetesVersion string
	ClusterDNS                                                        []string
	TTL                                                               time.Duration
	Names, IPs                                                        []string
	CAPEM                                                             string
}

func core(c *Cluster) clusterCore {
	cc := clusterCore{
		APIServer: c.APIServer, ClusterDomain: c.ClusterDomain, ServiceCIDR: c.ServiceCIDR,
		PodCIDR: c.PodCIDR, KubernetesVersion: c.KubernetesVersion, ClusterDNS: c.ClusterDNS,
		TTL: c.TTL(), CAPEM: string(c.CAPEM),
	}
	for _, n := range c.Nodes {
		cc.Names = append(cc.Names, n.Name)
		cc.IPs = append(cc.IPs, n.IP)
	}
	return cc
}

func mustLoad(t *testing.T, src Sources) *Cluster {
	t.Helper()
	c, err := Load(context.Background(), src, testNow)
	if err != nil {
		t.Fatalf("Load(%+v): %v", src, err)
	}
	return c
}

func TestLoadGuideFixtures(t *testing.T) {
	const guide = "../../fixtures/guide/"
	fromYAML := mustLoad(t, Sources{ClusterFile: guide + "cluster.yaml"})
	fromEnv := mustLoad(t, Sources{EnvFile: guide + "environment.sh", Overrides: Overrides{CAFile: "../../fixtures/pki/ca.pem"}})

	wantCore := clusterCore{
		APIServer:         "https://172.27.129.80:6443",
		ClusterDomain:     "cluster.local",
		ServiceCIDR:       "10.254.0.0/16",
		PodCIDR:           "172.30.0.0/16",
		KubernetesVersion: "v1.37.2",
		ClusterDNS:        []string{"10.254.0.2"},
		TTL:               24 * time.Hour,
		Names:             []string{"kube-node1", "kube-node2", "kube-node3"},
		IPs:               []string{"172.27.129.105", "172.27.129.111", "172.27.129.112"},
	}
	for name, c := range map[string]*Cluster{"cluster.yaml": fromYAML, "environment.sh": fromEnv} {
		got := core(c)
		if !strings.HasPrefix(got.CAPEM, "-----BEGIN CERTIFICATE-----\n") {
			t.Errorf("%s: CAPEM = %q, want the CA certificate", name, got.CAPEM)
		}
		got.CAPEM = ""
		if !reflect.DeepEqual(got, wantCore) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, wantCore)
		}
		if c.APIVersion != APIVersion || c.Kind != Kind || c.Kubelet.Profile != "hardened" {
			t.Errorf("%s: apiVersion/kind/profile = %q/%q/%q", name, c.APIVersion, c.Kind, c.Kubelet.Profile)
		}
	}
	if a, b := core(fromYAML), core(fromEnv); !reflect.DeepEqual(a, b) {
		t.Errorf("cluster.yaml and environment.sh differ:\n%+v\n%+v", a, b)
	}
	if got, want := fromYAML.CAFile, filepath.Join(guide, "../pki/ca.pem"); got != want {
		t.Errorf("CAFile = %q, want %q (relative to cluster.yaml)", got, want)
	}
	wantNodes := []Node{
		{Name: "kube-node1", IP: "172.27.129.105", MAC: "52:54:00:12:34:56", Labels: map[string]string{"rack": "r1"}, Arch: DefaultArch, binary: "/opt/k8s/bin/kubelet"},
		{Name: "kube-node2", IP: "172.27.129.111", MAC: "52:54:00:12:34:57", Arch: DefaultArch, binary: "/opt/k8s/bin/kubelet"},
		{Name: "kube-node3", IP: "172.27.129.112", MAC: "52:54:00:12:34:58", Arch: DefaultArch, binary: "/opt/k8s/bin/kubelet"},
	}
	if !reflect.DeepEqual(fromYAML.Nodes, wantNodes) {
		t.Errorf("nodes from cluster.yaml:\n got %+v\nwant %+v", fromYAML.Nodes, wantNodes)
	}
	// environment.sh's PATH=/opt/k8s/bin:$PATH says where the guide put it.
	if fromYAML.Kubelet.Binary != "/opt/k8s/bin/kubelet" || fromEnv.Kubelet.Binary != "/opt/k8s/bin/kubelet" {
		t.Errorf("binaries = %q, %q", fromYAML.Kubelet.Binary, fromEnv.Kubelet.Binary)
	}

	// nodes.csv gives the same nodes (without the label and one MAC), and
	// replaces the nodes of either file.
	wantCSV := []Node{
		{Name: "kube-node1", IP: "172.27.129.105", MAC: "52:54:00:12:34:56", Arch: DefaultArch, binary: "/opt/k8s/bin/kubelet"},
		{Name: "kube-node2", IP: "172.27.129.111", MAC: "52:54:00:12:34:57", Arch: DefaultArch, binary: "/opt/k8s/bin/kubelet"},
		{Name: "kube-node3", IP: "172.27.129.112", Arch: DefaultArch, binary: "/opt/k8s/bin/kubelet"},
	}
	for _, src := range []Sources{
		{ClusterFile: guide + "cluster.yaml", NodesFile: guide + "nodes.csv"},
		{EnvFile: guide + "environment.sh", NodesFile: guide + "nodes.csv", Overrides: Overrides{CAFile: "../../fixtures/pki/ca.pem"}},
	} {
		c := mustLoad(t, src)
		if !reflect.DeepEqual(c.Nodes, wantCSV) {
			t.Errorf("nodes with %+v:\n got %+v\nwant %+v", src, c.Nodes, wantCSV)
		}
	}
}

// TestLoadNormalises checks the forms that later stages rely on.
func TestLoadNormalises(t *testing.T) {
	input := edit(baseYAML,
		"apiServer: https://172.27.129.80:6443", "apiServer: HTTPS://api.example.com:6443/",
		"clusterDomain: cluster.local", "clusterDomain: corp.example.",
		"kubernetesVersion: v1.37.2", "kubernetesVersion: 1.33.0",
		"  ttl: 24h", "  ttl: 90m",
		`  mac: "52:54:00:12:34:56"`, `  mac: "52-54-00-AB-CD-EF"`,
		"  ip: 172.27.129.112", "  ip: \"::ffff:172.27.129.112\"",
		"    rack: r1", "    node.kubernetes.io/pool: a\n    topology.kubernetes.io/zone: z1",
		"clusterDNS: [10.254.0.2]", "clusterDNS: [\"10.254.0.10\"]",
	)
	t.Run("given", func(t *testing.T) { testNormalised(t, input) })
	t.Run("defaults", testDefaults)
}

func testNormalised(t *testing.T, input string) {
	inDir(t, map[string]string{"cluster.yaml": input})
	c := mustLoad(t, yamlSrc)
	checks := []struct{ what, got, want string }{
		{"apiServer", c.APIServer, "https://api.example.com:6443"},
		{"clusterDomain", c.ClusterDomain, "corp.example"},
		{"kubernetesVersion", c.KubernetesVersion, "v1.33.0"},
		{"Version()", c.Version().String(), "1.33.0"},
		{"token.ttl", c.Token.TTL, "1h30m0s"},
		{"nodes[0].mac", c.Nodes[0].MAC, "52:54:00:ab:cd:ef"},
		{"nodes[2].ip", c.Nodes[2].IP, "172.27.129.112"},
		{"caFile", c.CAFile, "ca.pem"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.what, ch.got, ch.want)
		}
	}

}

// testDefaults checks that defaults fill what the file leaves out.
func testDefaults(t *testing.T) {
	minimal := edit(baseYAML,
		"clusterDomain: cluster.local\n", "",
		"kubernetesVersion: v1.37.2\n", "",
		"token:\n  ttl: 24h\n", "",
		"kubelet:\n  profile: hardened\n  binary: /opt/k8s/bin/kubelet\n", "",
	)
	inDir(t, map[string]string{"cluster.yaml": minimal})
	c := mustLoad(t, yamlSrc)
	if c.ClusterDomain != DefaultClusterDomain || c.KubernetesVersion != NewestVersion || c.TTL() != DefaultTokenTTL ||
		c.Kubelet.Profile != DefaultProfile || c.Kubelet.Binary != DefaultKubeletBinary {
		t.Errorf("defaults not filled: %+v", c)
	}
}

// TestLoadOverrides checks that flags win over both kinds of file and that a
// flag makes the variable it replaces unnecessary.
func TestLoadOverrides(t *testing.T) {
	o := Overrides{
		APIServer: "https://10.0.0.1:6443", CAFile: "ca.pem", KubernetesVersion: "v1.34.1",
		Profile: "legacy", TokenTTL: "2h", KubeletBinary: "/usr/local/bin/kubelet", ClusterDomain: "k8s.internal.",
	}
	env := edit(baseEnv,
		`export KUBE_APISERVER="https://${MASTER_IP}:6443"`, "export KUBE_APISERVER=$(cat url)",
		`export CLUSTER_DNS_DOMAIN="cluster.local."`+"\n", "",
	)
	inDir(t, map[string]string{"cluster.yaml": edit(baseYAML, "caFile: ca.pem", "caFile: expired-ca.pem"), "environment.sh": env})
	for _, src := range []Sources{{ClusterFile: "cluster.yaml", Overrides: o}, {EnvFile: "environment.sh", Overrides: o}} {
		c := mustLoad(t, src)
		got := []string{c.APIServer, c.CAFile, c.KubernetesVersion, c.Kubelet.Profile, c.Token.TTL, c.Kubelet.Binary, c.ClusterDomain}
		want := []string{"https://10.0.0.1:6443", "ca.pem", "v1.34.1", "legacy", "2h0m0s", "/usr/local/bin/kubelet", "k8s.internal"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%+v:\n got %q\nwant %q", src, got, want)
		}
	}
}

// TestReadEnvShellForms covers the shell forms the guide's variants use.
func TestReadEnvShellForms(t *testing.T) {
	env := `
declare -a NODE_NAMES=(kube-node1)
NODE_NAMES+=("kube-node2" 'kube-node3')
readonly NODE_IPS="172.27.129.105, 172.27.129.111 172.27.129.112"
MASTER=api.example.com
PORT=6443
KUBE_APISERVER=https://${MASTER}:$PORT
SERVICE_CIDR=10.254.0.0/16 CLUSTER_CIDR=172.30.0.0/16
typeset CLUSTER_DNS_SVC_IP=(10.254.0.2 10.254.0.3)
CLUSTER_DNS_DOMAIN=cluster.local
export CLUSTER_DNS_DOMAIN
GONE=1
unset GONE
X=1 some_command
function f { KUBE_APISERVER=http://wrong; }
if [ -n "$PATH" ]; then CLUSTER_CIDR=10.0.0.0/8; fi
`
	inDir(t, map[string]string{"environment.sh": env})
	c := mustLoad(t, envSrc)
	got := core(c)
	got.CAPEM = ""
	want := clusterCore{
		APIServer: "https://api.example.com:6443", ClusterDomain: "cluster.local",
		ServiceCIDR: "10.254.0.0/16", PodCIDR: "172.30.0.0/16", KubernetesVersion: NewestVersion,
		ClusterDNS: []string{"10.254.0.2", "10.254.0.3"}, TTL: DefaultTokenTTL,
		Names: []string{"kube-node1", "kube-node2", "kube-node3"},
		IPs:   []string{"172.27.129.105", "172.27.129.111", "172.27.129.112"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("\n got %+v\nwant %+v", got, want)
	}
}

func TestProblemError(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{Pos{"cluster.yaml", 14}, "nodes[2].ip", `"10.0.0.300" is not an IP address`}, `cluster.yaml:14: nodes[2].ip: "10.0.0.300" is not an IP address`},
		{Problem{Pos{"flag --ca-file", 0}, "caFile", "open x: denied"}, "flag --ca-file: caFile: open x: denied"},
		{Problem{Pos{"cluster.yaml", 3}, "", "mapping values are not allowed"}, "cluster.yaml:3: mapping values are not allowed"},
		{Problem{Pos{}, "", "no cluster given"}, "no cluster given"},
	} {
		if got := tc.p.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	ps := Problems{{Msg: "a"}, {Msg: "b"}}
	if got := ps.Error(); got != "a\nb" {
		t.Errorf("Problems.Error() = %q", got)
	}
	var err error = ps
	if !errors.Is(err, ErrInvalid) {
		t.Error("Problems does not match ErrInvalid")
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"v1.37.2", "v1.37.2", ""},
		{"1.33.0", "v1.33.0", ""},
		{"v1.37.9+build.1", "v1.37.9+build.1", ""},
		{"v1.33.0-rc.1", "", "v1.33.0-rc.1 is not supported (kubestrap supports v1.33.0 <= version < v1.38.0)"},
		{"v1.38.0", "", "v1.38.0 is not supported (kubestrap supports v1.33.0 <= version < v1.38.0)"},
		{"v2.0.0", "", "v2.0.0 is not supported (kubestrap supports v1.33.0 <= version < v1.38.0)"},
		{"latest", "", `"latest" is not a Kubernetes version like v1.37.2`},
	} {
		got, err := parseVersion(tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("parseVersion(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
	if v := (&Cluster{}).Version(); v == nil || "v"+v.String() != NewestVersion {
		t.Errorf("Version() of an empty Cluster = %v, want %s", v, NewestVersion)
	}
}

func TestLoadContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Load(ctx, yamlSrc, testNow)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrInvalid) {
		t.Errorf("Load with a cancelled context = %v", err)
	}
}

func TestLoadCAResolver(t *testing.T) {
	ca, err := os.ReadFile("../../fixtures/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := os.ReadFile("../../fixtures/pki/expired-ca.pem")
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(file, []byte(`apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
apiServer: https://10.0.0.1:6443
clusterDNS: [10.254.0.2]
serviceCIDR: 10.254.0.0/16
podCIDR: 172.30.0.0/16
nodes:
- {name: n1, ip: 10.0.0.11}
`), 0o600)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		pem     []byte
		err     error
		wantErr string
	}{
		{name: "from kubeconfig", pem: ca},
		{name: "expired", pem: expired, wantErr: `kubeconfig admin.conf: certificate "CN=expired-ca" expired on 2011-01-01`},
		{name: "resolver fails", err: errors.New("its CA has pin sha256:ab, which matches no --ca-cert-hash"), wantErr: "kubeconfig admin.conf: caFile: its CA has pin sha256:ab, which matches no --ca-cert-hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			src := Sources{ClusterFile: file, CA: func(context.Context) ([]byte, string, error) {
				calls++
				return tt.pem, "kubeconfig admin.conf", tt.err
			}}
			c, err := Load(context.Background(), src, now)
			if calls != 1 {
				t.Errorf("resolver called %d times", calls)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(c.CAPEM) != string(ca) {
				t.Error("CA not taken from the resolver")
			}
		})
	}
	// A caFile wins: the resolver is not asked.
	src := Sources{ClusterFile: file, Overrides: Overrides{CAFile: "../../fixtures/pki/ca.pem"},
		CA: func(context.Context) ([]byte, string, error) {
			t.Error("resolver called despite --ca-file")
			return nil, "", nil
		}}
	if _, err := Load(context.Background(), src, now); err != nil {
		t.Fatal(err)
	}
}
