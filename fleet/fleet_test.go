package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// secretHalf is every test token's secret: it must never come out.
const secretHalf = "s3cr3tvalue0000x"

func ago(d time.Duration) time.Time { return now.Add(-d) }

// mintedSecret is the Secret kubestrap mints for node, created at minted.
func mintedSecret(t *testing.T, id, node string, minted, expires time.Time, mods ...func(*corev1.Secret)) *corev1.Secret {
	t.Helper()
	tok, err := token.New(id+"."+secretHalf, node, expires, false)
	if err != nil {
		t.Fatal(err)
	}
	s := token.Secret(tok)
	s.CreationTimestamp = metav1.NewTime(minted)
	s.UID = types.UID("uid-" + id)
	for _, m := range mods {
		m(s)
	}
	return s
}

// kubeadmSecret is another tool's token: no managed-by label.
func kubeadmSecret(id string, expires time.Time) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.BootstrapTokenSecretPrefix + id, Namespace: metav1.NamespaceSystem,
			UID: types.UID("uid-" + id), CreationTimestamp: metav1.NewTime(ago(48 * time.Hour))},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:         []byte(id),
			bootstrapapi.BootstrapTokenSecretKey:     []byte(secretHalf),
			bootstrapapi.BootstrapTokenExpirationKey: []byte(expires.Format(time.RFC3339)),
		},
	}
}

type csrOpt func(*certv1.CertificateSigningRequest)

func approved(c *certv1.CertificateSigningRequest) {
	c.Status.Conditions = append(c.Status.Conditions, certv1.CertificateSigningRequestCondition{Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "AutoApproved"})
}

func issued(c *certv1.CertificateSigningRequest) {
	approved(c)
	c.Status.Certificate = []byte("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")
}

func denied(c *certv1.CertificateSigningRequest) {
	c.Status.Conditions = append(c.Status.Conditions, certv1.CertificateSigningRequestCondition{Type: certv1.CertificateDenied, Status: corev1.ConditionTrue,
		Reason: "KubestrapDenied", Message: "token abc123 was minted for node kube-node1, but the CSR asks for \"system:node:other\""})
}

func failed(c *certv1.CertificateSigningRequest) {
	approved(c)
	c.Status.Conditions = append(c.Status.Conditions, certv1.CertificateSigningRequestCondition{Type: certv1.CertificateFailed, Status: corev1.ConditionTrue,
		Reason: "SignerError", Message: "the signer is down"})
}

func signer(name string) csrOpt {
	return func(c *certv1.CertificateSigningRequest) { c.Spec.SignerName = name }
}

// bootstrapCSR is a kubelet's client CSR made with token id of tokenNode,
// with the groups the API server records for it.
func bootstrapCSR(name, id, tokenNode string, created time.Time, opts ...csrOpt) *certv1.CertificateSigningRequest {
	c := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec: certv1.CertificateSigningRequestSpec{
			SignerName: certv1.KubeAPIServerClientKubeletSignerName,
			Username:   "system:bootstrap:" + id,
			Groups:     []string{token.Group(tokenNode), "system:bootstrappers", "system:authenticated"},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// renewalCSR is a node renewing its own client certificate.
func renewalCSR(name, node string, created time.Time, opts ...csrOpt) *certv1.CertificateSigningRequest {
	c := bootstrapCSR(name, "", "", created, opts...)
	c.Spec.Username = "system:node:" + node
	c.Spec.Groups = []string{"system:nodes", "system:authenticated"}
	return c
}

func node(name string, ready corev1.ConditionStatus, version string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.NodeInfo.KubeletVersion = version
	if ready != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	}
	return n
}

func nodeList(names ...string) []model.Node {
	var ns []model.Node
	for _, n := range names {
		ns = append(ns, model.Node{Name: n})
	}
	return ns
}

func ptr[T any](v T) *T { return &v }

func TestStatus(t *testing.T) {
	const n1 = "kube-node1"
	day := now.Add(24 * time.Hour)
	tests := []struct {
		name    string
		objects []runtime.Object
		want    NodeStatus
	}{{
		name: "nothing",
		want: NodeStatus{Name: n1, Token: TokenStatus{State: TokenNone}, CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "unused",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day)},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUnused, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "expired, never used",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(25*time.Hour), ago(time.Hour))},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenExpired, Expires: ptr(ago(time.Hour)), Minted: ptr(ago(25 * time.Hour)), Age: "25h"},
			CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name: "expired after it was used: used",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(25*time.Hour), ago(time.Hour)),
			bootstrapCSR("csr-1", "aaaaaa", n1, ago(24*time.Hour), issued)},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: ptr(ago(time.Hour)), Minted: ptr(ago(25 * time.Hour)), Age: "25h"},
			CSR: CSRStatus{Name: "csr-1", State: CSRIssued}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "no expiration",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day, func(s *corev1.Secret) { delete(s.Data, bootstrapapi.BootstrapTokenExpirationKey) })},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUnused, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name: "an expiration that does not parse is passed",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day, func(s *corev1.Secret) {
			s.Data[bootstrapapi.BootstrapTokenExpirationKey] = []byte("tomorrow")
		})},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenExpired, Expires: &time.Time{}, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "used, pending",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day), bootstrapCSR("csr-1", "aaaaaa", n1, ago(time.Minute))},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{Name: "csr-1", State: CSRPending}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "approved, not signed yet",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day), bootstrapCSR("csr-1", "aaaaaa", n1, ago(time.Minute), approved)},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{Name: "csr-1", State: CSRApproved}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "denied, with the reason",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day), bootstrapCSR("csr-1", "aaaaaa", n1, ago(time.Minute), denied)},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR:  CSRStatus{Name: "csr-1", State: CSRDenied, Reason: "KubestrapDenied", Message: `token abc123 was minted for node kube-node1, but the CSR asks for "system:node:other"`},
			Node: NodeInfo{State: NodeAbsent}},
	}, {
		name:    "failed",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day), bootstrapCSR("csr-1", "aaaaaa", n1, ago(time.Minute), failed)},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{Name: "csr-1", State: CSRFailed, Reason: "SignerError", Message: "the signer is down"}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name: "issued, NotReady",
		objects: []runtime.Object{mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day), bootstrapCSR("csr-1", "aaaaaa", n1, ago(time.Minute), issued),
			node(n1, corev1.ConditionFalse, "v1.37.2")},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{Name: "csr-1", State: CSRIssued}, Node: NodeInfo{State: NodeNotReady, KubeletVersion: "v1.37.2"}},
	}, {
		name:    "a Node with no Ready condition yet is NotReady",
		objects: []runtime.Object{node(n1, "", "v1.37.2")},
		want:    NodeStatus{Name: n1, Token: TokenStatus{State: TokenNone}, CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeNotReady, KubeletVersion: "v1.37.2"}},
	}, {
		name: "joined and pruned: deleted, Ready",
		objects: []runtime.Object{bootstrapCSR("csr-1", "aaaaaa", n1, ago(time.Hour), issued),
			node(n1, corev1.ConditionTrue, "v1.37.2")},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenDeleted},
			CSR: CSRStatus{Name: "csr-1", State: CSRIssued}, Node: NodeInfo{State: NodeReady, KubeletVersion: "v1.37.2"}},
	}, {
		name: "several tokens: the newest, the others counted",
		objects: []runtime.Object{
			mintedSecret(t, "aaaaaa", n1, ago(3*time.Hour), day),
			mintedSecret(t, "bbbbbb", n1, ago(time.Hour), day),
			mintedSecret(t, "cccccc", n1, ago(2*time.Hour), day),
			bootstrapCSR("csr-a", "aaaaaa", n1, ago(3*time.Hour), denied),
		},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "bbbbbb", State: TokenUnused, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m", Others: 2},
			CSR:  CSRStatus{Name: "csr-a", State: CSRDenied, Reason: "KubestrapDenied", Message: `token abc123 was minted for node kube-node1, but the CSR asks for "system:node:other"`},
			Node: NodeInfo{State: NodeAbsent}},
	}, {
		name: "the newest client CSR, a renewal's; serving CSRs and other nodes' are not it",
		objects: []runtime.Object{
			mintedSecret(t, "aaaaaa", n1, ago(3*time.Hour), day),
			bootstrapCSR("csr-boot", "aaaaaa", n1, ago(3*time.Hour), issued),
			renewalCSR("csr-renew", n1, ago(time.Hour), approved),
			renewalCSR("csr-serving", n1, ago(time.Minute), signer(certv1.KubeletServingSignerName)),
			renewalCSR("csr-other", "kube-node2", ago(time.Second)),
			node(n1, corev1.ConditionTrue, "v1.37.2"),
		},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(3 * time.Hour)), Age: "3h"},
			CSR: CSRStatus{Name: "csr-renew", State: CSRApproved}, Node: NodeInfo{State: NodeReady, KubeletVersion: "v1.37.2"}},
	}, {
		name: "a CSR whose groups name no node of the list is matched by its token's annotation",
		objects: []runtime.Object{
			mintedSecret(t, "aaaaaa", n1, ago(time.Hour), day),
			bootstrapCSR("csr-1", "aaaaaa", "elsewhere", ago(time.Minute)),
		},
		want: NodeStatus{Name: n1, Token: TokenStatus{ID: "aaaaaa", State: TokenUsed, Expires: &day, Minted: ptr(ago(time.Hour)), Age: "60m"},
			CSR: CSRStatus{Name: "csr-1", State: CSRPending}, Node: NodeInfo{State: NodeAbsent}},
	}, {
		name: "another tool's token, and a CSR made with it, are not the node's",
		objects: []runtime.Object{
			kubeadmSecret("kkkkkk", day),
			bootstrapCSR("csr-k", "kkkkkk", "nobody", ago(time.Minute)),
		},
		want: NodeStatus{Name: n1, Token: TokenStatus{State: TokenNone}, CSR: CSRStatus{State: CSRNone}, Node: NodeInfo{State: NodeAbsent}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Gather(context.Background(), fake.NewClientset(tt.objects...), nodeList(n1, "kube-node2"), now)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[1].Name != "kube-node2" {
				t.Fatalf("got %d statuses, want kube-node1 and kube-node2: %+v", len(got), got)
			}
			if g, w := asJSON(t, got[0]), asJSON(t, tt.want); g != w {
				t.Errorf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestGather checks the list's order, one List of each kind with the
// token selectors, and that no secret comes out.
func TestGather(t *testing.T) {
	day := now.Add(24 * time.Hour)
	client := fake.NewClientset(
		mintedSecret(t, "aaaaaa", "n1", ago(time.Hour), day),
		mintedSecret(t, "bbbbbb", "n2", ago(time.Hour), day),
		mintedSecret(t, "cccccc", "n3", ago(time.Hour), day),
		kubeadmSecret("kkkkkk", day),
		bootstrapCSR("csr-b", "bbbbbb", "n2", ago(time.Minute), issued),
		node("n2", corev1.ConditionTrue, "v1.37.2"),
	)
	got, err := Gather(context.Background(), client, nodeList("n3", "n1", "n2"), now)
	if err != nil {
		t.Fatal(err)
	}
	var names, ids []string
	for _, s := range got {
		names, ids = append(names, s.Name), append(ids, s.Token.ID)
	}
	if want := []string{"n3", "n1", "n2"}; !slices.Equal(names, want) {
		t.Errorf("order %q, want the list's %q", names, want)
	}
	if want := []string{"cccccc", "aaaaaa", "bbbbbb"}; !slices.Equal(ids, want) {
		t.Errorf("token ids %q, want %q", ids, want)
	}
	if out := asJSON(t, got); strings.Contains(out, secretHalf) {
		t.Errorf("a token secret came out: %s", out)
	}

	lists := map[string]k8stesting.ListRestrictions{}
	for _, a := range client.Actions() {
		if a.GetVerb() != "list" {
			t.Errorf("unexpected %s %s", a.GetVerb(), a.GetResource().Resource)
			continue
		}
		if _, dup := lists[a.GetResource().Resource]; dup {
			t.Errorf("%s listed twice", a.GetResource().Resource)
		}
		lists[a.GetResource().Resource] = a.(k8stesting.ListAction).GetListRestrictions()
	}
	if len(lists) != 3 {
		t.Errorf("listed %v, want secrets, certificatesigningrequests and nodes once each", lists)
	}
	r := lists["secrets"]
	if got := r.Labels.String(); got != "app.kubernetes.io/managed-by=kubestrap" {
		t.Errorf("secrets label selector %q", got)
	}
	if got := r.Fields.String(); got != "type=bootstrap.kubernetes.io/token" {
		t.Errorf("secrets field selector %q", got)
	}
}

func TestGatherError(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "certificatesigningrequests", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(certv1.Resource("certificatesigningrequests"), "", nil)
	})
	_, err := Gather(context.Background(), client, nodeList("n1"), now)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "listing the CSRs") {
		t.Errorf("got %v, want a forbidden error that says what was listed", err)
	}
}

// pruneCluster holds a token of each kind, by Secret name what Prunable
// should say of it ("" = kept).
func pruneCluster(t *testing.T) ([]runtime.Object, map[string]Reason) {
	day := now.Add(24 * time.Hour)
	serve := func(s *corev1.Secret) { s.Labels[token.LabelSource] = token.SourceServe }
	objs := []runtime.Object{
		mintedSecret(t, "exp001", "n1", ago(25*time.Hour), ago(time.Hour)),
		mintedSecret(t, "exp002", "n1", ago(25*time.Hour), ago(time.Hour), serve),
		mintedSecret(t, "new001", "n1", ago(time.Hour), day),
		// Joined: issued, and the Node is there.
		mintedSecret(t, "join01", "n2", ago(2*time.Hour), day),
		bootstrapCSR("csr-join01", "join01", "n2", ago(2*time.Hour), issued),
		node("n2", corev1.ConditionTrue, "v1.37.2"),
		// Issued, but no Node yet; approved only; pending; denied: kept.
		mintedSecret(t, "nonode", "n3", ago(2*time.Hour), day),
		bootstrapCSR("csr-nonode", "nonode", "n3", ago(2*time.Hour), issued),
		mintedSecret(t, "apprvd", "n4", ago(2*time.Hour), day),
		bootstrapCSR("csr-apprvd", "apprvd", "n4", ago(2*time.Hour), approved),
		node("n4", corev1.ConditionFalse, "v1.37.2"),
		mintedSecret(t, "pendng", "n4", ago(time.Hour), day),
		bootstrapCSR("csr-pendng", "pendng", "n4", ago(time.Hour)),
		mintedSecret(t, "denied", "n4", ago(time.Hour), day),
		bootstrapCSR("csr-denied", "denied", "n4", ago(time.Hour), denied),
		// The node left the list.
		mintedSecret(t, "gone01", "n9", ago(time.Hour), day),
		// Another tool's, expired: never touched.
		kubeadmSecret("kubadm", ago(time.Hour)),
		// A run marker is kubestrap's but no token.
		token.RunMarker("run0000001", ago(time.Hour)),
	}
	want := map[string]Reason{
		"bootstrap-token-exp001": ReasonExpired,
		"bootstrap-token-exp002": ReasonExpired,
		"bootstrap-token-join01": ReasonJoined,
		"bootstrap-token-gone01": ReasonNotInList,
	}
	return objs, want
}

func TestPrunable(t *testing.T) {
	objs, want := pruneCluster(t)
	s, err := Read(context.Background(), fake.NewClientset(objs...))
	if err != nil {
		t.Fatal(err)
	}
	got := s.Prunable(nodeList("n1", "n2", "n3", "n4"), now)
	var order []string
	for _, c := range got {
		order = append(order, c.Secret)
		if c.Reason != want[c.Secret] {
			t.Errorf("%s: reason %q, want %q", c.Secret, c.Reason, want[c.Secret])
		}
		if c.UID != types.UID("uid-"+c.TokenID) {
			t.Errorf("%s: UID %q", c.Secret, c.UID)
		}
	}
	// The list's nodes first, in its order; then the others.
	if w := []string{"bootstrap-token-exp001", "bootstrap-token-exp002", "bootstrap-token-join01", "bootstrap-token-gone01"}; !slices.Equal(order, w) {
		t.Errorf("prunable %q, want %q", order, w)
	}
	if s.Tokens() != 9 {
		t.Errorf("Tokens() = %d, want 9 (no run marker, no kubeadm token)", s.Tokens())
	}
	if c := got[len(got)-1]; c.Node != "n9" || c.TokenID != "gone01" {
		t.Errorf("not-in-list candidate %+v, want node n9, token gone01", c)
	}
}

// secretNames is what Secrets the fake cluster holds.
func secretNames(t *testing.T, client *fake.Clientset) []string {
	t.Helper()
	list, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return names
}

// enforceUID makes the fake clientset honour a delete's UID precondition,
// as the API server does, and fails a delete that has none.
func enforceUID(t *testing.T, client *fake.Clientset) {
	client.PrependReactor("delete", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteAction)
		pre := d.GetDeleteOptions().Preconditions
		if pre == nil || pre.UID == nil {
			t.Errorf("delete of %s without a UID precondition", d.GetName())
			return false, nil, nil
		}
		obj, err := client.Tracker().Get(a.GetResource(), a.GetNamespace(), d.GetName())
		if err != nil {
			return false, nil, nil // the tracker answers NotFound itself
		}
		if uid := obj.(*corev1.Secret).UID; uid != *pre.UID {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), d.GetName(),
				fmt.Errorf("Precondition failed: UID in precondition: %s, UID in object meta: %s", *pre.UID, uid))
		}
		return false, nil, nil
	})
}

func TestPrune(t *testing.T) {
	objs, want := pruneCluster(t)
	var all []string
	for _, o := range objs {
		if s, ok := o.(*corev1.Secret); ok {
			all = append(all, s.Name)
		}
	}
	slices.Sort(all)
	var kept []string
	for _, n := range all {
		if want[n] == "" {
			kept = append(kept, n)
		}
	}
	nodes := nodeList("n1", "n2", "n3", "n4")

	tests := []struct {
		name   string
		dryRun bool
		// meddle changes the cluster between the read and the prune.
		meddle     func(t *testing.T, client *fake.Clientset)
		wantAction map[string]Action
		wantLeft   []string
	}{{
		name:   "dry run deletes nothing",
		dryRun: true,
		wantAction: map[string]Action{"bootstrap-token-exp001": ActionWouldDelete, "bootstrap-token-exp002": ActionWouldDelete,
			"bootstrap-token-join01": ActionWouldDelete, "bootstrap-token-gone01": ActionWouldDelete},
		wantLeft: all,
	}, {
		name: "deletes the prunable, leaves the rest and other tools' tokens",
		wantAction: map[string]Action{"bootstrap-token-exp001": ActionDeleted, "bootstrap-token-exp002": ActionDeleted,
			"bootstrap-token-join01": ActionDeleted, "bootstrap-token-gone01": ActionDeleted},
		wantLeft: kept,
	}, {
		name: "one deleted meanwhile, one replaced by a Secret of the same name",
		meddle: func(t *testing.T, client *fake.Clientset) {
			// Behind the reactors' back, as another client would.
			secrets := corev1.SchemeGroupVersion.WithResource("secrets")
			for _, name := range []string{"bootstrap-token-exp001", "bootstrap-token-gone01"} {
				if err := client.Tracker().Delete(secrets, metav1.NamespaceSystem, name); err != nil {
					t.Fatal(err)
				}
			}
			again := mintedSecret(t, "gone01", "n9", now, now.Add(time.Hour))
			again.UID = "another"
			if err := client.Tracker().Add(again); err != nil {
				t.Fatal(err)
			}
		},
		wantAction: map[string]Action{"bootstrap-token-exp001": ActionGone, "bootstrap-token-exp002": ActionDeleted,
			"bootstrap-token-join01": ActionDeleted, "bootstrap-token-gone01": ActionReplaced},
		wantLeft: slices.Sorted(slices.Values(append(slices.Clone(kept), "bootstrap-token-gone01"))),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			client := fake.NewClientset(objs...)
			enforceUID(t, client)
			s, err := Read(ctx, client)
			if err != nil {
				t.Fatal(err)
			}
			if tt.meddle != nil {
				tt.meddle(t, client)
			}
			done, err := Prune(ctx, client, s.Prunable(nodes, now), tt.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			if len(done) != len(tt.wantAction) {
				t.Errorf("did %d things, want %d: %+v", len(done), len(tt.wantAction), done)
			}
			for _, p := range done {
				if p.Action != tt.wantAction[p.Secret] {
					t.Errorf("%s: %q, want %q", p.Secret, p.Action, tt.wantAction[p.Secret])
				}
			}
			if got := secretNames(t, client); !slices.Equal(got, tt.wantLeft) {
				t.Errorf("left %q\nwant %q", got, tt.wantLeft)
			}
		})
	}
}

func TestPruneStopsAtAnError(t *testing.T) {
	objs, _ := pruneCluster(t)
	client := fake.NewClientset(objs...)
	s, err := Read(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	client.PrependReactor("delete", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if calls++; calls == 2 {
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), a.(k8stesting.DeleteAction).GetName(), nil)
		}
		return false, nil, nil
	})
	done, err := Prune(context.Background(), client, s.Prunable(nodeList("n1", "n2", "n3", "n4"), now), false)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "deleting Secret kube-system/bootstrap-token-exp002") {
		t.Errorf("got %v, want forbidden, naming the Secret", err)
	}
	if len(done) != 1 || done[0].Action != ActionDeleted {
		t.Errorf("did %+v, want the first delete only", done)
	}
	if calls != 2 {
		t.Errorf("%d deletes tried, want it to stop after the failing second", calls)
	}
}
