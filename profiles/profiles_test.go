package profiles

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/util/version"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"
)

// Every profile must be a valid KubeletConfiguration on its own, so a typo in
// a data file fails here rather than on a node.
func TestProfilesDecodeStrictly(t *testing.T) {
	if got := Names(); len(got) != 2 || got[0] != "hardened" || got[1] != "legacy" {
		t.Fatalf("Names() = %v, want [hardened legacy]", got)
	}
	for _, name := range Names() {
		p, err := Load(name)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(p.Config)
		if err != nil {
			t.Fatal(err)
		}
		var kc kubeletv1beta1.KubeletConfiguration
		strict, err := sigsjson.UnmarshalStrict(data, &kc)
		if err != nil || len(strict) > 0 {
			t.Errorf("%s: %v %v", name, err, strict)
		}
		if kc.Kind != "KubeletConfiguration" || kc.APIVersion != "kubelet.config.k8s.io/v1beta1" {
			t.Errorf("%s: kind/apiVersion = %q/%q", name, kc.Kind, kc.APIVersion)
		}
		if kc.Authentication.Anonymous.Enabled == nil || kc.ReadOnlyPort != map[string]int32{"hardened": 0, "legacy": 10255}[name] {
			t.Errorf("%s: anonymous or readOnlyPort not set explicitly", name)
		}
	}
}

func TestHardenedIsHardened(t *testing.T) {
	p, err := Load("hardened")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(p.Config)
	var kc kubeletv1beta1.KubeletConfiguration
	if err := json.Unmarshal(data, &kc); err != nil {
		t.Fatal(err)
	}
	switch {
	case *kc.Authentication.Anonymous.Enabled:
		t.Error("anonymous auth on")
	case !*kc.Authentication.Webhook.Enabled:
		t.Error("webhook authn off")
	case kc.Authorization.Mode != kubeletv1beta1.KubeletAuthorizationModeWebhook:
		t.Errorf("authorization %q", kc.Authorization.Mode)
	case kc.ReadOnlyPort != 0, kc.HealthzBindAddress != "127.0.0.1", kc.TLSMinVersion != "VersionTLS12":
		t.Error("read-only port, healthz address or TLS floor")
	case kc.RotateCertificates != true, kc.ServerTLSBootstrap, kc.StreamingConnectionIdleTimeout.Duration == 0:
		t.Error("rotation, serverTLSBootstrap or streaming timeout")
	case kc.PodPidsLimit == nil || *kc.PodPidsLimit <= 0:
		t.Error("podPidsLimit unset")
	}
	if got := Openings(&kc); len(got) != 0 {
		t.Errorf("hardened opens %v", got)
	}
}

func decodeProfile(t *testing.T, name string) *kubeletv1beta1.KubeletConfiguration {
	t.Helper()
	p, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(p.Config)
	var kc kubeletv1beta1.KubeletConfiguration
	if err := json.Unmarshal(data, &kc); err != nil {
		t.Fatal(err)
	}
	return &kc
}

// The legacy profile's warnings are the table's verdict on it.
func TestLegacyOpenings(t *testing.T) {
	var got []string
	for _, o := range Openings(decodeProfile(t, "legacy")) {
		got = append(got, o.String())
	}
	want := []string{
		"authentication.anonymous.enabled=true: anyone who reaches port 10250 can call the kubelet API (logs, exec, port-forward) without credentials",
		"authorization.mode=AlwaysAllow: every authenticated or anonymous request to the kubelet API is allowed, including exec into any pod on the node",
		"readOnlyPort=10255: pods, specs and metrics are served over plain HTTP without authentication to anyone who reaches that port",
		"authentication.webhook.enabled=false: bearer tokens sent to the kubelet are not checked with the API server",
	}
	if !slices.Equal(got, want) {
		t.Errorf("legacy openings:\n got %q\nwant %q", got, want)
	}
}

// Each check, on one field set over the hardened profile: what opens and
// what does not.
func TestOpenings(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name   string
		set    func(kc *kubeletv1beta1.KubeletConfiguration)
		opened string // "" for nothing
	}{
		{"anonymous on", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.Authentication.Anonymous.Enabled = &yes }, "authentication.anonymous.enabled=true"},
		{"anonymous unset (default off)", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.Authentication.Anonymous.Enabled = nil }, ""},
		{"AlwaysAllow", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.Authorization.Mode = "AlwaysAllow" }, "authorization.mode=AlwaysAllow"},
		{"mode unset (default Webhook)", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.Authorization.Mode = "" }, ""},
		{"read-only port", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.ReadOnlyPort = 10255 }, "readOnlyPort=10255"},
		{"webhook authn off", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.Authentication.Webhook.Enabled = &no }, "authentication.webhook.enabled=false"},
		{"webhook unset (default on)", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.Authentication.Webhook.Enabled = nil }, ""},
		{"healthz on all IPv4", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.HealthzBindAddress = "0.0.0.0" }, "healthzBindAddress=0.0.0.0"},
		{"healthz on all IPv6", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.HealthzBindAddress = "::" }, "healthzBindAddress=::"},
		{"healthz on a node address", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.HealthzBindAddress = "10.0.0.5" }, "healthzBindAddress=10.0.0.5"},
		{"healthz on IPv6 loopback", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.HealthzBindAddress = "::1" }, ""},
		{"healthz on another loopback", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.HealthzBindAddress = "127.0.0.2" }, ""},
		{"healthz unset (default loopback)", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.HealthzBindAddress = "" }, ""},
		{"TLS 1.0", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.TLSMinVersion = "VersionTLS10" }, "tlsMinVersion=VersionTLS10"},
		{"TLS 1.1", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.TLSMinVersion = "VersionTLS11" }, "tlsMinVersion=VersionTLS11"},
		{"TLS 1.3", func(kc *kubeletv1beta1.KubeletConfiguration) { kc.TLSMinVersion = "VersionTLS13" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := decodeProfile(t, "hardened")
			tt.set(kc)
			var got []string
			for _, o := range Openings(kc) {
				got = append(got, o.Path+"="+o.Value)
				if !slices.Contains(OpeningPaths(), o.Path) {
					t.Errorf("OpeningPaths lacks %s", o.Path)
				}
			}
			var want []string
			if tt.opened != "" {
				want = []string{tt.opened}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Openings = %q, want %q", got, want)
			}
		})
	}
}

func TestLoadUnknown(t *testing.T) {
	_, err := Load("paranoid")
	if !errors.Is(err, ErrUnknown) || err.Error() != `unknown profile "paranoid" (known: hardened, legacy)` {
		t.Fatalf("err = %v", err)
	}
}

func TestRemovals(t *testing.T) {
	rs, err := LoadRemovals()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kind    Kind
		name    string
		version string
		removed bool
	}{
		{Flag, "logtostderr", "v1.25.9", false},
		{Flag, "logtostderr", "v1.26.0", true},
		{Flag, "pod-infra-container-image", "v1.34.4", false},
		{Flag, "pod-infra-container-image", "v1.35.0", true},
		{Flag, "container-runtime", "v1.37.2", true},
		{Flag, "cadvisor-port", "v1.33.0", true},
		{FeatureGate, "RotateKubeletClientCertificate", "v1.33.0", true},
		{FeatureGate, "RotateKubeletServerCertificate", "v1.37.2", false},
		{Flag, "v", "v1.37.2", false},
	}
	for _, tt := range tests {
		_, got := rs.Find(tt.kind, tt.name, version.MustParseSemantic(tt.version))
		if got != tt.removed {
			t.Errorf("Find(%s %s, %s) = %v, want %v", tt.kind, tt.name, tt.version, got, tt.removed)
		}
	}
}
