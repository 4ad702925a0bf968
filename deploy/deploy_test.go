package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/kubestrap/kubestrap/serve"
)

const (
	serveDir    = "serve"
	profilesDir = "../examples/boot-profiles"
	// serveSource declares serve's flags; the Deployment's args are
	// checked against them.
	serveSource = "../cmd/kubestrap/serve.go"
	fixtureCA   = "../fixtures/pki/ca.pem"
	// serverNamespace is where the server runs.
	serverNamespace = "kubestrap"
)

// kindNamespaces is every kind deploy/serve may hold, and the namespaces
// its objects may name ("" for cluster-scoped kinds). A kind not here fails
// the test: a new kind is a decision, and this test checks it.
var kindNamespaces = map[string][]string{
	"Namespace":                        {""},
	"ServiceAccount":                   {serverNamespace},
	"ConfigMap":                        {serverNamespace},
	"Deployment":                       {serverNamespace},
	"Service":                          {serverNamespace},
	"Role":                             {metav1.NamespaceSystem, serverNamespace},
	"RoleBinding":                      {metav1.NamespaceSystem, serverNamespace},
	"ClusterRole":                      {""},
	"ClusterRoleBinding":               {""},
	"ValidatingAdmissionPolicy":        {""},
	"ValidatingAdmissionPolicyBinding": {""},
}

// strictDecoder decodes YAML as the API server's strict field validation
// does: unknown and duplicate fields are errors, and so are kinds no
// client-go type knows.
func strictDecoder() runtime.Decoder {
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

type object struct {
	where string // file and document, for messages
	gvk   string
	obj   runtime.Object
	meta  metav1.Object
}

// kustomization is the part of kustomization.yaml this directory uses;
// anything else in it fails the strict decode.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
}

func readKustomization(t *testing.T) kustomization {
	t.Helper()
	return readKustomizationIn(t, serveDir)
}

func readKustomizationIn(t *testing.T, dir string) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// loadManifests decodes every document of every resource deploy/serve's
// kustomization.yaml lists.
func loadManifests(t *testing.T) []object { t.Helper(); return loadDir(t, serveDir) }

// loadDir decodes every document of every resource dir's
// kustomization.yaml lists.
func loadDir(t *testing.T, dir string) []object {
	t.Helper()
	k := readKustomizationIn(t, dir)
	dec := strictDecoder()
	var objs []object
	for _, res := range k.Resources {
		file := filepath.Join(dir, res)
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s/kustomization.yaml names %s: %v", dir, res, err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			where := fmt.Sprintf("%s, document %d", file, i)
			if j, err := yaml.YAMLToJSON(doc); err != nil {
				t.Fatalf("%s: %v", where, err)
			} else if string(bytes.TrimSpace(j)) == "null" {
				continue // comments only
			}
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			m, err := meta.Accessor(obj)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			objs = append(objs, object{where: where, gvk: gvk.String(), obj: obj, meta: m})
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return objs
}

func all[T runtime.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func one[T runtime.Object](t *testing.T, objs []object) T {
	t.Helper()
	got := all[T](objs)
	if len(got) != 1 {
		var zero T
		t.Fatalf("the manifests hold %d %T, want exactly one", len(got), zero)
	}
	return got[0]
}

// TestStrictDecoder makes sure the decoder the other tests trust does
// refuse what the API server would.
func TestStrictDecoder(t *testing.T) {
	dec := strictDecoder()
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndat: {a: b}\n",
		"duplicate field": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n",
		"unknown kind":    "apiVersion: v1\nkind: ConfigMapp\nmetadata: {name: x}\n",
		"nested unknown":  "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: x}\nrules: [{verb: [get]}]\n",
	} {
		if _, _, err := dec.Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestKustomization(t *testing.T) { checkKustomization(t, serveDir) }

// checkKustomization wants dir's kustomization.yaml to apply every manifest
// in dir, and only those, with no namespace of its own.
func checkKustomization(t *testing.T, dir string) {
	t.Helper()
	k := readKustomizationIn(t, dir)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s", k.APIVersion, k.Kind)
	}
	if k.Namespace != "" {
		t.Errorf("kustomization.yaml sets namespace %s: it would move the Role and RoleBinding out of kube-system", k.Namespace)
	}
	// Every manifest in the directory is applied, and only those.
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v\nthe directory holds %v", got, want)
	}
}

func TestManifests(t *testing.T) {
	objs := loadManifests(t)
	seen := map[string]string{}
	for _, o := range objs {
		kind := o.obj.GetObjectKind().GroupVersionKind()
		nss, ok := kindNamespaces[kind.Kind]
		if !ok {
			t.Errorf("%s: kind %s is not one deploy/serve is checked for", o.where, o.gvk)
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
		// managed-by=kubestrap marks the tool's token Secrets: none of
		// these objects is one.
		if v, ok := o.meta.GetLabels()[token.LabelManagedBy]; ok {
			t.Errorf("%s: label %s=%s marks kubestrap's tokens", o.where, token.LabelManagedBy, v)
		}
		id := kind.Kind + " " + o.meta.GetNamespace() + "/" + o.meta.GetName()
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: %s also in %s", o.where, id, prev)
		}
		seen[id] = o.where
	}
	if n := one[*corev1.Namespace](t, objs); n.Name != serverNamespace {
		t.Errorf("Namespace %s, want %s", n.Name, serverNamespace)
	}
}

func TestRBAC(t *testing.T) {
	objs := loadManifests(t)
	sa := one[*corev1.ServiceAccount](t, objs)
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}
	records := bootNamespace(t, objs)

	// One Role, and one RoleBinding to it, in each namespace serve writes
	// to: the tokens' and the boot records'.
	roles := map[string]*rbacv1.Role{}
	for _, r := range all[*rbacv1.Role](objs) {
		if prev, dup := roles[r.Namespace]; dup {
			t.Errorf("Roles %s and %s both in %s", prev.Name, r.Name, r.Namespace)
		}
		roles[r.Namespace] = r
	}
	if got, want := slices.Sorted(maps.Keys(roles)), slices.Compact(slices.Sorted(slices.Values([]string{metav1.NamespaceSystem, records}))); !slices.Equal(got, want) {
		t.Fatalf("Roles in namespaces %q, want one in each of %q", got, want)
	}
	// Secrets: create and delete by name, never a read: serve keeps which
	// token is current in the boot records.
	sys := roles[metav1.NamespaceSystem]
	checkRules(t, "Role kube-system/"+sys.Name, sys.Rules, "", "secrets", "create", "delete")
	// The boot records: read, made, moved; never listed or deleted; and
	// only they, by name, may be read or changed: the node list beside
	// them is approve's to trust.
	rec := roles[records]
	var names []string
	for i := range token.RecordShards {
		names = append(names, fmt.Sprintf("kubestrap-boot-%02d", i))
	}
	for n := range 1000 {
		if name := token.BootRecordName(fmt.Sprint("node-", n)); !slices.Contains(names, name) {
			t.Fatalf("boot record %s is not one of %q", name, names)
		}
	}
	wantRec := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: names, Verbs: []string{"get", "update"}},
	}
	if !reflect.DeepEqual(rec.Rules, wantRec) {
		t.Errorf("Role %s/%s grants %+v\nwant exactly %+v", records, rec.Name, rec.Rules, wantRec)
	}
	bound := map[string]bool{}
	for _, rb := range all[*rbacv1.RoleBinding](objs) {
		role, ok := roles[rb.Namespace]
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
	for ns, r := range roles {
		if !bound[ns] {
			t.Errorf("Role %s/%s is bound to nothing", ns, r.Name)
		}
	}

	cr := one[*rbacv1.ClusterRole](t, objs)
	if cr.AggregationRule != nil {
		t.Errorf("ClusterRole %s aggregates other roles", cr.Name)
	}
	checkRules(t, "ClusterRole "+cr.Name, cr.Rules, "certificates.k8s.io", "certificatesigningrequests", "list", "watch")
	crb := one[*rbacv1.ClusterRoleBinding](t, objs)
	if want := (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}); crb.RoleRef != want {
		t.Errorf("ClusterRoleBinding %s binds %+v, want %+v", crb.Name, crb.RoleRef, want)
	}
	checkSubjects(t, "ClusterRoleBinding "+crb.Name, crb.Subjects, subject)
	if t.Failed() {
		return
	}

	// Every call two boots of one node make is one the Roles grant.
	for _, a := range mintTwice(t, records).actions {
		r, ok := roles[a.GetNamespace()]
		if !ok || !grants(r.Rules, a) {
			t.Errorf("%s %s in %q: no Role grants it", a.GetVerb(), a.GetResource().Resource, a.GetNamespace())
		}
	}
}

// grants reports whether rules allow the action, a rule with resourceNames
// only for those names (no wildcards: checkRules refuses them).
func grants(rules []rbacv1.PolicyRule, a k8stesting.Action) bool {
	name := actionName(a)
	for _, r := range rules {
		if slices.Contains(r.APIGroups, a.GetResource().Group) && slices.Contains(r.Resources, a.GetResource().Resource) &&
			slices.Contains(r.Verbs, a.GetVerb()) && (len(r.ResourceNames) == 0 || name != "" && slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

// bootNamespace is where the Deployment's serve keeps its boot records:
// its --namespace, by default the pod's own (TestDeployment wants no other).
func bootNamespace(t *testing.T, objs []object) string {
	t.Helper()
	s := servedFrom(t, objs)
	if ns := s.flags["namespace"]; ns != "" {
		return ns
	}
	return s.d.Namespace
}

// minted is what two token.Boot mints of one node did, through a fake
// clientset.
type minted struct {
	actions       []k8stesting.Action
	first, second token.Minted
}

// mintTwice runs what serve runs for two boots of one node, the second's
// first move of the boot record losing to another replica's (a conflict),
// and returns every API call made.
func mintTwice(t *testing.T, namespace string) minted {
	t.Helper()
	client := fake.NewClientset()
	conflicts := 1
	client.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts == 0 {
			return false, nil, nil
		}
		conflicts--
		name := a.(k8stesting.UpdateAction).GetObject().(metav1.Object).GetName()
		return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), name, errors.New("moved by another server"))
	})
	values := []string{"aaaaaa.0123456789abcdef", "bbbbbb.0123456789abcdef"}
	boot := &token.Boot{
		Client: client, Namespace: namespace, TTL: time.Hour,
		Now: func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) },
		Generate: func() (string, error) {
			if len(values) == 0 {
				return "", errors.New("more than two tokens generated")
			}
			v := values[0]
			values = values[1:]
			return v, nil
		},
	}
	var m minted
	var err error
	// The first boot creates the record; the second updates it, and its
	// first update conflicts.
	if m.first, err = boot.Mint(context.Background(), "kube-node1"); err != nil {
		t.Fatal(err)
	}
	if m.second, err = boot.Mint(context.Background(), "kube-node1"); err != nil {
		t.Fatal(err)
	}
	if conflicts != 0 {
		t.Fatalf("the second mint never updated the boot record")
	}
	if !slices.Equal(m.second.Deleted, []string{m.first.Token.ID}) || len(m.second.Kept) != 0 {
		t.Fatalf("the second mint deleted %q and kept %q, want the first's %s deleted", m.second.Deleted, m.second.Kept, m.first.Token.ID)
	}
	m.actions = client.Actions()
	return m
}

// checkRules wants exactly one rule: these verbs on this resource, no
// names, no wildcards.
func checkRules(t *testing.T, what string, rules []rbacv1.PolicyRule, group, resource string, verbs ...string) {
	t.Helper()
	want := []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: []string{resource}, Verbs: slices.Sorted(slices.Values(verbs))}}
	got := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		r.Verbs = slices.Sorted(slices.Values(r.Verbs))
		got[i] = r
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s grants %+v\nwant exactly %+v", what, got, want)
	}
}

func checkSubjects(t *testing.T, what string, got []rbacv1.Subject, want rbacv1.Subject) {
	t.Helper()
	if len(got) != 1 || got[0] != want {
		t.Errorf("%s binds %+v, want only %+v", what, got, want)
	}
}

// The shapes a validation of the policy may take: each must match one in
// full, so no validation escapes the checks below. CEL is not compiled here
// (that takes k8s.io/apiserver); the e2e tests run the policy against a
// real API server.
var (
	policyNamespace = regexp.MustCompile(`^request\.namespace == '([^']*)'$`)
	policyType      = regexp.MustCompile(`^has\(variables\.secret\.type\) && variables\.secret\.type == '([^']*)'$`)
	policyName      = regexp.MustCompile(`^variables\.secret\.metadata\.name\.matches\('([^']*)'\)$`)
	policyExpires   = regexp.MustCompile(`^request\.operation != 'CREATE' \|\| \(has\(object\.data\) && 'expiration' in object\.data\)$`)
	policyGroup     = regexp.MustCompile(`^request\.operation != 'CREATE' \|\| \(has\(object\.data\) && 'auth-extra-groups' in object\.data && string\(base64\.decode\(object\.data\['auth-extra-groups'\]\)\)\.matches\('([^']*)'\) && !string\(base64\.decode\(object\.data\['auth-extra-groups'\]\)\)\.startsWith\('([^']*)'\)\)$`)
	policyLabel     = regexp.MustCompile(`^has\(variables\.secret\.metadata\.labels\) && '([^']+)' in variables\.secret\.metadata\.labels && variables\.secret\.metadata\.labels\['([^']+)'\] == '([^']*)'$`)
)

// policyRules is what the policy lets kubestrap-serve create and delete.
type policyRules struct {
	namespace  string
	secretType string
	name       *regexp.Regexp
	labels     map[string]string
	// On CREATE: an expiration, and one group matching group.
	expires  bool
	group    *regexp.Regexp
	notGroup string // a prefix refused
}

// readPolicy reads a policy's validations, each of a shape this test knows,
// into the rules they make, and checks what serve's and approve's policies
// share: Forbidden with a message, kube-system, bootstrap tokens, one
// anchored name check.
func readPolicy(t *testing.T, validations []admissionv1.Validation) policyRules {
	t.Helper()
	rules := policyRules{labels: map[string]string{}}
	var names []string
	for i, v := range validations {
		expr := normalizeCEL(v.Expression)
		if v.Reason == nil || *v.Reason != metav1.StatusReasonForbidden {
			t.Errorf("validation %d: reason is not Forbidden", i)
		}
		if v.Message == "" && v.MessageExpression == "" {
			t.Errorf("validation %d: no message", i)
		}
		switch {
		case policyNamespace.MatchString(expr):
			rules.namespace = policyNamespace.FindStringSubmatch(expr)[1]
		case policyType.MatchString(expr):
			rules.secretType = policyType.FindStringSubmatch(expr)[1]
		case policyName.MatchString(expr):
			re, err := regexp.Compile(policyName.FindStringSubmatch(expr)[1])
			if err != nil {
				t.Errorf("validation %d: %v", i, err)
				continue
			}
			rules.name = re
			names = append(names, re.String())
		case policyExpires.MatchString(expr):
			rules.expires = true
		case policyGroup.MatchString(expr):
			m := policyGroup.FindStringSubmatch(expr)
			re, err := regexp.Compile(m[1])
			if err != nil {
				t.Errorf("validation %d: %v", i, err)
				continue
			}
			rules.group, rules.notGroup = re, m[2]
		case policyLabel.MatchString(expr):
			m := policyLabel.FindStringSubmatch(expr)
			if m[1] != m[2] {
				t.Errorf("validation %d tests label %s is there and reads label %s", i, m[1], m[2])
			}
			if _, dup := rules.labels[m[1]]; dup {
				t.Errorf("validation %d: label %s checked twice", i, m[1])
			}
			rules.labels[m[1]] = m[3]
		default:
			t.Errorf("validation %d is not a shape this test knows, update the test with it: %s", i, expr)
		}
	}
	if rules.namespace != metav1.NamespaceSystem {
		t.Errorf("the policy allows namespace %q, want %s", rules.namespace, metav1.NamespaceSystem)
	}
	if rules.secretType != string(bootstrapapi.SecretTypeBootstrapToken) {
		t.Errorf("the policy allows type %q, want %s", rules.secretType, bootstrapapi.SecretTypeBootstrapToken)
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], "^"+bootstrapapi.BootstrapTokenSecretPrefix) || !strings.HasSuffix(names[0], "$") {
		t.Errorf("the policy's name checks are %q, want one anchored ^%s...$", names, bootstrapapi.BootstrapTokenSecretPrefix)
	} else if name := bootstraputil.BootstrapTokenSecretName("abc123"); !rules.name.MatchString(name) {
		t.Errorf("the policy's name check %s refuses %s", rules.name, name)
	}
	return rules
}

func (r policyRules) check(op, namespace string, s *corev1.Secret) error {
	var errs []error
	if namespace != r.namespace {
		errs = append(errs, fmt.Errorf("namespace %q, the policy allows %q", namespace, r.namespace))
	}
	if string(s.Type) != r.secretType {
		errs = append(errs, fmt.Errorf("type %q, the policy allows %q", s.Type, r.secretType))
	}
	if !r.name.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("name %q does not match the policy's %s", s.Name, r.name))
	}
	for k, v := range r.labels {
		if got, ok := s.Labels[k]; !ok || got != v {
			errs = append(errs, fmt.Errorf("label %s=%q, the policy wants %q", k, got, v))
		}
	}
	if op == "CREATE" {
		if _, ok := s.Data[bootstrapapi.BootstrapTokenExpirationKey]; r.expires && !ok {
			errs = append(errs, errors.New("no expiration, the policy wants one"))
		}
		if g := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]); r.group != nil && (!r.group.MatchString(g) || strings.HasPrefix(g, r.notGroup)) {
			errs = append(errs, fmt.Errorf("groups %q do not match the policy's %s", g, r.group))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s Secret %s/%s would be denied: %w", op, namespace, s.Name, err)
	}
	return nil
}

func normalizeCEL(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestAdmissionPolicy(t *testing.T) {
	objs := loadManifests(t)
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

	// Secrets, CREATE and DELETE, in every namespace.
	mc := spec.MatchConstraints
	if mc == nil {
		t.Fatal("the policy has no matchConstraints")
	}
	if len(mc.ResourceRules) != 1 || len(mc.ExcludeResourceRules) != 0 {
		t.Fatalf("matchConstraints: %d resourceRules, %d excluded: want one and none", len(mc.ResourceRules), len(mc.ExcludeResourceRules))
	}
	rule := mc.ResourceRules[0]
	ops := slices.Sorted(slices.Values(rule.Operations))
	if !slices.Equal(rule.APIGroups, []string{""}) || !slices.Equal(rule.APIVersions, []string{"v1"}) ||
		!slices.Equal(rule.Resources, []string{"secrets"}) || len(rule.ResourceNames) != 0 ||
		!slices.Equal(ops, []admissionv1.OperationType{admissionv1.Create, admissionv1.Delete}) {
		t.Errorf("matchConstraints rule %+v, want CREATE and DELETE of v1 secrets", rule)
	}
	for what, sel := range map[string]*metav1.LabelSelector{"namespaceSelector": mc.NamespaceSelector, "objectSelector": mc.ObjectSelector} {
		if sel != nil && (len(sel.MatchLabels) > 0 || len(sel.MatchExpressions) > 0) {
			t.Errorf("matchConstraints %s %v: the policy must see every Secret the account touches", what, sel)
		}
	}

	// Only the server's account.
	username := fmt.Sprintf("system:serviceaccount:%s:%s", sa.Namespace, sa.Name)
	want := []admissionv1.MatchCondition{{Name: "is-kubestrap-serve", Expression: fmt.Sprintf("request.userInfo.username == '%s'", username)}}
	if !reflect.DeepEqual(spec.MatchConditions, want) {
		t.Errorf("matchConditions %+v\nwant %+v", spec.MatchConditions, want)
	}
	// The Secret judged: the one sent on CREATE, the one stored on DELETE
	// (object is null there).
	wantVars := []admissionv1.Variable{{Name: "secret", Expression: "request.operation == 'DELETE' ? oldObject : object"}}
	if !reflect.DeepEqual(spec.Variables, wantVars) {
		t.Errorf("variables %+v\nwant %+v", spec.Variables, wantVars)
	}

	rules := readPolicy(t, spec.Validations)
	if want := map[string]string{token.LabelManagedBy: token.ManagedBy, token.LabelSource: token.SourceServe}; !reflect.DeepEqual(rules.labels, want) {
		t.Errorf("the policy wants labels %v, want %v (what serve's tokens carry)", rules.labels, want)
	}
	if !rules.expires {
		t.Errorf("the policy lets the account create tokens that never expire")
	}
	if t.Failed() {
		return
	}

	// What serve really creates and deletes passes: two boots of one
	// node, the second deleting the first's unused token by name. A
	// DELETE is judged by the Secret stored: the one the first boot
	// created. And serve reads no Secret at all.
	secrets := corev1.SchemeGroupVersion.WithResource("secrets")
	created := map[string]*corev1.Secret{}
	var creates, deletes int
	for _, a := range mintTwice(t, bootNamespace(t, objs)).actions {
		if a.GetResource() != secrets {
			continue
		}
		switch a := a.(type) {
		case k8stesting.CreateAction:
			creates++
			s := a.GetObject().(*corev1.Secret)
			if err := rules.check("CREATE", a.GetNamespace(), s); err != nil {
				t.Error(err)
			}
			created[a.GetNamespace()+"/"+s.Name] = s
		case k8stesting.DeleteAction:
			deletes++
			stored, ok := created[a.GetNamespace()+"/"+a.GetName()]
			if !ok {
				t.Errorf("DELETE Secret %s/%s: not one serve created", a.GetNamespace(), a.GetName())
			} else if err := rules.check("DELETE", a.GetNamespace(), stored); err != nil {
				t.Error(err)
			}
		default:
			t.Errorf("%s Secrets in %q: serve must only create and delete them", a.GetVerb(), a.GetNamespace())
		}
	}
	if creates != 2 || deletes != 1 {
		t.Errorf("two mints made %d creates and %d deletes of Secrets, want 2 and 1", creates, deletes)
	}
}

// flagSpec is one of a command's flags, as its source declares it.
type flagSpec struct {
	name      string // canonical
	isBool    bool
	takesFile bool
	value     string // Value, when a string literal: the default
}

// serveFlags reads serve's flags from cmd/kubestrap/serve.go (package main,
// which a test cannot import): the Deployment's args are checked against
// the flags the binary has, not a copy of them.
func serveFlags(t *testing.T) map[string]flagSpec {
	t.Helper()
	flags := commandFlags(t, serveSource, "serveCommand")
	if flags["cluster"].name == "" || flags["nodes"].name == "" || flags["listen"].name == "" {
		t.Fatalf("%s: found flags %v in serveCommand, not -f, --nodes and --listen: has it changed shape?", serveSource, flags)
	}
	return flags
}

// commandFlags reads the cli.*Flag literals in function fn of source, by
// every name and alias.
func commandFlags(t *testing.T, source, fn string) map[string]flagSpec {
	t.Helper()
	f, err := parser.ParseFile(gotoken.NewFileSet(), source, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]flagSpec{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn {
			continue
		}
		ast.Inspect(fd, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := cl.Type.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "cli" || !strings.HasSuffix(sel.Sel.Name, "Flag") {
				return true
			}
			spec := flagSpec{isBool: sel.Sel.Name == "BoolFlag"}
			var aliases []string
			for _, el := range cl.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				switch {
				case key == nil:
				case key.Name == "Name":
					spec.name = stringLit(t, source, kv.Value)
				case key.Name == "Aliases":
					if al, ok := kv.Value.(*ast.CompositeLit); ok {
						for _, a := range al.Elts {
							aliases = append(aliases, stringLit(t, source, a))
						}
					}
				case key.Name == "Value":
					if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == gotoken.STRING {
						spec.value = stringLit(t, source, lit)
					}
				case key.Name == "TakesFile":
					id, ok := kv.Value.(*ast.Ident)
					spec.takesFile = ok && id.Name == "true"
				}
			}
			for _, n := range append(aliases, spec.name) {
				flags[n] = spec
			}
			return false
		})
	}
	return flags
}

func stringLit(t *testing.T, source string, e ast.Expr) string {
	t.Helper()
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != gotoken.STRING {
		t.Fatalf("%s: a flag name that is not a string literal", source)
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// parseServeArgs parses the arguments after "serve" as urfave/cli does:
// -name or --name, then a value as the next argument or after "=".
func parseServeArgs(args []string, flags map[string]flagSpec) (map[string]string, error) {
	return parseArgs("serve", args, flags)
}

// parseArgs parses the arguments after command cmd as urfave/cli does.
func parseArgs(cmd string, args []string, flags map[string]flagSpec) (map[string]string, error) {
	got := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return nil, fmt.Errorf("%q: %s takes no arguments, only flags", a, cmd)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		spec, ok := flags[name]
		if !ok {
			return nil, fmt.Errorf("%s: %s has no such flag", a, cmd)
		}
		switch {
		case spec.isBool && hasValue:
			if _, err := strconv.ParseBool(value); err != nil {
				return nil, fmt.Errorf("%s: %v", a, err)
			}
		case spec.isBool:
			value = "true"
		case !hasValue:
			if i+1 == len(args) {
				return nil, fmt.Errorf("%s: no value", a)
			}
			i++
			value = args[i]
		}
		if _, dup := got[spec.name]; dup {
			return nil, fmt.Errorf("--%s given twice", spec.name)
		}
		got[spec.name] = value
	}
	return got, nil
}

// served is the Deployment's serve container, its flags, and the
// ConfigMap keys its file flags name.
type served struct {
	d     *appsv1.Deployment
	c     corev1.Container
	flags map[string]string
	// keys maps a file flag (cluster, nodes) to its ConfigMap key.
	keys map[string]string
	port int32
}

func servedFrom(t *testing.T, objs []object) served {
	t.Helper()
	d := one[*appsv1.Deployment](t, objs)
	cm := one[*corev1.ConfigMap](t, objs)
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("Deployment %s: %d containers and %d init containers, want the serve container alone", d.Name, len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("container %s sets command %q: the image's entrypoint is /kubestrap", c.Name, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("container %s args %q do not start with serve", c.Name, c.Args)
	}
	specs := serveFlags(t)
	flags, err := parseServeArgs(c.Args[1:], specs)
	if err != nil {
		t.Fatalf("container %s args %q: %v", c.Name, c.Args, err)
	}
	s := served{d: d, c: c, flags: flags, keys: map[string]string{}}
	for _, f := range []string{"cluster", "nodes"} {
		if flags[f] == "" {
			t.Errorf("container %s args %q: no --%s", c.Name, c.Args, f)
		}
	}
	// Every file the server reads comes from the ConfigMap.
	for name, value := range flags {
		if !specs[name].takesFile {
			continue
		}
		key, err := configMapKey(spec, c, cm, value)
		if err != nil {
			t.Errorf("--%s %s: %v", name, value, err)
			continue
		}
		s.keys[name] = key
	}
	_, port, err := net.SplitHostPort(flags["listen"])
	if err != nil {
		t.Fatalf("--listen %q: %v", flags["listen"], err)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("--listen %q: %v", flags["listen"], err)
	}
	s.port = int32(p)
	if t.Failed() {
		t.FailNow()
	}
	return s
}

// configMapKey finds which key of cm the container sees at file.
func configMapKey(spec corev1.PodSpec, c corev1.Container, cm *corev1.ConfigMap, file string) (string, error) {
	if !path.IsAbs(file) {
		return "", errors.New("not an absolute path: the working directory is the image's")
	}
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(file), path.Clean(m.MountPath)+"/")
		if !ok {
			continue
		}
		if m.SubPath != "" {
			return "", fmt.Errorf("volume %s is mounted with subPath", m.Name)
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return "", fmt.Errorf("volume %s is not in the pod", m.Name)
		}
		src := spec.Volumes[i].ConfigMap
		if src == nil || src.Name != cm.Name {
			return "", fmt.Errorf("volume %s is not ConfigMap %s", m.Name, cm.Name)
		}
		key := rel
		if len(src.Items) > 0 {
			j := slices.IndexFunc(src.Items, func(it corev1.KeyToPath) bool { return it.Path == rel })
			if j < 0 {
				return "", fmt.Errorf("volume %s's items put no key at %s", m.Name, rel)
			}
			key = src.Items[j].Key
		}
		if _, ok := cm.Data[key]; !ok {
			return "", fmt.Errorf("ConfigMap %s has no key %s", cm.Name, key)
		}
		return key, nil
	}
	return "", errors.New("no volume is mounted there")
}

// portOf resolves a probe's or Service's target port against the
// container's ports.
func portOf(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

func TestDeployment(t *testing.T) {
	objs := loadManifests(t)
	sa := one[*corev1.ServiceAccount](t, objs)
	s := servedFrom(t, objs)
	d, c := s.d, s.c
	spec := d.Spec.Template.Spec

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s: replicas %v, want 2", d.Name, d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment %s: selector %v does not select its pods (%v)", d.Name, d.Spec.Selector, err)
	}
	if d.Namespace != sa.Namespace || spec.ServiceAccountName != sa.Name {
		t.Errorf("Deployment %s/%s runs as %s, want ServiceAccount %s/%s", d.Namespace, d.Name, spec.ServiceAccountName, sa.Namespace, sa.Name)
	}
	// The boot records are in the server's namespace, the one its Role
	// for ConfigMaps is in (TestRBAC): --namespace names it or is left out
	// (the pod's own by default).
	if ns, ok := s.flags["namespace"]; ok && ns != d.Namespace {
		t.Errorf("container %s: --namespace %s: the boot records belong in the server's namespace %s", c.Name, ns, d.Namespace)
	}
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		t.Errorf("Deployment %s: automountServiceAccountToken is not true: serve finds the API server and CA through it", d.Name)
	}
	if c.Image == "" {
		t.Errorf("container %s has no image", c.Name)
	}

	// Ports and probes agree with --listen.
	if portOf(c, intstr.FromString("http")) != s.port {
		t.Errorf("container port http is not --listen's %d", s.port)
	}
	for what, want := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"startupProbe":   {c.StartupProbe, "/healthz"},
		"livenessProbe":  {c.LivenessProbe, "/healthz"},
		"readinessProbe": {c.ReadinessProbe, "/readyz"},
	} {
		switch p := want.probe; {
		case p == nil || p.HTTPGet == nil:
			t.Errorf("container %s: no HTTP %s", c.Name, what)
		case p.HTTPGet.Path != want.path || portOf(c, p.HTTPGet.Port) != s.port:
			t.Errorf("container %s: %s GETs %s on port %s, want %s on %d", c.Name, what, p.HTTPGet.Path, p.HTTPGet.Port.String(), want.path, s.port)
		case p.HTTPGet.Scheme == corev1.URISchemeHTTPS && s.flags["tls-cert"] == "":
			t.Errorf("container %s: %s uses HTTPS and serve has no --tls-cert", c.Name, what)
		}
	}
	// serve waits up to a minute for the CSR list before it answers: the
	// startup probe must wait longer.
	if p := c.StartupProbe; p != nil && time.Duration(p.PeriodSeconds*p.FailureThreshold)*time.Second <= time.Minute {
		t.Errorf("container %s: the startup probe gives up after %ds, before serve's minute for the CSR list", c.Name, p.PeriodSeconds*p.FailureThreshold)
	}

	checkRestricted(t, spec, c)

	svc := one[*corev1.Service](t, objs)
	if svc.Namespace != d.Namespace || len(svc.Spec.Selector) == 0 ||
		!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service %s/%s selects %v: not the Deployment's pods", svc.Namespace, svc.Name, svc.Spec.Selector)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("Service %s: type %s, externalTrafficPolicy %s, want LoadBalancer and Local (source addresses kept for --match-source-ip)",
			svc.Name, svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || portOf(c, svc.Spec.Ports[0].TargetPort) != s.port {
		t.Errorf("Service %s ports %+v, want 80 to --listen's %d", svc.Name, svc.Spec.Ports, s.port)
	}
}

// checkRestricted wants the pod to meet Pod Security "restricted", with a
// read-only root and resources bounded.
func checkRestricted(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	psc, csc := spec.SecurityContext, c.SecurityContext
	if csc == nil {
		t.Fatalf("container %s has no securityContext", c.Name)
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(csc.RunAsNonRoot) && (psc == nil || !isTrue(psc.RunAsNonRoot)) {
		t.Errorf("runAsNonRoot is not set")
	}
	if !isTrue(csc.ReadOnlyRootFilesystem) {
		t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || isTrue(csc.Privileged) {
		t.Errorf("container %s: privilege escalation is not off", c.Name)
	}
	if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0 {
		t.Errorf("container %s: capabilities %+v, want drop [ALL] and nothing added", c.Name, csc.Capabilities)
	}
	seccomp := csc.SeccompProfile
	if seccomp == nil && psc != nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile is not RuntimeDefault")
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okr := c.Resources.Requests[name]
		lim, okl := c.Resources.Limits[name]
		if !okr || !okl || req.Cmp(lim) > 0 {
			t.Errorf("container %s: %s request %v and limit %v, want both, the request no larger", c.Name, name, req.String(), lim.String())
		}
	}
}

// TestConfigMapLoads loads the ConfigMap's files as the Deployment's serve
// would: with the real loader, the CA from the (in-cluster) resolver.
func TestConfigMapLoads(t *testing.T) {
	objs := loadManifests(t)
	s := servedFrom(t, objs)
	cm := one[*corev1.ConfigMap](t, objs)
	if len(cm.BinaryData) != 0 {
		t.Errorf("ConfigMap %s has binaryData", cm.Name)
	}
	dir := t.TempDir()
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(fixtureCA)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	src := model.Sources{
		ClusterFile: filepath.Join(dir, s.keys["cluster"]),
		NodesFile:   filepath.Join(dir, s.keys["nodes"]),
		// serve always passes --token-ttl; 1h is its default.
		Overrides: model.Overrides{TokenTTL: time.Hour.String()},
		CA: func(context.Context) ([]byte, string, error) {
			calls++
			return ca, "in-cluster service account", nil
		},
	}
	c, err := model.Load(context.Background(), src, time.Now())
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", cm.Name, err)
	}
	if c.CAFile != "" || calls != 1 {
		t.Errorf("ConfigMap %s: %s names caFile %q: in the cluster the CA is the service account's", cm.Name, s.keys["cluster"], c.CAFile)
	}
	for _, w := range c.Warnings {
		t.Errorf("ConfigMap %s: warning: %s", cm.Name, w.String())
	}
	if len(c.Nodes) == 0 {
		t.Errorf("ConfigMap %s: no nodes", cm.Name)
	}
	for _, n := range c.Nodes {
		if n.MAC == "" && n.UUID == "" && n.Serial == "" && n.Hostname == "" {
			t.Errorf("ConfigMap %s: node %s has no mac, uuid, serial or hostname: serve can never tell it is booting", cm.Name, n.Name)
		}
	}
}

func TestBootProfiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(profilesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for _, want := range []string{"fcos.yaml", "flatcar.yaml"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s: no %s", profilesDir, want)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			p, err := serve.LoadBootProfile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(p.Args, func(a string) bool {
				return strings.Contains(a, "{ignition_url}") || strings.Contains(a, "{nocloud_url}")
			}) {
				t.Errorf("no argument hands the machine its document ({ignition_url} or {nocloud_url})")
			}
			// serve writes `initrd URL`: iPXE names the image by the URL's
			// file name, and initrd= must name it (UEFI kernels look it
			// up by that name).
			var initrds []string
			for _, u := range p.Initrd {
				pu, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				initrds = append(initrds, path.Base(pu.Path))
			}
			for _, a := range p.Args {
				if name, ok := strings.CutPrefix(a, "initrd="); ok && !slices.Contains(initrds, name) {
					t.Errorf("%s names no initrd: iPXE calls them %q", a, initrds)
				}
			}
		})
	}
}
