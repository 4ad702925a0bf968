// Package approve decides kubelet certificate signing requests by the node
// list, and is the controller that applies those decisions: a kubelet client
// CSR made with a node's bootstrap token may only name that node, a serving
// CSR only names and addresses the node list and the node's Node give it
// (never the cluster's own or another listed node's), and a node's tokens
// end when the node has joined.
package approve

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

// Identities and groups the API server gives kubelets.
const (
	NodeUserPrefix      = "system:node:"
	NodesGroup          = "system:nodes"
	BootstrapUserPrefix = bootstrapapi.BootstrapUserPrefix // "system:bootstrap:"
)

// Verdict is what to do with a CSR.
type Verdict int

const (
	// Skip leaves the CSR to someone else: it is not kubestrap's.
	Skip Verdict = iota
	Approve
	Deny
)

func (v Verdict) String() string {
	switch v {
	case Approve:
		return "approve"
	case Deny:
		return "deny"
	}
	return "skip"
}

// Kind says which of the approver's rules a CSR falls under.
type Kind string

const (
	KindBootstrap Kind = "bootstrap" // client certificate, from a bootstrap token
	KindRenewal   Kind = "renewal"   // client certificate, from the node itself
	KindServing   Kind = "serving"   // serving certificate, from the node itself
	KindOther     Kind = "other"
)

// Decision is a verdict and why, for the CSR's condition and its Event.
type Decision struct {
	Verdict Verdict
	Kind    Kind
	// Reason is a CamelCase word for the condition; Message a sentence.
	Reason  string
	Message string
	// Node is the node the CSR is for, when known; TokenID the bootstrap
	// token it was made with.
	Node    string
	TokenID string
}

// Condition reasons.
const (
	ReasonApproved = "KubestrapApproved"
	ReasonDenied   = "KubestrapDenied"
)

// Node is what the approver knows of one node of the list.
type Node struct {
	Name string
	// IPs a serving certificate may name besides the Node's own
	// status.addresses: the node's ip and its static network's addresses.
	IPs []netip.Addr
	// DNSNames a serving certificate may name: the node name and its
	// hostname.
	DNSNames []string
}

// Policy is the approver's rule book.
type Policy struct {
	// Nodes by name, and by bootstrap group (token.Group of the name).
	nodes  map[string]*Node
	groups map[string]*Node
	// owner is the listed node each address of the list belongs to.
	owner map[netip.Addr]string
	// reserved are addresses no node's serving certificate may name,
	// whatever its Node's status says: a node writes its own
	// status.addresses, and the kubelet-serving signer is commonly the
	// cluster CA, so a certificate for the API server's or a Service's
	// address would let a node stand in for them.
	reserved []netip.Prefix
	// Strict denies the CSRs for the two kubelet signers that are not
	// kubestrap's (other bootstrap tokens, nodes not in the list) instead
	// of leaving them to another approver.
	Strict bool
	// MaxServingExpiration bounds the lifetime a serving CSR may ask for
	// (spec.expirationSeconds). A CSR that asks none gets the signer's
	// default, which the approver cannot see.
	MaxServingExpiration time.Duration
}

// DefaultMaxServingExpiration is a year, kube-controller-manager's default
// --cluster-signing-duration.
const DefaultMaxServingExpiration = 365 * 24 * time.Hour

// NewPolicy is the rule book for the node list. reserved are the ranges no
// serving certificate may name (the service CIDR, the API server's
// address; see ReservedFor).
func NewPolicy(nodes []model.Node, reserved ...netip.Prefix) *Policy {
	p := &Policy{nodes: map[string]*Node{}, groups: map[string]*Node{}, owner: map[netip.Addr]string{},
		reserved: reserved, MaxServingExpiration: DefaultMaxServingExpiration}
	for _, n := range nodes {
		an := &Node{Name: n.Name, DNSNames: []string{n.Name}}
		if n.Hostname != "" && n.Hostname != n.Name {
			an.DNSNames = append(an.DNSNames, n.Hostname)
		}
		if a := n.Addr(); a.IsValid() {
			an.IPs = append(an.IPs, a)
		}
		if n.Network != nil {
			for _, cidr := range n.Network.Addresses {
				if pfx, err := netip.ParsePrefix(cidr); err == nil && !slices.Contains(an.IPs, pfx.Addr()) {
					an.IPs = append(an.IPs, pfx.Addr())
				}
			}
		}
		p.nodes[n.Name] = an
		p.groups[token.Group(n.Name)] = an
		for _, a := range an.IPs {
			p.owner[a] = n.Name
		}
	}
	return p
}

// ReservedFor are the cluster's ranges that no node's serving certificate
// may name: its service CIDR (the kubernetes Service, cluster DNS) and the
// API server's address when it is an IP.
func ReservedFor(c *model.Cluster) []netip.Prefix {
	var r []netip.Prefix
	if pfx, err := netip.ParsePrefix(c.ServiceCIDR); err == nil {
		r = append(r, pfx.Masked())
	}
	if u, err := url.Parse(c.APIServer); err == nil {
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			r = append(r, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return r
}

// Node returns the node of the list with that name.
func (p *Policy) Node(name string) (*Node, bool) {
	n, ok := p.nodes[name]
	return n, ok
}

// Lookups are what a decision reads of the cluster: a bootstrap token's
// Secret by id and a Node by name, nil when there is none.
type Lookups struct {
	Token func(id string) *corev1.Secret
	Node  func(name string) *corev1.Node
}

// Owned reports whether a token Secret is one kubestrap minted.
func Owned(s *corev1.Secret) bool {
	return s != nil && s.Type == bootstrapapi.SecretTypeBootstrapToken && s.Labels[token.LabelManagedBy] == token.ManagedBy
}

// Finished reports whether the CSR was approved or denied already (or
// failed).
func Finished(csr *certv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certv1.CertificateApproved, certv1.CertificateDenied, certv1.CertificateFailed:
			return true
		}
	}
	return false
}

// Approved reports whether the CSR carries an Approved condition.
func Approved(csr *certv1.CertificateSigningRequest) bool {
	return slices.ContainsFunc(csr.Status.Conditions, func(c certv1.CertificateSigningRequestCondition) bool {
		return c.Type == certv1.CertificateApproved
	})
}

// BootstrapNode is the node of the list whose bootstrap group the CSR's
// requester carried, and the token id, for a CSR made with a bootstrap
// token; ok is false for any other CSR. The groups are the API server's
// record of who asked, so they name the token's node even after the token
// is gone.
func (p *Policy) BootstrapNode(csr *certv1.CertificateSigningRequest) (node, id string, ok bool) {
	id, isToken := strings.CutPrefix(csr.Spec.Username, BootstrapUserPrefix)
	if !isToken {
		return "", "", false
	}
	for _, g := range csr.Spec.Groups {
		if n, found := p.groups[g]; found {
			return n.Name, id, true
		}
	}
	return "", id, false
}

// Decide is the verdict on one CSR that is neither approved nor denied yet.
func (p *Policy) Decide(csr *certv1.CertificateSigningRequest, look Lookups) Decision {
	switch csr.Spec.SignerName {
	case certv1.KubeAPIServerClientKubeletSignerName:
		if strings.HasPrefix(csr.Spec.Username, BootstrapUserPrefix) {
			return p.bootstrap(csr, look)
		}
		if strings.HasPrefix(csr.Spec.Username, NodeUserPrefix) {
			return p.renewal(csr)
		}
		return p.notOurs(Decision{Kind: KindOther}, "requester %s is neither a bootstrap token nor a node", clip(csr.Spec.Username))
	case certv1.KubeletServingSignerName:
		return p.serving(csr, look)
	}
	return Decision{Kind: KindOther, Message: "signer " + csr.Spec.SignerName + " is not a kubelet's"}
}

func (p *Policy) notOurs(d Decision, format string, a ...any) Decision {
	d.Message = fmt.Sprintf(format, a...)
	if p.Strict {
		d.Verdict, d.Reason = Deny, ReasonDenied
		d.Message += " (--strict)"
	}
	return d
}

func deny(d Decision, format string, a ...any) Decision {
	d.Verdict, d.Reason, d.Message = Deny, ReasonDenied, fmt.Sprintf(format, a...)
	return d
}

func approve(d Decision, format string, a ...any) Decision {
	d.Verdict, d.Reason, d.Message = Approve, ReasonApproved, fmt.Sprintf(format, a...)
	return d
}

// bootstrap binds a token to its node: the token's group names one node
// of the list, and the CSR may ask for that node's name only.
func (p *Policy) bootstrap(csr *certv1.CertificateSigningRequest, look Lookups) Decision {
	node, id, ok := p.BootstrapNode(csr)
	d := Decision{Kind: KindBootstrap, TokenID: id, Node: node}
	secret := look.Token(id)
	if !ok {
		if Owned(secret) {
			// The list may be newer than this approver's copy: another
			// approver (or this one, restarted) decides.
			return p.notOurs(d, "token %s was minted for node %s, which is not in the node list", id, clip(secret.Annotations[token.AnnotationNode]))
		}
		return p.notOurs(d, "token %s is not kubestrap's (no node group of the list)", id)
	}
	if n := countNodeGroups(p, csr.Spec.Groups); n > 1 {
		return deny(d, "token %s carries the bootstrap groups of %d nodes", id, n)
	}
	// The Secret is gone once the node joined, or when serve retired it
	// while its kubelet was asking: the groups the API server recorded
	// bind the CSR then. A Secret that is there must agree with them.
	if secret != nil {
		if !Owned(secret) {
			return deny(d, "token %s carries node %s's group but is not kubestrap's", id, node)
		}
		if owner := secret.Annotations[token.AnnotationNode]; owner != node {
			return deny(d, "token %s was minted for node %q but carries node %s's group", id, owner, node)
		}
		if g := string(secret.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]); g != token.Group(node) {
			return deny(d, "token %s's groups are %q, not %s alone", id, g, token.Group(node))
		}
	}
	req, err := parse(csr)
	if err != nil {
		return deny(d, "token %s (node %s): %v", id, node, err)
	}
	if want := NodeUserPrefix + node; req.Subject.CommonName != want {
		return deny(d, "token %s was minted for node %s, but the CSR asks for %s", id, node, clip(req.Subject.CommonName))
	}
	if err := clientShape(req, csr.Spec.Usages); err != nil {
		return deny(d, "token %s (node %s): %v", id, node, err)
	}
	return approve(d, "token %s is node %s's; the CSR asks for that node's client certificate", id, node)
}

func countNodeGroups(p *Policy, groups []string) int {
	n := 0
	for _, g := range groups {
		if _, ok := p.groups[g]; ok {
			n++
		}
	}
	return n
}

// renewal is what kube-controller-manager's selfnodeclient rule approves:
// a node renewing its own client certificate.
func (p *Policy) renewal(csr *certv1.CertificateSigningRequest) Decision {
	name := strings.TrimPrefix(csr.Spec.Username, NodeUserPrefix)
	_, req, d, ok := p.ownRequest(csr, Decision{Kind: KindRenewal, Node: name}, "node %s may renew only its own certificate, not %s")
	if !ok {
		return d
	}
	if err := clientShape(req, csr.Spec.Usages); err != nil {
		return deny(d, "node %s: %v", name, err)
	}
	return approve(d, "node %s renews its own client certificate", name)
}

// ownRequest checks what a node asking for itself must be: a node of the
// list, in group system:nodes, with a request that verifies and names the
// requester (mismatch says so, given the node and the name asked for). ok
// is false with the verdict in d.
func (p *Policy) ownRequest(csr *certv1.CertificateSigningRequest, d Decision, mismatch string) (*Node, *x509.CertificateRequest, Decision, bool) {
	n, listed := p.nodes[d.Node]
	if !listed {
		return nil, nil, p.notOurs(d, "node %s is not in the node list", d.Node), false
	}
	if !slices.Contains(csr.Spec.Groups, NodesGroup) {
		return nil, nil, deny(d, "requester %s is not in group %s", csr.Spec.Username, NodesGroup), false
	}
	req, err := parse(csr)
	if err != nil {
		return nil, nil, deny(d, "node %s: %v", d.Node, err), false
	}
	if req.Subject.CommonName != csr.Spec.Username {
		return nil, nil, deny(d, mismatch, d.Node, clip(req.Subject.CommonName)), false
	}
	return n, req, d, true
}

// serving approves a kubelet's serving certificate for the names and
// addresses the node list and the Node object give it.
func (p *Policy) serving(csr *certv1.CertificateSigningRequest, look Lookups) Decision {
	name, isNode := strings.CutPrefix(csr.Spec.Username, NodeUserPrefix)
	d := Decision{Kind: KindServing, Node: name}
	if !isNode {
		return p.notOurs(d, "requester %s is not a node", clip(csr.Spec.Username))
	}
	n, req, d, ok := p.ownRequest(csr, d, "node %s asks for a serving certificate as %s")
	if !ok {
		return d
	}
	if err := subjectShape(req); err != nil {
		return deny(d, "node %s: %v", name, err)
	}
	if err := usages(csr.Spec.Usages, certv1.UsageServerAuth); err != nil {
		return deny(d, "node %s: %v", name, err)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return deny(d, "node %s: a serving certificate names no e-mail address or URI", name)
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return deny(d, "node %s: the CSR names no DNS name or IP address", name)
	}
	if max := p.MaxServingExpiration; csr.Spec.ExpirationSeconds != nil && time.Duration(*csr.Spec.ExpirationSeconds)*time.Second > max {
		return deny(d, "node %s asks for %v, more than the %v allowed", name, time.Duration(*csr.Spec.ExpirationSeconds)*time.Second, max)
	}
	allowed := slices.Clone(n.IPs)
	var obj *corev1.Node
	if look.Node != nil {
		obj = look.Node(name)
	}
	if obj != nil {
		for _, a := range obj.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				allowed = append(allowed, ip.Unmap())
			}
		}
	}
	for _, ip := range req.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if ok {
			a = a.Unmap()
			if other, taken := p.owner[a]; taken && other != name {
				return deny(d, "node %s: IP address %s is node %s's", name, a, other)
			}
			if slices.ContainsFunc(p.reserved, func(r netip.Prefix) bool { return r.Contains(a) }) && !slices.Contains(n.IPs, a) {
				return deny(d, "node %s: IP address %s is the cluster's own (service CIDR or API server)", name, a)
			}
		}
		if !ok || !slices.Contains(allowed, a) {
			if obj == nil {
				return deny(d, "node %s: IP address %s is not the node list's and there is no Node object yet", name, ip)
			}
			return deny(d, "node %s: IP address %s is neither the node list's nor in the Node's status.addresses", name, ip)
		}
	}
	for _, dns := range req.DNSNames {
		if !slices.Contains(n.DNSNames, dns) {
			return deny(d, "node %s: DNS name %s is not the node's name or hostname", name, clip(dns))
		}
	}
	return approve(d, "node %s's serving certificate names only its own names and addresses", name)
}

func parse(csr *certv1.CertificateSigningRequest) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, fmt.Errorf("the request is not one PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the request does not parse: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request's signature does not verify: %w", err)
	}
	return req, nil
}

// clientShape is what a kubelet client certificate looks like: O=system:nodes,
// no SANs, client usages.
func clientShape(req *x509.CertificateRequest, u []certv1.KeyUsage) error {
	if err := subjectShape(req); err != nil {
		return err
	}
	if len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses)+len(req.URIs) > 0 {
		return fmt.Errorf("a kubelet client certificate names no DNS name, IP, e-mail address or URI")
	}
	return usages(u, certv1.UsageClientAuth)
}

// usages allows digital signature and key encipherment beside the one
// usage the certificate is for, which it must have.
func usages(u []certv1.KeyUsage, required certv1.KeyUsage) error {
	if !slices.Contains(u, required) {
		return fmt.Errorf("usages %q lack %q", u, required)
	}
	for _, x := range u {
		if x != required && x != certv1.UsageDigitalSignature && x != certv1.UsageKeyEncipherment {
			return fmt.Errorf("usage %q is not a kubelet's", x)
		}
	}
	return nil
}

var (
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
)

// subjectShape wants the subject to be exactly one CN and O=system:nodes:
// anything else in a node's certificate is something a signer might copy
// and a consumer might trust.
func subjectShape(req *x509.CertificateRequest) error {
	if !slices.Equal(req.Subject.Organization, []string{NodesGroup}) {
		return fmt.Errorf("organization %q, want [%s]", req.Subject.Organization, NodesGroup)
	}
	for _, n := range req.Subject.Names {
		if !n.Type.Equal(oidCommonName) && !n.Type.Equal(oidOrganization) {
			return fmt.Errorf("the subject has attribute %s beside CN and O", n.Type)
		}
	}
	if len(req.Subject.Names) != 2 {
		return fmt.Errorf("the subject has %d attributes, want CN and O", len(req.Subject.Names))
	}
	return nil
}

// clip quotes a requester-chosen string for a message, cut to a length that
// keeps conditions and Events small whatever a CSR holds.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
