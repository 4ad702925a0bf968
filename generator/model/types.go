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
	CAFile            string   `yaml:"caFile"`
	ClusterDNS        []string `yaml:"clusterDNS"`
	ClusterDomain     string   `yaml:"clusterDomain"`
	ServiceCIDR       string   `yaml:"serviceCIDR"`
	PodCIDR           string   `yaml:"podCIDR"`
	KubernetesVersion string   `yaml:"kubernetesVersion"`
	// OS names the nodes' operating system (see OSNames): it decides where
	// an installed kubelet goes, the runtime socket, resolvConf and what the
	// container runtime needs. Empty: an image prepared for kubestrap.
	OS string `yaml:"os"`
	// Approver names who approves the kubelets' certificates (see
	// Approvers): kube-controller-manager, which approves any bootstrap
	// token's client CSR, or `kubestrap approve`, which binds each token
	// to its node and approves serving certificates too.
	Approver string    `yaml:"approver"`
	Token    TokenSpec `yaml:"token"`
	// SSHAuthorizedKeys are added on every node (Ignition's user core,
	// cloud-init's default user), before each node's own.
	SSHAuthorizedKeys []string `yaml:"sshAuthorizedKeys"`
	Kubelet           Kubelet  `yaml:"kubelet"`
	Extras            Extras   `yaml:"extras"`
	Nodes             []Node   `yaml:"nodes"`

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
	// kubeletBinaryGiven says kubelet.binary came from the input, not
	// from a default: an install puts the kubelet there.
	kubeletBinaryGiven bool
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
	// Binary is where the kubelet lives on the node. Empty: derived from
	// the install method and the OS (see OSInfo).
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
	// Install fetches the kubelet at first boot; a node's replaces the
	// cluster's. Nil: the image has the kubelet at kubelet.binary.
	Install *Install `yaml:"install"`
}

// Install says where a node gets its kubelet at first boot: a binary (URL)
// or Flatcar's kubernetes sysext. Nothing is fetched without a hash.
type Install struct {
	// URL may hold {version} (kubernetesVersion, "v1.37.2") and {arch}
	// (the node's arch, "amd64").
	URL    string  `yaml:"url"`
	SHA256 Digests `yaml:"sha256"`
	SHA512 Digests `yaml:"sha512"`
	Sysext *Sysext `yaml:"sysext"`
}

// Sysext is a systemd system extension image holding the kubelet under /usr.
type Sysext struct {
	// URL may hold {version}, {arch} and {sysextArch} ("x86-64", "arm64",
	// as Flatcar's sysext-bakery names its images).
	URL    string  `yaml:"url"`
	SHA256 Digests `yaml:"sha256"`
	SHA512 Digests `yaml:"sha512"`
}

// Digests is one hex digest for every arch (a plain string in YAML, kept
// under AnyArch), or a mapping of arch to digest.
type Digests map[string]string

// AnyArch is the Digests key of a digest given as a plain string.
const AnyArch = "*"

// Extras are the user's own additions, merged into every node's documents.
type Extras struct {
	// Butane names Butane config files (relative to cluster.yaml), merged
	// into each node's Ignition config in order.
	Butane []string `yaml:"butane"`
	// CloudConfig names a #cloud-config file merged into each node's
	// user-data.
	CloudConfig string `yaml:"cloudConfig"`
}

// Network is a node's static network configuration.
type Network struct {
	// MAC or Interface picks the interface (MAC wins; without either, the
	// node's mac).
	MAC       string   `yaml:"mac"`
	Interface string   `yaml:"interface"`
	Addresses []string `yaml:"addresses"` // CIDR: 10.0.0.5/24
	Gateway   string   `yaml:"gateway"`
	DNS       []string `yaml:"dns"`
}

// Node is one machine to join.
type Node struct {
	Name string `yaml:"name"`
	// IP is optional (DHCP, autoscaling): without it the kubelet picks its
	// address and listens on all interfaces. With a static network and no
	// ip, it is the network's first address.
	IP  string `yaml:"ip"`
	MAC string `yaml:"mac"`
	// UUID, Serial and Hostname identify the machine to `serve` as its
	// firmware or DHCP tells them (iPXE's ${uuid}, ${serial},
	// ${hostname}), besides its MAC.
	UUID     string `yaml:"uuid"`
	Serial   string `yaml:"serial"`
	Hostname string `yaml:"hostname"`
	Arch     string `yaml:"arch"` // amd64 (default) or arm64
	// SSHAuthorizedKeys come after the cluster's.
	SSHAuthorizedKeys []string          `yaml:"sshAuthorizedKeys"`
	Network           *Network          `yaml:"network"`
	Labels            map[string]string `yaml:"labels"`
	Kubelet           KubeletOverrides  `yaml:"kubelet"`

	// fetch is what the node fetches at boot, resolved by Load.
	fetch []Fetch
	// binary is the kubelet's path on this node, resolved by Load.
	binary string
}

// Approvers.
const (
	ApproverControllerManager = "controller-manager"
	ApproverKubestrap         = "kubestrap"
)

// Bound reports whether `kubestrap approve` decides the kubelets' CSRs.
func (c *Cluster) Bound() bool { return c.Approver == ApproverKubestrap }

// Defaults for what neither a file nor a flag gives.
const (
	DefaultTokenTTL      = 24 * time.Hour
	DefaultProfile       = "hardened"
	DefaultKubeletBinary = "/usr/bin/kubelet"
	DefaultArch          = "amd64"
	DefaultClusterDomain = "cluster.local"
)

// Addr returns the node's IP (invalid when it has none); valid only after
// Load.
func (n Node) Addr() netip.Addr {
	a, _ := netip.ParseAddr(n.IP)
	return a
}

// KubeletBinary is where the node's kubelet is; valid only after Load.
func (n Node) KubeletBinary() string { return n.binary }

// Fetches are the files the node fetches at first boot, each verified by
// its hash; valid only after Load.
func (n Node) Fetches() []Fetch { return n.fetch }

// Fetch is a file a node downloads at first boot.
type Fetch struct {
	// Path is where it goes, with Mode.
	Path string
	Mode uint32
	URL  string
	// Hash is Ignition's form: "sha256-<hex>" or "sha512-<hex>".
	Hash string
	// Link, if set, is a symlink made to Path once it is in place.
	Link string
	// Sysext marks a system extension image, merged once in place.
	Sysext bool
}

// TTL returns the token lifetime; valid only after Load.
func (c *Cluster) TTL() time.Duration {
	if c.Token.TTL == "" {
		return DefaultTokenTTL
	}
	d, _ := time.ParseDuration(c.Token.TTL)
	return d
}
