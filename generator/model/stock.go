package model

import (
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML takes a plain digest (every arch) or a mapping of arch to
// digest.
func (d *Digests) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*d = Digests{AnyArch: n.Value}
		return nil
	}
	var m map[string]string
	if err := n.Decode(&m); err != nil {
		return err
	}
	*d = m
	return nil
}

// Arches kubestrap knows how to name in URLs: Go's (and Kubernetes'
// release paths') names, and Flatcar's sysext-bakery names for them.
func sysextArch(arch string) string {
	switch arch {
	case "amd64":
		return "x86-64"
	case "arm64":
		return "arm64"
	}
	return ""
}

// Paths of the sysext layout Flatcar documents: the image under
// /opt/extensions, linked from where systemd-sysext looks.
const (
	SysextDir  = "/opt/extensions/kubernetes"
	SysextLink = "/etc/extensions/kubernetes.raw"
	// SysextKubelet is where the kubernetes sysext puts the kubelet: a
	// sysext can only extend /usr (and /opt).
	SysextKubelet = "/usr/bin/kubelet"
)

// checkStock checks and resolves what makes the documents work on a stock
// image: the OS, the kubelet's install, arch, keys and networks. It runs
// after checkNodes, which has normalised names and ips.
func checkStock(c *Cluster, r *report) {
	info, ok := LookupOS(c.OS)
	if !ok {
		r.addf("os", "%s is not a known OS (known: %s)", quote(c.OS), strings.Join(OSNames(), ", "))
	}
	checkSSHKeys(r, "sshAuthorizedKeys", c.SSHAuthorizedKeys)
	checkExtras(c, r)
	checkCgroupDriver(r, "kubelet.config", c.Kubelet.Config)
	cluster := checkInstall(r, "kubelet.install", c.OS, c.Kubelet.Install)
	for i := range c.Nodes {
		n := &c.Nodes[i]
		p := indexPath("nodes", i)
		if n.Arch == "" {
			n.Arch = DefaultArch
		} else if sysextArch(n.Arch) == "" {
			r.addf(p+".arch", "%s is not a supported arch (amd64, arm64)", quote(n.Arch))
		}
		checkSSHKeys(r, p+".sshAuthorizedKeys", n.SSHAuthorizedKeys)
		checkCgroupDriver(r, p+".kubelet.config", n.Kubelet.Config)
		inst, instPath := c.Kubelet.Install, "kubelet.install"
		if n.Kubelet.Install != nil {
			inst, instPath = n.Kubelet.Install, p+".kubelet.install"
			if !checkInstall(r, instPath, c.OS, inst) {
				continue
			}
		} else if !cluster {
			continue
		}
		if !ok || r.isBad(p+".arch") {
			continue
		}
		n.binary, n.fetch = resolveInstall(r, c, info, instPath, inst, n)
	}
}

// checkInstall checks one install block's own fields; false if it is bad.
func checkInstall(r *report, p, osName string, in *Install) bool {
	if in == nil {
		return true
	}
	before := r.count()
	switch {
	case in.URL != "" && in.Sysext != nil:
		r.addf(p, "give url or sysext, not both")
	case in.URL == "" && in.Sysext == nil:
		r.addf(p, "give url (the kubelet binary) or sysext (Flatcar's kubernetes sysext)")
	case in.URL != "":
		checkSource(r, p, in.URL, in.SHA256, in.SHA512)
	default:
		if in.SHA256 != nil || in.SHA512 != nil {
			r.addf(p, "the hash goes with what it verifies: under sysext")
		}
		checkSource(r, p+".sysext", in.Sysext.URL, in.Sysext.SHA256, in.Sysext.SHA512)
		if osName != "" && osName != "flatcar" {
			// Its extension-release names Flatcar: systemd-sysext on
			// another OS refuses to merge it, and the node has no kubelet.
			r.addf(p+".sysext", "Flatcar's kubernetes sysext is for os flatcar, not %s: give url (the kubelet binary)", osName)
		}
	}
	return r.count() == before
}

// checkSource checks a URL and its digests. Nothing is fetched without a
// hash; with one, plain http is fine (the hash carries the integrity, and
// air-gapped mirrors often serve http).
func checkSource(r *report, p, raw string, sha256, sha512 Digests) {
	u, err := url.Parse(strings.NewReplacer("{version}", "v1.0.0", "{arch}", "amd64", "{sysextArch}", "x86-64").Replace(raw))
	switch {
	case raw == "":
		r.addf(p+".url", "required")
	case err != nil || !strings.HasPrefix(raw, "http://") && !strings.HasPrefix(raw, "https://") || u.Host == "" || u.Opaque != "":
		// Lowercase as written: the documents carry the URL as it is.
		r.addf(p+".url", "%s must be an http:// or https:// URL", quote(raw))
	case !validPort(u.Port()):
		r.addf(p+".url", "%s has an invalid port", quote(raw))
	case u.User != nil:
		r.addf(p+".url", "%s must not carry credentials: it is in every node's document", quote(raw))
	case u.Fragment != "":
		r.addf(p+".url", "%s must not have a fragment", quote(raw))
	case strings.ContainsAny(raw, " \"'\\`$"):
		r.addf(p+".url", "%s must not contain spaces, quotes, backslashes or $", quote(raw))
	}
	if strings.Count(raw, "{") != strings.Count(raw, "{version}")+strings.Count(raw, "{arch}")+strings.Count(raw, "{sysextArch}") {
		r.addf(p+".url", "%s has an unknown placeholder: known are {version}, {arch} and {sysextArch}", quote(raw))
	}
	switch {
	case sha256 == nil && sha512 == nil:
		r.addf(p+".sha256", "required: nothing is fetched without its hash (the .sha256 file published next to each Kubernetes release binary has it)")
	case sha256 != nil && sha512 != nil:
		r.addf(p, "give sha256 or sha512, not both")
	}
	for _, d := range []struct {
		field  string
		digest Digests
		size   int
	}{{"sha256", sha256, 32}, {"sha512", sha512, 64}} {
		for _, arch := range slices.Sorted(maps.Keys(d.digest)) {
			f := p + "." + d.field
			if arch != AnyArch {
				f = childPath(f, arch)
				if sysextArch(arch) == "" {
					r.addf(f, "%s is not a supported arch (amd64, arm64)", quote(arch))
					continue
				}
			}
			h := d.digest[arch]
			if b, err := hex.DecodeString(h); err != nil || len(b) != d.size {
				r.addf(f, "%s is not a %s digest (%d hex digits)", quote(h), d.field, 2*d.size)
			}
		}
	}
}

// resolveInstall is the node's kubelet path and what it fetches.
func resolveInstall(r *report, c *Cluster, info OSInfo, p string, in *Install, n *Node) (string, []Fetch) {
	if in == nil {
		return c.Kubelet.Binary, nil
	}
	arch := n.Arch
	fill := strings.NewReplacer("{version}", c.KubernetesVersion, "{arch}", arch, "{sysextArch}", sysextArch(arch))
	digest := func(p string, sha256, sha512 Digests) (string, bool) {
		alg, ds := "sha256", sha256
		if sha512 != nil {
			alg, ds = "sha512", sha512
		}
		d, ok := ds[arch]
		if !ok {
			d, ok = ds[AnyArch]
		}
		if !ok {
			r.addf(p+"."+alg, "has no digest for arch %s, which node %s uses", arch, n.Name)
			return "", false
		}
		return alg + "-" + strings.ToLower(d), true
	}
	if in.Sysext != nil {
		h, ok := digest(p+".sysext", in.Sysext.SHA256, in.Sysext.SHA512)
		if !ok {
			return "", nil
		}
		image := fmt.Sprintf("%s/kubernetes-%s-%s.raw", SysextDir, c.KubernetesVersion, sysextArch(arch))
		if c.kubeletBinaryGiven && c.Kubelet.Binary != SysextKubelet {
			r.addf("kubelet.binary", "%s: with a sysext the kubelet is the extension's, %s", c.Kubelet.Binary, SysextKubelet)
			return "", nil
		}
		return SysextKubelet, []Fetch{{Path: image, Mode: 0o644, URL: fill.Replace(in.Sysext.URL), Hash: h, Link: SysextLink, Sysext: true}}
	}
	h, ok := digest(p, in.SHA256, in.SHA512)
	if !ok {
		return "", nil
	}
	binary := path.Join(info.InstallDir, "kubelet")
	if c.kubeletBinaryGiven {
		binary = c.Kubelet.Binary
		if info.Ignition != "" && (binary == "/usr" || strings.HasPrefix(binary, "/usr/")) {
			r.addf("kubelet.binary", "%s: /usr is read-only on %s, so nothing can be installed there; leave kubelet.binary out (%s) or pick a writable path", binary, c.OS, path.Join(info.InstallDir, "kubelet"))
			return "", nil
		}
	}
	return binary, []Fetch{{Path: binary, Mode: 0o755, URL: fill.Replace(in.URL), Hash: h}}
}

// checkCgroupDriver refuses a cgroupDriver the kubelet does not know: the
// container runtime's config is written to match it.
func checkCgroupDriver(r *report, p string, config map[string]any) {
	v, ok := config["cgroupDriver"]
	if !ok {
		return
	}
	// Not a string: decoding it as a KubeletConfiguration says so.
	if d, ok := v.(string); ok && d != "systemd" && d != "cgroupfs" {
		r.addf(p+".cgroupDriver", "%s is not a cgroup driver: want systemd or cgroupfs", quote(d))
	}
}

// checkSSHKeys checks that each entry looks like one authorized_keys line.
func checkSSHKeys(r *report, p string, keys []string) {
	for i, k := range keys {
		f := indexPath(p, i)
		fields := strings.Fields(k)
		switch {
		case len(fields) < 2:
			r.addf(f, "%s is not a public key line like \"ssh-ed25519 AAAA... user@host\"", quote(printable(k, 40)))
		case !strings.HasPrefix(fields[0], "ssh-") && !strings.HasPrefix(fields[0], "ecdsa-") && !strings.HasPrefix(fields[0], "sk-"):
			r.addf(f, "%s does not start with a key type such as ssh-ed25519 (authorized_keys options are not accepted)", quote(printable(k, 40)))
		case strings.Contains(k, "PRIVATE KEY"):
			r.addf(f, "is a private key; give the public one (.pub)")
		}
	}
}

func checkExtras(c *Cluster, r *report) {
	exists := func(p, f string) {
		if fi, err := os.Stat(f); err != nil {
			r.addf(p, "%v", err)
		} else if !fi.Mode().IsRegular() {
			r.addf(p, "%s is not a regular file", f)
		}
	}
	for i, f := range c.Extras.Butane {
		if f == "" {
			r.addf(indexPath("extras.butane", i), "is empty: want a Butane file")
			continue
		}
		exists(indexPath("extras.butane", i), f)
	}
	if f := c.Extras.CloudConfig; f != "" {
		exists("extras.cloudConfig", f)
	}
}

// checkNetwork checks a node's static network and fills in its ip from it.
func checkNetwork(r *report, p string, n *Node) {
	nw := n.Network
	if nw == nil {
		return
	}
	nodePath := p
	p += ".network"
	if nw.MAC != "" {
		hw, err := net.ParseMAC(nw.MAC)
		if err != nil || len(hw) != 6 {
			r.addf(p+".mac", "%s is not a 48-bit MAC address like 52:54:00:12:34:56", quote(nw.MAC))
		} else {
			nw.MAC = hw.String()
		}
	} else if nw.Interface == "" {
		if n.MAC == "" {
			r.addf(p, "give mac or interface (or the node's mac) to say which interface the addresses are for")
		}
		nw.MAC = n.MAC
	}
	if nw.Interface != "" && !isInterfaceName(nw.Interface) {
		r.addf(p+".interface", "%s is not an interface name (at most 15 letters, digits, '-', '_' or '.')", quote(nw.Interface))
	}
	if len(nw.Addresses) == 0 {
		r.addf(p+".addresses", "at least one address like 10.0.0.5/24 is required")
	}
	first := -1
	var prefixes []netip.Prefix
	for i, s := range nw.Addresses {
		f := indexPath(p+".addresses", i)
		pf, err := netip.ParsePrefix(s)
		a := pf.Addr()
		switch {
		case err != nil || a.Zone() != "":
			r.addf(f, "%s is not an address with its prefix length like 10.0.0.5/24", quote(s))
			continue
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() && a.Is4():
			r.addf(f, "%s cannot be a node's address", a)
			continue
		case a == pf.Masked().Addr() && pf.Bits() < a.BitLen()-1:
			r.addf(f, "%s is a network address; give the node's own address in it", quote(s))
			continue
		}
		nw.Addresses[i] = pf.String()
		prefixes = append(prefixes, pf)
		if first < 0 {
			first = i
		}
	}
	if nw.Gateway != "" {
		if g, msg := parseIP(nw.Gateway); msg != "" {
			r.addf(p+".gateway", "%s", msg)
		} else {
			nw.Gateway = g.String()
			// An IPv6 gateway is often link-local (fe80::1), and an address
			// with a host prefix (/32, /128) has its gateway on-link
			// outside it: both are how many hosters configure servers.
			onLink := g.IsLinkLocalUnicast() && g.Is6() || slices.ContainsFunc(prefixes, func(pf netip.Prefix) bool {
				return pf.Addr().Is4() == g.Is4() && (pf.Contains(g) || pf.IsSingleIP())
			})
			if !onLink && len(prefixes) > 0 {
				r.addf(p+".gateway", "%s is in none of the node's address ranges", g)
			}
		}
	}
	for i, s := range nw.DNS {
		if a, msg := parseIP(s); msg != "" {
			r.addf(indexPath(p+".dns", i), "%s", msg)
		} else {
			nw.DNS[i] = a.String()
		}
	}
	if a := n.Addr(); a.IsValid() && len(prefixes) > 0 && !slices.ContainsFunc(prefixes, func(pf netip.Prefix) bool { return pf.Addr() == a }) {
		r.addf(p+".addresses", "none is the node's ip %s", a)
	}
	if n.IP == "" && first >= 0 {
		// The node's ip, checked as one written out would be; its problems
		// point at the address it came from.
		n.IP = prefixes[0].Addr().String()
		r.pos[nodePath+".ip"] = r.at(indexPath(p+".addresses", first))
	}
}

func isInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// stockWarnings are what a stock image's settings may not do as the user
// expects, though kubestrap cannot tell for sure.
func stockWarnings(c *Cluster, r *report) []Warning {
	var ws []Warning
	info := c.OSInfo()
	if c.OS == "flatcar" {
		if d, _ := c.kubeletBase["cgroupDriver"].(string); d != "systemd" {
			ws = append(ws, Warning{Pos: r.at("kubelet.config.cgroupDriver"), Msg: fmt.Sprintf(
				"kubelet cgroupDriver %s: Flatcar's containerd uses the systemd cgroup driver, and the two must agree or pods fail to start", quote(d))})
		}
	}
	if info.Ignition == "" {
		return ws
	}
	// One warning, at the first such node, however many there are.
	first, count := -1, 0
	for i, n := range c.Nodes {
		if n.Network != nil && len(n.fetch) > 0 {
			if first < 0 {
				first = i
			}
			count++
		}
	}
	if first >= 0 {
		ws = append(ws, Warning{Pos: r.at(indexPath("nodes", first) + ".network"), Msg: fmt.Sprintf(
			"%d node(s) with a static network (first %s) install the kubelet: Ignition fetches it in the initramfs, before the network file it writes exists, so these machines need DHCP or ip= kernel arguments on their first boot",
			count, c.Nodes[first].Name)})
	}
	return ws
}
