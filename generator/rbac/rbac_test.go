package rbac

import (
	"context"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
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

	got, err := Apply(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kubestrap:kubelet-bootstrap updated", "kubestrap:auto-approve-csrs-for-group replaced", "kubestrap:node-client-cert-renewal created"}
	for i, r := range got {
		if r.Binding+" "+r.Action != want[i] {
			t.Errorf("result %d = %s %s, want %s", i, r.Binding, r.Action, want[i])
		}
	}
	again, err := Apply(ctx, client)
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
	missing, err := Missing(ctx, client)
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
	missing, _ = Missing(ctx, client)
	if len(missing) != 2 || missing[0].Role == "system:node-bootstrapper" {
		t.Errorf("after kubeadm's binding: %v", missing)
	}
	Apply(ctx, client)
	if missing, _ = Missing(ctx, client); len(missing) != 0 {
		t.Errorf("after apply: %v", missing)
	}
}

func TestPrintParsesBack(t *testing.T) {
	data, err := Print()
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(data), "---\n")[1:]
	if len(docs) != len(Grants) {
		t.Fatalf("%d documents", len(docs))
	}
	for i, doc := range docs {
		var b rbacv1.ClusterRoleBinding
		if err := yaml.UnmarshalStrict([]byte(doc), &b); err != nil {
			t.Fatal(err)
		}
		if b.Kind != "ClusterRoleBinding" || b.RoleRef.Name != Grants[i].Role || b.Subjects[0].Name != Grants[i].Group {
			t.Errorf("doc %d: %+v", i, b)
		}
	}
}
