// Package rbac holds the ClusterRoleBindings that kubelet TLS bootstrapping
// needs, as the guide set them up, and applies or checks them.
package rbac

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"sigs.k8s.io/yaml"
)

// NodesGroup is the group a kubelet's client certificate puts it in.
const NodesGroup = "system:nodes"

// Grant is one permission bootstrapping needs: a group bound to a built-in
// ClusterRole.
type Grant struct {
	// Binding is the name kubestrap gives its ClusterRoleBinding.
	Binding string
	Group   string
	Role    string
	// Why is for people reading `kubestrap rbac print`.
	Why string
}

// Grants are the three bindings of the guide. Its fourth (a ClusterRole for
// "selfnodeserver") is left out: kube-controller-manager never approves
// serving CSRs, so that role grants nothing that gets used. The guide also
// bound selfnodeclient to system:bootstrappers, but certificate renewal is
// done by the node with its own certificate, whose group is system:nodes.
var Grants = []Grant{
	{
		Binding: "kubestrap:kubelet-bootstrap",
		Group:   bootstrapapi.BootstrapDefaultGroup,
		Role:    "system:node-bootstrapper",
		Why:     "bootstrap tokens may create certificate signing requests",
	},
	{
		Binding: "kubestrap:auto-approve-csrs-for-group",
		Group:   bootstrapapi.BootstrapDefaultGroup,
		Role:    "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
		Why:     "kube-controller-manager approves the kubelet client CSRs that bootstrap tokens create",
	},
	{
		Binding: "kubestrap:node-client-cert-renewal",
		Group:   NodesGroup,
		Role:    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
		Why:     "kube-controller-manager approves a node's renewal of its own client certificate",
	},
}

// Object is the ClusterRoleBinding for g.
func (g Grant) Object() *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta: metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        g.Binding,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "kubestrap"},
			Annotations: map[string]string{"kubestrap.dev/why": g.Why},
		},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: g.Role},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: g.Group}},
	}
}

// Print renders the bindings as a multi-document YAML stream.
func Print() ([]byte, error) {
	var buf bytes.Buffer
	for _, g := range Grants {
		doc, err := yaml.Marshal(g.Object())
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&buf, "---\n# %s\n", g.Why)
		buf.Write(doc)
	}
	return buf.Bytes(), nil
}

// Result says what Apply did to one binding.
type Result struct {
	Binding string
	Action  string // "created", "updated", "replaced", "unchanged"
}

// Apply creates or updates the bindings; running it twice changes nothing.
func Apply(ctx context.Context, client kubernetes.Interface) ([]Result, error) {
	api := client.RbacV1().ClusterRoleBindings()
	var results []Result
	for _, g := range Grants {
		want := g.Object()
		have, err := api.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil {
				return results, fmt.Errorf("creating ClusterRoleBinding %s: %w", want.Name, err)
			}
			results = append(results, Result{want.Name, "created"})
		case err != nil:
			return results, fmt.Errorf("reading ClusterRoleBinding %s: %w", want.Name, err)
		case have.RoleRef != want.RoleRef:
			// roleRef is immutable: the binding has to be recreated.
			if err := api.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil {
				return results, fmt.Errorf("replacing ClusterRoleBinding %s: %w", want.Name, err)
			}
			if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil {
				return results, fmt.Errorf("replacing ClusterRoleBinding %s: %w", want.Name, err)
			}
			results = append(results, Result{want.Name, "replaced"})
		case !reflect.DeepEqual(have.Subjects, want.Subjects) || !reflect.DeepEqual(have.Labels, want.Labels) || !reflect.DeepEqual(have.Annotations, want.Annotations):
			have.Subjects, have.Labels, have.Annotations = want.Subjects, want.Labels, want.Annotations
			if _, err := api.Update(ctx, have, metav1.UpdateOptions{}); err != nil {
				return results, fmt.Errorf("updating ClusterRoleBinding %s: %w", want.Name, err)
			}
			results = append(results, Result{want.Name, "updated"})
		default:
			results = append(results, Result{want.Name, "unchanged"})
		}
	}
	return results, nil
}

// Missing returns the grants that no ClusterRoleBinding in the cluster gives,
// whatever the bindings are called (kubeadm names its own differently).
func Missing(ctx context.Context, client kubernetes.Interface) ([]Grant, error) {
	list, err := client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing ClusterRoleBindings: %w", err)
	}
	var missing []Grant
	for _, g := range Grants {
		granted := slices.ContainsFunc(list.Items, func(b rbacv1.ClusterRoleBinding) bool {
			return b.RoleRef.Kind == "ClusterRole" && b.RoleRef.Name == g.Role &&
				slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Kind == rbacv1.GroupKind && s.Name == g.Group })
		})
		if !granted {
			missing = append(missing, g)
		}
	}
	return missing, nil
}
