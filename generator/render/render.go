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

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/kubestrap/kubestrap/profiles"
)

// ErrInput marks a render failure caused by the user's input (a removed flag,
// an unknown kubelet field), as opposed to a bug.
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

// ownedFlags are set by the renderer from the model; extraArgs may not.
var ownedFlags = []string{"config", "bootstrap-kubeconfig", "kubeconfig", "cert-dir", "hostname-override", "node-ip", "node-labels"}

// Renderer holds what every node of one cluster shares: the profile merged
// with the cluster's kubelet settings, checked once.
type Renderer struct {
	cluster  *model.Cluster
	version  *version.Version
	removals profiles.Removals
	// base is the profile with the cluster-wide overrides applied.
	base map[string]any
	// baseChecked: base decodes as a KubeletConfiguration.
	baseChecked bool
	// shared holds what nodes have in common, rendered once.
	shared shared
	// Warnings are for the user: what the profile opens, what it dropped.
	Warnings []string
}

// New prepares the renderer for a validated cluster.
func New(c *model.Cluster) (*Renderer, error) {
	v, err := version.ParseSemantic(c.KubernetesVersion)
	if err != nil {
		return nil, fmt.Errorf("%w: kubernetesVersion: %w", ErrInput, err)
	}
	removals, err := profiles.LoadRemovals()
	if err != nil {
		return nil, err
	}
	p, err := profiles.Load(c.Kubelet.Profile)
	if err != nil {
		return nil, fmt.Errorf("%w: kubelet.profile: %w", ErrInput, err)
	}
	r := &Renderer{cluster: c, version: v, removals: removals}
	for _, w := range p.Warnings {
		r.Warnings = append(r.Warnings, fmt.Sprintf("profile %s: %s", p.Name, w))
	}
	// A profile may carry settings a newer kubelet dropped (legacy holds the
	// guide's feature gates): leave those out rather than break the kubelet.
	for _, gate := range slices.Sorted(maps.Keys(featureGates(p.Config))) {
		if rm, ok := removals.Find(profiles.FeatureGate, gate, v); ok {
			delete(featureGates(p.Config), gate)
			r.Warnings = append(r.Warnings, fmt.Sprintf("profile %s: feature gate %s left out: %s", p.Name, gate, rm))
		}
	}
	if gates := featureGates(p.Config); gates != nil && len(gates) == 0 {
		delete(p.Config, "featureGates")
	}
	if err := r.checkUser("kubelet", c.Kubelet.KubeletOverrides); err != nil {
		return nil, err
	}
	r.base = merge(p.Config, c.Kubelet.Config)
	if c.Kubelet.ServerTLSBootstrap {
		r.base["serverTLSBootstrap"] = true
	}
	if err := r.prepareShared(); err != nil {
		return nil, err
	}
	r.baseChecked = true
	return r, nil
}

// checkUser refuses what the user asked for that the target kubelet no
// longer accepts; at names where it was asked ("kubelet", "nodes[2].kubelet").
func (r *Renderer) checkUser(at string, o model.KubeletOverrides) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(o.ExtraArgs)) {
		if rm, ok := r.removals.Find(profiles.Flag, name, r.version); ok {
			errs = append(errs, fmt.Errorf("%s.extraArgs.%s: kubelet %s refuses --%s: %s", at, name, r.version, name, rm))
		}
		if slices.Contains(ownedFlags, name) {
			errs = append(errs, fmt.Errorf("%s.extraArgs.%s: kubestrap sets --%s itself", at, name, name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.Config)) {
		if rm, ok := r.removals.Find(profiles.Field, name, r.version); ok {
			errs = append(errs, fmt.Errorf("%s.config.%s: kubelet %s has no such setting: %s", at, name, r.version, rm))
		}
	}
	for _, gate := range slices.Sorted(maps.Keys(featureGates(o.Config))) {
		if rm, ok := r.removals.Find(profiles.FeatureGate, gate, r.version); ok {
			errs = append(errs, fmt.Errorf("%s.config.featureGates.%s: kubelet %s refuses this gate: %s", at, gate, r.version, rm))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n%w", ErrInput, errors.Join(errs...))
	}
	return nil
}

// Check finds the input errors Node would report for n without rendering
// it, so a run can refuse bad input before it creates tokens in a cluster.
func (r *Renderer) Check(n model.Node) error {
	if err := r.checkUser("node "+n.Name+": kubelet", n.Kubelet); err != nil {
		return err
	}
	// Nodes without their own settings share the cluster's, checked once.
	if len(n.Kubelet.Config) == 0 && r.baseChecked {
		return nil
	}
	if _, err := r.kubeletConfig(n); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// Node renders one node's assets.
func (r *Renderer) Node(n model.Node, tok token.Token) (Assets, error) {
	return r.node(n, tok, true)
}

// node renders n; with shared it fills in the parts rendered once in New
// where n allows (the result is the same bytes, see TestSharedMatchesFull).
func (r *Renderer) node(n model.Node, tok token.Token, useShared bool) (Assets, error) {
	at := "node " + n.Name
	if err := r.checkUser(at+": kubelet", n.Kubelet); err != nil {
		return Assets{}, err
	}
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

// kubeletConfig merges profile → cluster → node and sets what the model
// decides. The JSON written is the merged map, so every field the profile
// sets explicitly stays visible (the typed struct would drop zero values such
// as readOnlyPort: 0); decoding it strictly into the v1beta1 type is what
// makes it a valid KubeletConfiguration.
func (r *Renderer) kubeletConfig(n model.Node) (kubeletConfig, error) {
	m := merge(r.base, n.Kubelet.Config)
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
		return kubeletConfig{}, fmt.Errorf("%w: kubelet config is not a KubeletConfiguration: %w", ErrInput, err)
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
