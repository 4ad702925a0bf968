// Package model holds kubestrap's input: the cluster description and its nodes,
// how they are loaded from cluster.yaml, the guide's environment.sh and node lists,
// and how they are validated.
package model

import (
	"net/netip"
	"time"
)

// APIVersion and Kind identify a cluster.yaml document.
const (
	APIVersion = "kubestrap.dev/v1alpha1"
	Kind       = "Cluster"
)

// Cluster is the whole input of one run: what every node needs to find, trust and
// join the control plane, and the nodes themselves.
type Cluster struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// APIServer is the URL nodes dial (the guide's KUBE_APISERVER).
	APIServer string `yaml:"apiServer"`
	// CAFile names the cluster CA in PEM; relative paths are relative to the
	// file that named it. Load fills CAPEM from it.
	CAFile            string    `yaml:"caFile"`
	ClusterDNS        []string  `yaml:"clusterDNS"`
	ClusterDomain     string    `yaml:"clusterDomain"`
	ServiceCIDR       string    `yaml:"serviceCIDR"`
	PodCIDR           string    `yaml:"podCIDR"`
	KubernetesVersion string    `yaml:"kubernetesVersion"`
	Token             TokenSpec `yaml:"token"`
	Kubelet           Kubelet   `yaml:"kubelet"`
	Nodes             []Node    `yaml:"nodes"`

	// CAPEM is the CA certificate's PEM bytes, read from CAFile by the loaders
	// or given by Sources.CA.
	CAPEM []byte `yaml:"-"`
	// Warnings are what Load accepted but the user must hear about: settings
	// that open the kubelet, profile settings left out for the version.
	Warnings []Warning `yaml:"-"`

	// caSource names where CAPEM came from when no CAFile was given.
	caSource string
	// kubeletBase is what KubeletBase returns, fixed by Load.
	kubeletBase map[string]any
}

// TokenSpec says what bootstrap tokens look like.
type TokenSpec struct {
	// TTL is a Go duration ("24h"); empty means DefaultTokenTTL.
	TTL string `yaml:"ttl"`
	// Signing adds the "signing" usage, which only kube-public/cluster-info
	// discovery needs; kubelet TLS bootstrapping needs "authentication" alone.
	Signing bool `yaml:"signing"`
}

// Kubelet holds the cluster-wide kubelet settings.
type Kubelet struct {
	// Profile names an embedded preset under profiles/: "hardened" or "legacy".
	Profile string `yaml:"profile"`
	// Binary is where the kubelet lives on the node.
	Binary string `yaml:"binary"`
	// ServerTLSBootstrap asks the kubelet for a CA-signed serving certificate;
	// its CSRs need an approver, which kube-controller-manager is not.
	ServerTLSBootstrap bool `yaml:"serverTLSBootstrap"`
	KubeletOverrides   `yaml:",inline"`
}

// KubeletOverrides is what the cluster and each node may add on top of the profile.
type KubeletOverrides struct {
	// Config holds KubeletConfiguration fields (JSON names), merged over the profile.
	Config map[string]any `yaml:"config"`
	// ExtraArgs are extra kubelet flags, without the leading dashes.
	ExtraArgs map[string]string `yaml:"extraArgs"`
}

// Node is one machine to join.
type Node struct {
	Name    string            `yaml:"name"`
	IP      string            `yaml:"ip"`
	MAC     string            `yaml:"mac"`
	Labels  map[string]string `yaml:"labels"`
	Kubelet KubeletOverrides  `yaml:"kubelet"`
}

// Defaults for what neither a file nor a flag gives.
const (
	DefaultTokenTTL      = 24 * time.Hour
	DefaultProfile       = "hardened"
	DefaultKubeletBinary = "/usr/bin/kubelet"
	DefaultClusterDomain = "cluster.local"
)

// Addr returns the node's IP; valid only after Load.
func (n Node) Addr() netip.Addr {
	a, _ := netip.ParseAddr(n.IP)
	return a
}

// TTL returns the token lifetime; valid only after Load.
func (c *Cluster) TTL() time.Duration {
	if c.Token.TTL == "" {
		return DefaultTokenTTL
	}
	d, _ := time.ParseDuration(c.Token.TTL)
	return d
}
