package profiles

import (
	"net/netip"
	"strconv"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Opening is a setting that opens the kubelet beyond what the hardened profile
// allows.
type Opening struct {
	// Path is the setting's JSON path in the KubeletConfiguration.
	Path string
	// Value is the setting's value, as the config spells it.
	Value string
	// Risk says what the setting opens, and to whom.
	Risk string
}

func (o Opening) String() string { return o.Path + "=" + o.Value + ": " + o.Risk }

// openingCheck finds one kind of opening: what kc sets at path, and whether
// that opens the kubelet. Unset fields have the v1beta1 defaults, which are
// the closed ones.
type openingCheck struct {
	path  string
	risk  string
	opens func(kc *kubeletv1beta1.KubeletConfiguration) (value string, opens bool)
}

// openingChecks is the one table of what weakens a kubelet: the legacy
// profile's warnings and those about a user's settings both come from it, so
// they cannot drift apart.
func openingChecks() []openingCheck {
	return []openingCheck{
		{
			path: "authentication.anonymous.enabled",
			risk: "anyone who reaches port 10250 can call the kubelet API (logs, exec, port-forward) without credentials",
			opens: func(kc *kubeletv1beta1.KubeletConfiguration) (string, bool) {
				on := kc.Authentication.Anonymous.Enabled
				return "true", on != nil && *on
			},
		},
		{
			path: "authorization.mode",
			risk: "every authenticated or anonymous request to the kubelet API is allowed, including exec into any pod on the node",
			opens: func(kc *kubeletv1beta1.KubeletConfiguration) (string, bool) {
				mode := kc.Authorization.Mode
				return string(mode), mode == kubeletv1beta1.KubeletAuthorizationModeAlwaysAllow
			},
		},
		{
			path: "readOnlyPort",
			risk: "pods, specs and metrics are served over plain HTTP without authentication to anyone who reaches that port",
			opens: func(kc *kubeletv1beta1.KubeletConfiguration) (string, bool) {
				return strconv.Itoa(int(kc.ReadOnlyPort)), kc.ReadOnlyPort != 0
			},
		},
		{
			path: "authentication.webhook.enabled",
			risk: "bearer tokens sent to the kubelet are not checked with the API server",
			opens: func(kc *kubeletv1beta1.KubeletConfiguration) (string, bool) {
				on := kc.Authentication.Webhook.Enabled
				return "false", on != nil && !*on
			},
		},
		{
			path: "healthzBindAddress",
			risk: "the kubelet's /healthz endpoint is served over plain HTTP without authentication beyond the node itself",
			opens: func(kc *kubeletv1beta1.KubeletConfiguration) (string, bool) {
				addr := kc.HealthzBindAddress
				if addr == "" {
					return "", false
				}
				ip, err := netip.ParseAddr(addr)
				return addr, err != nil || !ip.IsLoopback()
			},
		},
		{
			path: "tlsMinVersion",
			risk: "clients may connect with TLS 1.0 or 1.1, whose known weaknesses TLS 1.2 fixes",
			opens: func(kc *kubeletv1beta1.KubeletConfiguration) (string, bool) {
				v := kc.TLSMinVersion
				return v, v == "VersionTLS10" || v == "VersionTLS11"
			},
		},
	}
}

// Openings lists, in the table's order, what kc opens.
func Openings(kc *kubeletv1beta1.KubeletConfiguration) []Opening {
	var out []Opening
	for _, c := range openingChecks() {
		if value, opens := c.opens(kc); opens {
			out = append(out, Opening{Path: c.path, Value: value, Risk: c.risk})
		}
	}
	return out
}

// OpeningPaths lists the JSON paths the table looks at, so that a caller can
// tell whether a partial config can change what it says.
func OpeningPaths() []string {
	var paths []string
	for _, c := range openingChecks() {
		paths = append(paths, c.path)
	}
	return paths
}
