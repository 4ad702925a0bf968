// Package render turns one node of a validated cluster, with its bootstrap
// token, into the files its first boot must lay down. Rendering a node is a
// pure function: no I/O and no shared state, so nodes render in parallel.
package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	// DropInPath holds the kubelet's command line. A vendor drop-in
	// (kubeadm's package and Flatcar's sysext ship
	// kubelet.service.d/10-kubeadm.conf) resets ExecStart= with its own;
	// systemd applies drop-ins in file-name order across directories, so
	// this one, which resets it again, is applied last and wins.
	DropInPath = "/etc/systemd/system/kubelet.service.d/99-kubestrap.conf"
	// HostnamePath gives the machine its node's name (cloud-init's
	// meta-data does too, with local-hostname).
	HostnamePath = "/etc/hostname"
	// ContainerdConfigPath is containerd's configuration, written where the
	// OS's own would not serve the kubelet (model.OSInfo).
	ContainerdConfigPath = "/etc/containerd/config.toml"
	ContainerdUnit       = "containerd.service"
	SysextUnit           = "systemd-sysext.service"
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
	if c.OSInfo().ContainerdConfig {
		// One per driver: a node's kubelet config may change it.
		r.shared.containerd = map[string][]byte{
			"systemd":  containerdConfig("systemd"),
			"cgroupfs": containerdConfig("cgroupfs"),
		}
	}
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
	fetches := n.Fetches()
	unit, dropIn, err := r.unit(n, config, fetches)
	if err != nil {
		return Assets{}, fmt.Errorf("%s: %s: %w", at, UnitName, err)
	}
	a := Assets{
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
			{Path: DropInPath, Mode: UnitMode, Contents: dropIn},
			{Path: HostnamePath, Mode: 0o644, Contents: []byte(n.Name + "\n")},
		},
		Units:   []Unit{{Name: UnitName, Contents: unit}},
		SSHUser: r.cluster.OSInfo().User,
	}
	if r.shared.containerd != nil && runtimeUnits[config.typed.ContainerRuntimeEndpoint] == ContainerdUnit {
		// containerd before 2.0 cannot tell the kubelet its cgroup driver:
		// they must be set alike, per node.
		driver := config.typed.CgroupDriver
		if driver == "" {
			driver = "cgroupfs" // the kubelet's default
		}
		cfg, ok := r.shared.containerd[driver]
		if !ok {
			return Assets{}, fmt.Errorf("%s: cgroupDriver %q is neither systemd nor cgroupfs (a kubestrap bug: model.Load refuses it)", at, driver)
		}
		a.Files = append(a.Files, File{Path: ContainerdConfigPath, Mode: 0o644, Contents: cfg})
		a.Restart = append(a.Restart, ContainerdUnit)
	}
	for _, f := range fetches {
		a.Fetches = append(a.Fetches, Fetch{
			Path: f.Path, Mode: fs.FileMode(f.Mode), URL: f.URL, Hash: f.Hash,
			Link: f.Link, Sysext: f.Sysext, RequiredBy: UnitName,
		})
	}
	if keys := len(r.cluster.SSHAuthorizedKeys) + len(n.SSHAuthorizedKeys); keys > 0 {
		a.SSHAuthorizedKeys = make([]string, 0, keys)
		a.SSHAuthorizedKeys = append(a.SSHAuthorizedKeys, r.cluster.SSHAuthorizedKeys...)
		a.SSHAuthorizedKeys = append(a.SSHAuthorizedKeys, n.SSHAuthorizedKeys...)
	}
	if nw := n.Network; nw != nil {
		a.Network = &Network{
			MAC: nw.MAC, Interface: nw.Interface, Gateway: nw.Gateway,
			Addresses: slices.Clone(nw.Addresses), DNS: slices.Clone(nw.DNS),
		}
	}
	return a, nil
}

// kubeletAddress is where the kubelet listens: the node's ip, or every
// interface for a node without a fixed one.
func kubeletAddress(n model.Node) string {
	if n.IP == "" {
		return "0.0.0.0"
	}
	return n.IP
}

// containerdConfig turns on containerd's CRI plugin with the cgroup driver
// the kubelet uses: the two must agree, or pods fail to start. Version 2 of
// the format is read by containerd 1.6 and later, 2.x included.
func containerdConfig(cgroupDriver string) []byte {
	return fmt.Appendf(nil, `# Written by kubestrap: containerd's CRI plugin for the kubelet, whose
# cgroupDriver is %s.
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = %t
`, cgroupDriver, cgroupDriver == "systemd")
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
	m["address"] = kubeletAddress(n)
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

// unit builds kubelet.service and its drop-in with go-systemd's unit
// package: the unit says when the kubelet runs, the drop-in how.
func (r *Renderer) unit(n model.Node, kc kubeletConfig, fetches []model.Fetch) (unitFile, dropIn []byte, err error) {
	args := []string{
		"--config=" + KubeletConfigPath,
		"--bootstrap-kubeconfig=" + BootstrapKubeconfigPath,
		"--kubeconfig=" + KubeletKubeconfigPath,
		"--cert-dir=" + CertDir,
		"--hostname-override=" + n.Name,
	}
	if n.IP != "" {
		args = append(args, "--node-ip="+n.IP)
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
	binary := n.KubeletBinary()
	if binary == "" {
		// A Node built by hand rather than by Load.
		binary = r.cluster.Kubelet.Binary
	}
	exec.WriteString(execQuote(binary))
	for _, a := range args {
		exec.WriteString(" \\\n  ")
		exec.WriteString(execQuote(a))
	}

	after := []string{"network-online.target"}
	if ru, ok := runtimeUnits[kc.typed.ContainerRuntimeEndpoint]; ok {
		after = append(after, ru)
	}
	if slices.ContainsFunc(fetches, func(f model.Fetch) bool { return f.Sysext }) {
		// The kubelet is in the extension, which systemd-sysext merges.
		after = append(after, SysextUnit)
	}
	opts := []*unitOption{
		{"Unit", "Description", "Kubernetes kubelet (bootstrapped by kubestrap)"},
		{"Unit", "Documentation", "https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/"},
		{"Unit", "Wants", strings.Join(after, " ")},
		{"Unit", "After", strings.Join(after, " ")},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartSec", "5"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	if unitFile, err = serialize(opts); err != nil {
		return nil, nil, err
	}
	// The empty ExecStart= drops every command line set before this
	// drop-in, the unit's own and any vendor drop-in's.
	dropIn, err = serialize([]*unitOption{
		{"Service", "ExecStart", ""},
		{"Service", "ExecStart", exec.String()},
	})
	if err != nil {
		return nil, nil, err
	}
	return unitFile, append([]byte(dropInHeader), dropIn...), nil
}

// dropInHeader says what the drop-in is for to whoever finds it on a node.
const dropInHeader = "# kubestrap: the kubelet's command line. It resets ExecStart= so that\n" +
	"# no vendor drop-in (kubeadm's 10-kubeadm.conf) can replace it.\n"
