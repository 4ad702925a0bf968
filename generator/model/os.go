package model

import "slices"

// OSInfo is what kubestrap's documents assume of one OS: one row per OS,
// the one place those facts live.
type OSInfo struct {
	// Name is what cluster.yaml's os says.
	Name string
	// Ignition is the Butane variant of an OS that boots with Ignition;
	// "" for the cloud-init family.
	Ignition string
	// CloudInit says the OS's images run cloud-init.
	CloudInit bool
	// InstallDir is where an installed kubelet goes: a directory that is
	// writable on the OS (/usr is read-only on Fedora CoreOS and Flatcar).
	InstallDir string
	// ResolvConf is the kubelet's resolvConf: where systemd-resolved owns
	// /etc/resolv.conf, its stub (127.0.0.53) would make CoreDNS forward to
	// itself, so the kubelet gets the real upstream list. "" keeps the
	// kubelet's default (/etc/resolv.conf).
	ResolvConf string
	// ContainerdConfig says kubestrap writes /etc/containerd/config.toml
	// (CRI on, the cgroup driver the kubelet uses): the OS's own containerd
	// config disables CRI (Fedora CoreOS) or keeps containerd's defaults
	// (cgroupfs; the Debian and Ubuntu packages). Flatcar's own config
	// already has CRI and the systemd driver.
	ContainerdConfig bool
	// User is the login user that gets the SSH keys in an Ignition config.
	User string
}

// osTable is every OS kubestrap knows, by name. The empty name is an image
// prepared for kubestrap, the behaviour before os existed.
func osTable() []OSInfo {
	return []OSInfo{
		{Name: "", CloudInit: true, InstallDir: "/opt/bin", User: "core"},
		{Name: "fcos", Ignition: "fcos", InstallDir: "/opt/bin", ResolvConf: "/run/systemd/resolve/resolv.conf", ContainerdConfig: true, User: "core"},
		{Name: "flatcar", Ignition: "flatcar", InstallDir: "/opt/bin", ResolvConf: "/run/systemd/resolve/resolv.conf", User: "core"},
		{Name: "ubuntu", CloudInit: true, InstallDir: "/usr/local/bin", ResolvConf: "/run/systemd/resolve/resolv.conf", ContainerdConfig: true},
		// Debian's cloud images leave /etc/resolv.conf to DHCP, without
		// systemd-resolved.
		{Name: "debian", CloudInit: true, InstallDir: "/usr/local/bin", ContainerdConfig: true},
	}
}

// LookupOS returns the row of name.
func LookupOS(name string) (OSInfo, bool) {
	i := slices.IndexFunc(osTable(), func(o OSInfo) bool { return o.Name == name })
	if i < 0 {
		return OSInfo{}, false
	}
	return osTable()[i], true
}

// OSNames lists the OS names cluster.yaml's os takes.
func OSNames() []string {
	var names []string
	for _, o := range osTable() {
		if o.Name != "" {
			names = append(names, o.Name)
		}
	}
	return names
}

// OSInfo returns the row of the cluster's OS; valid only after Load.
func (c *Cluster) OSInfo() OSInfo {
	o, _ := LookupOS(c.OS)
	return o
}
