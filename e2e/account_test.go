package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// serveManifests are the files of deploy/serve/ that make serve's account,
// its rights and the admission policy that confines them: all of them but
// what runs the pod.
var serveManifests = []string{"namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "admission-policy.yaml"}

// serveAccountKubeconfig applies deploy/serve's account, RBAC and admission
// policy as shipped, and returns a kubeconfig that authenticates as that
// service account (a TokenRequest token), so serve runs in the e2e with
// exactly the rights the manifests give it.
func (h *harness) serveAccountKubeconfig(cp *controlPlane) string {
	h.t.Helper()
	var ns, sa string
	for _, f := range serveManifests {
		data, err := os.ReadFile(filepath.Join("..", "deploy", "serve", f))
		if err != nil {
			h.t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var raw runtime.RawExtension
			if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				h.t.Fatalf("deploy/serve/%s: %v", f, err)
			}
			if len(bytes.TrimSpace(raw.Raw)) == 0 {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
			if err != nil {
				h.t.Fatalf("deploy/serve/%s: %v", f, err)
			}
			c, o := h.client, metav1.CreateOptions{}
			switch v := obj.(type) {
			case *corev1.Namespace:
				ns = v.Name
				_, err = c.CoreV1().Namespaces().Create(h.ctx, v, o)
			case *corev1.ServiceAccount:
				sa = v.Name
				_, err = c.CoreV1().ServiceAccounts(v.Namespace).Create(h.ctx, v, o)
			case *rbacv1.Role:
				_, err = c.RbacV1().Roles(v.Namespace).Create(h.ctx, v, o)
			case *rbacv1.RoleBinding:
				_, err = c.RbacV1().RoleBindings(v.Namespace).Create(h.ctx, v, o)
			case *rbacv1.ClusterRole:
				_, err = c.RbacV1().ClusterRoles().Create(h.ctx, v, o)
			case *rbacv1.ClusterRoleBinding:
				_, err = c.RbacV1().ClusterRoleBindings().Create(h.ctx, v, o)
			case *admissionv1.ValidatingAdmissionPolicy:
				_, err = c.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(h.ctx, v, o)
			case *admissionv1.ValidatingAdmissionPolicyBinding:
				_, err = c.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(h.ctx, v, o)
			default:
				h.t.Fatalf("deploy/serve/%s: the test does not apply a %T", f, obj)
			}
			if err != nil {
				h.t.Fatalf("deploy/serve/%s: %v", f, err)
			}
		}
	}
	if ns == "" || sa == "" {
		h.t.Fatalf("deploy/serve has no Namespace or ServiceAccount (%q, %q)", ns, sa)
	}
	tr, err := h.client.CoreV1().ServiceAccounts(ns).CreateToken(h.ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cp.url, CertificateAuthority: cp.pki.path("ca.crt")}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: sa, Namespace: ns}
	cfg.CurrentContext = "e2e"
	path := h.path(sa + ".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		h.t.Fatal(err)
	}
	h.t.Logf("applied deploy/serve/{%s}; serve runs as system:serviceaccount:%s:%s", strings.Join(serveManifests, ","), ns, sa)
	return path
}

func ptr[T any](v T) *T { return &v }

// checkServeAccountConfined shows what the manifests keep serve's account
// from: reading any Secret, and creating or deleting a Secret that is not
// one of serve's tokens, which RBAC alone would allow.
func (h *harness) checkServeAccountConfined(kubeconfig string) {
	h.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		h.t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	secrets := sa.CoreV1().Secrets(metav1.NamespaceSystem)
	victim := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "e2e-not-serves", Namespace: metav1.NamespaceSystem}, StringData: map[string]string{"k": "v"}}
	if _, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Create(h.ctx, victim, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	forged := victim.DeepCopy()
	forged.Name = "e2e-forged"
	// The API server takes up a new policy through an informer, a moment
	// after it is created: until then only RBAC stands.
	h.waitFor("the admission policy in force", time.Minute, nil, func(ctx context.Context) (bool, string) {
		_, err := secrets.Create(ctx, forged, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), fmt.Sprintf("a dry-run create of an Opaque Secret: %v", err)
	})
	// Serve's shape in every way the labels and name can say, but a token
	// that never expires, or one in kubeadm's group.
	token := func(edit func(map[string]string)) *corev1.Secret {
		data := map[string]string{"token-id": "zzzzzz", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true",
			"expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "auth-extra-groups": "system:bootstrappers:node-x"}
		edit(data)
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-zzzzzz", Namespace: metav1.NamespaceSystem,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "kubestrap", "kubestrap.dev/source": "serve"}},
			Type: corev1.SecretType("bootstrap.kubernetes.io/token"), StringData: data,
		}
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	if _, err := secrets.Create(h.ctx, token(func(map[string]string) {}), dryRun); err != nil {
		h.t.Errorf("serve's account may not create a token shaped as serve's own (dry run): %v", err)
	}
	checks := []struct {
		what, want string
		call       func() error
	}{
		{"list kube-system's Secrets", "forbidden", func() error { _, err := secrets.List(h.ctx, metav1.ListOptions{}); return err }},
		{"read a Secret", "forbidden", func() error { _, err := secrets.Get(h.ctx, victim.Name, metav1.GetOptions{}); return err }},
		{"create an Opaque Secret", "type bootstrap.kubernetes.io/token only", func() error { _, err := secrets.Create(h.ctx, forged, metav1.CreateOptions{}); return err }},
		{"delete a Secret not its own", "bootstrap.kubernetes.io/token only", func() error { return secrets.Delete(h.ctx, victim.Name, metav1.DeleteOptions{}) }},
		{"create a token that never expires", "only tokens that expire", func() error {
			_, err := secrets.Create(h.ctx, token(func(d map[string]string) { delete(d, "expiration") }), dryRun)
			return err
		}},
	}
	for _, c := range checks {
		err := c.call()
		if err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
			h.t.Errorf("serve's account may %s: %v (want %q)", c.what, err, c.want)
			continue
		}
		h.t.Logf("serve's account may not %s: %v", c.what, err)
	}
	if _, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(h.ctx, victim.Name, metav1.GetOptions{}); err != nil {
		h.t.Errorf("%s is gone: %v", victim.Name, err)
	}
}
