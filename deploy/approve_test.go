package deploy_test

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/kubestrap/kubestrap/approve"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

const (
	approveDir = "approve"
	// approveSource declares approve's flags; the Deployment's args are
	// checked against them.
	approveSource = "../cmd/kubestrap/approve.go"
	approveName   = "kubestrap-approve"
)

// approveSigners are the signers approve decides (approve/controller.go):
// the only ones its account may approve for.
var approveSigners = []string{certv1.KubeAPIServerClientKubeletSignerName, certv1.KubeletServingSignerName}

// approveKindNamespaces is every kind deploy/approve may hold, and the
// namespaces its objects may name. No ConfigMap (it mounts serve's) and no
// Service (nothing dials it; Prometheus finds the pods).
var approveKindNamespaces = map[string][]string{
	"Namespace":                        {""},
	"ServiceAccount":                   {serverNamespace},
	"Deployment":                       {serverNamespace},
	"Role":                             {metav1.NamespaceSystem, metav1.NamespaceDefault, serverNamespace},
	"RoleBinding":                      {metav1.NamespaceSystem, metav1.NamespaceDefault, serverNamespace},
	"ClusterRole":                      {""},
	"ClusterRoleBinding":               {""},
	"ValidatingAdmissionPolicy":        {""},
	"ValidatingAdmissionPolicyBinding": {""},
}

func TestApproveKustomization(t *testing.T) { checkKustomization(t, approveDir) }

func TestApproveManifests(t *testing.T) {
	objs := loadDir(t, approveDir)
	ids := map[string]string{}
	for _, o := range objs {
		kind := o.obj.GetObjectKind().GroupVersionKind()
		nss, ok := approveKindNamespaces[kind.Kind]
		if !ok {
			t.Errorf("%s: kind %s is not one deploy/approve is checked for", o.where, o.gvk)
			continue
		}
		if strings.Contains(kind.Version, "alpha") || strings.Contains(kind.Version, "beta") {
			t.Errorf("%s: %s is not a GA version", o.where, o.gvk)
		}
		if got := o.meta.GetNamespace(); !slices.Contains(nss, got) {
			t.Errorf("%s: %s %s is in namespace %q, want one of %q", o.where, kind.Kind, o.meta.GetName(), got, nss)
		}
		if o.meta.GetName() == "" {
			t.Errorf("%s: %s has no name", o.where, kind.Kind)
		}
		if v, ok := o.meta.GetLabels()[token.LabelManagedBy]; ok {
			t.Errorf("%s: label %s=%s marks kubestrap's tokens", o.where, token.LabelManagedBy, v)
		}
		// The label README.md's removal deletes by: everything but the
		// namespace, which serve shares.
		if v := o.meta.GetLabels()["app.kubernetes.io/name"]; kind.Kind != "Namespace" && v != approveName {
			t.Errorf("%s: %s %s is labelled app.kubernetes.io/name=%q, want %s", o.where, kind.Kind, o.meta.GetName(), v, approveName)
		}
		id := kind.Kind + " " + o.meta.GetNamespace() + "/" + o.meta.GetName()
		if prev, dup := ids[id]; dup {
			t.Errorf("%s: %s also in %s", o.where, id, prev)
		}
		ids[id] = o.where
	}

	// The namespace is serve's, copied (kustomize loads no file outside
	// the directory): the copies must not drift, or applying one would
	// undo the other. Nothing else may be serve's too: applying one
	// directory would rewrite, and deleting it delete, the other's.
	serveObjs := loadManifests(t)
	ns, serveNS := one[*corev1.Namespace](t, objs), one[*corev1.Namespace](t, serveObjs)
	if !reflect.DeepEqual(ns, serveNS) {
		t.Errorf("deploy/approve's Namespace differs from deploy/serve's:\n%+v\n%+v", ns, serveNS)
	}
	for _, o := range serveObjs {
		kind := o.obj.GetObjectKind().GroupVersionKind().Kind
		id := kind + " " + o.meta.GetNamespace() + "/" + o.meta.GetName()
		if where, dup := ids[id]; dup && kind != "Namespace" {
			t.Errorf("%s: %s is also deploy/serve's (%s)", where, id, o.where)
		}
	}
}

// approver is the Deployment's approve container, its flags and the keys
// of serve's ConfigMap its file flags name.
type approver struct {
	d     *appsv1.Deployment
	c     corev1.Container
	cm    *corev1.ConfigMap // serve's
	specs map[string]flagSpec
	flags map[string]string
	keys  map[string]string
	port  int32
}

// flag is the value the approver runs with: given, or the default.
func (a approver) flag(name string) string {
	if v, ok := a.flags[name]; ok {
		return v
	}
	return a.specs[name].value
}

// leaseNamespace is where the approver's Lease is: --lease-namespace, by
// default the pod's own.
func (a approver) leaseNamespace() string {
	if ns := a.flags["lease-namespace"]; ns != "" {
		return ns
	}
	return a.d.Namespace
}

func approveFlags(t *testing.T) map[string]flagSpec {
	t.Helper()
	flags := commandFlags(t, approveSource, "approveCommand")
	for _, f := range []string{"cluster", "nodes", "listen", "leader-elect", "lease-namespace", "lease-name", "log-format", "kubeconfig"} {
		if flags[f].name == "" {
			t.Fatalf("%s: found flags %v in approveCommand, no --%s: has it changed shape?", approveSource, flags, f)
		}
	}
	if flags["lease-name"].value == "" {
		t.Fatalf("%s: --lease-name has no string default", approveSource)
	}
	return flags
}

func approverFrom(t *testing.T, objs []object) approver {
	t.Helper()
	d := one[*appsv1.Deployment](t, objs)
	cm := one[*corev1.ConfigMap](t, loadManifests(t))
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("Deployment %s: %d containers and %d init containers, want the approve container alone", d.Name, len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("container %s sets command %q: the image's entrypoint is /kubestrap", c.Name, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "approve" {
		t.Fatalf("container %s args %q do not start with approve", c.Name, c.Args)
	}
	specs := approveFlags(t)
	flags, err := parseArgs("approve", c.Args[1:], specs)
	if err != nil {
		t.Fatalf("container %s args %q: %v", c.Name, c.Args, err)
	}
	a := approver{d: d, c: c, cm: cm, specs: specs, flags: flags, keys: map[string]string{}}
	for _, f := range []string{"cluster", "nodes"} {
		if flags[f] == "" {
			t.Errorf("container %s args %q: no --%s", c.Name, c.Args, f)
		}
	}
	// Every file the approver reads comes from serve's ConfigMap.
	for name, value := range flags {
		if !specs[name].takesFile {
			continue
		}
		key, err := configMapKey(spec, c, cm, value)
		if err != nil {
			t.Errorf("--%s %s: %v", name, value, err)
			continue
		}
		a.keys[name] = key
	}
	_, port, err := net.SplitHostPort(a.flag("listen"))
	if err != nil {
		t.Fatalf("--listen %q: %v", a.flag("listen"), err)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("--listen %q: %v", a.flag("listen"), err)
	}
	a.port = int32(p)
	if t.Failed() {
		t.FailNow()
	}
	return a
}

func TestApproveDeployment(t *testing.T) {
	objs := loadDir(t, approveDir)
	sa := one[*corev1.ServiceAccount](t, objs)
	a := approverFrom(t, objs)
	d, c := a.d, a.c
	spec := d.Spec.Template.Spec

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s: replicas %v, want 2", d.Name, d.Spec.Replicas)
	}
	// Never on the nodes it approves: only control-plane nodes, whose
	// taint it tolerates, and no other toleration.
	if v, ok := spec.NodeSelector["node-role.kubernetes.io/control-plane"]; !ok || v != "" || len(spec.NodeSelector) != 1 {
		t.Errorf("Deployment %s: nodeSelector %v, want control-plane nodes only", d.Name, spec.NodeSelector)
	}
	if want := []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}; !reflect.DeepEqual(spec.Tolerations, want) {
		t.Errorf("Deployment %s: tolerations %+v, want %+v", d.Name, spec.Tolerations, want)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment %s: selector %v does not select its pods (%v)", d.Name, d.Spec.Selector, err)
	}
	if d.Namespace != sa.Namespace || spec.ServiceAccountName != sa.Name {
		t.Errorf("Deployment %s/%s runs as %s, want ServiceAccount %s/%s", d.Namespace, d.Name, spec.ServiceAccountName, sa.Namespace, sa.Name)
	}
	// The in-cluster config, and the pod's namespace for the Lease, come
	// from the mounted token: without it --lease-namespace falls back to
	// kube-system, where the account has no Lease.
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		t.Errorf("Deployment %s: automountServiceAccountToken is not true: approve finds the API server, CA and its namespace through it", d.Name)
	}
	serve := servedFrom(t, loadManifests(t))
	if c.Image == "" || c.Image != serve.c.Image {
		t.Errorf("container %s: image %q, want serve's %q: one binary, one release", c.Name, c.Image, serve.c.Image)
	}
	// serve's LoadBalancer must not send boots to the approver.
	svc := one[*corev1.Service](t, loadManifests(t))
	if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("serve's Service %s selects the approver's pods", svc.Name)
	}

	// The flags that matter: replicas take turns, JSON logs, in-cluster
	// credentials, the same node list as serve's.
	if v, _ := strconv.ParseBool(a.flag("leader-elect")); !v {
		t.Errorf("container %s: no --leader-elect: two replicas would both decide", c.Name)
	}
	if v := a.flag("log-format"); v != "json" {
		t.Errorf("container %s: --log-format %q, want json", c.Name, v)
	}
	if v, ok := a.flags["kubeconfig"]; ok {
		t.Errorf("container %s: --kubeconfig %s: in the cluster the service account is the credential", c.Name, v)
	}
	if v, ok := a.flags["lease-namespace"]; ok && v != d.Namespace {
		t.Errorf("container %s: --lease-namespace %s: the Lease belongs in the approver's namespace %s", c.Name, v, d.Namespace)
	}
	if !reflect.DeepEqual(a.keys, serve.keys) {
		t.Errorf("container %s reads ConfigMap keys %v, serve reads %v: one node list for both", c.Name, a.keys, serve.keys)
	}

	// Ports, probes and the scrape annotations agree with --listen.
	if portOf(c, intstr.FromString("http")) != a.port {
		t.Errorf("container port http is not --listen's %d", a.port)
	}
	for what, want := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"livenessProbe":  {c.LivenessProbe, "/healthz"},
		"readinessProbe": {c.ReadinessProbe, "/readyz"},
	} {
		switch p := want.probe; {
		case p == nil || p.HTTPGet == nil:
			t.Errorf("container %s: no HTTP %s", c.Name, what)
		case p.HTTPGet.Path != want.path || portOf(c, p.HTTPGet.Port) != a.port || p.HTTPGet.Scheme == corev1.URISchemeHTTPS:
			t.Errorf("container %s: %s GETs %s %s on port %s, want HTTP %s on %d", c.Name, what, p.HTTPGet.Scheme, p.HTTPGet.Path, p.HTTPGet.Port.String(), want.path, a.port)
		}
	}
	ann := d.Spec.Template.Annotations
	if want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(int(a.port)), "prometheus.io/path": "/metrics"}; !reflect.DeepEqual(ann, want) {
		t.Errorf("pod annotations %v, want %v", ann, want)
	}

	// SIGTERM: the Lease is released and the health server gets 5s.
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g != 30 {
		t.Errorf("Deployment %s: terminationGracePeriodSeconds %v, want 30", d.Name, g)
	}
	checkRestricted(t, spec, c)
}

// wantRule is a rule in checkExactRules' terms.
func wantRule(group, resource string, names []string, verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, ResourceNames: names, Verbs: verbs}
}

func normalizeRules(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		r.Verbs = slices.Sorted(slices.Values(r.Verbs))
		if len(r.ResourceNames) == 0 {
			r.ResourceNames = nil
		} else {
			r.ResourceNames = slices.Sorted(slices.Values(r.ResourceNames))
		}
		out[i] = r
	}
	slices.SortFunc(out, func(a, b rbacv1.PolicyRule) int { return cmp.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return out
}

// checkExactRules wants exactly these rules, in any order.
func checkExactRules(t *testing.T, what string, got, want []rbacv1.PolicyRule) {
	t.Helper()
	if g, w := normalizeRules(got), normalizeRules(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s grants\n%+v\nwant exactly\n%+v", what, g, w)
	}
}

// approveRBAC is deploy/approve's RBAC, checked for shape: one Role per
// namespace, each bound once, and the ClusterRole, all to the account.
type approveRBAC struct {
	roles   map[string]*rbacv1.Role // by namespace
	cluster *rbacv1.ClusterRole
}

func loadApproveRBAC(t *testing.T, objs []object) approveRBAC {
	t.Helper()
	sa := one[*corev1.ServiceAccount](t, objs)
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}
	r := approveRBAC{roles: map[string]*rbacv1.Role{}}
	for _, role := range all[*rbacv1.Role](objs) {
		if prev, dup := r.roles[role.Namespace]; dup {
			t.Errorf("Roles %s and %s both in %s", prev.Name, role.Name, role.Namespace)
		}
		r.roles[role.Namespace] = role
	}
	bound := map[string]bool{}
	for _, rb := range all[*rbacv1.RoleBinding](objs) {
		role, ok := r.roles[rb.Namespace]
		if !ok {
			t.Errorf("RoleBinding %s/%s: no Role in its namespace", rb.Namespace, rb.Name)
			continue
		}
		if want := (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}); rb.RoleRef != want {
			t.Errorf("RoleBinding %s/%s binds %+v, want %+v", rb.Namespace, rb.Name, rb.RoleRef, want)
		}
		if bound[rb.Namespace] {
			t.Errorf("RoleBinding %s/%s: a second binding in %s", rb.Namespace, rb.Name, rb.Namespace)
		}
		bound[rb.Namespace] = true
		checkSubjects(t, "RoleBinding "+rb.Namespace+"/"+rb.Name, rb.Subjects, subject)
	}
	for ns, role := range r.roles {
		if !bound[ns] {
			t.Errorf("Role %s/%s is bound to nothing", ns, role.Name)
		}
	}
	r.cluster = one[*rbacv1.ClusterRole](t, objs)
	if r.cluster.AggregationRule != nil {
		t.Errorf("ClusterRole %s aggregates other roles", r.cluster.Name)
	}
	crb := one[*rbacv1.ClusterRoleBinding](t, objs)
	if want := (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r.cluster.Name}); crb.RoleRef != want {
		t.Errorf("ClusterRoleBinding %s binds %+v, want %+v", crb.Name, crb.RoleRef, want)
	}
	checkSubjects(t, "ClusterRoleBinding "+crb.Name, crb.Subjects, subject)
	return r
}

// allows is RBAC's answer for the action in namespace ns: the namespace's
// Role, or the ClusterRole (bound cluster-wide). A rule with resourceNames
// allows only requests that name one, which a create never does.
func (r approveRBAC) allows(a k8stesting.Action) bool {
	rules := slices.Clone(r.cluster.Rules)
	if role, ok := r.roles[a.GetNamespace()]; ok && a.GetNamespace() != "" {
		rules = append(rules, role.Rules...)
	}
	resource := a.GetResource().Resource
	if sub := a.GetSubresource(); sub != "" {
		resource += "/" + sub
	}
	name := actionName(a)
	return slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool {
		return slices.Contains(rule.APIGroups, a.GetResource().Group) && slices.Contains(rule.Resources, resource) &&
			slices.Contains(rule.Verbs, a.GetVerb()) &&
			(len(rule.ResourceNames) == 0 || name != "" && slices.Contains(rule.ResourceNames, name))
	})
}

func actionName(a k8stesting.Action) string {
	switch a := a.(type) {
	case k8stesting.GetAction:
		return a.GetName()
	case k8stesting.DeleteAction:
		return a.GetName()
	case k8stesting.PatchAction:
		return a.GetName()
	case k8stesting.UpdateAction:
		if m, ok := a.GetObject().(metav1.Object); ok {
			return m.GetName()
		}
	}
	return "" // create, list, watch: no name to authorize
}

// signerAllowed is the CertificateApproval admission plugin's check on
// an approval update: verb approve on resource signers, named the CSR's
// signer or its domain's wildcard.
func (r approveRBAC) signerAllowed(signer string) bool {
	domain, _, _ := strings.Cut(signer, "/")
	return slices.ContainsFunc(r.cluster.Rules, func(rule rbacv1.PolicyRule) bool {
		return slices.Contains(rule.APIGroups, certv1.GroupName) && slices.Contains(rule.Resources, "signers") &&
			slices.Contains(rule.Verbs, "approve") &&
			(len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, signer) || slices.Contains(rule.ResourceNames, domain+"/*"))
	})
}

func TestApproveRBAC(t *testing.T) {
	objs := loadDir(t, approveDir)
	a := approverFrom(t, objs)
	r := loadApproveRBAC(t, objs)
	leaseNS, leaseName := a.leaseNamespace(), a.flag("lease-name")

	want := map[string][]rbacv1.PolicyRule{
		// Its informer's, the one live read, the one kind of write.
		"": {
			wantRule(certv1.GroupName, "certificatesigningrequests", nil, "get", "list", "watch"),
			wantRule(certv1.GroupName, "certificatesigningrequests/approval", nil, "update"),
			wantRule(certv1.GroupName, "signers", approveSigners, "approve"),
			wantRule("", "nodes", nil, "get", "list", "watch"),
			// Whether bound mode is in force (rbac.TokensAutoApproved).
			wantRule("authorization.k8s.io", "subjectaccessreviews", nil, "create"),
		},
		// kubestrap's tokens: read (RBAC cannot keep it to them), and
		// deleted once their node joined. Never made or changed.
		metav1.NamespaceSystem: {wantRule("", "secrets", nil, "delete", "get", "list", "watch")},
		// Events about cluster-scoped CSRs: tools/record writes them in
		// default, with core/v1 (no events.k8s.io).
		metav1.NamespaceDefault: {wantRule("", "events", nil, "create", "patch")},
		// The Lease, read and renewed by name; made once.
		leaseNS: {
			wantRule("coordination.k8s.io", "leases", nil, "create"),
			wantRule("coordination.k8s.io", "leases", []string{leaseName}, "get", "update"),
		},
	}
	// One Role in each namespace it writes to: the tokens', the Events'
	// and the Lease's.
	wantNS := slices.Compact(slices.Sorted(slices.Values([]string{metav1.NamespaceDefault, metav1.NamespaceSystem, leaseNS})))
	if got := slices.Sorted(maps.Keys(r.roles)); !slices.Equal(got, wantNS) {
		t.Fatalf("Roles in namespaces %q, want one in each of %q", got, wantNS)
	}
	checkExactRules(t, "ClusterRole "+r.cluster.Name, r.cluster.Rules, want[""])
	for ns, role := range r.roles {
		checkExactRules(t, "Role "+ns+"/"+role.Name, role.Rules, want[ns])
	}
	for _, s := range []string{certv1.KubeAPIServerClientSignerName, certv1.KubeAPIServerClientSignerName + "-x", "example.com/kubelet-serving"} {
		if r.signerAllowed(s) {
			t.Errorf("the account may approve CSRs of signer %s", s)
		}
	}
	if t.Failed() {
		return
	}

	// Every call the approver makes, deciding, ending a token, recording
	// Events and leading, is one the RBAC grants; every decision is for a
	// signer it may approve.
	run := runApprover(t, a)
	for _, act := range run.actions {
		if !r.allows(act) {
			name := actionName(act)
			t.Errorf("%s %s %q in %q (subresource %q): no rule grants it", act.GetVerb(), act.GetResource().Resource, name, act.GetNamespace(), act.GetSubresource())
		}
	}
	for _, csr := range run.decided {
		if !r.signerAllowed(csr.Spec.SignerName) {
			t.Errorf("CSR %s: signer %s is not one the account may approve", csr.Name, csr.Spec.SignerName)
		}
	}
}

func TestApproveAdmissionPolicy(t *testing.T) {
	objs := loadDir(t, approveDir)
	sa := one[*corev1.ServiceAccount](t, objs)
	p := one[*admissionv1.ValidatingAdmissionPolicy](t, objs)
	b := one[*admissionv1.ValidatingAdmissionPolicyBinding](t, objs)

	if b.Spec.PolicyName != p.Name {
		t.Errorf("the binding names policy %q, the policy is %q", b.Spec.PolicyName, p.Name)
	}
	if !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("the binding's validationActions are %v, want [Deny]", b.Spec.ValidationActions)
	}
	if b.Spec.MatchResources != nil || b.Spec.ParamRef != nil {
		t.Errorf("the binding narrows the policy (matchResources, paramRef): it must apply wherever the policy matches")
	}
	spec := p.Spec
	if spec.FailurePolicy == nil || *spec.FailurePolicy != admissionv1.Fail {
		t.Errorf("failurePolicy is not Fail: an expression that errs would let the request through")
	}
	if spec.ParamKind != nil {
		t.Errorf("the policy takes params: its binding has none")
	}

	// Secrets, DELETE (the one write the account has), in every namespace.
	mc := spec.MatchConstraints
	if mc == nil {
		t.Fatal("the policy has no matchConstraints")
	}
	if len(mc.ResourceRules) != 1 || len(mc.ExcludeResourceRules) != 0 {
		t.Fatalf("matchConstraints: %d resourceRules, %d excluded: want one and none", len(mc.ResourceRules), len(mc.ExcludeResourceRules))
	}
	rule := mc.ResourceRules[0]
	if !slices.Equal(rule.APIGroups, []string{""}) || !slices.Equal(rule.APIVersions, []string{"v1"}) ||
		!slices.Equal(rule.Resources, []string{"secrets"}) || len(rule.ResourceNames) != 0 ||
		!slices.Equal(rule.Operations, []admissionv1.OperationType{admissionv1.Delete}) {
		t.Errorf("matchConstraints rule %+v, want DELETE of v1 secrets", rule)
	}
	for what, sel := range map[string]*metav1.LabelSelector{"namespaceSelector": mc.NamespaceSelector, "objectSelector": mc.ObjectSelector} {
		if sel != nil && (len(sel.MatchLabels) > 0 || len(sel.MatchExpressions) > 0) {
			t.Errorf("matchConstraints %s %v: the policy must see every Secret the account deletes", what, sel)
		}
	}
	// The account's writes on Secrets are exactly what the policy
	// matches: a verb RBAC gave and the policy did not match would be
	// unconfined.
	r := loadApproveRBAC(t, objs)
	for _, role := range r.roles {
		for _, rl := range role.Rules {
			if !slices.Contains(rl.Resources, "secrets") {
				continue
			}
			for _, v := range rl.Verbs {
				if !slices.Contains([]string{"get", "list", "watch", "delete"}, v) {
					t.Errorf("Role %s/%s grants %s on Secrets, which the policy does not confine", role.Namespace, role.Name, v)
				}
			}
		}
	}

	// Only the approver's account.
	username := fmt.Sprintf("system:serviceaccount:%s:%s", sa.Namespace, sa.Name)
	wantMC := []admissionv1.MatchCondition{{Name: "is-kubestrap-approve", Expression: fmt.Sprintf("request.userInfo.username == '%s'", username)}}
	if !reflect.DeepEqual(spec.MatchConditions, wantMC) {
		t.Errorf("matchConditions %+v\nwant %+v", spec.MatchConditions, wantMC)
	}
	// The Secret judged is the one stored: object is null on DELETE.
	wantVars := []admissionv1.Variable{{Name: "secret", Expression: "oldObject"}}
	if !reflect.DeepEqual(spec.Variables, wantVars) {
		t.Errorf("variables %+v\nwant %+v", spec.Variables, wantVars)
	}

	rules := readPolicy(t, spec.Validations)
	if rules.expires || rules.group != nil {
		t.Errorf("the policy checks an expiration or a group, which only a CREATE carries: it matches DELETE alone")
	}
	// managed-by alone: the approver ends the tokens of serve and of
	// `kubestrap generate` alike, and only serve's carry a source label.
	if want := map[string]string{token.LabelManagedBy: token.ManagedBy}; !reflect.DeepEqual(rules.labels, want) {
		t.Errorf("the policy wants labels %v, want %v", rules.labels, want)
	}
	if t.Failed() {
		return
	}

	// What it must not delete is denied.
	mine := tokenOf(t, "cccccc", "kube-node1")
	kubeadm := mine.DeepCopy()
	delete(kubeadm.Labels, token.LabelManagedBy)
	opaque := mine.DeepCopy()
	opaque.Type = corev1.SecretTypeOpaque
	renamed := mine.DeepCopy()
	renamed.Name = "kubestrap-ca"
	for what, c := range map[string]struct {
		ns string
		s  *corev1.Secret
	}{
		"kubeadm's token":               {metav1.NamespaceSystem, kubeadm},
		"an Opaque Secret":              {metav1.NamespaceSystem, opaque},
		"a Secret not named as a token": {metav1.NamespaceSystem, renamed},
		"a token elsewhere":             {metav1.NamespaceDefault, mine},
		"a run marker":                  {metav1.NamespaceSystem, token.RunMarker("r1", time.Now())},
	} {
		if err := rules.check("DELETE", c.ns, c.s); err == nil {
			t.Errorf("%s: the policy lets the approver delete it", what)
		}
	}

	// What the approver really deletes passes: the token of a node that
	// joined, judged as the Secret stored.
	a := approverFrom(t, objs)
	run := runApprover(t, a)
	secrets := corev1.SchemeGroupVersion.WithResource("secrets")
	deletes := 0
	for _, act := range run.actions {
		if act.GetResource() != secrets {
			continue
		}
		switch act := act.(type) {
		case k8stesting.DeleteAction:
			deletes++
			stored, ok := run.seeded[act.GetNamespace()+"/"+act.GetName()]
			if !ok {
				t.Errorf("DELETE Secret %s/%s: not a Secret the test made", act.GetNamespace(), act.GetName())
			} else if err := rules.check("DELETE", act.GetNamespace(), stored); err != nil {
				t.Error(err)
			}
		case k8stesting.ListAction, k8stesting.WatchAction, k8stesting.GetAction:
		default:
			t.Errorf("%s Secrets in %q: the approver must only read and delete them", act.GetVerb(), act.GetNamespace())
		}
	}
	if deletes != 1 {
		t.Errorf("the approver made %d deletes of Secrets, want 1 (the joined node's token)", deletes)
	}
}

// tokenOf is the Secret serve mints for node.
func tokenOf(t *testing.T, id, node string) *corev1.Secret {
	t.Helper()
	tok, err := token.New(id+".0123456789abcdef", node, time.Now().Add(time.Hour), false)
	if err != nil {
		t.Fatal(err)
	}
	s := token.Secret(tok)
	s.Labels[token.LabelSource] = token.SourceServe
	return s
}

// approveNodes loads serve's ConfigMap as the Deployment's approve does:
// the real loader, the CA from the in-cluster service account.
func approveNodes(t *testing.T, a approver) []model.Node {
	t.Helper()
	dir := t.TempDir()
	for k, v := range a.cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(fixtureCA)
	if err != nil {
		t.Fatal(err)
	}
	c, err := model.Load(context.Background(), model.Sources{
		ClusterFile: filepath.Join(dir, a.keys["cluster"]),
		NodesFile:   filepath.Join(dir, a.keys["nodes"]),
		CA: func(context.Context) ([]byte, string, error) {
			return ca, "in-cluster service account", nil
		},
	}, time.Now())
	if err != nil {
		t.Fatalf("ConfigMap %s, as approve loads it: %v", a.cm.Name, err)
	}
	if len(c.Nodes) == 0 {
		t.Fatalf("ConfigMap %s: no nodes", a.cm.Name)
	}
	return c.Nodes
}

var csrKey = sync.OnceValue(func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

func csrPEM(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, csrKey())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// approveRun is what the approver did against a fake API server.
type approveRun struct {
	actions []k8stesting.Action
	// decided are the CSRs whose approval subresource it wrote.
	decided []*certv1.CertificateSigningRequest
	// seeded are the Secrets the test made, by namespace/name.
	seeded map[string]*corev1.Secret
}

// runApprover runs what `kubestrap approve --leader-elect` runs, against
// a fake clientset and the node list of serve's ConfigMap: a first node
// boots with its token and asks for its client certificate (approved), and
// for a serving certificate naming an address that is not its own (denied,
// after a live look at its Node); once its certificate is issued and its
// Node exists, its token is deleted. Events go through client-go's
// recorder, as the command wires it, and the Lease is taken and released
// with the lock the command builds. Only the approver's calls are
// returned: the test's own writes go to the tracker.
func runApprover(t *testing.T, a approver) approveRun {
	t.Helper()
	nodes := approveNodes(t, a)
	node := nodes[0].Name
	secret := tokenOf(t, "aaaaaa", node)
	other := tokenOf(t, "bbbbbb", node+"-unlisted")
	subject := pkix.Name{CommonName: approve.NodeUserPrefix + node, Organization: []string{approve.NodesGroup}}
	client := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-client"},
		Spec: certv1.CertificateSigningRequestSpec{
			SignerName: certv1.KubeAPIServerClientKubeletSignerName,
			Username:   approve.BootstrapUserPrefix + "aaaaaa",
			Groups:     []string{token.Group(node), bootstrapapi.BootstrapDefaultGroup, "system:authenticated"},
			Usages:     []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth},
			Request:    csrPEM(t, &x509.CertificateRequest{Subject: subject}),
		},
	}
	serving := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-serving"},
		Spec: certv1.CertificateSigningRequestSpec{
			SignerName: certv1.KubeletServingSignerName,
			Username:   approve.NodeUserPrefix + node,
			Groups:     []string{approve.NodesGroup, "system:authenticated"},
			Usages:     []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth},
			Request:    csrPEM(t, &x509.CertificateRequest{Subject: subject, DNSNames: []string{node}, IPAddresses: []net.IP{net.ParseIP("192.0.2.99")}}),
		},
	}
	// A CSR of another signer: never the approver's.
	foreign := client.DeepCopy()
	foreign.Name, foreign.Spec.SignerName = "csr-foreign", certv1.KubeAPIServerClientSignerName
	fc := fake.NewClientset(secret, other, client, serving, foreign)
	run := approveRun{seeded: map[string]*corev1.Secret{}}
	for _, s := range []*corev1.Secret{secret, other} {
		run.seeded[s.Namespace+"/"+s.Name] = s.DeepCopy()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: fc.CoreV1().Events("")})
	ctrl, err := approve.New(approve.Options{
		Client: fc, Policy: approve.NewPolicy(nodes), Identity: "deploy-test", Workers: 2,
		Recorder: events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: approveName}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctrl.Start(ctx)
	done := make(chan error, 1)
	lead, stopLeading := context.WithCancel(ctx)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: a.leaseNamespace(), Name: a.flag("lease-name")},
			Client:     fc.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: "deploy-test"},
		},
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		ReleaseOnCancel: true,
		Name:            approveName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) { done <- ctrl.Run(lctx) },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	elected := make(chan struct{})
	go func() { defer close(elected); elector.Run(lead) }()

	gvr := certv1.SchemeGroupVersion.WithResource("certificatesigningrequests")
	conditions := func(name string) []certv1.CertificateSigningRequestCondition {
		obj, err := fc.Tracker().Get(gvr, "", name)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*certv1.CertificateSigningRequest).Status.Conditions
	}
	waitUntil(t, "the client CSR approved and the serving CSR denied", func() bool {
		return len(conditions(client.Name)) > 0 && len(conditions(serving.Name)) > 0
	})
	if c := conditions(client.Name); c[0].Type != certv1.CertificateApproved {
		t.Fatalf("%s's own client CSR: %+v, want it approved", node, c)
	}
	if c := conditions(serving.Name); c[0].Type != certv1.CertificateDenied {
		t.Fatalf("%s's serving CSR for a foreign address: %+v, want it denied", node, c)
	}
	// The signer issues; the node registers.
	obj, _ := fc.Tracker().Get(gvr, "", client.Name)
	issued := obj.(*certv1.CertificateSigningRequest).DeepCopy()
	issued.Status.Certificate = []byte("issued")
	if err := fc.Tracker().Update(gvr, issued, ""); err != nil {
		t.Fatal(err)
	}
	if err := fc.Tracker().Create(corev1.SchemeGroupVersion.WithResource("nodes"), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, ""); err != nil {
		t.Fatal(err)
	}
	secrets := corev1.SchemeGroupVersion.WithResource("secrets")
	waitUntil(t, "the joined node's token deleted, and the Events written", func() bool {
		_, err := fc.Tracker().Get(secrets, secret.Namespace, secret.Name)
		n := 0
		for _, act := range fc.Actions() {
			if act.Matches("create", "events") {
				n++
			}
		}
		return err != nil && n >= 2
	})
	if len(conditions(foreign.Name)) != 0 {
		t.Errorf("the CSR of signer %s was decided", foreign.Spec.SignerName)
	}
	if _, err := fc.Tracker().Get(secrets, other.Namespace, other.Name); err != nil {
		t.Errorf("token %s, of no listed node, is gone: %v", other.Name, err)
	}

	// Stop leading: the Lease is released.
	stopLeading()
	<-elected
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	events.Shutdown()
	cancel()

	run.actions = fc.Actions()
	for _, act := range run.actions {
		if u, ok := act.(k8stesting.UpdateAction); ok && act.GetSubresource() == "approval" {
			run.decided = append(run.decided, u.GetObject().(*certv1.CertificateSigningRequest))
		}
	}
	// The calls the checks above rely on were made.
	for _, want := range []struct{ verb, resource, sub, ns string }{
		{"list", "certificatesigningrequests", "", ""},
		{"watch", "certificatesigningrequests", "", ""},
		{"update", "certificatesigningrequests", "approval", ""},
		{"list", "nodes", "", ""},
		{"get", "nodes", "", ""},
		{"list", "secrets", "", metav1.NamespaceSystem},
		{"delete", "secrets", "", metav1.NamespaceSystem},
		{"create", "events", "", metav1.NamespaceDefault},
		{"get", "leases", "", a.leaseNamespace()},
		{"create", "leases", "", a.leaseNamespace()},
		{"update", "leases", "", a.leaseNamespace()},
	} {
		if !slices.ContainsFunc(run.actions, func(act k8stesting.Action) bool {
			return act.Matches(want.verb, want.resource) && act.GetSubresource() == want.sub && act.GetNamespace() == want.ns
		}) {
			t.Errorf("the approver made no %s %s%s in %q", want.verb, want.resource, map[bool]string{true: "/" + want.sub}[want.sub != ""], want.ns)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return run
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
