package discovery

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// fixturePin was computed with kubeadm's documented recipe, independently of
// this package: openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
const fixturePin = "sha256:8a19e0b7fcf4ab73d48b5c7b1673bd1dba87fbeaaf75060a5a7903384744a38f"

func fixtureCA(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("../../fixtures/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPin(t *testing.T) {
	b, _ := pem.Decode(fixtureCA(t))
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := Pin(cert); got != fixturePin {
		t.Errorf("Pin = %s, want %s", got, fixturePin)
	}
}

func clusterInfo(t *testing.T, ca []byte) *corev1.ConfigMap {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthorityData: ca}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: "kube-public"}, Data: map[string]string{"kubeconfig": string(data)}}
}

func TestCA(t *testing.T) {
	ca := fixtureCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca, 0o600)
	tests := []struct {
		name       string
		cfg        rest.Config
		pins       []string
		wantSource string
		wantErr    string
	}{
		{name: "kubeconfig data", cfg: rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, wantSource: "kubeconfig admin.conf"},
		{name: "kubeconfig file", cfg: rest.Config{TLSClientConfig: rest.TLSClientConfig{CAFile: caFile}}, wantSource: "kubeconfig admin.conf"},
		{name: "cluster-info unpinned", wantErr: "kubeconfig admin.conf has no CA, and the one in configmap kube-public/cluster-info is only trusted with --ca-cert-hash"},
		{name: "cluster-info pinned", pins: []string{"sha256:00", fixturePin}, wantSource: "configmap kube-public/cluster-info"},
		{name: "cluster-info pin upper case", pins: []string{strings.ToUpper(fixturePin[7:])}, wantErr: "matches no --ca-cert-hash"},
		{name: "cluster-info wrong pin", pins: []string{"sha256:0000"}, wantErr: `its CA "kubestrap-test-ca" has pin ` + fixturePin + `, which matches no --ca-cert-hash: refusing to trust it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(clusterInfo(t, ca))
			got, source, err := CA(context.Background(), &tt.cfg, "kubeconfig admin.conf", client, tt.pins)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(ca) || source != tt.wantSource {
				t.Errorf("source %q, CA equal %v", source, string(got) == string(ca))
			}
		})
	}
}

func TestKubeconfigMissing(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("HOME", t.TempDir())
	_, _, err := Kubeconfig("")
	if err == nil || !strings.Contains(err.Error(), "no kubeconfig: give --kubeconfig, set KUBECONFIG, or use --offline") {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := Kubeconfig(filepath.Join(t.TempDir(), "missing.conf")); err == nil {
		t.Fatal("explicit missing kubeconfig accepted")
	}
}
