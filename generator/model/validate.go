package model

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/version"
	kubeletapis "k8s.io/kubelet/pkg/apis"
)

// validate checks every field, reporting all problems and normalising values
// in place. The order of the checks is the order of the problems, so it stays
// fixed: the document's fields first, then nodes in order.
func validate(c *Cluster, r *report, now time.Time, profileNames []string) {
	switch {
	case c.APIVersion == "":
		r.addf("apiVersion", "required (want %s)", APIVersion)
	case c.APIVersion != APIVersion:
		r.addf("apiVersion", "want %s, got %s", APIVersion, quote(c.APIVersion))
	}
	switch {
	case c.Kind == "":
		r.addf("kind", "required (want %s)", Kind)
	case c.Kind != Kind:
		r.addf("kind", "want %s, got %s", Kind, quote(c.Kind))
	}
	switch c.Approver {
	case "":
		c.Approver = ApproverControllerManager
	case ApproverControllerManager, ApproverKubestrap:
	default:
		r.addf("approver", "%s is not %s or %s", quote(c.Approver), ApproverControllerManager, ApproverKubestrap)
	}
	checkAPIServer(c, r)
	checkCA(c, r, now)
	svc, svcOK := checkCIDR(r, "serviceCIDR", &c.ServiceCIDR)
	pod, podOK := checkCIDR(r, "podCIDR", &c.PodCIDR)
	if svcOK && podOK {
		switch {
		case svc.Addr().Is4() != pod.Addr().Is4():
			// A single-stack cluster has one family; dual-stack would need
			// two CIDRs per field.
			r.addf("podCIDR", "%s and serviceCIDR %s must be the same IP family", pod, svc)
		case svc.Overlaps(pod):
			r.addf("podCIDR", "%s overlaps serviceCIDR %s", pod, svc)
		}
	}
	checkDNS(c, r, svc, svcOK)
	if errs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(errs) > 0 {
		r.addf("clusterDomain", "%s is not a valid DNS domain: %s", quote(c.ClusterDomain), strings.Join(errs, "; "))
	}
	var ver *version.Version
	if v, err := parseVersion(c.KubernetesVersion); err != nil {
		r.addf("kubernetesVersion", "%v", err)
	} else if !r.isBad("kubernetesVersion") {
		c.KubernetesVersion = v
		ver = c.Version()
	}
	if d, err := time.ParseDuration(c.Token.TTL); err != nil {
		r.addf("token.ttl", "%s is not a duration like 24h or 90m", quote(c.Token.TTL))
	} else if d <= 0 {
		r.addf("token.ttl", "%s must be more than zero", quote(c.Token.TTL))
	} else {
		c.Token.TTL = d.String()
	}
	checkKubelet(c, r, profileNames)
	checkNodes(c, r, svc, svcOK, pod, podOK)
	checkStock(c, r)
	checkKubeletSettings(c, r, ver)
	if r.count() == 0 {
		c.Warnings = append(c.Warnings, stockWarnings(c, r)...)
	}
}

func checkAPIServer(c *Cluster, r *report) {
	s := c.APIServer
	if s == "" {
		r.addf("apiServer", "required: the https:// URL that nodes dial (or give %s)", flagAPIServer)
		return
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Scheme != "https" || u.Opaque != "":
		r.addf("apiServer", "%s must be an https:// URL like https://10.0.0.1:6443", quote(s))
	case u.Hostname() == "":
		r.addf("apiServer", "%s has no host", quote(s))
	case !validPort(u.Port()):
		r.addf("apiServer", "%s has an invalid port", quote(s))
	case u.User != nil:
		// It would land in every node's bootstrap kubeconfig.
		r.addf("apiServer", "%s must not carry credentials", quote(s))
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		r.addf("apiServer", "%s must be an https:// URL without a path, query or fragment", quote(s))
	default:
		c.APIServer = "https://" + u.Host
	}
}

// validPort accepts an absent port (https means 443) or 1-65535.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

func checkCIDR(r *report, field string, s *string) (netip.Prefix, bool) {
	if *s == "" {
		r.addf(field, "required")
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(*s)
	if err != nil {
		r.addf(field, "%s is not a CIDR like 10.254.0.0/16", quote(*s))
		return netip.Prefix{}, false
	}
	if p != p.Masked() {
		// Tools disagree on what a CIDR with host bits means; say which
		// network is meant instead of guessing.
		r.addf(field, "%s has host bits set; write %s", quote(*s), p.Masked())
		return p.Masked(), true
	}
	*s = p.String()
	return p, true
}

func checkDNS(c *Cluster, r *report, svc netip.Prefix, svcOK bool) {
	if len(c.ClusterDNS) == 0 {
		r.addf("clusterDNS", "at least one DNS server IP is required (the cluster DNS Service's IP, inside serviceCIDR)")
		return
	}
	for i, s := range c.ClusterDNS {
		p := indexPath("clusterDNS", i)
		a, msg := parseIP(s)
		if msg != "" {
			r.addf(p, "%s", msg)
			continue
		}
		c.ClusterDNS[i] = a.String()
		if svcOK && !svc.Contains(a) {
			r.addf(p, "%s is outside serviceCIDR %s", a, svc)
		}
	}
}

func parseIP(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Sprintf("%s is not an IP address", quote(s))
	}
	return a.Unmap(), ""
}

func checkKubelet(c *Cluster, r *report, profileNames []string) {
	if !slices.Contains(profileNames, c.Kubelet.Profile) {
		r.addf("kubelet.profile", "%s is not a known profile (known: %s)", quote(c.Kubelet.Profile), strings.Join(profileNames, ", "))
	}
	switch b := c.Kubelet.Binary; {
	case !path.IsAbs(b):
		r.addf("kubelet.binary", "%s must be an absolute path on the node", quote(b))
	case strings.ContainsAny(b, " \t\n\"'\\$%;"):
		// It is the first word of the unit's ExecStart, unquoted.
		r.addf("kubelet.binary", "%s must not contain spaces, quotes or shell or systemd specials", quote(b))
	case strings.ContainsFunc(b, func(c rune) bool { return c > '~' }):
		// A no-break space or a right-to-left mark would make a path that
		// reads right and fails at boot for no visible reason.
		r.addf("kubelet.binary", "%s must be printable ASCII", quote(b))
	}
}

func isFlagName(s string) bool {
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && c == '-') {
			return false
		}
	}
	return s != ""
}

// refusedFlag says why a kubelet flag may not be given in extraArgs, and
// where the user's intent belongs instead; "" for other flags. Some are
// kubestrap's own (a second value would be ignored, or override kubestrap's
// and break the join); the others would override, from the command line,
// KubeletConfiguration fields whose weakening kubestrap checks and warns
// about in kubelet.config (see profiles.Openings).
func refusedFlag(name string) string {
	switch name {
	case "config":
		return "is set by kubestrap: put KubeletConfiguration fields in kubelet.config"
	case "bootstrap-kubeconfig", "kubeconfig", "cert-dir":
		return "is set by kubestrap: it names the files that TLS bootstrapping reads and writes"
	case "hostname-override":
		return "is set by kubestrap: it is the node's name"
	case "node-ip":
		return "is set by kubestrap: it is the node's ip"
	case "node-labels":
		return "is set by kubestrap: use the node's labels"
	case "address":
		return "is set by kubestrap, in the kubelet config: it is the node's ip"
	case "cluster-dns", "cluster-domain":
		return "is set by kubestrap, in the kubelet config: it is the cluster's clusterDNS and clusterDomain"
	case "client-ca-file":
		return "is set by kubestrap, in the kubelet config: it is the cluster CA the document writes"
	}
	field := map[string]string{
		"anonymous-auth":               "authentication.anonymous.enabled",
		"authorization-mode":           "authorization.mode",
		"authentication-token-webhook": "authentication.webhook.enabled",
		"read-only-port":               "readOnlyPort",
		"healthz-bind-address":         "healthzBindAddress",
		"tls-min-version":              "tlsMinVersion",
	}[name]
	if field != "" {
		return "would override the kubelet config's " + field + " from the command line, unchecked: set it in kubelet.config, where kubestrap checks and warns about what it opens"
	}
	return ""
}

// kubestrapFields are the KubeletConfiguration fields (JSON paths) render
// sets from the model, with where the user's intent belongs instead: a value
// in kubelet.config would be silently replaced.
func kubestrapFields() []struct{ path, hint string } {
	return []struct{ path, hint string }{
		{"apiVersion", "kubestrap writes kubelet.config.k8s.io/v1beta1"},
		{"kind", "kubestrap writes KubeletConfiguration"},
		{"address", "it is the node's ip"},
		{"clusterDNS", "it is the cluster's clusterDNS"},
		{"clusterDomain", "it is the cluster's clusterDomain"},
		{"authentication.x509.clientCAFile", "it is the cluster CA the document writes"},
	}
}

// nodeChecker checks nodes in order, remembering values that must be unique.
type nodeChecker struct {
	r          *report
	svc, pod   netip.Prefix
	svcOK      bool
	podOK      bool
	names, mac map[string]int
	ips        map[netip.Addr]int
	// ids holds each uuid, serial and hostname seen, by field.
	ids map[string]map[string]int
}

func checkNodes(c *Cluster, r *report, svc netip.Prefix, svcOK bool, pod netip.Prefix, podOK bool) {
	if len(c.Nodes) == 0 {
		r.addf("nodes", "at least one node is required")
		return
	}
	nc := &nodeChecker{
		r: r, svc: svc, svcOK: svcOK, pod: pod, podOK: podOK,
		names: map[string]int{}, mac: map[string]int{}, ips: map[netip.Addr]int{},
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		p := indexPath("nodes", i)
		nc.name(i, p, n)
		nc.hwaddr(i, p, n)
		nc.identity(i, p, n)
		// A static network may give the ip, which then takes every check
		// an ip written out does.
		checkNetwork(r, p, n)
		nc.networkMAC(i, p, n)
		nc.ip(i, p, n)
		checkLabels(r, p+".labels", n.Labels)
	}
}

// first says where node j, which holds a value seen again, is.
func (nc *nodeChecker) first(j int, field string) string {
	p := indexPath("nodes", j)
	if at := nc.r.at(p + "." + field).String(); at != "" {
		return p + ", " + at
	}
	return p
}

func (nc *nodeChecker) name(i int, p string, n *Node) {
	f := p + ".name"
	if n.Name == "" {
		nc.r.addf(f, "required")
		return
	}
	if errs := validation.IsDNS1123Subdomain(n.Name); len(errs) > 0 {
		nc.r.addf(f, "%s is not a valid node name: %s", quote(n.Name), strings.Join(errs, "; "))
		return
	}
	if j, dup := nc.names[n.Name]; dup {
		nc.r.addf(f, "duplicate name %s (first used by %s)", quote(n.Name), nc.first(j, "name"))
		return
	}
	nc.names[n.Name] = i
}

func (nc *nodeChecker) ip(i int, p string, n *Node) {
	f := p + ".ip"
	if n.IP == "" {
		// DHCP or autoscaling: the kubelet finds its address. A static
		// network fills it in (checkNetwork).
		return
	}
	a, msg := parseIP(n.IP)
	if msg != "" {
		nc.r.addf(f, "%s", msg)
		return
	}
	n.IP = a.String()
	switch {
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		nc.r.addf(f, "%s cannot be a node's address", a)
	case nc.svcOK && nc.svc.Contains(a):
		nc.r.addf(f, "%s is inside serviceCIDR %s", a, nc.svc)
	case nc.podOK && nc.pod.Contains(a):
		nc.r.addf(f, "%s is inside podCIDR %s", a, nc.pod)
	}
	if j, dup := nc.ips[a]; dup {
		nc.r.addf(f, "duplicate IP %s (first used by %s)", a, nc.first(j, "ip"))
		return
	}
	nc.ips[a] = i
}

func (nc *nodeChecker) hwaddr(i int, p string, n *Node) {
	if n.MAC == "" {
		return
	}
	f := p + ".mac"
	hw, err := net.ParseMAC(n.MAC)
	if err != nil || len(hw) != 6 {
		nc.r.addf(f, "%s is not a 48-bit MAC address like 52:54:00:12:34:56", quote(n.MAC))
		return
	}
	// PXE servers match lowercase colon form; 52-54-00-... would not match.
	n.MAC = hw.String()
	if j, dup := nc.mac[n.MAC]; dup {
		nc.r.addf(f, "duplicate MAC %s (first used by %s)", n.MAC, nc.first(j, "mac"))
		return
	}
	nc.mac[n.MAC] = i
}

// networkMAC keeps a static network's MAC unique across nodes, as node
// MACs are: two nodes configuring one interface is a copy-paste error.
func (nc *nodeChecker) networkMAC(i int, p string, n *Node) {
	if n.Network == nil || n.Network.MAC == "" || n.Network.MAC == n.MAC || nc.r.isBad(p+".network.mac") {
		return
	}
	if j, dup := nc.mac[n.Network.MAC]; dup && j != i {
		nc.r.addf(p+".network.mac", "duplicate MAC %s (first used by %s)", n.Network.MAC, nc.first(j, "mac"))
		return
	}
	nc.mac[n.Network.MAC] = i
}

func checkLabels(r *report, field string, labels map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		p := childPath(field, k)
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			r.addf(p, "%s is not a valid label key: %s", quote(k), strings.Join(errs, "; "))
		} else if isKubernetesLabel(k) && !kubeletapis.IsKubeletLabel(k) {
			r.addf(p, "the kubelet refuses to start with --node-labels in the kubernetes.io and k8s.io namespaces "+
				"(except kubelet.kubernetes.io/*, node.kubernetes.io/* and a few well-known keys such as topology.kubernetes.io/zone); "+
				"set this label with kubectl after the node joins")
		}
		if errs := validation.IsValidLabelValue(labels[k]); len(errs) > 0 {
			r.addf(p, "%s is not a valid label value: %s", quote(labels[k]), strings.Join(errs, "; "))
		}
	}
}

// isKubernetesLabel mirrors the kubelet's own test of its --node-labels.
func isKubernetesLabel(key string) bool {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	return ns == "kubernetes.io" || strings.HasSuffix(ns, ".kubernetes.io") ||
		ns == "k8s.io" || strings.HasSuffix(ns, ".k8s.io")
}
