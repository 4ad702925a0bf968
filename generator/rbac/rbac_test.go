package rbac

import (
	"context"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

func TestApplyIsIdempotent(t *testing.T) {
	ctx := context.Background()
	// One binding exists with a stale subject, one with a wrong roleRef.
	stale := Grants[0].Object()
	stale.Subjects[0].Name = "someone-else"
	wrongRole := Grants[1].Object()
	wrongRole.RoleRef.Name = "cluster-admin"
	client := fake.NewClientset(stale, wrongRole)

	got, err := Apply(ctx, client, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kubestrap:kubelet-bootstrap updated", "kubestrap:auto-approve-csrs-for-group replaced", "kubestrap:node-client-cert-renewal created"}
	for i, r := range got {
		if r.Binding+" "+r.Action != want[i] {
			t.Errorf("result %d = %s %s, want %s", i, r.Binding, r.Action, want[i])
		}
	}
	again, err := Apply(ctx, client, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range again {
		if r.Action != "unchanged" {
			t.Errorf("second apply: %s %s", r.Binding, r.Action)
		}
	}
	for _, g := range Grants {
		b, err := client.RbacV1().ClusterRoleBindings().Get(ctx, g.Binding, metav1.GetOptions{})
		if err != nil || b.RoleRef.Name != g.Role || b.Subjects[0].Name != g.Group {
			t.Errorf("%s: %+v %v", g.Binding, b, err)
		}
	}
}

func TestMissing(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	missing, err := Missing(ctx, client, false)
	if err != nil || len(missing) != 3 {
		t.Fatalf("empty cluster: %d missing, %v", len(missing), err)
	}
	// kubeadm's own binding, under another name, counts.
	kubeadm := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kubeadm:kubelet-bootstrap"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-bootstrapper"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: "system:bootstrappers:kubeadm:default-node-token"}, {Kind: "Group", Name: "system:bootstrappers"}},
	}
	client.RbacV1().ClusterRoleBindings().Create(ctx, kubeadm, metav1.CreateOptions{})
	missing, _ = Missing(ctx, client, false)
	if len(missing) != 2 || missing[0].Role == "system:node-bootstrapper" {
		t.Errorf("after kubeadm's binding: %v", missing)
	}
	Apply(ctx, client, false)
	if missing, _ = Missing(ctx, client, false); len(missing) != 0 {
		t.Errorf("after apply: %v", missing)
	}
}

func TestPrintParsesBack(t *testing.T) {
	for _, bound := range []bool{false, true} {
		data, err := Print(bound)
		if err != nil {
			t.Fatal(err)
		}
		grants := GrantsFor(bound)
		docs := strings.Split(string(data), "---\n")[1:]
		if len(docs) != len(grants) {
			t.Fatalf("bound %v: %d documents", bound, len(docs))
		}
		for i, doc := range docs {
			var b rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &b); err != nil {
				t.Fatal(err)
			}
			if b.Kind != "ClusterRoleBinding" || b.RoleRef.Name != grants[i].Role || b.Subjects[0].Name != grants[i].Group {
				t.Errorf("doc %d: %+v", i, b)
			}
			if bound && b.RoleRef.Name == NodeClientRole {
				t.Errorf("bound mode prints the blanket approval: %+v", b)
			}
		}
	}
}

// Switching a running cluster to bound mode deletes kubestrap's blanket
// binding and names the others, which are the user's to delete.
func TestApplyBound(t *testing.T) {
	ctx := context.Background()
	kubeadm := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kubeadm:node-autoapprove-bootstrap"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: NodeClientRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: "system:bootstrappers:kubeadm:default-node-token"}},
	}
	renewal := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kubeadm:node-autoapprove-certificate-rotation"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: NodesGroup}},
	}
	client := fake.NewClientset(kubeadm, renewal)
	if _, err := Apply(ctx, client, false); err != nil {
		t.Fatal(err)
	}
	blanket, err := Blanket(ctx, client)
	// kubeadm's binds its own tokens' group, not kubestrap's.
	if err != nil || strings.Join(blanket, " ") != "kubestrap:auto-approve-csrs-for-group" {
		t.Fatalf("before: blanket %v, %v", blanket, err)
	}
	got, err := Apply(ctx, client, true)
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, r := range got {
		results = append(results, r.Binding+" "+r.Action)
	}
	if want := "kubestrap:auto-approve-csrs-for-group deleted,kubestrap:kubelet-bootstrap unchanged,kubestrap:node-client-cert-renewal unchanged"; strings.Join(results, ",") != want {
		t.Errorf("bound apply: %v, want %s", results, want)
	}
	if blanket, _ = Blanket(ctx, client); len(blanket) != 0 {
		t.Errorf("after: blanket %v", blanket)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Get(ctx, kubeadm.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("kubeadm's binding is the user's: %v", err)
	}
	if missing, _ := Missing(ctx, client, true); len(missing) != 0 {
		t.Errorf("bound mode misses %v", missing)
	}
	if missing, _ := Missing(ctx, client, false); len(missing) != 1 || missing[0].Role != NodeClientRole {
		t.Errorf("unbound mode, after a bound apply: missing %v, want the blanket approval", missing)
	}

	// A binding of that name that kubestrap did not make is left alone.
	mine := Grants[1].Object()
	delete(mine.Labels, "app.kubernetes.io/managed-by")
	client = fake.NewClientset(mine)
	if _, err := Apply(ctx, client, true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Get(ctx, mine.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the user's binding was deleted: %v", err)
	}
}

// TokensAutoApproved asks what kube-controller-manager asks, as a bootstrap
// token: the API server's answer is the answer.
func TestTokensAutoApproved(t *testing.T) {
	for _, allowed := range []bool{false, true} {
		client := fake.NewClientset()
		var asked *authorizationv1.SubjectAccessReview
		client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
			asked = a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
			out := asked.DeepCopy()
			out.Status.Allowed = allowed
			return true, out, nil
		})
		got, err := TokensAutoApproved(context.Background(), client)
		if err != nil || got != allowed {
			t.Errorf("allowed %v: got %v, %v", allowed, got, err)
		}
		ra := asked.Spec.ResourceAttributes
		if ra.Group != "certificates.k8s.io" || ra.Resource != "certificatesigningrequests" || ra.Subresource != "nodeclient" || ra.Verb != "create" ||
			!strings.HasPrefix(asked.Spec.User, "system:bootstrap:") || !slices.Contains(asked.Spec.Groups, "system:bootstrappers") {
			t.Errorf("asked %+v", asked.Spec)
		}
	}
}
