// Package rbac holds the ClusterRoleBindings that kubelet TLS bootstrapping
// needs, as the guide set them up, and applies or checks them.
package rbac

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"

	authorizationv1 "k8s.io/api/authorization/v1"
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
		Binding: autoApprove,
		Group:   bootstrapapi.BootstrapDefaultGroup,
		Role:    NodeClientRole,
		Why:     "kube-controller-manager approves the kubelet client CSRs that bootstrap tokens create",
	},
	{
		Binding: "kubestrap:node-client-cert-renewal",
		Group:   NodesGroup,
		Role:    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
		Why:     "kube-controller-manager approves a node's renewal of its own client certificate",
	},
}

// autoApprove is the blanket grant: kube-controller-manager approves every
// bootstrap token's client CSR, whatever node name it asks for.
const autoApprove = "kubestrap:auto-approve-csrs-for-group"

// NodeClientRole is the ClusterRole kube-controller-manager's approver
// checks before approving a client CSR made with a bootstrap token.
const NodeClientRole = "system:certificates.k8s.io:certificatesigningrequests:nodeclient"

// GrantsFor are the grants of a mode. Bound mode leaves kube-controller-
// manager's blanket approval out: `kubestrap approve` decides those CSRs,
// each by its token's node.
func GrantsFor(bound bool) []Grant {
	if !bound {
		return Grants
	}
	return slices.DeleteFunc(slices.Clone(Grants), func(g Grant) bool { return g.Binding == autoApprove })
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

// Print renders the mode's bindings as a multi-document YAML stream.
func Print(bound bool) ([]byte, error) {
	var buf bytes.Buffer
	if bound {
		fmt.Fprintf(&buf, "# Bound mode: no binding of %s to %s, so kube-controller-manager\n"+
			"# approves no bootstrap token's client CSR; `kubestrap approve` does, for the token's node only.\n",
			bootstrapapi.BootstrapDefaultGroup, NodeClientRole)
	}
	for _, g := range GrantsFor(bound) {
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
	Action  string // "created", "updated", "replaced", "unchanged", "deleted"
}

// Apply creates or updates the mode's bindings; running it twice changes
// nothing. In bound mode it deletes kubestrap's own blanket binding, if an
// earlier apply made it; bindings of others are the user's (see Blanket).
func Apply(ctx context.Context, client kubernetes.Interface, bound bool) ([]Result, error) {
	api := client.RbacV1().ClusterRoleBindings()
	var results []Result
	if bound {
		have, err := api.Get(ctx, autoApprove, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading ClusterRoleBinding %s: %w", autoApprove, err)
		case have.Labels["app.kubernetes.io/managed-by"] == "kubestrap":
			uid := have.UID
			err := api.Delete(ctx, autoApprove, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("deleting ClusterRoleBinding %s: %w", autoApprove, err)
			}
			results = append(results, Result{autoApprove, "deleted"})
		}
	}
	for _, g := range GrantsFor(bound) {
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

// Blanket names the ClusterRoleBindings that let kube-controller-manager
// approve client CSRs of every bootstrap token (the nodeclient role bound to
// system:bootstrappers or system:authenticated): while one exists, a token
// can become any node, whatever `kubestrap approve` decides. kubeadm's
// kubeadm:node-autoapprove-bootstrap binds its own tokens' group, which
// kubestrap's tokens do not carry. TokensAutoApproved sees the rest.
func Blanket(ctx context.Context, client kubernetes.Interface) ([]string, error) {
	list, err := client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing ClusterRoleBindings: %w", err)
	}
	var names []string
	for _, b := range list.Items {
		if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != NodeClientRole {
			continue
		}
		if slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.GroupKind && (s.Name == bootstrapapi.BootstrapDefaultGroup || s.Name == "system:authenticated")
		}) {
			names = append(names, b.Name)
		}
	}
	return names, nil
}

// TokensAutoApproved asks the API server what kube-controller-manager's
// approver asks before approving a client CSR: may a bootstrap token (user
// system:bootstrap:<id>, group system:bootstrappers) create
// certificatesigningrequests/nodeclient? It sees what Blanket cannot: a
// custom ClusterRole with that rule, a binding to system:authenticated. A
// binding to one node's own group is not probed.
func TokensAutoApproved(ctx context.Context, client kubernetes.Interface) (bool, error) {
	sar, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   bootstrapapi.BootstrapUserPrefix + "probe0",
			Groups: []string{bootstrapapi.BootstrapDefaultGroup, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: "nodeclient", Verb: "create",
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("asking whether bootstrap tokens' CSRs are approved by kube-controller-manager: %w", err)
	}
	return sar.Status.Allowed, nil
}

// Missing returns the mode's grants that no ClusterRoleBinding in the
// cluster gives, whatever the bindings are called (kubeadm names its own
// differently).
func Missing(ctx context.Context, client kubernetes.Interface, bound bool) ([]Grant, error) {
	list, err := client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing ClusterRoleBindings: %w", err)
	}
	var missing []Grant
	for _, g := range GrantsFor(bound) {
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
