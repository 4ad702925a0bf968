package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// bootT0 is when the boots of these tests happen, with a fraction of a
// second that the API server's timestamps (and the expiry) drop.
var bootT0 = time.Date(2026, 11, 27, 12, 0, 0, 500_000_000, time.UTC)

const (
	bootTTL = 2 * time.Hour
	// bootNS holds the boot records.
	bootNS = "kubestrap"
)

var (
	secretsGVR    = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
)

// bootEnv is a fake cluster that stamps creates as the API server does
// (CreationTimestamp from the injected clock, in whole seconds, a UID and
// a resourceVersion) and updates with its optimistic concurrency: an
// update of a stale resourceVersion is a Conflict.
type bootEnv struct {
	client *fake.Clientset
	now    time.Time
	uids   atomic.Int64
	rv     atomic.Int64
}

func newBootEnv(t *testing.T) *bootEnv {
	t.Helper()
	e := &bootEnv{client: fake.NewClientset(), now: bootT0}
	tracker := e.client.Tracker()
	e.client.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.CreateAction).GetObject().DeepCopyObject()
		m, err := meta.Accessor(obj)
		if err != nil {
			return false, nil, nil
		}
		if ts := m.GetCreationTimestamp(); ts.IsZero() {
			m.SetCreationTimestamp(metav1.NewTime(e.now.Truncate(time.Second)))
		}
		if m.GetUID() == "" {
			m.SetUID(types.UID(fmt.Sprintf("uid-%d", e.uids.Add(1))))
		}
		m.SetResourceVersion(strconv.FormatInt(e.rv.Add(1), 10))
		if err := tracker.Create(a.GetResource(), obj, a.GetNamespace()); err != nil {
			return true, nil, err
		}
		return true, obj.DeepCopyObject(), nil
	})
	e.client.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.UpdateAction).GetObject().DeepCopyObject()
		m, err := meta.Accessor(obj)
		if err != nil {
			return false, nil, nil
		}
		cur, err := tracker.Get(a.GetResource(), a.GetNamespace(), m.GetName())
		if err != nil {
			return true, nil, err
		}
		if cm, _ := meta.Accessor(cur); m.GetResourceVersion() != cm.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), m.GetName(), errors.New("the object has been modified"))
		}
		m.SetResourceVersion(strconv.FormatInt(e.rv.Add(1), 10))
		if err := tracker.Update(a.GetResource(), obj, a.GetNamespace()); err != nil {
			return true, nil, err
		}
		return true, obj.DeepCopyObject(), nil
	})
	return e
}

// boot is a Boot on e's clock; ids come from bootSeq(prefix).
func (e *bootEnv) boot(prefix string) *Boot {
	return &Boot{Client: e.client, Namespace: bootNS, TTL: bootTTL, Now: func() time.Time { return e.now }, Generate: bootSeq(prefix)}
}

// bootSeq yields "<prefix>0001.<prefix>s3cr3t00000001" and so on: ids that
// sort by prefix, and secrets easy to look for.
func bootSeq(prefix string) func() (string, error) {
	var n atomic.Int64
	return func() (string, error) {
		i := n.Add(1)
		return fmt.Sprintf("%s%04d.%ss3cr3t%08d", prefix, i, prefix, i), nil
	}
}

// putSecret stores a token Secret for node, straight in the tracker (as
// another server or a run of generate would have); edit may change it
// first. It may run in a reactor, off the test's goroutine.
func (e *bootEnv) putSecret(value, node string, edit func(*corev1.Secret)) error {
	tok, err := New(value, node, e.now.Add(24*time.Hour).Truncate(time.Second), false)
	if err != nil {
		return err
	}
	s := Secret(tok)
	s.UID = types.UID("uid-" + tok.ID)
	s.ResourceVersion = strconv.FormatInt(e.rv.Add(1), 10)
	if edit != nil {
		edit(s)
	}
	return e.client.Tracker().Create(secretsGVR, s, s.Namespace)
}

func (e *bootEnv) put(t *testing.T, value, node string, edit func(*corev1.Secret)) {
	t.Helper()
	if err := e.putSecret(value, node, edit); err != nil {
		t.Fatal(err)
	}
}

// setRecord makes id node's current token in its boot record, straight in
// the tracker with a new resourceVersion, as another server would: the
// record's other nodes stay as they are.
func (e *bootEnv) setRecord(node, id string) error {
	name := BootRecordName(node)
	tracker := e.client.Tracker()
	obj, err := tracker.Get(configMapsGVR, bootNS, name)
	if apierrors.IsNotFound(err) {
		cm := bootRecord(bootNS, name, map[string]string{node: id})
		cm.ResourceVersion = strconv.FormatInt(e.rv.Add(1), 10)
		return tracker.Create(configMapsGVR, cm, bootNS)
	}
	if err != nil {
		return err
	}
	cm := obj.(*corev1.ConfigMap).DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[node] = id
	cm.ResourceVersion = strconv.FormatInt(e.rv.Add(1), 10)
	return tracker.Update(configMapsGVR, cm, bootNS)
}

func (e *bootEnv) putRecord(t *testing.T, node, id string) {
	t.Helper()
	if err := e.setRecord(node, id); err != nil {
		t.Fatal(err)
	}
}

// recordData returns the data of the boot record with this name, nil if
// there is none.
func (e *bootEnv) recordData(t *testing.T, name string) map[string]string {
	t.Helper()
	obj, err := e.client.Tracker().Get(configMapsGVR, bootNS, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.ConfigMap).Data
}

// record returns the token id node's boot record names, "" if it has none.
func (e *bootEnv) record(t *testing.T, node string) string {
	t.Helper()
	return e.recordData(t, BootRecordName(node))[node]
}

// tokenSecrets returns the token Secrets in the cluster.
func (e *bootEnv) tokenSecrets(t *testing.T) []corev1.Secret {
	t.Helper()
	obj, err := e.client.Tracker().List(secretsGVR, schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Secret
	for _, s := range obj.(*corev1.SecretList).Items {
		if _, ok := s.Data[bootstrapapi.BootstrapTokenIDKey]; ok {
			out = append(out, s)
		}
	}
	return out
}

// tokens returns the ids of the token Secrets in the cluster, sorted.
func (e *bootEnv) tokens(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, s := range e.tokenSecrets(t) {
		ids = append(ids, string(s.Data[bootstrapapi.BootstrapTokenIDKey]))
	}
	slices.Sort(ids)
	return ids
}

// nodeTokens returns the ids of each node's token Secrets, sorted.
func (e *bootEnv) nodeTokens(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, s := range e.tokenSecrets(t) {
		n := s.Annotations[AnnotationNode]
		out[n] = append(out[n], string(s.Data[bootstrapapi.BootstrapTokenIDKey]))
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

func (e *bootEnv) secret(t *testing.T, id string) *corev1.Secret {
	t.Helper()
	obj, err := e.client.Tracker().Get(secretsGVR, metav1.NamespaceSystem, "bootstrap-token-"+id)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.Secret)
}

// noSecretReads fails the test if Boot read a Secret: it needs only to
// create and delete its own.
func (e *bootEnv) noSecretReads(t *testing.T) {
	t.Helper()
	for _, a := range e.client.Actions() {
		if a.GetResource().Resource == "secrets" && slices.Contains([]string{"get", "list", "watch", "update", "patch"}, a.GetVerb()) {
			t.Errorf("Boot did %s secrets", a.GetVerb())
		}
	}
}

// deleted returns the names of the Secrets Boot asked to delete, in order.
func (e *bootEnv) deleted() []string {
	var out []string
	for _, a := range e.client.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == "secrets" {
			out = append(out, d.GetName())
		}
	}
	return out
}

// recordCalls returns the verbs of the boot record calls from the
// from'th action on, in order.
func (e *bootEnv) recordCalls(from int) []string {
	var out []string
	for _, a := range e.client.Actions()[from:] {
		if a.GetResource().Resource == "configmaps" {
			out = append(out, a.GetVerb())
		}
	}
	return out
}

// recordWrites counts the creates and updates of boot records among the
// calls.
func recordWrites(calls []string) int {
	n := 0
	for _, v := range calls {
		if v == "create" || v == "update" {
			n++
		}
	}
	return n
}

// shardNodes returns n node names, none of except, whose boot record is
// the one named record.
func shardNodes(record string, n int, except ...string) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		node := fmt.Sprintf("node-%d", i)
		if BootRecordName(node) == record && !slices.Contains(except, node) {
			out = append(out, node)
		}
	}
	return out
}

// otherShardNode returns a node whose boot record is not the one named
// record.
func otherShardNode(record string) string {
	for i := 0; ; i++ {
		node := fmt.Sprintf("node-%d", i)
		if BootRecordName(node) != record {
			return node
		}
	}
}

// waitPending waits until n updates wait in b's queue for record.
func waitPending(t *testing.T, b *Boot, record string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		got := 0
		if q := b.queues[record]; q != nil {
			got = len(q.pending)
		}
		b.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d updates queued for %s, want %d", got, record, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// hookedClient calls before (and after) the Secret creates and deletes
// and the ConfigMap gets, creates and updates Boot makes, outside the fake
// clientset's lock (under which its reactors run one at a time), with
// the request's context.
type hookedClient struct {
	kubernetes.Interface
	hooks *hooks
}

type hooks struct {
	before func(ctx context.Context, verb, resource, name string)
	after  func(verb, resource, name string, err error)
}

func (h *hooks) call(ctx context.Context, verb, resource, name string, f func() error) {
	if h.before != nil {
		h.before(ctx, verb, resource, name)
	}
	err := f()
	if h.after != nil {
		h.after(verb, resource, name, err)
	}
}

func (c hookedClient) CoreV1() typedcorev1.CoreV1Interface {
	return hookedCore{c.Interface.CoreV1(), c.hooks}
}

type hookedCore struct {
	typedcorev1.CoreV1Interface
	hooks *hooks
}

func (c hookedCore) Secrets(ns string) typedcorev1.SecretInterface {
	return hookedSecrets{c.CoreV1Interface.Secrets(ns), c.hooks}
}

func (c hookedCore) ConfigMaps(ns string) typedcorev1.ConfigMapInterface {
	return hookedConfigMaps{c.CoreV1Interface.ConfigMaps(ns), c.hooks}
}

type hookedSecrets struct {
	typedcorev1.SecretInterface
	hooks *hooks
}

func (s hookedSecrets) Create(ctx context.Context, o *corev1.Secret, opts metav1.CreateOptions) (out *corev1.Secret, err error) {
	s.hooks.call(ctx, "create", "secrets", o.Name, func() error { out, err = s.SecretInterface.Create(ctx, o, opts); return err })
	return out, err
}

func (s hookedSecrets) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) (err error) {
	s.hooks.call(ctx, "delete", "secrets", name, func() error { err = s.SecretInterface.Delete(ctx, name, opts); return err })
	return err
}

type hookedConfigMaps struct {
	typedcorev1.ConfigMapInterface
	hooks *hooks
}

func (c hookedConfigMaps) Get(ctx context.Context, name string, opts metav1.GetOptions) (out *corev1.ConfigMap, err error) {
	c.hooks.call(ctx, "get", "configmaps", name, func() error { out, err = c.ConfigMapInterface.Get(ctx, name, opts); return err })
	return out, err
}

func (c hookedConfigMaps) Create(ctx context.Context, o *corev1.ConfigMap, opts metav1.CreateOptions) (out *corev1.ConfigMap, err error) {
	c.hooks.call(ctx, "create", "configmaps", o.Name, func() error { out, err = c.ConfigMapInterface.Create(ctx, o, opts); return err })
	return out, err
}

func (c hookedConfigMaps) Update(ctx context.Context, o *corev1.ConfigMap, opts metav1.UpdateOptions) (out *corev1.ConfigMap, err error) {
	c.hooks.call(ctx, "update", "configmaps", o.Name, func() error { out, err = c.ConfigMapInterface.Update(ctx, o, opts); return err })
	return out, err
}

// mintResult is one of the Mints a test runs at once.
type mintResult struct {
	m   Minted
	err error
}

// mintAll mints for the nodes at once, one goroutine each, and returns
// what each got, in the nodes' order.
func mintAll(b *Boot, nodes []string) []mintResult {
	out := make([]mintResult, len(nodes))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			<-start
			out[i].m, out[i].err = b.Mint(context.Background(), n)
		})
	}
	close(start)
	wg.Wait()
	return out
}

var recordNameRE = regexp.MustCompile(`^kubestrap-boot-0[0-3]$`)

// TestBootMintSecret: the first Mint creates one Secret, the bootstrap
// token kubeadm would make for the node, marked as serve's and of no run,
// and the node's entry in its boot record naming it.
func TestBootMintSecret(t *testing.T) {
	long := strings.Join([]string{strings.Repeat("a", 60), strings.Repeat("b", 60), strings.Repeat("c", 60), strings.Repeat("d", 60), "com"}, ".")
	for _, tt := range []struct {
		name, node string
		signing    bool
		nodeLabel  string
		group      string
		record     string
	}{
		{"plain", "n1", false, "n1", "system:bootstrappers:n1", "kubestrap-boot-00"},
		{"signing", "n1", true, "n1", "system:bootstrappers:n1", "kubestrap-boot-00"},
		{"fqdn", "n1.example.com", false, "n1.example.com", "system:bootstrappers:n1:example:com", "kubestrap-boot-02"},
		{"long name", long, false, nodeLabel(long), "system:bootstrappers:" + strings.ReplaceAll(long, ".", ":"), BootRecordName(long)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			b := e.boot("bt")
			b.Signing = tt.signing
			m, err := b.Mint(context.Background(), tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if m.Token.ID != "bt0001" || m.Token.Value() != "bt0001.bts3cr3t00000001" || m.Token.Node != tt.node || m.Token.Run != "" || m.Token.Signing != tt.signing {
				t.Errorf("token %#v (%s)", m.Token, m.Token.Value())
			}
			wantExp := bootT0.Add(bootTTL).Truncate(time.Second)
			if !m.Token.Expires.Equal(wantExp) || m.Token.Expires.Location() != time.UTC {
				t.Errorf("expires %v, want %v UTC", m.Token.Expires, wantExp)
			}
			if len(m.Deleted) != 0 || len(m.Kept) != 0 {
				t.Errorf("first mint deleted %v kept %v", m.Deleted, m.Kept)
			}
			if got := e.tokens(t); !slices.Equal(got, []string{"bt0001"}) {
				t.Fatalf("tokens %v, want exactly bt0001", got)
			}
			s := e.secret(t, "bt0001")
			wantLabels := map[string]string{
				"app.kubernetes.io/managed-by": "kubestrap",
				"kubestrap.dev/node":           tt.nodeLabel,
				"kubestrap.dev/source":         "serve",
			}
			if !maps.Equal(s.Labels, wantLabels) {
				t.Errorf("labels %v, want %v", s.Labels, wantLabels)
			}
			if _, ok := s.Labels[LabelRun]; ok {
				t.Error("a serve token carries a run label")
			}
			if s.Annotations[AnnotationNode] != tt.node {
				t.Errorf("annotations %v", s.Annotations)
			}
			if s.Namespace != "kube-system" || s.Type != "bootstrap.kubernetes.io/token" {
				t.Errorf("Secret %s/%s of type %s", s.Namespace, s.Name, s.Type)
			}
			want := map[string]string{
				"token-id":                       "bt0001",
				"token-secret":                   "bts3cr3t00000001",
				"expiration":                     "2026-11-27T14:00:00Z",
				"usage-bootstrap-authentication": "true",
				"auth-extra-groups":              tt.group,
				"description":                    "kubelet bootstrap token for node " + tt.node + " (kubestrap)",
			}
			if tt.signing {
				want["usage-bootstrap-signing"] = "true"
			}
			got := map[string]string{}
			for k, v := range s.Data {
				got[k] = string(v)
			}
			if !maps.Equal(got, want) {
				t.Errorf("data\n got %v\nwant %v", got, want)
			}

			// The boot record: the node's shard, holding node → id, and
			// labelled as kubestrap's only (it is no one node's).
			if BootRecordName(tt.node) != tt.record || !recordNameRE.MatchString(tt.record) {
				t.Errorf("BootRecordName(%s) = %s, want %s", tt.node, BootRecordName(tt.node), tt.record)
			}
			obj, err := e.client.Tracker().Get(configMapsGVR, bootNS, tt.record)
			if err != nil {
				t.Fatalf("boot record %s: %v", tt.record, err)
			}
			cm := obj.(*corev1.ConfigMap)
			if !maps.Equal(cm.Data, map[string]string{tt.node: "bt0001"}) || len(cm.BinaryData) != 0 {
				t.Errorf("boot record data %v", cm.Data)
			}
			if errs := validation.IsConfigMapKey(tt.node); len(errs) != 0 {
				t.Errorf("the node name is no ConfigMap key: %v", errs)
			}
			if !maps.Equal(cm.Labels, map[string]string{LabelManagedBy: ManagedBy}) || len(cm.Annotations) != 0 {
				t.Errorf("boot record labels %v annotations %v", cm.Labels, cm.Annotations)
			}
			cms, err := e.client.Tracker().List(configMapsGVR, schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "")
			if err != nil {
				t.Fatal(err)
			}
			if n := len(cms.(*corev1.ConfigMapList).Items); n != 1 {
				t.Errorf("%d ConfigMaps, want the one boot record", n)
			}
			e.noSecretReads(t)
		})
	}
}

// TestBootRecordName: the shard of a node is fixed (servers of different
// versions share the records), one of RecordShards, and nodes spread over
// all of them.
func TestBootRecordName(t *testing.T) {
	long := strings.Repeat("a.", 120) + "com"
	for node, want := range map[string]string{
		// sha256(node)'s first four bytes, big-endian, modulo 4.
		"n1":             "kubestrap-boot-00",
		"n2":             "kubestrap-boot-01",
		"n10":            "kubestrap-boot-03",
		"n1.example.com": "kubestrap-boot-02",
		"node-2":         "kubestrap-boot-03",
		long:             "kubestrap-boot-03",
	} {
		if got := BootRecordName(node); got != want {
			t.Errorf("BootRecordName(%.20s) = %s, want %s", node, got, want)
		}
	}
	count := map[string]int{}
	for i := range 400 {
		name := BootRecordName(fmt.Sprintf("node-%d.rack%d.example.com", i, i%7))
		if !recordNameRE.MatchString(name) {
			t.Fatalf("record name %s", name)
		}
		count[name]++
	}
	if len(count) != RecordShards {
		t.Errorf("shards used %v, want all %d", count, RecordShards)
	}
	for name, n := range count {
		if n < 50 {
			t.Errorf("%s holds %d of 400 nodes", name, n)
		}
	}
}

// TestBootMintSequence: boot after boot, the node keeps one unused token,
// the last one; a used one stays beside it.
func TestBootMintSequence(t *testing.T) {
	e := newBootEnv(t)
	used := map[string]bool{}
	b := e.boot("bt")
	b.Used = func(id string) bool { return used[id] }
	mint := func() Minted {
		t.Helper()
		m, err := b.Mint(context.Background(), "n1")
		if err != nil {
			t.Fatal(err)
		}
		if rec := e.recordData(t, BootRecordName("n1")); !maps.Equal(rec, map[string]string{"n1": m.Token.ID}) {
			t.Errorf("the boot record holds %v, want n1 → the minted %s", rec, m.Token.ID)
		}
		return m
	}
	first := mint()
	if got := e.tokens(t); !slices.Equal(got, []string{first.Token.ID}) {
		t.Fatalf("after one mint: %v", got)
	}

	e.now = e.now.Add(time.Minute)
	second := mint()
	if !slices.Equal(second.Deleted, []string{first.Token.ID}) || len(second.Kept) != 0 {
		t.Errorf("second mint deleted %v kept %v, want deleted [%s]", second.Deleted, second.Kept, first.Token.ID)
	}
	if got := e.tokens(t); !slices.Equal(got, []string{second.Token.ID}) {
		t.Errorf("after two mints: %v, want only %s", got, second.Token.ID)
	}

	// The kubelet of the second boot asked for its certificate: the third
	// boot keeps that token.
	used[second.Token.ID] = true
	e.now = e.now.Add(time.Minute)
	third := mint()
	if len(third.Deleted) != 0 || !slices.Equal(third.Kept, []string{second.Token.ID}) {
		t.Errorf("third mint deleted %v kept %v", third.Deleted, third.Kept)
	}
	if got := e.tokens(t); !slices.Equal(got, []string{second.Token.ID, third.Token.ID}) {
		t.Errorf("after three mints: %v", got)
	}

	// In the same second as the third: the third is the one before.
	fourth := mint()
	if !slices.Equal(fourth.Deleted, []string{third.Token.ID}) || len(fourth.Kept) != 0 {
		t.Errorf("fourth mint deleted %v kept %v", fourth.Deleted, fourth.Kept)
	}
	if got := e.tokens(t); !slices.Equal(got, []string{second.Token.ID, fourth.Token.ID}) {
		t.Errorf("after four mints: %v", got)
	}
	// One Boot, no one else: the record was read once, and then written
	// from what Boot wrote last.
	if got := e.recordCalls(0); !slices.Equal(got, []string{"get", "create", "update", "update", "update"}) {
		t.Errorf("record calls %v", got)
	}
	e.noSecretReads(t)
}

// TestBootMintRetires: a Mint retires the one token the node's entry in
// its boot record names, and nothing else.
func TestBootMintRetires(t *testing.T) {
	shard := BootRecordName("n1")
	// Nodes whose entries share n1's record, and one in another.
	near := shardNodes(shard, 2, "n1")
	far := otherShardNode(shard)
	for _, tt := range []struct {
		name string
		// setup stores what there is before the Mint (whose own token is
		// "bt0001").
		setup       func(t *testing.T, e *bootEnv)
		used        []string
		wantDeleted []string
		wantKept    []string
		wantLeft    []string
		// wantRecord is n1's record after, if not just n1 → bt0001.
		wantRecord map[string]string
	}{
		{
			name: "the current serve token is deleted",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0001")
			},
			wantDeleted: []string{"aa0001"},
			wantLeft:    []string{"bt0001"},
		},
		{
			name: "a used token is kept",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0001")
			},
			used:     []string{"aa0001"},
			wantKept: []string{"aa0001"},
			wantLeft: []string{"aa0001", "bt0001"},
		},
		{
			name: "other nodes' tokens and entries are untouched",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", near[0], serveLabel)
				e.putRecord(t, near[0], "aa0001")
				e.put(t, "aa0002.aaaaaaaaaaaaaaaa", near[1], serveLabel)
				e.putRecord(t, near[1], "aa0002")
				e.put(t, "aa0003.aaaaaaaaaaaaaaaa", far, serveLabel)
				e.putRecord(t, far, "aa0003")
			},
			wantLeft:   []string{"aa0001", "aa0002", "aa0003", "bt0001"},
			wantRecord: map[string]string{"n1": "bt0001", near[0]: "aa0001", near[1]: "aa0002"},
		},
		{
			// Boot never lists Secrets: a run's token is generate's to
			// rotate, in documents serve did not write.
			name: "the node's token of a generate run is left alone",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", func(s *corev1.Secret) { s.Labels[LabelRun] = "run0000001" })
			},
			wantLeft: []string{"aa0001", "bt0001"},
		},
		{
			name: "an offline token of the node is left alone",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", nil)
			},
			wantLeft: []string{"aa0001", "bt0001"},
		},
		{
			// Of the node's serve tokens, only the record's current one
			// goes: one left over (a replica's crash between create and
			// record) is not the record's.
			name: "only the record's token of several",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.put(t, "aa0002.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0002")
			},
			wantDeleted: []string{"aa0002"},
			wantLeft:    []string{"aa0001", "bt0001"},
		},
		{
			name: "the record's token is gone already (expired, cleaned up)",
			setup: func(t *testing.T, e *bootEnv) {
				e.putRecord(t, "n1", "gone01")
			},
			wantLeft: []string{"bt0001"},
		},
		{
			name: "a record without data",
			setup: func(t *testing.T, e *bootEnv) {
				cm := bootRecord(bootNS, shard, nil)
				cm.ResourceVersion = "1"
				if err := e.client.Tracker().Create(configMapsGVR, cm, bootNS); err != nil {
					t.Fatal(err)
				}
			},
			wantLeft: []string{"bt0001"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			tt.setup(t, e)
			b := e.boot("bt")
			b.Used = func(id string) bool { return slices.Contains(tt.used, id) }
			m, err := b.Mint(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			if m.Token.ID != "bt0001" || e.record(t, "n1") != "bt0001" {
				t.Errorf("minted %s, record names %s", m.Token.ID, e.record(t, "n1"))
			}
			if !slices.Equal(m.Deleted, tt.wantDeleted) || !slices.Equal(m.Kept, tt.wantKept) {
				t.Errorf("deleted %v kept %v, want deleted %v kept %v", m.Deleted, m.Kept, tt.wantDeleted, tt.wantKept)
			}
			if got := e.tokens(t); !slices.Equal(got, tt.wantLeft) {
				t.Errorf("tokens left %v, want %v", got, tt.wantLeft)
			}
			wantRecord := cmpOr(tt.wantRecord, map[string]string{"n1": "bt0001"})
			if got := e.recordData(t, shard); !maps.Equal(got, wantRecord) {
				t.Errorf("record %v, want %v", got, wantRecord)
			}
			if got := e.record(t, far); got != "" && got != "aa0003" {
				t.Errorf("%s's record names %s", far, got)
			}
			e.noSecretReads(t)
		})
	}
}

func cmpOr(m, def map[string]string) map[string]string {
	if m == nil {
		return def
	}
	return m
}

func serveLabel(s *corev1.Secret) { s.Labels[LabelSource] = SourceServe }

// TestBootMintRace: another server moves n1's record between this Mint's
// read and its write. The write is refused (a Conflict, or AlreadyExists
// for the shard's first record); the writer reads again, retires the
// other server's token as well, keeps the other server's entries, and its
// own stands: as if the other's request had come first. Minted says what
// this Mint did over all its tries.
func TestBootMintRace(t *testing.T) {
	near := shardNodes(BootRecordName("n1"), 1, "n1")[0]
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, e *bootEnv)
		first bool // the shard has no record yet: B creates it
		used  []string
		// other is server B's whole Mint, just before this write.
		other       func(e *bootEnv) error
		wantDeleted []string
		wantKept    []string
		wantLeft    []string
		wantRecord  map[string]string
	}{
		{
			name: "update conflicts",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0001")
			},
			other: func(e *bootEnv) error {
				// B retires aa0001 too: this Mint did already.
				err := e.client.Tracker().Delete(secretsGVR, metav1.NamespaceSystem, "bootstrap-token-aa0001")
				if err != nil && !apierrors.IsNotFound(err) {
					return err
				}
				return errors.Join(e.putSecret("bb0001.bbbbbbbbbbbbbbbb", "n1", serveLabel), e.setRecord("n1", "bb0001"))
			},
			// aa0001 by the first try, B's own token by the second.
			wantDeleted: []string{"aa0001", "bb0001"},
			wantLeft:    []string{"cc0001"},
			wantRecord:  map[string]string{"n1": "cc0001"},
		},
		{
			name: "a used token, kept over a conflict",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0001")
			},
			used: []string{"aa0001"},
			other: func(e *bootEnv) error {
				return errors.Join(e.putSecret("bb0001.bbbbbbbbbbbbbbbb", "n1", serveLabel), e.setRecord("n1", "bb0001"))
			},
			wantKept:    []string{"aa0001"},
			wantDeleted: []string{"bb0001"},
			wantLeft:    []string{"aa0001", "cc0001"},
			wantRecord:  map[string]string{"n1": "cc0001"},
		},
		{
			name:  "first boots race",
			first: true,
			other: func(e *bootEnv) error {
				return errors.Join(e.putSecret("bb0001.bbbbbbbbbbbbbbbb", "n1", serveLabel), e.setRecord("n1", "bb0001"))
			},
			wantDeleted: []string{"bb0001"},
			wantLeft:    []string{"cc0001"},
			wantRecord:  map[string]string{"n1": "cc0001"},
		},
		{
			// B's boot was another node's of the record: its entry
			// stays, and n1's token, found gone on the first try, is not
			// reported deleted on the second.
			name: "another node of the record moved",
			setup: func(t *testing.T, e *bootEnv) {
				e.putRecord(t, "n1", "gone01")
			},
			other: func(e *bootEnv) error {
				return errors.Join(e.putSecret("bb0001.bbbbbbbbbbbbbbbb", near, serveLabel), e.setRecord(near, "bb0001"))
			},
			wantLeft:   []string{"bb0001", "cc0001"},
			wantRecord: map[string]string{"n1": "cc0001", near: "bb0001"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			if tt.setup != nil {
				tt.setup(t, e)
			}
			verb := "update"
			if tt.first {
				verb = "create"
			}
			var once atomic.Bool
			e.client.PrependReactor(verb, "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if once.CompareAndSwap(false, true) {
					if err := tt.other(e); err != nil {
						t.Error(err)
					}
				}
				return false, nil, nil
			})
			b := e.boot("cc")
			b.Used = func(id string) bool { return slices.Contains(tt.used, id) }
			m, err := b.Mint(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			if got := e.tokens(t); !slices.Equal(got, tt.wantLeft) {
				t.Errorf("tokens %v, want %v", got, tt.wantLeft)
			}
			if got := e.recordData(t, BootRecordName("n1")); !maps.Equal(got, tt.wantRecord) {
				t.Errorf("record %v, want %v", got, tt.wantRecord)
			}
			if !slices.Equal(m.Deleted, tt.wantDeleted) || !slices.Equal(m.Kept, tt.wantKept) {
				t.Errorf("deleted %v kept %v, want deleted %v kept %v", m.Deleted, m.Kept, tt.wantDeleted, tt.wantKept)
			}
			want := []string{"get", verb, "get", "update"}
			if got := e.recordCalls(0); !slices.Equal(got, want) {
				t.Errorf("record calls %v, want %v", got, want)
			}
			e.noSecretReads(t)
		})
	}

	// A record others keep moving: Mint gives up, and undoes its token.
	t.Run("moved by others every time", func(t *testing.T) {
		e := newBootEnv(t)
		e.putRecord(t, "n1", "aa0001")
		var n atomic.Int64
		e.client.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if err := e.setRecord("n1", fmt.Sprintf("zz%04d", n.Add(1))); err != nil {
				t.Error(err)
			}
			return false, nil, nil
		})
		_, err := e.boot("cc").Mint(context.Background(), "n1")
		if err == nil || !strings.Contains(err.Error(), "node n1: boot record kubestrap/"+BootRecordName("n1")+": moved by others 8 times in a row") {
			t.Fatalf("err = %v", err)
		}
		if !errors.Is(err, ErrContended) || Unavailable(err) {
			t.Errorf("err = %v, want ErrContended (and not Unavailable)", err)
		}
		if got := e.tokens(t); len(got) != 0 {
			t.Errorf("tokens %v left", got)
		}
		if n.Load() != 8 {
			t.Errorf("%d writes tried, want 8", n.Load())
		}
		if !slices.Contains(e.deleted(), "bootstrap-token-cc0001") {
			t.Errorf("no undo: deletes %v", e.deleted())
		}
	})
}

// TestBootTwoServers: two servers (two Boots on one cluster) minting for
// the same nodes, one after the other and all at once: each retires the
// other's token, and of each node's tokens only the one recorded last
// stays.
func TestBootTwoServers(t *testing.T) {
	t.Run("in turn", func(t *testing.T) {
		e := newBootEnv(t)
		a, b := e.boot("aa"), e.boot("bb")
		mint := func(s *Boot, wantID, wantDeleted string) {
			t.Helper()
			m, err := s.Mint(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			if wantDeleted != "" {
				want = []string{wantDeleted}
			}
			if m.Token.ID != wantID || !slices.Equal(m.Deleted, want) {
				t.Errorf("minted %s deleted %v, want %s deleted %v", m.Token.ID, m.Deleted, wantID, want)
			}
			if got := e.tokens(t); !slices.Equal(got, []string{wantID}) {
				t.Errorf("tokens %v, want only %s", got, wantID)
			}
			if got := e.record(t, "n1"); got != wantID {
				t.Errorf("record names %s, want %s", got, wantID)
			}
		}
		mint(a, "aa0001", "")
		mint(b, "bb0001", "aa0001")
		// a's copy of the record is B's behind: its write conflicts, it
		// reads the record again and retires B's token (its own first
		// one is gone already).
		from := len(e.client.Actions())
		mint(a, "aa0002", "bb0001")
		if got := e.recordCalls(from); !slices.Equal(got, []string{"update", "get", "update"}) {
			t.Errorf("record calls %v, want a conflict, a read and the write", got)
		}
		mint(b, "bb0002", "aa0002")
		e.noSecretReads(t)
	})
	t.Run("at once", func(t *testing.T) {
		e := newBootEnv(t)
		a, b := e.boot("aa"), e.boot("bb")
		nodes := append(shardNodes(BootRecordName("n1"), 3), otherShardNode(BootRecordName("n1")))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var oks, contended int
		for _, s := range []*Boot{a, b} {
			for _, n := range nodes {
				for range 6 {
					wg.Go(func() {
						_, err := s.Mint(context.Background(), n)
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							oks++
						case errors.Is(err, ErrContended):
							contended++
						default:
							t.Errorf("node %s: %v", n, err)
						}
					})
				}
			}
		}
		wg.Wait()
		t.Logf("%d mints, %d contended", oks, contended)
		if oks == 0 {
			t.Fatal("no Mint succeeded")
		}
		have := e.nodeTokens(t)
		for _, n := range nodes {
			rec := e.record(t, n)
			switch got := have[n]; {
			case contended == 0 && !slices.Equal(got, []string{rec}):
				t.Errorf("%s: tokens %v, want only the recorded %s", n, got, rec)
			case len(got) > 1 || len(got) == 1 && got[0] != rec:
				// A batch that gave up may have retired the recorded
				// token before; none but it may stay.
				t.Errorf("%s: tokens %v, record %s", n, got, rec)
			}
		}
		e.noSecretReads(t)
	})
}

// TestBootGroupCommit: the mints of a storm share their record writes,
// and each node ends with its own token in the record.
func TestBootGroupCommit(t *testing.T) {
	e := newBootEnv(t)
	b := e.boot("gc")
	shard := BootRecordName("n1")
	nodes := shardNodes(shard, 50)

	check := func(round string, got []mintResult, before []mintResult, from int) {
		t.Helper()
		want := map[string]string{}
		var ids []string
		for i, r := range got {
			if r.err != nil {
				t.Fatalf("%s: node %s: %v", round, nodes[i], r.err)
			}
			want[nodes[i]] = r.m.Token.ID
			ids = append(ids, r.m.Token.ID)
			var wantDeleted []string
			if before != nil {
				wantDeleted = []string{before[i].m.Token.ID}
			}
			if !slices.Equal(r.m.Deleted, wantDeleted) || len(r.m.Kept) != 0 {
				t.Errorf("%s: %s deleted %v kept %v, want deleted %v", round, nodes[i], r.m.Deleted, r.m.Kept, wantDeleted)
			}
		}
		slices.Sort(ids)
		if len(slices.Compact(slices.Clone(ids))) != len(nodes) {
			t.Errorf("%s: ids %v, want one for each node", round, ids)
		}
		if got := e.recordData(t, shard); !maps.Equal(got, want) {
			t.Errorf("%s: record %v\nwant %v", round, got, want)
		}
		if got := e.tokens(t); !slices.Equal(got, ids) {
			t.Errorf("%s: tokens %v\nwant %v", round, got, ids)
		}
		calls := e.recordCalls(from)
		t.Logf("%s: %d mints, record calls %v", round, len(nodes), calls)
		if w := recordWrites(calls); w < 1 || w > 5 {
			t.Errorf("%s: %d record writes for %d mints, want a handful", round, w, len(nodes))
		}
	}
	first := mintAll(b, nodes)
	check("first boots", first, nil, 0)

	// Again: each retires its first token, and the writer starts from the
	// record it wrote, without reading it.
	from := len(e.client.Actions())
	second := mintAll(b, nodes)
	check("second boots", second, first, from)
	if calls := e.recordCalls(from); slices.Contains(calls, "get") {
		t.Errorf("second boots read the record: %v", calls)
	}
	for _, r := range []string{"kubestrap-boot-00", "kubestrap-boot-01", "kubestrap-boot-02", "kubestrap-boot-03"} {
		if r != shard && e.recordData(t, r) != nil {
			t.Errorf("record %s written", r)
		}
	}
	e.noSecretReads(t)
}

// TestBootMintMovedBetweenBatches: another server moved the record since
// the writer last wrote it. Its write from its own copy is a Conflict; it
// reads the record, retires the other server's token, keeps its entries.
func TestBootMintMovedBetweenBatches(t *testing.T) {
	near := shardNodes(BootRecordName("n1"), 1, "n1")[0]
	for _, tt := range []struct {
		name string
		// other is server B's Mint, between this server's two.
		other       func(e *bootEnv) error
		wantDeleted []string
		wantLeft    []string
		wantRecord  map[string]string
	}{
		{
			name: "the node's entry",
			other: func(e *bootEnv) error {
				err := e.client.Tracker().Delete(secretsGVR, metav1.NamespaceSystem, "bootstrap-token-aa0001")
				return errors.Join(err, e.putSecret("bb0001.bbbbbbbbbbbbbbbb", "n1", serveLabel), e.setRecord("n1", "bb0001"))
			},
			// aa0001 was gone already: B retired it.
			wantDeleted: []string{"bb0001"},
			wantLeft:    []string{"aa0002"},
			wantRecord:  map[string]string{"n1": "aa0002"},
		},
		{
			name: "another node's entry",
			other: func(e *bootEnv) error {
				return errors.Join(e.putSecret("bb0001.bbbbbbbbbbbbbbbb", near, serveLabel), e.setRecord(near, "bb0001"))
			},
			wantDeleted: []string{"aa0001"},
			wantLeft:    []string{"aa0002", "bb0001"},
			wantRecord:  map[string]string{"n1": "aa0002", near: "bb0001"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			b := e.boot("aa")
			if _, err := b.Mint(context.Background(), "n1"); err != nil {
				t.Fatal(err)
			}
			if err := tt.other(e); err != nil {
				t.Fatal(err)
			}
			from := len(e.client.Actions())
			m, err := b.Mint(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			if m.Token.ID != "aa0002" || !slices.Equal(m.Deleted, tt.wantDeleted) || len(m.Kept) != 0 {
				t.Errorf("minted %s deleted %v kept %v, want aa0002 deleted %v", m.Token.ID, m.Deleted, m.Kept, tt.wantDeleted)
			}
			if got := e.recordCalls(from); !slices.Equal(got, []string{"update", "get", "update"}) {
				t.Errorf("record calls %v, want a conflict, a read and the write", got)
			}
			if got := e.tokens(t); !slices.Equal(got, tt.wantLeft) {
				t.Errorf("tokens %v, want %v", got, tt.wantLeft)
			}
			if got := e.recordData(t, BootRecordName("n1")); !maps.Equal(got, tt.wantRecord) {
				t.Errorf("record %v, want %v", got, tt.wantRecord)
			}
			e.noSecretReads(t)
		})
	}

	// Someone deleted the record the writer last wrote: its update is
	// NotFound; it reads the record again, finds none and starts a new
	// one, rather than fail the batch.
	t.Run("deleted", func(t *testing.T) {
		e := newBootEnv(t)
		b := e.boot("aa")
		if _, err := b.Mint(context.Background(), "n1"); err != nil {
			t.Fatal(err)
		}
		if err := e.client.Tracker().Delete(configMapsGVR, bootNS, BootRecordName("n1")); err != nil {
			t.Fatal(err)
		}
		from := len(e.client.Actions())
		m, err := b.Mint(context.Background(), "n1")
		if err != nil {
			t.Fatal(err)
		}
		// The first try retired aa0001, n1's in the writer's copy, before
		// the write found the record gone.
		if m.Token.ID != "aa0002" || !slices.Equal(m.Deleted, []string{"aa0001"}) {
			t.Errorf("minted %s deleted %v, want aa0002 deleted [aa0001]", m.Token.ID, m.Deleted)
		}
		if got := e.recordCalls(from); !slices.Equal(got, []string{"update", "get", "create"}) {
			t.Errorf("record calls %v, want the failed update, a read and a new record", got)
		}
		if got := e.recordData(t, BootRecordName("n1")); !maps.Equal(got, map[string]string{"n1": "aa0002"}) {
			t.Errorf("record %v", got)
		}
		if got := e.tokens(t); !slices.Equal(got, []string{"aa0002"}) {
			t.Errorf("tokens %v", got)
		}
	})
}

// TestBootMintBatch: the updates of one batch, applied in order. The
// writer is held in its first batch's read of the record while the next
// batch's updates queue, so they are one batch for sure.
func TestBootMintBatch(t *testing.T) {
	shard := BootRecordName("n1")
	nodes := shardNodes(shard, 4, "n1")
	primer := nodes[3]
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "x", errors.New("RBAC says no"))

	// setup holds b's writer in the read of the record for primer's
	// Mint, whose result comes on the channel; release lets it go on.
	setup := func(t *testing.T, e *bootEnv) (b *Boot, primed <-chan mintResult, release func()) {
		t.Helper()
		entered, hold := make(chan struct{}), make(chan struct{})
		var once atomic.Bool
		b = e.boot("bt")
		b.Client = hookedClient{e.client, &hooks{before: func(_ context.Context, verb, resource, _ string) {
			if verb == "get" && resource == "configmaps" && once.CompareAndSwap(false, true) {
				close(entered)
				<-hold
			}
		}}}
		ch := make(chan mintResult, 1)
		go func() {
			m, err := b.Mint(context.Background(), primer)
			ch <- mintResult{m, err}
		}()
		<-entered
		return b, ch, sync.OnceFunc(func() { close(hold) })
	}
	// mint starts a Mint for node and waits until it is queued: the
	// updates queue in the order of the calls.
	mint := func(t *testing.T, ctx context.Context, b *Boot, node string, queued int) <-chan mintResult {
		t.Helper()
		ch := make(chan mintResult, 1)
		go func() {
			m, err := b.Mint(ctx, node)
			ch <- mintResult{m, err}
		}()
		waitPending(t, b, shard, queued)
		return ch
	}

	t.Run("a failed retirement fails its update alone", func(t *testing.T) {
		e := newBootEnv(t)
		for i, n := range nodes[:3] {
			v := fmt.Sprintf("aa%04d.aaaaaaaaaaaaaaaa", i+1)
			e.put(t, v, n, serveLabel)
			e.putRecord(t, n, v[:6])
		}
		e.client.PrependReactor("delete", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.(k8stesting.DeleteAction).GetName() == "bootstrap-token-aa0002" {
				return true, nil, forbidden
			}
			return false, nil, nil
		})
		b, primed, release := setup(t, e)
		defer release()
		var results []<-chan mintResult
		for i, n := range nodes[:3] {
			results = append(results, mint(t, context.Background(), b, n, i+1))
		}
		from := len(e.client.Actions())
		release()
		p := <-primed
		if p.err != nil {
			t.Fatal(p.err)
		}
		got := make([]mintResult, 3)
		for i, ch := range results {
			got[i] = <-ch
		}
		if got[0].err != nil || got[2].err != nil {
			t.Fatalf("the others failed too: %v, %v", got[0].err, got[2].err)
		}
		if !slices.Equal(got[0].m.Deleted, []string{"aa0001"}) || !slices.Equal(got[2].m.Deleted, []string{"aa0003"}) {
			t.Errorf("deleted %v and %v", got[0].m.Deleted, got[2].m.Deleted)
		}
		err := got[1].err
		if err == nil || !strings.Contains(err.Error(), "node "+nodes[1]+": deleting the earlier token aa0002") || !strings.Contains(err.Error(), "RBAC says no") || Unavailable(err) {
			t.Errorf("err = %v", err)
		}
		if got[1].m.Token.ID != "" {
			t.Errorf("the failed Mint returned %s", got[1].m.Token.ID)
		}
		wantRecord := map[string]string{primer: p.m.Token.ID, nodes[0]: got[0].m.Token.ID, nodes[1]: "aa0002", nodes[2]: got[2].m.Token.ID}
		if rec := e.recordData(t, shard); !maps.Equal(rec, wantRecord) {
			t.Errorf("record %v, want %v", rec, wantRecord)
		}
		want := []string{"aa0002", p.m.Token.ID, got[0].m.Token.ID, got[2].m.Token.ID}
		slices.Sort(want)
		if have := e.tokens(t); !slices.Equal(have, want) {
			t.Errorf("tokens %v, want %v (the failed Mint's undone)", have, want)
		}
		// The primer's read and write, then the batch's: one for the
		// three.
		if calls := e.recordCalls(from); !slices.Equal(calls, []string{"get", "update", "update"}) {
			t.Errorf("record calls %v, want the primer's write and one for the batch", calls)
		}
	})

	t.Run("one node twice", func(t *testing.T) {
		e := newBootEnv(t)
		e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
		e.putRecord(t, "n1", "aa0001")
		b, primed, release := setup(t, e)
		defer release()
		x := mint(t, context.Background(), b, "n1", 1)
		y := mint(t, context.Background(), b, "n1", 2)
		release()
		p, mx, my := <-primed, <-x, <-y
		if p.err != nil || mx.err != nil || my.err != nil {
			t.Fatal(p.err, mx.err, my.err)
		}
		// In order: x retires the recorded token, y retires x's.
		if !slices.Equal(mx.m.Deleted, []string{"aa0001"}) || !slices.Equal(my.m.Deleted, []string{mx.m.Token.ID}) {
			t.Errorf("x (%s) deleted %v, y (%s) deleted %v", mx.m.Token.ID, mx.m.Deleted, my.m.Token.ID, my.m.Deleted)
		}
		if got := e.record(t, "n1"); got != my.m.Token.ID {
			t.Errorf("record names %s, want y's %s", got, my.m.Token.ID)
		}
		want := []string{p.m.Token.ID, my.m.Token.ID}
		slices.Sort(want)
		if got := e.tokens(t); !slices.Equal(got, want) {
			t.Errorf("tokens %v, want %v", got, want)
		}
	})

	// x cannot retire the node's token: the node keeps it, and the next
	// update of the batch retires it in turn.
	t.Run("one node twice, the first retirement failing", func(t *testing.T) {
		e := newBootEnv(t)
		e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
		e.putRecord(t, "n1", "aa0001")
		var failed atomic.Bool
		e.client.PrependReactor("delete", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.(k8stesting.DeleteAction).GetName() == "bootstrap-token-aa0001" && failed.CompareAndSwap(false, true) {
				return true, nil, apierrors.NewServiceUnavailable("restarting")
			}
			return false, nil, nil
		})
		b, primed, release := setup(t, e)
		defer release()
		x := mint(t, context.Background(), b, "n1", 1)
		y := mint(t, context.Background(), b, "n1", 2)
		release()
		p, mx, my := <-primed, <-x, <-y
		if p.err != nil || my.err != nil {
			t.Fatal(p.err, my.err)
		}
		if mx.err == nil || !Unavailable(mx.err) || !strings.Contains(mx.err.Error(), "deleting the earlier token aa0001") {
			t.Errorf("x: err = %v", mx.err)
		}
		if !slices.Equal(my.m.Deleted, []string{"aa0001"}) {
			t.Errorf("y deleted %v, want aa0001", my.m.Deleted)
		}
		if got := e.record(t, "n1"); got != my.m.Token.ID {
			t.Errorf("record names %s, want y's %s", got, my.m.Token.ID)
		}
		want := []string{p.m.Token.ID, my.m.Token.ID}
		slices.Sort(want)
		if got := e.tokens(t); !slices.Equal(got, want) {
			t.Errorf("tokens %v, want %v", got, want)
		}
	})

	// A request gone while its update waits: the update is dropped and
	// its token undone; the others of the batch are written.
	t.Run("a request gone while queued", func(t *testing.T) {
		e := newBootEnv(t)
		b, primed, release := setup(t, e)
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		x := mint(t, ctx, b, nodes[0], 1)
		y := mint(t, context.Background(), b, nodes[1], 2)
		cancel()
		release()
		p, mx, my := <-primed, <-x, <-y
		if p.err != nil || my.err != nil {
			t.Fatal(p.err, my.err)
		}
		if !errors.Is(mx.err, context.Canceled) || mx.m.Token.ID != "" {
			t.Errorf("x: %s, %v; want the cancellation", mx.m.Token.ID, mx.err)
		}
		wantRecord := map[string]string{primer: p.m.Token.ID, nodes[1]: my.m.Token.ID}
		if rec := e.recordData(t, shard); !maps.Equal(rec, wantRecord) {
			t.Errorf("record %v, want %v", rec, wantRecord)
		}
		want := []string{p.m.Token.ID, my.m.Token.ID}
		slices.Sort(want)
		if got := e.tokens(t); !slices.Equal(got, want) {
			t.Errorf("tokens %v, want %v", got, want)
		}
	})
}

// TestBootParallel: Parallel bounds the token creates in flight; more
// Mints wait their turn, and give up when their request does.
func TestBootParallel(t *testing.T) {
	for _, tt := range []struct {
		name     string
		parallel int
		want     int
	}{
		{"three", 3, 3},
		{"default", 0, DefaultParallel},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			release := make(chan struct{})
			var inFlight, peak, creates atomic.Int64
			b := e.boot("pp")
			b.Parallel = tt.parallel
			b.Client = hookedClient{e.client, &hooks{before: func(_ context.Context, verb, resource, _ string) {
				if verb != "create" || resource != "secrets" {
					return
				}
				creates.Add(1)
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				<-release
				inFlight.Add(-1)
			}}}
			var nodes []string
			for i := range tt.want + 8 {
				nodes = append(nodes, fmt.Sprintf("node-%d", i))
			}
			done := make(chan []mintResult)
			go func() { done <- mintAll(b, nodes) }()
			deadline := time.Now().Add(10 * time.Second)
			for inFlight.Load() < int64(tt.want) {
				if time.Now().After(deadline) {
					t.Fatalf("%d creates in flight, want %d", inFlight.Load(), tt.want)
				}
				time.Sleep(time.Millisecond)
			}
			// Time for more to get in, if they could.
			time.Sleep(50 * time.Millisecond)
			if n := creates.Load(); n != int64(tt.want) {
				t.Errorf("%d creates started with %d held, want %d", n, tt.want, tt.want)
			}
			close(release)
			for i, r := range <-done {
				if r.err != nil {
					t.Errorf("node %s: %v", nodes[i], r.err)
				}
			}
			if p := peak.Load(); p != int64(tt.want) {
				t.Errorf("%d creates in flight at most, want %d", p, tt.want)
			}
			if got := len(e.tokens(t)); got != len(nodes) {
				t.Errorf("%d tokens for %d nodes", got, len(nodes))
			}
		})
	}

	t.Run("waiting gives up with the request", func(t *testing.T) {
		e := newBootEnv(t)
		entered, release := make(chan struct{}), make(chan struct{})
		var creates atomic.Int64
		b := e.boot("pp")
		b.Parallel = 1
		b.Client = hookedClient{e.client, &hooks{before: func(_ context.Context, verb, resource, _ string) {
			if verb == "create" && resource == "secrets" && creates.Add(1) == 1 {
				close(entered)
				<-release
			}
		}}}
		first := make(chan error, 1)
		go func() {
			_, err := b.Mint(context.Background(), "n1")
			first <- err
		}()
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err := b.Mint(ctx, "n2")
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "node n2: waiting for a turn to create a token") {
			t.Errorf("err = %v", err)
		}
		if n := creates.Load(); n != 1 {
			t.Errorf("%d creates, want the first Mint's alone", n)
		}
		close(release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		if got := e.tokens(t); !slices.Equal(got, []string{"pp0001"}) {
			t.Errorf("tokens %v", got)
		}
	})
}

// TestBootMintUndo: when the node's record cannot be read or written, or
// its current token deleted, Mint fails and deletes its own new token
// again; the record keeps naming the current one.
func TestBootMintUndo(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "x"}, "x", errors.New("RBAC says no"))
	unavailable := apierrors.NewServiceUnavailable("restarting")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	record := "kubestrap/" + BootRecordName("n1")
	for _, tt := range []struct {
		name        string
		verb, res   string
		err         error
		first       bool  // no record yet
		undoErr     error // also fail the undo's delete of the new token
		wantLeft    []string
		wantRecord  map[string]string
		unavailable bool
		wantMsg     []string
	}{
		{name: "record unreadable", verb: "get", res: "configmaps", err: forbidden, wantLeft: []string{"aa0001"}, wantRecord: map[string]string{"n1": "aa0001"},
			wantMsg: []string{"node n1: reading boot record " + record, "RBAC says no"}},
		{name: "record unreadable, 503", verb: "get", res: "configmaps", err: unavailable, wantLeft: []string{"aa0001"}, wantRecord: map[string]string{"n1": "aa0001"}, unavailable: true},
		{name: "record unreadable, refused", verb: "get", res: "configmaps", err: refused, wantLeft: []string{"aa0001"}, wantRecord: map[string]string{"n1": "aa0001"}, unavailable: true},
		{name: "current token undeletable", verb: "delete", res: "secrets", err: forbidden, wantLeft: []string{"aa0001"}, wantRecord: map[string]string{"n1": "aa0001"},
			wantMsg: []string{"node n1: deleting the earlier token aa0001", "RBAC says no"}},
		{name: "current token undeletable, 503", verb: "delete", res: "secrets", err: unavailable, wantLeft: []string{"aa0001"}, wantRecord: map[string]string{"n1": "aa0001"}, unavailable: true},
		// The current token was deleted before the write: the node has
		// none until its next boot's request.
		{name: "record unwritable", verb: "update", res: "configmaps", err: forbidden, wantLeft: nil, wantRecord: map[string]string{"n1": "aa0001"},
			wantMsg: []string{"node n1: writing boot record " + record, "RBAC says no"}},
		{name: "record unwritable, 503", verb: "update", res: "configmaps", err: unavailable, wantLeft: nil, wantRecord: map[string]string{"n1": "aa0001"}, unavailable: true},
		{name: "first record uncreatable", verb: "create", res: "configmaps", err: forbidden, first: true, wantLeft: nil, wantRecord: nil,
			wantMsg: []string{"node n1: writing boot record " + record}},
		// The token left is not the record's, so no later Mint retires
		// it: it stays valid until it expires. The error says which.
		{name: "undo fails too", verb: "delete", res: "secrets", err: forbidden, undoErr: refused, wantLeft: []string{"aa0001", "bt0001"}, wantRecord: map[string]string{"n1": "aa0001"},
			unavailable: true, wantMsg: []string{"deleting the earlier token aa0001", "deleting the new token bt0001 again", "connection refused"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			if !tt.first {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0001")
			}
			var armed atomic.Bool
			armed.Store(true)
			e.client.PrependReactor(tt.verb, tt.res, func(a k8stesting.Action) (bool, runtime.Object, error) {
				if !armed.Load() {
					return false, nil, nil
				}
				if d, ok := a.(k8stesting.DeleteAction); ok && d.GetName() == "bootstrap-token-bt0001" {
					// The undo.
					if tt.undoErr != nil {
						return true, nil, tt.undoErr
					}
					return false, nil, nil
				}
				return true, nil, tt.err
			})
			b := e.boot("bt")
			m, err := b.Mint(context.Background(), "n1")
			armed.Store(false)
			if err == nil {
				t.Fatalf("Mint succeeded: %s", m.Token.ID)
			}
			if m.Token.ID != "" {
				t.Errorf("a failed Mint returned token %s", m.Token.ID)
			}
			if got := Unavailable(err); got != tt.unavailable {
				t.Errorf("Unavailable(%v) = %v, want %v", err, got, tt.unavailable)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %v, want it to say %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "aaaaaaaaaaaaaaaa") {
				t.Errorf("the error shows a token secret: %v", err)
			}
			if got := e.tokens(t); !slices.Equal(got, tt.wantLeft) {
				t.Errorf("tokens left %v, want %v", got, tt.wantLeft)
			}
			if got := e.recordData(t, BootRecordName("n1")); !maps.Equal(got, tt.wantRecord) {
				t.Errorf("record %v, want %v", got, tt.wantRecord)
			}
			if !slices.Contains(e.deleted(), "bootstrap-token-bt0001") {
				t.Errorf("no undo: deletes %v", e.deleted())
			}
			e.noSecretReads(t)

			// The failure is the one Mint's: with the API server well
			// again, the next one takes over from the record as it is.
			m, err = b.Mint(context.Background(), "n1")
			if err != nil {
				t.Fatalf("the next Mint: %v", err)
			}
			if got := e.record(t, "n1"); got != m.Token.ID {
				t.Errorf("record names %s, want %s", got, m.Token.ID)
			}
			want := slices.DeleteFunc(slices.Clone(tt.wantLeft), func(id string) bool { return id == "aa0001" })
			want = append(want, m.Token.ID)
			slices.Sort(want)
			if got := e.tokens(t); !slices.Equal(got, want) {
				t.Errorf("after the next Mint: tokens %v, want %v", got, want)
			}
		})
	}
}

// TestBootMintUndoCancelled: the undo runs even when the request that
// asked is gone, its context cancelled while its update waited for the
// record's writer, or while the writer read the record for it. Against a
// real HTTP server, since the fake clientset ignores contexts.
func TestBootMintUndoCancelled(t *testing.T) {
	record := "/api/v1/namespaces/kubestrap/configmaps/" + BootRecordName("n1")
	newToken := "/api/v1/namespaces/kube-system/secrets/bootstrap-token-bt0001"
	for _, tt := range []struct {
		name string
		// getRecord answers the writer's read of the record, after the
		// request is cancelled; nil: the request is cancelled as soon as
		// the token is created.
		getRecord func(w http.ResponseWriter)
		wantErr   func(error) bool
		wantCalls []string
	}{
		{
			name:      "while queued",
			wantErr:   func(err error) bool { return errors.Is(err, context.Canceled) },
			wantCalls: []string{"POST /api/v1/namespaces/kube-system/secrets", "DELETE " + newToken},
		},
		{
			name: "while the record is read",
			getRecord: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","message":"restarting","code":503}`)
			},
			wantErr:   func(err error) bool { return Unavailable(err) && strings.Contains(err.Error(), "reading boot record") },
			wantCalls: []string{"POST /api/v1/namespaces/kube-system/secrets", "GET " + record, "DELETE " + newToken},
		},
		{
			// The writer finishes what it took, whatever becomes of the
			// request: the token is made current, not undone.
			name: "after the record is read",
			getRecord: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
			},
			wantCalls: []string{"POST /api/v1/namespaces/kube-system/secrets", "GET " + record, "POST /api/v1/namespaces/kubestrap/configmaps"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var (
				mu    sync.Mutex
				calls []string
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls = append(calls, r.Method+" "+r.URL.Path)
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				switch {
				case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/secrets"):
					var s corev1.Secret
					if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					s.UID, s.CreationTimestamp = "uid-new", metav1.NewTime(bootT0.Truncate(time.Second))
					w.WriteHeader(http.StatusCreated)
					json.NewEncoder(w).Encode(&s)
				case r.Method == http.MethodGet && tt.getRecord != nil:
					// The machine hangs up while the record is read.
					cancel()
					tt.getRecord(w)
				case r.Method == http.MethodPost:
					var cm corev1.ConfigMap
					if err := json.NewDecoder(r.Body).Decode(&cm); err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					cm.ResourceVersion = "1"
					w.WriteHeader(http.StatusCreated)
					json.NewEncoder(w).Encode(&cm)
				case r.Method == http.MethodDelete:
					fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Success"}`)
				default:
					http.Error(w, "unexpected", http.StatusTeapot)
				}
			}))
			defer srv.Close()
			client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
			if err != nil {
				t.Fatal(err)
			}
			h := &hooks{}
			if tt.getRecord == nil {
				// The machine hangs up as soon as its token is made.
				h.after = func(verb, resource, _ string, err error) {
					if verb == "create" && resource == "secrets" && err == nil {
						cancel()
					}
				}
			}
			b := &Boot{Client: hookedClient{client, h}, Namespace: bootNS, TTL: bootTTL, Now: func() time.Time { return bootT0 }, Generate: bootSeq("bt")}
			m, err := b.Mint(ctx, "n1")
			if tt.wantErr == nil {
				if err != nil || m.Token.ID != "bt0001" {
					t.Errorf("Mint = %s, %v; want bt0001", m.Token.ID, err)
				}
			} else if err == nil || !tt.wantErr(err) || m.Token.ID != "" {
				t.Errorf("Mint = %q, %v", m.Token.ID, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(calls, tt.wantCalls) {
				t.Errorf("calls\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(tt.wantCalls, "\n"))
			}
		})
	}
}

// TestBootMintCreate: ids someone else holds are skipped, never
// overwritten; other failures to create fail the Mint with nothing made.
func TestBootMintCreate(t *testing.T) {
	t.Run("taken id", func(t *testing.T) {
		e := newBootEnv(t)
		e.put(t, "aa0001.theirsecret00000", "n2", nil)
		values := []string{"aa0001.oursecret0000001", "bb0002.oursecret0000002"}
		b := e.boot("")
		b.Generate = func() (string, error) {
			v := values[0]
			values = values[1:]
			return v, nil
		}
		m, err := b.Mint(context.Background(), "n1")
		if err != nil {
			t.Fatal(err)
		}
		if m.Token.Value() != "bb0002.oursecret0000002" || len(m.Deleted) != 0 || e.record(t, "n1") != "bb0002" {
			t.Errorf("minted %s (deleted %v, record %s), want bb0002", m.Token.ID, m.Deleted, e.record(t, "n1"))
		}
		s := e.secret(t, "aa0001")
		if string(s.Data["token-secret"]) != "theirsecret00000" || s.Annotations[AnnotationNode] != "n2" || s.UID != "uid-aa0001" {
			t.Errorf("the taken id's Secret changed: %v", s)
		}
		if got := e.tokens(t); !slices.Equal(got, []string{"aa0001", "bb0002"}) {
			t.Errorf("tokens %v", got)
		}
		if len(e.deleted()) != 0 {
			t.Errorf("deletes %v", e.deleted())
		}
		e.noSecretReads(t)
	})
	t.Run("every id taken", func(t *testing.T) {
		e := newBootEnv(t)
		e.put(t, "aa0001.theirsecret00000", "n2", nil)
		b := e.boot("")
		var tries atomic.Int64
		b.Generate = func() (string, error) { tries.Add(1); return "aa0001.oursecret0000001", nil }
		m, err := b.Mint(context.Background(), "n1")
		if err == nil || !strings.Contains(err.Error(), "node n1: 16 token ids in a row were taken") {
			t.Fatalf("Mint = %s, %v; want the ids-taken error", m.Token.ID, err)
		}
		if !errors.Is(err, ErrContended) || Unavailable(err) {
			t.Errorf("err = %v, want ErrContended (and not Unavailable)", err)
		}
		if m.Token.ID != "" || tries.Load() != 16 {
			t.Errorf("a failed Mint returned token %q after %d tries", m.Token.ID, tries.Load())
		}
		if got := e.tokens(t); !slices.Equal(got, []string{"aa0001"}) || e.record(t, "n1") != "" || len(e.deleted()) != 0 {
			t.Errorf("tokens %v, record %q, deletes %v", got, e.record(t, "n1"), e.deleted())
		}
		if calls := e.recordCalls(0); len(calls) != 0 {
			t.Errorf("record calls %v", calls)
		}
	})
	for _, tt := range []struct {
		name            string
		err             error
		wantUnavailable bool
	}{
		{"create refused", apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "x", errors.New("RBAC says no")), false},
		{"create unavailable", apierrors.NewServiceUnavailable("restarting"), true},
		{"create connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			e.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.err })
			_, err := e.boot("bt").Mint(context.Background(), "n1")
			if err == nil || !strings.Contains(err.Error(), "node n1: creating Secret kube-system/bootstrap-token-bt0001") {
				t.Fatalf("err = %v", err)
			}
			if Unavailable(err) != tt.wantUnavailable {
				t.Errorf("Unavailable(%v) = %v", err, !tt.wantUnavailable)
			}
			if got := e.tokens(t); len(got) != 0 || e.record(t, "n1") != "" {
				t.Errorf("tokens %v, record %q", got, e.record(t, "n1"))
			}
			if calls := e.recordCalls(0); len(calls) != 0 {
				t.Errorf("record calls %v", calls)
			}
		})
	}
	t.Run("generate fails", func(t *testing.T) {
		e := newBootEnv(t)
		b := e.boot("bt")
		b.Generate = func() (string, error) { return "", errors.New("no entropy") }
		if _, err := b.Mint(context.Background(), "n1"); err == nil || !strings.Contains(err.Error(), "no entropy") {
			t.Errorf("err = %v", err)
		}
		b.Generate = func() (string, error) { return "NOT.a-token", nil }
		if _, err := b.Mint(context.Background(), "n1"); err == nil || !strings.Contains(err.Error(), "malformed bootstrap token") {
			t.Errorf("err = %v", err)
		}
		if got := e.tokens(t); len(got) != 0 {
			t.Errorf("tokens %v", got)
		}
	})
	t.Run("no namespace", func(t *testing.T) {
		e := newBootEnv(t)
		b := e.boot("bt")
		b.Namespace = ""
		if _, err := b.Mint(context.Background(), "n1"); err == nil || !strings.Contains(err.Error(), "no namespace") {
			t.Errorf("err = %v", err)
		}
		if len(e.client.Actions()) != 0 {
			t.Errorf("API calls without a namespace: %v", e.client.Actions())
		}
	})
}

func TestUnavailable(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"503", apierrors.NewServiceUnavailable("restarting"), true},
		{"503 wrapped", fmt.Errorf("node n1: reading boot record: %w", apierrors.NewServiceUnavailable("restarting")), true},
		{"503 joined", errors.Join(errors.New("first"), apierrors.NewServiceUnavailable("restarting")), true},
		{"500", apierrors.NewInternalError(errors.New("etcd")), true},
		{"429", apierrors.NewTooManyRequests("slow down", 1), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, true},
		{"connection refused wrapped", fmt.Errorf("node n1: creating Secret: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}), true},
		{"deadline", context.DeadlineExceeded, true},
		{"403", apierrors.NewForbidden(gr, "x", errors.New("RBAC says no")), false},
		{"403 wrapped", fmt.Errorf("node n1: %w", apierrors.NewForbidden(gr, "x", errors.New("RBAC says no"))), false},
		{"401", apierrors.NewUnauthorized("who are you"), false},
		{"404", apierrors.NewNotFound(gr, "x"), false},
		{"409", apierrors.NewConflict(gr, "x", errors.New("uid")), false},
		{"400", apierrors.NewBadRequest("no"), false},
		{"plain", errors.New("node n1: 16 token ids in a row were taken"), false},
		{"cancelled", context.Canceled, false},
		{"nil", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Unavailable(tt.err); got != tt.want {
				t.Errorf("Unavailable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestObtainIgnoresServeTokens: generate never hands out a token serve
// minted for one boot, however long it stays valid; the same token without
// serve's label is reused, so the check is the label.
func TestObtainIgnoresServeTokens(t *testing.T) {
	for _, tt := range []struct {
		name       string
		serve      bool
		wantReused int
	}{
		{"serve's token", true, 0},
		{"the same token, not serve's", false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			b := &Boot{Client: client, Namespace: bootNS, TTL: 30 * 24 * time.Hour, Now: func() time.Time { return t0 }, Generate: bootSeq("sv")}
			m, err := b.Mint(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			if !tt.serve {
				s, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), "bootstrap-token-"+m.Token.ID, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				delete(s.Labels, LabelSource)
				if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			p := provider(client)
			sum, err := p.Obtain(context.Background(), []string{"n1"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Reused != tt.wantReused || sum.Created != 1-tt.wantReused {
				t.Errorf("reused %d created %d, want reused %d", sum.Reused, sum.Created, tt.wantReused)
			}
			got := p.run.Tokens[0]
			if (got.Value() == m.Token.Value()) != (tt.wantReused == 1) {
				t.Errorf("generate's token %s, serve's %s", got.ID, m.Token.ID)
			}
			if err := p.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			// generate leaves serve's token alone.
			if _, ok := secrets(t, client)["bootstrap-token-"+m.Token.ID]; !ok {
				t.Error("generate deleted serve's token")
			}
		})
	}
}
