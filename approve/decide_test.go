package approve

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

var testKey = func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// request is a CSR's PEM for the template.
func request(t testing.TB, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func nodeSubject(name string) pkix.Name {
	return pkix.Name{CommonName: NodeUserPrefix + name, Organization: []string{NodesGroup}}
}

var clientUsages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth}
var servingUsages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth}

// bootstrapCSR is what a kubelet asks with node's token: CN of name.
func bootstrapCSR(t testing.TB, id, tokenNode, name string) *certv1.CertificateSigningRequest {
	return &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-" + id + "-" + name},
		Spec: certv1.CertificateSigningRequestSpec{
			SignerName: certv1.KubeAPIServerClientKubeletSignerName,
			Username:   BootstrapUserPrefix + id,
			Groups:     []string{token.Group(tokenNode), "system:bootstrappers", "system:authenticated"},
			Usages:     clientUsages,
			Request:    request(t, &x509.CertificateRequest{Subject: nodeSubject(name)}),
		},
	}
}

func servingCSR(t testing.TB, name string, dns []string, ips ...string) *certv1.CertificateSigningRequest {
	tmpl := &x509.CertificateRequest{Subject: nodeSubject(name), DNSNames: dns}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	return &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "serving-" + name},
		Spec: certv1.CertificateSigningRequestSpec{
			SignerName: certv1.KubeletServingSignerName,
			Username:   NodeUserPrefix + name,
			Groups:     []string{NodesGroup, "system:authenticated"},
			Usages:     servingUsages,
			Request:    request(t, tmpl),
		},
	}
}

// testReserved is what ReservedFor gives the cluster of baseCluster.
var testReserved = ReservedFor(&model.Cluster{ServiceCIDR: "10.254.0.0/16", APIServer: "https://172.27.129.80:6443"})

func testNodes() []model.Node {
	return []model.Node{
		{Name: "node-a", IP: "10.0.0.11"},
		{Name: "node-b", IP: "10.0.0.12", Hostname: "b"},
		{Name: "node-c.example.com", Network: &model.Network{Addresses: []string{"10.0.1.13/24", "fd00::13/64"}}},
	}
}

// tokenSecret is kubestrap's Secret for node's token id.
func tokenSecret(id, node string) *corev1.Secret {
	tok, err := token.New(id+".0123456789abcdef", node, time.Now().Add(time.Hour), false)
	if err != nil {
		panic(err)
	}
	return token.Secret(tok)
}

func lookups(secrets map[string]*corev1.Secret, nodes map[string]*corev1.Node) Lookups {
	return Lookups{
		Token: func(id string) *corev1.Secret { return secrets[id] },
		Node:  func(name string) *corev1.Node { return nodes[name] },
	}
}

func TestDecide(t *testing.T) {
	kubeadm := tokenSecret("kbadm1", "node-a")
	delete(kubeadm.Labels, token.LabelManagedBy)
	wrongGroup := tokenSecret("wrongg", "node-a")
	wrongGroup.Data["auth-extra-groups"] = []byte(token.Group("node-a") + ",system:masters")
	secrets := map[string]*corev1.Secret{
		"aaaaaa": tokenSecret("aaaaaa", "node-a"),
		"bbbbbb": tokenSecret("bbbbbb", "node-b"),
		"cccccc": tokenSecret("cccccc", "node-c.example.com"),
		"gone00": tokenSecret("gone00", "node-gone"),
		"kbadm1": kubeadm,
		"wrongg": wrongGroup,
	}
	nodeB := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "192.168.5.12"}, {Type: corev1.NodeHostName, Address: "node-b"},
		// What node-b wrote of itself to get certificates for others.
		{Type: corev1.NodeExternalIP, Address: "10.0.1.13"}, {Type: corev1.NodeExternalIP, Address: "10.254.0.1"},
		{Type: corev1.NodeExternalIP, Address: "172.27.129.80"},
	}}}
	nodes := map[string]*corev1.Node{"node-b": nodeB}
	long := int32((400 * 24 * time.Hour).Seconds())

	tests := []struct {
		name    string
		csr     func(t *testing.T) *certv1.CertificateSigningRequest
		strict  bool
		verdict Verdict
		kind    Kind
		message string // a part of the message
	}{
		{"own token, own name", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
		},
			false, Approve, KindBootstrap, "token aaaaaa is node node-a's"},
		{"fqdn node through its mapped group", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "cccccc", "node-c.example.com", "node-c.example.com")
		}, false, Approve, KindBootstrap, "node-c.example.com"},
		{"token of node-a, name of node-b", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "aaaaaa", "node-a", "node-b")
		},
			false, Deny, KindBootstrap, `token aaaaaa was minted for node node-a, but the CSR asks for "system:node:node-b"`},
		{"token deleted since: the recorded group binds", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "zzzzzz", "node-a", "node-a")
		}, false, Approve, KindBootstrap, ""},
		{"token deleted since, foreign name", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "zzzzzz", "node-a", "node-b")
		}, false, Deny, KindBootstrap, "asks for"},
		{"secret names another node than the group", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "bbbbbb", "node-a", "node-a")
		}, false, Deny, KindBootstrap, `minted for node "node-b" but carries node node-a's group`},
		{"group-carrying token that is not kubestrap's", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "kbadm1", "node-a", "node-a")
		}, false, Deny, KindBootstrap, "not kubestrap's"},
		{"secret with more groups", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "wrongg", "node-a", "node-a")
		}, false, Deny, KindBootstrap, "system:masters"},
		{"two node groups", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "zzzzzz", "node-a", "node-a")
			c.Spec.Groups = append(c.Spec.Groups, token.Group("node-b"))
			return c
		}, false, Deny, KindBootstrap, "of 2 nodes"},
		{"kubestrap token of a node not in this list (a newer list's?)", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "gone00", "node-gone", "node-gone")
		}, false, Skip, KindBootstrap, "not in the node list"},
		{"kubestrap token of a node not in the list, --strict", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "gone00", "node-gone", "node-gone")
		}, true, Deny, KindBootstrap, "not in the node list"},
		{"kubeadm's token (group system:bootstrappers:kubeadm:default-node-token)", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "abcdef", "node-a", "worker-1")
			c.Spec.Groups = []string{"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token"}
			return c
		}, false, Skip, KindBootstrap, "not kubestrap's"},
		{"kubeadm's token, --strict", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "abcdef", "node-a", "worker-1")
			c.Spec.Groups = []string{"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token"}
			return c
		}, true, Deny, KindBootstrap, "--strict"},
		{"extra organization", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.Request = request(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:node-a", Organization: []string{NodesGroup, "system:masters"}}})
			return c
		}, false, Deny, KindBootstrap, "organization"},
		{"extra subject attribute", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			s := nodeSubject("node-a")
			s.OrganizationalUnit = []string{"ops"}
			c.Spec.Request = request(t, &x509.CertificateRequest{Subject: s})
			return c
		}, false, Deny, KindBootstrap, "beside CN and O"},
		{"SAN in a client CSR", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.Request = request(t, &x509.CertificateRequest{Subject: nodeSubject("node-a"), DNSNames: []string{"kubernetes.default"}})
			return c
		}, false, Deny, KindBootstrap, "names no DNS name"},
		{"server auth usage in a client CSR", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.Usages = append(c.Spec.Usages, certv1.UsageServerAuth)
			return c
		}, false, Deny, KindBootstrap, `"server auth" is not a kubelet's`},
		{"no client auth usage", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.Usages = []certv1.KeyUsage{certv1.UsageDigitalSignature}
			return c
		}, false, Deny, KindBootstrap, "lack"},
		{"garbage request", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.Request = []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
			return c
		}, false, Deny, KindBootstrap, "does not parse"},
		{"bad signature", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			block, _ := pem.Decode(c.Spec.Request)
			block.Bytes[len(block.Bytes)-3] ^= 0xff
			c.Spec.Request = pem.EncodeToMemory(block)
			return c
		}, false, Deny, KindBootstrap, ""},
		{"renewal", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.Username, c.Spec.Groups = NodeUserPrefix+"node-a", []string{NodesGroup}
			return c
		}, false, Approve, KindRenewal, "renews"},
		{"renewal for another node", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-b")
			c.Spec.Username, c.Spec.Groups = NodeUserPrefix+"node-a", []string{NodesGroup}
			return c
		}, false, Deny, KindRenewal, "only its own"},
		{"renewal of a node not listed", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "cp-1")
			c.Spec.Username, c.Spec.Groups = NodeUserPrefix+"cp-1", []string{NodesGroup}
			return c
		}, false, Skip, KindRenewal, "not in the node list"},
		{"serving, node list's IP and hostname", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-b", []string{"node-b", "b"}, "10.0.0.12")
		}, false, Approve, KindServing, ""},
		{"serving, IP from the Node's status", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-b", []string{"node-b"}, "192.168.5.12")
		}, false, Approve, KindServing, ""},
		{"serving, static network addresses", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-c.example.com", []string{"node-c.example.com"}, "10.0.1.13", "fd00::13")
		}, false, Approve, KindServing, ""},
		{"serving, foreign IP", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-b", []string{"node-b"}, "10.9.9.8")
		}, false, Deny, KindServing, "IP address 10.9.9.8 is neither"},
		{"serving, another listed node's IP, though the Node's status claims it", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-b", []string{"node-b"}, "10.0.1.13")
		}, false, Deny, KindServing, "IP address 10.0.1.13 is node node-c.example.com's"},
		{"serving, the kubernetes Service's IP, though the Node's status claims it", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-b", []string{"node-b"}, "10.254.0.1")
		}, false, Deny, KindServing, "the cluster's own"},
		{"serving, the API server's IP, though the Node's status claims it", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-b", []string{"node-b"}, "172.27.129.80")
		}, false, Deny, KindServing, "the cluster's own"},
		{"a long forged name is cut in the message", func(t *testing.T) *certv1.CertificateSigningRequest {
			return bootstrapCSR(t, "aaaaaa", "node-a", strings.Repeat("x", 5000))
		}, false, Deny, KindBootstrap, `xxx"...`},
		{"serving, foreign IP, no Node yet", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-a", []string{"node-a"}, "10.9.9.9")
		}, false, Deny, KindServing, "no Node object yet"},
		{"serving, foreign DNS name", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "node-a", []string{"node-a", "kubernetes.default.svc"}, "10.0.0.11")
		}, false, Deny, KindServing, `"kubernetes.default.svc"`},
		{"serving, no SAN", func(t *testing.T) *certv1.CertificateSigningRequest { return servingCSR(t, "node-a", nil) },
			false, Deny, KindServing, "names no DNS name or IP"},
		{"serving, URI SAN", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := servingCSR(t, "node-a", []string{"node-a"})
			c.Spec.Request = request(t, &x509.CertificateRequest{Subject: nodeSubject("node-a"), URIs: []*url.URL{{Scheme: "spiffe", Host: "x"}}})
			return c
		}, false, Deny, KindServing, "URI"},
		{"serving, too long", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := servingCSR(t, "node-a", []string{"node-a"}, "10.0.0.11")
			c.Spec.ExpirationSeconds = &long
			return c
		}, false, Deny, KindServing, "more than"},
		{"serving, client usage", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := servingCSR(t, "node-a", []string{"node-a"}, "10.0.0.11")
			c.Spec.Usages = append(c.Spec.Usages, certv1.UsageClientAuth)
			return c
		}, false, Deny, KindServing, "client auth"},
		{"serving, CN of another node", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := servingCSR(t, "node-a", []string{"node-a"}, "10.0.0.11")
			c.Spec.Username = NodeUserPrefix + "node-b"
			return c
		}, false, Deny, KindServing, `as "system:node:node-a"`},
		{"serving, requester not in system:nodes", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := servingCSR(t, "node-a", []string{"node-a"}, "10.0.0.11")
			c.Spec.Groups = []string{"system:authenticated"}
			return c
		}, false, Deny, KindServing, "not in group"},
		{"serving, node not listed", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "cp-1", []string{"cp-1"}, "10.0.0.1")
		}, false, Skip, KindServing, ""},
		{"serving, node not listed, --strict", func(t *testing.T) *certv1.CertificateSigningRequest {
			return servingCSR(t, "cp-1", []string{"cp-1"}, "10.0.0.1")
		}, true, Deny, KindServing, "--strict"},
		{"serving from a bootstrap token", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := servingCSR(t, "node-a", []string{"node-a"}, "10.0.0.11")
			c.Spec.Username = BootstrapUserPrefix + "aaaaaa"
			return c
		}, false, Skip, KindServing, "not a node"},
		{"another signer", func(t *testing.T) *certv1.CertificateSigningRequest {
			c := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
			c.Spec.SignerName = certv1.KubeAPIServerClientSignerName
			return c
		}, true, Skip, KindOther, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPolicy(testNodes(), testReserved...)
			p.Strict = tt.strict
			d := p.Decide(tt.csr(t), lookups(secrets, nodes))
			if d.Verdict != tt.verdict || d.Kind != tt.kind || !strings.Contains(d.Message, tt.message) {
				t.Fatalf("got %v %s %q, want %v %s containing %q", d.Verdict, d.Kind, d.Message, tt.verdict, tt.kind, tt.message)
			}
			switch d.Verdict {
			case Approve:
				if d.Reason != ReasonApproved {
					t.Errorf("reason %q", d.Reason)
				}
			case Deny:
				if d.Reason != ReasonDenied || d.Message == "" {
					t.Errorf("a denial says why: reason %q, message %q", d.Reason, d.Message)
				}
			}
			if strings.Contains(d.Message, "0123456789abcdef") {
				t.Errorf("the message carries the token's secret: %q", d.Message)
			}
		})
	}
}

func TestBootstrapNode(t *testing.T) {
	p := NewPolicy(testNodes())
	node, id, ok := p.BootstrapNode(bootstrapCSR(t, "cccccc", "node-c.example.com", "x"))
	if !ok || node != "node-c.example.com" || id != "cccccc" {
		t.Errorf("got %q %q %v", node, id, ok)
	}
	c := servingCSR(t, "node-a", nil)
	if _, _, ok := p.BootstrapNode(c); ok {
		t.Error("a node's own CSR has no bootstrap node")
	}
}

// FuzzDecide feeds the decision hostile requests: it must never panic and
// never approve a client certificate for a name the token is not for.
func FuzzDecide(f *testing.F) {
	f.Add(bootstrapCSR(f, "aaaaaa", "node-a", "node-a").Spec.Request, "system:bootstrap:aaaaaa", "node-a")
	f.Add(servingCSR(f, "node-a", []string{"node-a"}, "10.0.0.11").Spec.Request, "system:node:node-a", "")
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n\n-----END CERTIFICATE REQUEST-----"), "system:bootstrap:x", "node-b")
	p := NewPolicy(testNodes())
	look := lookups(map[string]*corev1.Secret{"aaaaaa": tokenSecret("aaaaaa", "node-a")}, nil)
	f.Fuzz(func(t *testing.T, req []byte, user, groupNode string) {
		for signer, usages := range map[string][]certv1.KeyUsage{
			certv1.KubeAPIServerClientKubeletSignerName: clientUsages,
			certv1.KubeletServingSignerName:             servingUsages,
		} {
			csr := &certv1.CertificateSigningRequest{Spec: certv1.CertificateSigningRequestSpec{
				SignerName: signer, Username: user, Groups: []string{token.Group(groupNode), NodesGroup},
				Usages: usages, Request: req,
			}}
			d := p.Decide(csr, look)
			if d.Verdict != Approve {
				continue
			}
			block, _ := pem.Decode(req)
			parsed, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Fatalf("approved a request that does not parse: %v", err)
			}
			switch d.Kind {
			case KindBootstrap:
				if parsed.Subject.CommonName != NodeUserPrefix+groupNode {
					t.Fatalf("approved %q with node %s's token", parsed.Subject.CommonName, groupNode)
				}
			case KindRenewal, KindServing:
				if parsed.Subject.CommonName != user {
					t.Fatalf("approved %q for %q", parsed.Subject.CommonName, user)
				}
			}
		}
	})
}
