// Package discovery finds what kubestrap needs from a live cluster: a client
// from an admin kubeconfig, and the cluster CA the nodes will trust.
package discovery

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// ErrNoKubeconfig means no admin kubeconfig was found.
var ErrNoKubeconfig = errors.New("no kubeconfig")

// Kubeconfig loads the admin kubeconfig: path if given, else $KUBECONFIG,
// else ~/.kube/config. It returns the config and a name for messages.
func Kubeconfig(path string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	name := "kubeconfig " + rules.GetDefaultFilename()
	if path != "" {
		rules.ExplicitPath = path
		name = "kubeconfig " + path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, name, fmt.Errorf("%w: give --kubeconfig, set KUBECONFIG, or use --offline", ErrNoKubeconfig)
	}
	if err != nil {
		return nil, name, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, name, nil
}

// Client is an admin client of one cluster.
type Client struct {
	Config    *rest.Config
	Interface kubernetes.Interface
	// Source names the kubeconfig, for messages ("kubeconfig admin.conf").
	Source string
}

// NewClient loads the admin kubeconfig (see Kubeconfig) and makes a client
// that can keep parallel calls in flight: client-go's default client-side
// limit of 5 per second would hold back any parallelism above that, so a
// thousand calls would take over three minutes.
func NewClient(path string, parallel int) (*Client, error) {
	cfg, source, err := Kubeconfig(path)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = float32(50*parallel), 100*parallel
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &Client{Config: cfg, Interface: client, Source: source}, nil
}

// Pin is kubeadm's public key pin of a CA: "sha256:" and the hex SHA-256 of
// the certificate's Subject Public Key Info.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CA returns the CA nodes should trust: the admin kubeconfig's own, or else
// the one in kube-public/cluster-info, which is trusted only if it matches
// one of pins (kubeadm's discovery rule: anyone between us and the API server
// could have written cluster-info).
func CA(ctx context.Context, cfg *rest.Config, source string, client kubernetes.Interface, pins []string) ([]byte, string, error) {
	switch {
	case len(cfg.TLSClientConfig.CAData) > 0:
		return cfg.TLSClientConfig.CAData, source, nil
	case cfg.TLSClientConfig.CAFile != "":
		data, err := os.ReadFile(cfg.TLSClientConfig.CAFile)
		return data, source, err
	}
	const where = "configmap kube-public/" + bootstrapapi.ConfigMapClusterInfo
	if len(pins) == 0 {
		return nil, source, fmt.Errorf("%s has no CA, and the one in %s is only trusted with --ca-cert-hash sha256:<hex> (or give --ca-file)", source, where)
	}
	cm, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		return nil, where, fmt.Errorf("reading the CA: %w", err)
	}
	kc, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
	if err != nil {
		return nil, where, fmt.Errorf("its kubeconfig: %w", err)
	}
	var data []byte
	for _, c := range kc.Clusters {
		data = c.CertificateAuthorityData
		break
	}
	if err := matchPins(data, pins); err != nil {
		return nil, where, err
	}
	return data, where, nil
}

// matchPins checks that every certificate in data matches one of pins.
func matchPins(data []byte, pins []string) error {
	found := false
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("cannot parse its CA: %w", err)
		}
		got := Pin(cert)
		ok := false
		for _, p := range pins {
			if subtle.ConstantTimeCompare([]byte(strings.ToLower(p)), []byte(got)) == 1 {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("its CA %q has pin %s, which matches no --ca-cert-hash: refusing to trust it", cert.Subject.CommonName, got)
		}
		found = true
	}
	if !found {
		return errors.New("holds no CA certificate")
	}
	return nil
}
