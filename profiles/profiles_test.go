package profiles

import (
	"encoding/json"
	"errors"
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
	if len(p.Warnings) != 0 {
		t.Errorf("hardened warns: %v", p.Warnings)
	}
	legacy, _ := Load("legacy")
	if len(legacy.Warnings) < 3 {
		t.Errorf("legacy has %d warnings, want one per opening", len(legacy.Warnings))
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
