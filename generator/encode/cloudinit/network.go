package cloudinit

import (
	"bytes"
	"fmt"
	"net/netip"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/render"
)

// NetworkConfigName is the NoCloud seed's file for a static network, beside
// user-data and meta-data.
const NetworkConfigName = "network-config"

// networkConfig is cloud-init's network configuration version 2 (netplan's
// format), for one interface.
type networkConfig struct {
	Network struct {
		Version   int                 `yaml:"version"`
		Ethernets map[string]ethernet `yaml:"ethernets"`
	} `yaml:"network"`
}

type ethernet struct {
	Match       *match       `yaml:"match,omitempty"`
	SetName     string       `yaml:"set-name,omitempty"`
	DHCP4       bool         `yaml:"dhcp4"`
	DHCP6       bool         `yaml:"dhcp6"`
	Addresses   []string     `yaml:"addresses"`
	Routes      []route      `yaml:"routes,omitempty"`
	Nameservers *nameservers `yaml:"nameservers,omitempty"`
}

type match struct {
	MACAddress string `yaml:"macaddress,omitempty"`
	Name       string `yaml:"name,omitempty"`
}

type route struct {
	To  string `yaml:"to"`
	Via string `yaml:"via"`
}

type nameservers struct {
	Addresses []string `yaml:"addresses"`
}

// NetworkConfig returns a's NoCloud network-config, or nil for a node
// without a static network (cloud-init then does DHCP).
func NetworkConfig(a render.Assets) ([]byte, error) {
	n := a.Network
	if n == nil {
		return nil, nil
	}
	var nc networkConfig
	nc.Network.Version = 2
	e := ethernet{Addresses: n.Addresses}
	// By MAC where known: interface names differ between images. The id is
	// the interface's name when the user gave one: cloud-init's renderers
	// take it as the name (its ENI renderer renames the MAC's interface to
	// it, its networkd renderer matches on it), netplan's only as a label.
	id := n.Interface
	if id == "" {
		id = "kubestrap0"
	}
	if n.MAC != "" {
		e.Match = &match{MACAddress: n.MAC}
		e.SetName = n.Interface
	}
	if n.Gateway != "" {
		// The default route as a prefix: netplan takes "default" too, but
		// cloud-init before 23.x refuses it ("Address default is not a
		// valid ip address").
		to := "0.0.0.0/0"
		if gw, err := netip.ParseAddr(n.Gateway); err == nil && gw.Is6() {
			to = "::/0"
		}
		e.Routes = []route{{To: to, Via: n.Gateway}}
	}
	if len(n.DNS) > 0 {
		e.Nameservers = &nameservers{Addresses: n.DNS}
	}
	nc.Network.Ethernets = map[string]ethernet{id: e}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(nc); err != nil {
		return nil, fmt.Errorf("cloud-init network-config for node %q: %w", a.Node, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("cloud-init network-config for node %q: %w", a.Node, err)
	}
	return buf.Bytes(), nil
}
