package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// How the nodes' bootstrap tokens and the TLS-bootstrapping RBAC get into
// the cluster. TestNodesJoin runs the whole join once per mode.
const (
	// liveTokens: `kubestrap rbac apply --kubeconfig ADMIN`, then
	// `kubestrap generate --kubeconfig ADMIN`, which creates the Secrets
	// itself. After the join, a second generate must reuse them and
	// generate --rotate must replace them.
	liveTokens = "live"
	// offlineTokens: `kubestrap generate --offline` mints the tokens into
	// DIR/tokens.yaml; the test applies them and creates the three
	// ClusterRoleBindings itself (what an admin does by hand).
	offlineTokens = "offline"

	// envTokenMode picks one mode (live or offline) instead of both.
	envTokenMode = "KUBESTRAP_E2E_TOKENS"
)

// tokenModes are the modes to run: both, unless KUBESTRAP_E2E_TOKENS says one.
func tokenModes(t *testing.T) []string {
	switch m := os.Getenv(envTokenMode); m {
	case "":
		return []string{liveTokens, offlineTokens}
	case liveTokens, offlineTokens:
		return []string{m}
	default:
		t.Fatalf("%s=%q: want %s or %s", envTokenMode, m, liveTokens, offlineTokens)
		return nil
	}
}

// Labels kubestrap puts on a token Secret (README, "Tokens").
const nodeLabel = "kubestrap.dev/node"

// bootstrapBindings are the grants TLS bootstrapping needs, as kubeadm
// makes them: who (a group) gets which ClusterRole.
var bootstrapBindings = []struct{ name, group, role string }{
	// Bootstrap tokens may create CSRs...
	{"kubestrap-e2e:kubelet-bootstrap", "system:bootstrappers", "system:node-bootstrapper"},
	// ...which kube-controller-manager then approves: a new node's client CSR...
	{"kubestrap-e2e:node-autoapprove-bootstrap", "system:bootstrappers", "system:certificates.k8s.io:certificatesigningrequests:nodeclient"},
	// ...and a node renewing its own client certificate.
	{"kubestrap-e2e:node-autoapprove-certificate-rotation", "system:nodes", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"},
}

// kubestrap is the CLI under test, built from this checkout (buildKubestrap).
type kubestrap struct {
	h    *harness
	path string
}

// kubestrapFromOuter is the binary the outer run built from this checkout.
func (h *harness) kubestrapFromOuter() *kubestrap {
	h.t.Helper()
	path := os.Getenv(envKubestrap)
	if path == "" {
		h.t.Fatalf("%s is not set: run the test normally, the outer run builds kubestrap", envKubestrap)
	}
	return &kubestrap{h: h, path: path}
}

func (ks *kubestrap) run(name string, args ...string) []byte {
	ks.h.t.Helper()
	out := ks.h.run(name, exec.Command(ks.path, args...))
	ks.h.t.Logf("kubestrap %s:\n%s", strings.Join(args, " "), out)
	return out
}

// generateDocuments is the one place that knows how tokens reach the
// cluster; it leaves the documents under out and the tokens and RBAC in
// the cluster.
func (h *harness) generateDocuments(ks *kubestrap, cp *controlPlane, mode, clusterFile, out string) {
	h.t.Helper()
	switch mode {
	case offlineTokens:
		ks.run("generate-offline", "generate", "--offline", "-f", clusterFile, "--out", out)
		h.applyTokens(filepath.Join(out, "tokens.yaml"))
		h.applyBootstrapRBAC()
	case liveTokens:
		ks.run("rbac-apply", "rbac", "apply", "--kubeconfig", cp.adminKubeconfig)
		ks.run("generate-live", "generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--out", out)
		if _, err := os.Stat(filepath.Join(out, "tokens.yaml")); err == nil {
			h.t.Errorf("generate --kubeconfig wrote %s: live mode creates the Secrets, it should not write them out", filepath.Join(out, "tokens.yaml"))
		}
	default:
		h.t.Fatalf("unknown token mode %q", mode)
	}
	h.checkBootstrapRBAC()
}

// applyTokens creates the Secrets of a tokens.yaml (what `kubectl apply -f
// DIR/tokens.yaml` does in the README).
func (h *harness) applyTokens(path string) {
	h.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	n := 0
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			h.t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var s corev1.Secret
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			h.t.Fatalf("%s: document %d: %v", path, n, err)
		}
		if _, err := h.client.CoreV1().Secrets(s.Namespace).Create(h.ctx, &s, metav1.CreateOptions{}); err != nil {
			h.t.Fatalf("%s: creating Secret %s/%s: %v", path, s.Namespace, s.Name, err)
		}
		n++
	}
	h.t.Logf("applied %d token Secret(s) from %s", n, path)
}

func (h *harness) applyBootstrapRBAC() {
	h.t.Helper()
	for _, b := range bootstrapBindings {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: b.name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b.role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: b.group}},
		}
		if _, err := h.client.RbacV1().ClusterRoleBindings().Create(h.ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			h.t.Fatalf("creating ClusterRoleBinding %s: %v", b.name, err)
		}
	}
}

// checkBootstrapRBAC checks, whoever made them, that some binding grants
// each group its ClusterRole.
func (h *harness) checkBootstrapRBAC() {
	h.t.Helper()
	crbs, err := h.client.RbacV1().ClusterRoleBindings().List(h.ctx, metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, b := range bootstrapBindings {
		if !slices.ContainsFunc(crbs.Items, func(crb rbacv1.ClusterRoleBinding) bool {
			return crb.RoleRef.Kind == "ClusterRole" && crb.RoleRef.Name == b.role &&
				slices.ContainsFunc(crb.Subjects, func(s rbacv1.Subject) bool { return s.Kind == rbacv1.GroupKind && s.Name == b.group })
		}) {
			h.t.Errorf("no ClusterRoleBinding grants group %s the ClusterRole %s", b.group, b.role)
		}
	}
}

// tokenSecrets returns kubestrap's token Secrets by node.
func (h *harness) tokenSecrets(ctx context.Context) (map[string][]corev1.Secret, error) {
	list, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: nodeLabel})
	if err != nil {
		return nil, err
	}
	byNode := map[string][]corev1.Secret{}
	for _, s := range list.Items {
		byNode[s.Labels[nodeLabel]] = append(byNode[s.Labels[nodeLabel]], s)
	}
	return byNode, nil
}

// checkTokens checks that each node has exactly one token Secret, the one
// its documents carry, in the shape the apiserver authenticates.
func (h *harness) checkTokens(nodes []*node) {
	h.t.Helper()
	byNode, err := h.tokenSecrets(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, n := range nodes {
		secrets := byNode[n.name]
		if len(secrets) != 1 {
			h.t.Fatalf("%s: %d token Secrets labelled %s=%s, want 1", n.name, len(secrets), nodeLabel, n.name)
		}
		s := secrets[0]
		if want := "bootstrap-token-" + n.tokenID; s.Name != want {
			h.t.Errorf("%s: its token Secret is %s, but its documents carry token %s (want Secret %s)", n.name, s.Name, n.tokenID, want)
		}
		if s.Type != corev1.SecretTypeBootstrapToken {
			h.t.Errorf("%s: Secret %s has type %s", n.name, s.Name, s.Type)
		}
		if got := string(s.Data["usage-bootstrap-authentication"]); got != "true" {
			h.t.Errorf("%s: Secret %s: usage-bootstrap-authentication=%q", n.name, s.Name, got)
		}
		if got, want := string(s.Data["auth-extra-groups"]), "system:bootstrappers:"+n.name; got != want {
			h.t.Errorf("%s: Secret %s: auth-extra-groups=%q, want %q", n.name, s.Name, got, want)
		}
	}
}

// breakToken gives a node's token Secret a different secret, so its
// kubelet's bootstrap credentials no longer authenticate (KUBESTRAP_E2E_BREAK=token).
func (h *harness) breakToken(n *node) {
	h.t.Helper()
	name := "bootstrap-token-" + n.tokenID
	s, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(h.ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	s.Data["token-secret"] = []byte("0000000000000000")
	if _, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Update(h.ctx, s, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.t.Logf("%s=token: replaced the secret of %s's token %s: its join must fail", envBreak, n.name, n.tokenID)
}

// checkRegenerate (live mode) runs generate again: it must reuse every
// node's token; then generate --rotate must replace every one of them.
func (h *harness) checkRegenerate(ks *kubestrap, cp *controlPlane, clusterFile string, nodes []*node) {
	h.t.Helper()
	names := func() map[string]string {
		byNode, err := h.tokenSecrets(h.ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		m := map[string]string{}
		for _, n := range nodes {
			if len(byNode[n.name]) != 1 {
				h.t.Fatalf("%s: %d token Secrets, want 1", n.name, len(byNode[n.name]))
			}
			m[n.name] = byNode[n.name][0].Name + "/" + string(byNode[n.name][0].UID)
		}
		return m
	}
	// The token a node's new user-data carries must be its Secret's.
	documents := func(out string, secrets map[string]string) {
		for _, n := range nodes {
			id := h.userDataTokenID(filepath.Join(out, n.name, "user-data"))
			if want := strings.SplitN(secrets[n.name], "/", 2)[0]; "bootstrap-token-"+id != want {
				h.t.Errorf("%s: %s/%s/user-data carries token %s, but its Secret is %s", n.name, out, n.name, id, want)
			}
		}
	}
	before := names()
	ks.run("generate-again", "generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--out", h.path("out-again"))
	if again := names(); !maps.Equal(again, before) {
		h.t.Errorf("a second generate changed the token Secrets: before %v, after %v", before, again)
	}
	documents(h.path("out-again"), before)
	ks.run("generate-rotate", "generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--rotate", "--out", h.path("out-rotate"))
	rotated := names()
	documents(h.path("out-rotate"), rotated)
	for _, n := range nodes {
		if rotated[n.name] == before[n.name] {
			h.t.Errorf("%s: generate --rotate kept token Secret %s", n.name, before[n.name])
		}
		old := strings.SplitN(before[n.name], "/", 2)[0]
		if _, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(h.ctx, old, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			h.t.Errorf("%s: generate --rotate left the old token Secret %s (get: %v)", n.name, old, err)
		}
	}
}

// userDataTokenID reads the bootstrap token id out of a user-data's
// bootstrap kubeconfig.
func (h *harness) userDataTokenID(path string) string {
	h.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatal(err)
	}
	var doc struct {
		WriteFiles []struct {
			Path     string `json:"path"`
			Content  string `json:"content"`
			Encoding string `json:"encoding"`
		} `json:"write_files"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		h.t.Fatalf("%s: %v", path, err)
	}
	for _, f := range doc.WriteFiles {
		if f.Path != bootstrapKubeconfigPath {
			continue
		}
		content := []byte(f.Content)
		switch f.Encoding {
		case "", "text/plain":
		case "b64", "base64":
			if content, err = base64.StdEncoding.DecodeString(f.Content); err != nil {
				h.t.Fatalf("%s: %s: %v", path, f.Path, err)
			}
		default:
			h.t.Fatalf("%s: %s: encoding %q unknown to the test", path, f.Path, f.Encoding)
		}
		kc, err := clientcmd.Load(content)
		if err != nil {
			h.t.Fatalf("%s: %s: %v", path, f.Path, err)
		}
		for _, ai := range kc.AuthInfos {
			if id, _, ok := strings.Cut(ai.Token, "."); ok {
				return id
			}
		}
		h.t.Fatalf("%s: %s holds no token", path, f.Path)
	}
	h.t.Fatalf("%s writes no %s", path, bootstrapKubeconfigPath)
	return ""
}
