package render

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

// Rendering a kubeconfig with clientcmd and a kubelet config with its strict
// decoding costs far more than the few bytes that differ between nodes. So
// New renders both once, with a marker where the node's token and address
// go, and each node's render puts its own values in. Markers are chosen so
// that the real values are emitted the same way (unquoted, unescaped); where
// that cannot be promised, the node takes the full path.
const (
	tokenMarker   = "kubestraptokenmarker"
	addressMarker = `"KUBESTRAPADDRESSMARKER"`
)

type shared struct {
	kubeconfig [2][]byte // around tokenMarker
	config     kubeletConfig
	configJSON [2][]byte // around addressMarker
	// containerd is containerd's config by cgroup driver, when the OS
	// needs kubestrap's.
	containerd map[string][]byte
}

func (r *Renderer) prepareShared() error {
	kc, err := r.bootstrapKubeconfig(tokenMarker)
	if err != nil {
		return fmt.Errorf("bootstrap kubeconfig: %w", err)
	}
	before, after, ok := bytes.Cut(kc, []byte(tokenMarker))
	if !ok || bytes.Contains(after, []byte(tokenMarker)) {
		return fmt.Errorf("bootstrap kubeconfig: token marker not found once")
	}
	r.shared.kubeconfig = [2][]byte{before, after}

	config, err := r.kubeletConfig(model.Node{IP: addressMarker[1 : len(addressMarker)-1]})
	if err != nil {
		return err
	}
	before, after, ok = bytes.Cut(config.json, []byte(addressMarker))
	if !ok || bytes.Contains(after, []byte(addressMarker)) {
		return fmt.Errorf("kubelet config: address marker not found once")
	}
	r.shared.config, r.shared.configJSON = config, [2][]byte{before, after}
	return nil
}

// kubeconfigFor fills the token in. A token ([a-z0-9]{6}.[a-z0-9]{16}) with
// a letter other than "e" in it cannot read as a YAML number, bool, null or
// timestamp, so it is a plain string like the marker; one without might read
// as a float ("123456.1234e5678901") and be quoted, so it takes the full path.
func (s *shared) kubeconfigFor(tok token.Token) ([]byte, bool) {
	v := tok.Value()
	if s.kubeconfig[0] == nil || !strings.ContainsAny(v, "abcdfghijklmnopqrstuvwxyz") {
		return nil, false
	}
	return concat(s.kubeconfig[0], []byte(v), s.kubeconfig[1]), true
}

// configFor fills the address in for a node without kubelet settings of its
// own; an IP address needs no JSON escaping.
func (s *shared) configFor(n model.Node) (kubeletConfig, bool) {
	if s.configJSON[0] == nil || len(n.Kubelet.Config) > 0 {
		return kubeletConfig{}, false
	}
	addr := kubeletAddress(n)
	if _, err := netip.ParseAddr(addr); err != nil {
		return kubeletConfig{}, false
	}
	kc := s.config
	kc.typed.Address = addr
	kc.json = concat(s.configJSON[0], []byte(`"`+addr+`"`), s.configJSON[1])
	return kc, true
}

func concat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
