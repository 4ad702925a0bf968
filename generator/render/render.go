// Package render turns one node of a validated cluster, with its bootstrap
// token, into the files its first boot must lay down. Rendering a node is a
// pure function: no I/O and no shared state, so nodes render in parallel.
package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

// ErrInput was returned for input problems that render found.
//
// Deprecated: model.Load finds every input problem, at its line; render
// never returns ErrInput. It stays for callers that still test for it.
var ErrInput = errors.New("invalid kubelet settings")

// Where the documents put things on the node. Every path a unit flag names is
// here, written by the documents or created by the kubelet.
const (
	CAPath                  = "/etc/kubernetes/pki/ca.crt"
	BootstrapKubeconfigPath = "/etc/kubernetes/bootstrap-kubelet.kubeconfig"
	KubeletConfigPath       = "/etc/kubernetes/kubelet.config.json"
	// KubeletKubeconfigPath and CertDir are created by the kubelet once its
	// CSR is issued.
	KubeletKubeconfigPath = "/etc/kubernetes/kubelet.kubeconfig"
	CertDir               = "/var/lib/kubelet/pki"
	KubeletDir            = "/var/lib/kubelet"
	UnitName              = "kubelet.service"
)

// Names inside the bootstrap kubeconfig, as the guide's kubectl calls made them.
const (
	KubeconfigCluster = "kubernetes"
	KubeconfigUser    = "kubelet-bootstrap"
	KubeconfigContext = "default"
)

// runtimeUnits maps a CRI socket to the unit that serves it, so the kubelet
// starts after its container runtime.
var runtimeUnits = map[string]string{
	"unix:///run/containerd/containerd.sock":     "containerd.service",
	"unix:///var/run/containerd/containerd.sock": "containerd.service",
	"unix:///run/crio/crio.sock":                 "crio.service",
	"unix:///var/run/crio/crio.sock":             "crio.service",
}

// Renderer holds what every node of one cluster shares: the cluster's kubelet
// configuration, and the parts of nodes' files that do not depend on the node.
type Renderer struct {
	cluster *model.Cluster
	// base is the cluster's effective kubelet config (model.KubeletBase)
	// with what the model decides for every node.
	base map[string]any
	// shared holds what nodes have in common, rendered once.
	shared shared
}

// New prepares the renderer for a cluster that model.Load returned: Load has
// checked every setting, so a failure here is kubestrap's bug.
func New(c *model.Cluster) (*Renderer, error) {
	base, err := c.KubeletBase()
	if err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	if c.Kubelet.ServerTLSBootstrap {
		base["serverTLSBootstrap"] = true
	}
	r := &Renderer{cluster: c, base: base}
	if err := r.prepareShared(); err != nil {
		return nil, err
	}
	return r, nil
}

// Check used to find the input errors Node would report for n.
//
// Deprecated: model.Load finds them all, each at its line; Check always
// returns nil.
func (r *Renderer) Check(model.Node) error { return nil }

// Node renders one node's assets.
func (r *Renderer) Node(n model.Node, tok token.Token) (Assets, error) {
	return r.node(n, tok, true)
}

// node renders n; with shared it fills in the parts rendered once in New
// where n allows (the result is the same bytes, see TestSharedMatchesFull).
func (r *Renderer) node(n model.Node, tok token.Token, useShared bool) (Assets, error) {
	at := "node " + n.Name
	kubeconfig, ok := r.shared.kubeconfigFor(tok)
	if !ok || !useShared {
		var err error
		if kubeconfig, err = r.bootstrapKubeconfig(tok.Value()); err != nil {
			return Assets{}, fmt.Errorf("%s: bootstrap kubeconfig: %w", at, err)
		}
	}
	config, ok := r.shared.configFor(n)
	if !ok || !useShared {
		var err error
		if config, err = r.kubeletConfig(n); err != nil {
			return Assets{}, fmt.Errorf("%s: %w", at, err)
		}
	}
	unit, err := r.unit(n, config)
	if err != nil {
		return Assets{}, fmt.Errorf("%s: %s: %w", at, UnitName, err)
	}
	return Assets{
		Node: n.Name,
		// Parents before children: cloud-init creates them in this order.
		Dirs: []Dir{
			{Path: path.Dir(KubeletConfigPath), Mode: 0o755},
			{Path: path.Dir(CAPath), Mode: 0o755},
			{Path: KubeletDir, Mode: 0o700},
		},
		Files: []File{
			{Path: CAPath, Mode: 0o644, Contents: r.cluster.CAPEM},
			{Path: BootstrapKubeconfigPath, Mode: 0o600, Contents: kubeconfig, Secret: true},
			{Path: KubeletConfigPath, Mode: 0o644, Contents: config.json},
		},
		Units: []Unit{{Name: UnitName, Contents: unit}},
	}, nil
}

// bootstrapKubeconfig is what the guide's four `kubectl config` calls built,
// as a clientcmd struct rather than text.
func (r *Renderer) bootstrapKubeconfig(tok string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[KubeconfigCluster] = &clientcmdapi.Cluster{
		Server:                   r.cluster.APIServer,
		CertificateAuthorityData: r.cluster.CAPEM,
	}
	cfg.AuthInfos[KubeconfigUser] = &clientcmdapi.AuthInfo{Token: tok}
	cfg.Contexts[KubeconfigContext] = &clientcmdapi.Context{Cluster: KubeconfigCluster, AuthInfo: KubeconfigUser}
	cfg.CurrentContext = KubeconfigContext
	return clientcmd.Write(*cfg)
}

// kubeletConfig is one node's KubeletConfiguration and its JSON.
type kubeletConfig struct {
	typed kubeletv1beta1.KubeletConfiguration
	json  []byte
}

// kubeletConfig puts the node's settings over the cluster's and sets what the
// model decides. The JSON written is the merged map, so every field the
// profile sets explicitly stays visible (the typed struct would drop zero
// values such as readOnlyPort: 0). It is decoded strictly into the v1beta1
// type all the same, to be sure of what is written: Load has decoded each
// setting, so a failure is kubestrap's bug.
func (r *Renderer) kubeletConfig(n model.Node) (kubeletConfig, error) {
	m := model.MergeKubeletConfig(r.base, n.Kubelet.Config)
	m["apiVersion"] = kubeletv1beta1.SchemeGroupVersion.String()
	m["kind"] = "KubeletConfiguration"
	m["address"] = n.IP
	m["clusterDNS"] = slices.Clone(r.cluster.ClusterDNS)
	m["clusterDomain"] = r.cluster.ClusterDomain
	authn, _ := m["authentication"].(map[string]any)
	if authn == nil {
		authn = map[string]any{}
		m["authentication"] = authn
	}
	x509, _ := authn["x509"].(map[string]any)
	if x509 == nil {
		x509 = map[string]any{}
		authn["x509"] = x509
	}
	x509["clientCAFile"] = CAPath

	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return kubeletConfig{}, fmt.Errorf("kubelet config: %w", err)
	}
	var kc kubeletConfig
	strict, err := sigsjson.UnmarshalStrict(data, &kc.typed)
	if err == nil && len(strict) > 0 {
		err = errors.Join(strict...)
	}
	if err != nil {
		return kubeletConfig{}, fmt.Errorf("kubelet config is not a KubeletConfiguration (a kubestrap bug: model.Load should have refused the settings): %w", err)
	}
	kc.json = append(data, '\n')
	return kc, nil
}

// unit builds kubelet.service with go-systemd's unit package.
func (r *Renderer) unit(n model.Node, kc kubeletConfig) ([]byte, error) {
	args := []string{
		"--config=" + KubeletConfigPath,
		"--bootstrap-kubeconfig=" + BootstrapKubeconfigPath,
		"--kubeconfig=" + KubeletKubeconfigPath,
		"--cert-dir=" + CertDir,
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP,
	}
	if len(n.Labels) > 0 {
		var labels []string
		for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
			labels = append(labels, k+"="+n.Labels[k])
		}
		args = append(args, "--node-labels="+strings.Join(labels, ","))
	}
	extra := maps.Clone(r.cluster.Kubelet.ExtraArgs)
	if extra == nil {
		extra = map[string]string{}
	}
	maps.Copy(extra, n.Kubelet.ExtraArgs)
	if _, ok := extra["v"]; !ok {
		extra["v"] = "2"
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		args = append(args, "--"+k+"="+extra[k])
	}
	var exec strings.Builder
	exec.WriteString(execQuote(r.cluster.Kubelet.Binary))
	for _, a := range args {
		exec.WriteString(" \\\n  ")
		exec.WriteString(execQuote(a))
	}

	after := []string{"network-online.target"}
	if ru, ok := runtimeUnits[kc.typed.ContainerRuntimeEndpoint]; ok {
		after = append(after, ru)
	}
	opts := []*unitOption{
		{"Unit", "Description", "Kubernetes kubelet (bootstrapped by kubestrap)"},
		{"Unit", "Documentation", "https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/"},
		{"Unit", "Wants", strings.Join(after, " ")},
		{"Unit", "After", strings.Join(after, " ")},
		{"Service", "ExecStart", exec.String()},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartSec", "5"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	return serialize(opts)
}
