// Package sample builds the realistic render.Assets that the encoders' tests
// and golden files share. It is not used outside tests.
package sample

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/kubestrap/kubestrap/generator/render"
)

// CAPEM is a real (test-only) CA certificate, so the PEM in the documents has
// the line structure a real one has.
const CAPEM = `-----BEGIN CERTIFICATE-----
MIIBnzCCAUWgAwIBAgIUdeRl6x4hlN9i0uiySehgLcpv5ukwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRa3ViZXN0cmFwLXRlc3QtY2EwIBcNMjYxMTI3MDMyMTEyWhgP
MjEyNjExMDMwMzIxMTJaMBwxGjAYBgNVBAMMEWt1YmVzdHJhcC10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUuc5nKOeLwwuBgUQ/aq1dIxlGGwJxGzU
4giJYahLTPqWpkZOrcJ/BH4zyG2mXDPaxrX6IAiRZrltJs6vAmJKTaNjMGEwHQYD
VR0OBBYEFLPN8PM4zueYt1AT1LogOsk82lQZMB8GA1UdIwQYMBaAFLPN8PM4zueY
t1AT1LogOsk82lQZMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoG
CCqGSM49BAMCA0gAMEUCIFqvu4my5Zt5aUABSZXNJ77kCyl09K/IM4LK/H1l7+L/
AiEAkG4QyH17SuXZK5xEPuV90M4uhS7qPHyKPYEOxB8uGqU=
-----END CERTIFICATE-----
`

// Token is a syntactically valid bootstrap token ([a-z0-9]{6}.[a-z0-9]{16}).
const Token = "07401b.f395accd246ae52d"

// Kubeconfig is a bootstrap kubeconfig in the shape render produces: the CA
// embedded as base64 on one very long line, which is what trips up YAML
// emitters that fold long lines.
const Kubeconfig = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJuekNDQVVXZ0F3SUJBZ0lVZGVSbDZ4NGhsTjlpMHVpeVNlaGdMY3B2NXVrd0NnWUlLb1pJemowRUF3SXcKSERFYU1CZ0dBMVVFQXd3UmEzVmlaWE4wY21Gd0xYUmxjM1F0WTJFd0lCY05Nall4TVRJM01ETXlNVEV5V2hnUApNakV5TmpFeE1ETXdNekl4TVRKYU1Cd3hHakFZQmdOVkJBTU1FV3QxWW1WemRISmhjQzEwWlhOMExXTmhNRmt3CkV3WUhLb1pJemowQ0FRWUlLb1pJemowREFRY0RRZ0FFVXVjNW5LT2VMd3d1QmdVUS9hcTFkSXhsR0d3SnhHelUKNGdpSllhaExUUHFXcGtaT3JjSi9CSDR6eUcybVhEUGF4clg2SUFpUlpybHRKczZ2QW1KS1RhTmpNR0V3SFFZRApWUjBPQkJZRUZMUE44UE00enVlWXQxQVQxTG9nT3NrODJsUVpNQjhHQTFVZEl3UVlNQmFBRkxQTjhQTTR6dWVZCnQxQVQxTG9nT3NrODJsUVpNQThHQTFVZEV3RUIvd1FGTUFNQkFmOHdEZ1lEVlIwUEFRSC9CQVFEQWdFR01Bb0cKQ0NxR1NNNDlCQU1DQTBnQU1FVUNJRnF2dTRteTVadDVhVUFCU1pYTko3N2tDeWwwOUsvSU00TEsvSDFsNytMLwpBaUVBa0c0UXlIMTdTdVhaSzV4RVB1VjkwTTR1aFM3cVBIeUtQWUVPeEI4dUdxVT0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
    server: https://172.27.129.80:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubelet-bootstrap
  name: default
current-context: default
users:
- name: kubelet-bootstrap
  user:
    token: ` + Token + `
`

// KubeletConfig is a KubeletConfiguration in JSON, as render writes it.
const KubeletConfig = `{
  "apiVersion": "kubelet.config.k8s.io/v1beta1",
  "kind": "KubeletConfiguration",
  "authentication": {
    "anonymous": {
      "enabled": false
    },
    "webhook": {
      "enabled": true
    },
    "x509": {
      "clientCAFile": "/etc/kubernetes/pki/ca.crt"
    }
  },
  "authorization": {
    "mode": "Webhook"
  },
  "clusterDNS": [
    "10.254.0.2"
  ],
  "clusterDomain": "cluster.local",
  "rotateCertificates": true
}
`

// KubeletUnit uses backslash-newline continuations, which both systemd's
// parser and the YAML round trip must keep intact.
const KubeletUnit = `[Unit]
Description=Kubernetes Kubelet
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/opt/k8s/bin/kubelet \
  --bootstrap-kubeconfig=/etc/kubernetes/bootstrap.kubeconfig \
  --kubeconfig=/etc/kubernetes/kubelet.kubeconfig \
  --config=/etc/kubernetes/kubelet.config.json \
  --cert-dir=/var/lib/kubelet/pki \
  --hostname-override=kube-node1 \
  --v=2
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
`

// Assets returns the sample node's assets. Each call returns fresh slices so a
// test may modify its copy.
func Assets() render.Assets {
	return render.Assets{
		Node: "kube-node1",
		Dirs: []render.Dir{
			{Path: "/etc/kubernetes", Mode: 0o755},
			{Path: "/etc/kubernetes/pki", Mode: 0o755},
			{Path: "/var/lib/kubelet", Mode: 0o700},
		},
		Files: []render.File{
			{Path: "/etc/kubernetes/pki/ca.crt", Mode: 0o644, Contents: []byte(CAPEM)},
			{Path: "/etc/kubernetes/bootstrap.kubeconfig", Mode: 0o600, Contents: []byte(Kubeconfig), Secret: true},
			{Path: "/etc/kubernetes/kubelet.config.json", Mode: 0o644, Contents: []byte(KubeletConfig)},
		},
		Units: []render.Unit{
			{Name: "kubelet.service", Contents: []byte(KubeletUnit)},
		},
	}
}

// Contents is a named file body for table-driven tests.
type Contents struct {
	Name     string
	Contents string
}

// TrickyContents are file bodies that YAML emitters and parsers are known to
// mangle: each must come out of both documents byte for byte.
func TrickyContents() []Contents {
	return []Contents{
		{"empty", ""},
		{"no trailing newline", "a\nb"},
		{"single newline", "\n"},
		{"only newlines", "\n\n"},
		{"leading newline", "\nabc\n"},
		{"several trailing newlines", "a\n\n\n"},
		{"leading spaces", "  indented\nline\n"},
		{"leading tab", "\tx\n"},
		{"tab-indented JSON", "{\n\t\"a\": 1\n}\n"},
		{"tab inside", "a\tb\n"},
		{"trailing spaces", "a  \nb\n"},
		{"trailing space at end", "a\nb "},
		{"only spaces", "   "},
		{"CRLF", "a\r\nb\r\n"},
		{"lone CR", "a\rb\n"},
		{"NEL, LS and PS", "a\u0085b\u2028c\u2029d\n"},
		{"BOM", "\ufeffa\n"},
		{"NUL, ESC and DEL", "a\x00b\x1bc\x7f\n"},
		{"invalid UTF-8", "\xff\xfe\x00binary"},
		{"YAML lookalike", "---\nkey: value\n...\n# comment\n- item\n"},
		{"cloud-config lookalike", "#cloud-config\nruncmd: [reboot]\n"},
		{"looks like a bool", "yes"},
		{"looks like an octal number", "0600"},
		{"unicode", "ключ: значение ✓ 🚀\n"},
		{"long line", strings.Repeat("abcdefghij ", 200) + "\n"},
		{"long line without spaces", strings.Repeat("QUJD", 2000)},
		{"backslashes", "a \\\n  b\\n\n"},
		{"quotes", "'single' \"double\"\n"},
	}
}

// TrickyAssets is the sample plus one file per TrickyContents body and paths
// with characters that are special in YAML flow sequences and in shells, so a
// slow external validator can check every case in one run.
func TrickyAssets() render.Assets {
	a := Assets()
	a.Dirs = append(a.Dirs, render.Dir{Path: "/var/lib/odd dir, [x]: #y {z} 'q' \"dq\" $HOME `id` *", Mode: 0o750})
	for i, c := range TrickyContents() {
		mode := fs.FileMode(0o644)
		if i%2 == 1 {
			mode = 0o600
		}
		a.Files = append(a.Files, render.File{
			Path:     fmt.Sprintf("/etc/kubestrap-tricky/%02d %s", i, c.Name),
			Mode:     mode,
			Contents: []byte(c.Contents),
		})
	}
	return a
}
