package ignition

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/kubestrap/kubestrap/generator/render"
)

// Where each Ignition OS reads a static network from: Fedora CoreOS runs
// NetworkManager, Flatcar systemd-networkd. The names sort before the
// OS's own DHCP defaults (Flatcar's zz-default.network), so they win.
const (
	NetworkManagerPath = "/etc/NetworkManager/system-connections/kubestrap.nmconnection"
	NetworkdPath       = "/etc/systemd/network/10-kubestrap.network"
)

// lower turns what the Assets say in the abstract into the files an
// Ignition OS of variant reads: the static network. It is idempotent (its
// result has no Network left), so every entry point may call it.
func lower(a render.Assets, variant string) (render.Assets, error) {
	if a.Network == nil {
		return a, nil
	}
	var f render.File
	var err error
	switch variant {
	case VariantFlatcar:
		f.Path, f.Mode = NetworkdPath, 0o644
		f.Contents, err = networkdFile(*a.Network)
	default:
		// NetworkManager ignores keyfiles that others can read.
		f.Path, f.Mode = NetworkManagerPath, 0o600
		f.Contents, err = keyfile(*a.Network)
	}
	if err != nil {
		return a, fmt.Errorf("%w: node %q: static network: %w", ErrInvalidGenerated, a.Node, err)
	}
	a.Files = append(append([]render.File(nil), a.Files...), f)
	a.Network = nil
	return a, nil
}

// split separates addresses by IP family; model.Load has checked them.
func split(addrs []string) (v4, v6 []netip.Prefix, err error) {
	for _, s := range addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, nil, err
		}
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return v4, v6, nil
}

// networkdFile is a systemd-networkd .network file, serialized with the
// same unit-file library as the kubelet's unit.
func networkdFile(n render.Network) ([]byte, error) {
	var opts []*unit.UnitOption
	if n.MAC != "" {
		opts = append(opts, unit.NewUnitOption("Match", "MACAddress", n.MAC))
	}
	if n.Interface != "" {
		opts = append(opts, unit.NewUnitOption("Match", "Name", n.Interface))
	}
	for _, a := range n.Addresses {
		opts = append(opts, unit.NewUnitOption("Network", "Address", a))
	}
	if n.Gateway != "" {
		opts = append(opts, unit.NewUnitOption("Network", "Gateway", n.Gateway))
	}
	for _, d := range n.DNS {
		opts = append(opts, unit.NewUnitOption("Network", "DNS", d))
	}
	b, err := io.ReadAll(unit.Serialize(opts))
	return append([]byte("# kubestrap: the node's static network.\n"), b...), err
}

// keyfile is a NetworkManager connection profile in its keyfile format.
func keyfile(n render.Network) ([]byte, error) {
	v4, v6, err := split(n.Addresses)
	if err != nil {
		return nil, err
	}
	gw, err := netip.ParseAddr(n.Gateway)
	if n.Gateway != "" && err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("# kubestrap: the node's static network.\n[connection]\nid=kubestrap\ntype=ethernet\nautoconnect=true\n")
	if n.Interface != "" {
		fmt.Fprintf(&b, "interface-name=%s\n", n.Interface)
	}
	if n.MAC != "" {
		fmt.Fprintf(&b, "\n[ethernet]\nmac-address=%s\n", n.MAC)
	}
	family := func(name string, addrs []netip.Prefix, is4 bool, without string) {
		fmt.Fprintf(&b, "\n[%s]\n", name)
		if len(addrs) == 0 {
			fmt.Fprintf(&b, "method=%s\n", without)
			return
		}
		b.WriteString("method=manual\n")
		for i, a := range addrs {
			fmt.Fprintf(&b, "address%d=%s\n", i+1, a)
		}
		if gw.IsValid() && gw.Is4() == is4 {
			fmt.Fprintf(&b, "gateway=%s\n", gw)
		}
		var dns []string
		for _, d := range n.DNS {
			if a, err := netip.ParseAddr(d); err == nil && a.Is4() == is4 {
				dns = append(dns, a.String())
			}
		}
		if len(dns) > 0 {
			fmt.Fprintf(&b, "dns=%s;\n", strings.Join(dns, ";"))
		}
	}
	// A node given only IPv6 addresses has no IPv4; one given only IPv4
	// keeps whatever the kernel does for IPv6 (router advertisements).
	family("ipv4", v4, true, "disabled")
	family("ipv6", v6, false, "ignore")
	return []byte(b.String()), nil
}
