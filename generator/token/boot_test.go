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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
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

// put stores a token Secret for node, straight in the tracker (as another
// server or a run of generate would have); edit may change it first.
func (e *bootEnv) put(t *testing.T, value, node string, edit func(*corev1.Secret)) {
	t.Helper()
	tok, err := New(value, node, e.now.Add(24*time.Hour).Truncate(time.Second), false)
	if err != nil {
		t.Fatal(err)
	}
	s := Secret(tok)
	s.UID = types.UID("uid-" + tok.ID)
	s.ResourceVersion = strconv.FormatInt(e.rv.Add(1), 10)
	if edit != nil {
		edit(s)
	}
	if err := e.client.Tracker().Create(secretsGVR, s, s.Namespace); err != nil {
		t.Fatal(err)
	}
}

// putRecord stores (or moves) node's boot record to id, as another server
// would.
func (e *bootEnv) putRecord(t *testing.T, node, id string) {
	t.Helper()
	cm := bootRecord(bootNS, BootRecordName(node), node, id)
	cm.ResourceVersion = strconv.FormatInt(e.rv.Add(1), 10)
	err := e.client.Tracker().Create(configMapsGVR, cm, bootNS)
	if apierrors.IsAlreadyExists(err) {
		err = e.client.Tracker().Update(configMapsGVR, cm, bootNS)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// record returns the token id node's boot record names, "" if it has none.
func (e *bootEnv) record(t *testing.T, node string) string {
	t.Helper()
	obj, err := e.client.Tracker().Get(configMapsGVR, bootNS, BootRecordName(node))
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.ConfigMap).Data[BootTokenKey]
}

// tokens returns the ids of the token Secrets in the cluster, sorted.
func (e *bootEnv) tokens(t *testing.T) []string {
	t.Helper()
	obj, err := e.client.Tracker().List(secretsGVR, schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range obj.(*corev1.SecretList).Items {
		if id, ok := s.Data[bootstrapapi.BootstrapTokenIDKey]; ok {
			ids = append(ids, string(id))
		}
	}
	slices.Sort(ids)
	return ids
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

// TestBootMintSecret: the first Mint creates one Secret, the bootstrap
// token kubeadm would make for the node, marked as serve's and of no run,
// and the node's boot record naming it.
func TestBootMintSecret(t *testing.T) {
	long := strings.Join([]string{strings.Repeat("a", 60), strings.Repeat("b", 60), strings.Repeat("c", 60), strings.Repeat("d", 60), "com"}, ".")
	for _, tt := range []struct {
		name, node string
		signing    bool
		nodeLabel  string
		group      string
		record     string
	}{
		{"plain", "n1", false, "n1", "system:bootstrappers:n1", "kubestrap-boot-n1"},
		{"signing", "n1", true, "n1", "system:bootstrappers:n1", "kubestrap-boot-n1"},
		{"fqdn", "n3.rack.example.com", false, "n3.rack.example.com", "system:bootstrappers:n3:rack:example:com", "kubestrap-boot-n3.rack.example.com"},
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

			// The boot record.
			obj, err := e.client.Tracker().Get(configMapsGVR, bootNS, tt.record)
			if err != nil {
				t.Fatalf("boot record %s: %v", tt.record, err)
			}
			cm := obj.(*corev1.ConfigMap)
			if len(cm.Name) > 253 || !maps.Equal(cm.Data, map[string]string{"token-id": "bt0001"}) ||
				cm.Labels[LabelManagedBy] != ManagedBy || cm.Labels[LabelNode] != tt.nodeLabel || cm.Annotations[AnnotationNode] != tt.node {
				t.Errorf("boot record %+v", cm)
			}
			e.noSecretReads(t)
		})
	}
}

func TestBootRecordName(t *testing.T) {
	long := strings.Repeat("a.", 120) + "com"
	if got := BootRecordName("n1.example.com"); got != "kubestrap-boot-n1.example.com" {
		t.Errorf("BootRecordName = %s", got)
	}
	a, b := BootRecordName(long), BootRecordName(long+"m")
	if len(a) > 253 || !strings.HasPrefix(a, "kubestrap-boot-sha256-") || a == b || a != BootRecordName(long) {
		t.Errorf("long names: %s, %s", a, b)
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
		if rec := e.record(t, "n1"); rec != m.Token.ID {
			t.Errorf("the boot record names %s, want the minted %s", rec, m.Token.ID)
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
	e.noSecretReads(t)
}

// TestBootMintRetires: a Mint retires the one token the node's boot
// record names, and nothing else.
func TestBootMintRetires(t *testing.T) {
	for _, tt := range []struct {
		name string
		// setup stores what there is before the Mint (whose own token is
		// "bt0001").
		setup       func(t *testing.T, e *bootEnv)
		used        []string
		wantDeleted []string
		wantKept    []string
		wantLeft    []string
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
			name: "another node's tokens and record are untouched",
			setup: func(t *testing.T, e *bootEnv) {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n2", serveLabel)
				e.putRecord(t, "n2", "aa0001")
				e.put(t, "aa0002.aaaaaaaaaaaaaaaa", "n10", serveLabel)
				e.putRecord(t, "n10", "aa0002")
				e.put(t, "aa0003.aaaaaaaaaaaaaaaa", "n1.example.com", serveLabel)
				e.putRecord(t, "n1.example.com", "aa0003")
			},
			wantLeft: []string{"aa0001", "aa0002", "aa0003", "bt0001"},
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
				cm := bootRecord(bootNS, BootRecordName("n1"), "n1", "")
				cm.Data, cm.ResourceVersion = nil, "1"
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
			for _, n := range []string{"n2", "n10", "n1.example.com"} {
				if r := e.record(t, n); r != "" && !slices.Contains(tt.wantLeft, r) {
					t.Errorf("%s's record names %s", n, r)
				}
			}
			e.noSecretReads(t)
		})
	}
}

func serveLabel(s *corev1.Secret) { s.Labels[LabelSource] = SourceServe }

// TestBootMintRace: another server moves the node's record between this
// Mint's read and its write. The write is refused (a Conflict, or
// AlreadyExists for a node's first record); Mint reads again, retires the
// other server's token as well, and its own stands: as if the other's
// request had come first.
func TestBootMintRace(t *testing.T) {
	for _, tt := range []struct {
		name        string
		first       bool // the node has no record yet
		wantDeleted []string
	}{
		{"update conflicts", false, []string{"aa0001", "bb0001"}},
		{"first boots race", true, []string{"bb0001"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			if !tt.first {
				e.put(t, "aa0001.aaaaaaaaaaaaaaaa", "n1", serveLabel)
				e.putRecord(t, "n1", "aa0001")
			}
			verb := "update"
			if tt.first {
				verb = "create"
			}
			var once atomic.Bool
			e.client.PrependReactor(verb, "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if once.CompareAndSwap(false, true) {
					// Server B's whole Mint, just before this write.
					e.put(t, "bb0001.bbbbbbbbbbbbbbbb", "n1", serveLabel)
					// B retires aa0001 too: this Mint did already.
					if err := e.client.Tracker().Delete(secretsGVR, metav1.NamespaceSystem, "bootstrap-token-aa0001"); err != nil && !apierrors.IsNotFound(err) {
						t.Fatal(err)
					}
					e.putRecord(t, "n1", "bb0001")
				}
				return false, nil, nil
			})
			m, err := e.boot("cc").Mint(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			if got := e.tokens(t); !slices.Equal(got, []string{"cc0001"}) {
				t.Errorf("tokens %v, want only the last mint's cc0001", got)
			}
			if e.record(t, "n1") != "cc0001" {
				t.Errorf("record names %s", e.record(t, "n1"))
			}
			// aa0001 was deleted by this Mint before B's did, in the
			// update case; B's own token after the second read.
			if !slices.Equal(m.Deleted, tt.wantDeleted) {
				t.Errorf("deleted %v, want %v", m.Deleted, tt.wantDeleted)
			}
		})
	}

	// A record others keep moving: Mint gives up, and undoes its token.
	e := newBootEnv(t)
	e.putRecord(t, "n1", "aa0001")
	var n atomic.Int64
	e.client.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		e.putRecord(t, "n1", fmt.Sprintf("zz%04d", n.Add(1)))
		return false, nil, nil
	})
	_, err := e.boot("cc").Mint(context.Background(), "n1")
	if err == nil || !strings.Contains(err.Error(), "moved by others 8 times in a row") {
		t.Fatalf("err = %v", err)
	}
	if got := e.tokens(t); len(got) != 0 {
		t.Errorf("tokens %v left", got)
	}
	if n.Load() != 8 {
		t.Errorf("%d writes tried, want 8", n.Load())
	}
}

// TestBootMintUndo: when the node's record cannot be read or written, or
// its current token deleted, Mint fails and deletes its own new token
// again; the record keeps naming the current one.
func TestBootMintUndo(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "x"}, "x", errors.New("RBAC says no"))
	unavailable := apierrors.NewServiceUnavailable("restarting")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for _, tt := range []struct {
		name          string
		verb, res     string
		err           error
		first         bool  // no record yet
		undoErr       error // also fail the undo's delete of the new token
		wantLeft      []string
		wantRecord    string
		unavailable   bool
		wantMsg       []string
		wantNoDeletes bool
	}{
		{name: "record unreadable", verb: "get", res: "configmaps", err: forbidden, wantLeft: []string{"aa0001"}, wantRecord: "aa0001",
			wantMsg: []string{"node n1: reading boot record kubestrap/kubestrap-boot-n1", "RBAC says no"}},
		{name: "record unreadable, 503", verb: "get", res: "configmaps", err: unavailable, wantLeft: []string{"aa0001"}, wantRecord: "aa0001", unavailable: true},
		{name: "record unreadable, refused", verb: "get", res: "configmaps", err: refused, wantLeft: []string{"aa0001"}, wantRecord: "aa0001", unavailable: true},
		{name: "current token undeletable", verb: "delete", res: "secrets", err: forbidden, wantLeft: []string{"aa0001"}, wantRecord: "aa0001",
			wantMsg: []string{"deleting the earlier token aa0001", "RBAC says no"}},
		{name: "current token undeletable, 503", verb: "delete", res: "secrets", err: unavailable, wantLeft: []string{"aa0001"}, wantRecord: "aa0001", unavailable: true},
		// The current token was deleted before the write: the node has
		// none until its next boot's request.
		{name: "record unwritable", verb: "update", res: "configmaps", err: forbidden, wantLeft: nil, wantRecord: "aa0001",
			wantMsg: []string{"writing boot record kubestrap/kubestrap-boot-n1", "RBAC says no"}},
		{name: "first record uncreatable", verb: "create", res: "configmaps", err: forbidden, first: true, wantLeft: nil, wantRecord: "",
			wantMsg: []string{"writing boot record"}},
		// The token left is not the record's, so no later Mint retires
		// it: it stays valid until it expires. The error says which.
		{name: "undo fails too", verb: "delete", res: "secrets", err: forbidden, undoErr: refused, wantLeft: []string{"aa0001", "bt0001"}, wantRecord: "aa0001",
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
			m, err := e.boot("bt").Mint(context.Background(), "n1")
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
			if got := e.record(t, "n1"); got != tt.wantRecord {
				t.Errorf("record names %q, want %q", got, tt.wantRecord)
			}
			if !slices.Contains(e.deleted(), "bootstrap-token-bt0001") {
				t.Errorf("no undo: deletes %v", e.deleted())
			}
			e.noSecretReads(t)
		})
	}
}

// TestBootMintUndoCancelled: the undo runs even when the request that
// asked is gone, its context cancelled while Mint read the record. Against
// a real HTTP server, since the fake clientset ignores contexts.
func TestBootMintUndoCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		deleted []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodPost:
			var s corev1.Secret
			if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			s.UID, s.CreationTimestamp = "uid-new", metav1.NewTime(bootT0.Truncate(time.Second))
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(&s)
		case http.MethodGet:
			// The machine hangs up while the record is read.
			cancel()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		case http.MethodDelete:
			mu.Lock()
			deleted = append(deleted, r.URL.Path)
			mu.Unlock()
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Success"}`)
		}
	}))
	defer srv.Close()
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	b := &Boot{Client: client, Namespace: bootNS, TTL: bootTTL, Now: func() time.Time { return bootT0 }, Generate: bootSeq("bt")}
	if _, err := b.Mint(ctx, "n1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the cancellation", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "/api/v1/namespaces/kube-system/secrets/bootstrap-token-bt0001"; !slices.Equal(deleted, []string{want}) {
		t.Errorf("deletes %v, want the undo of the new token", deleted)
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
		if m.Token.ID != "" || tries.Load() != 16 {
			t.Errorf("a failed Mint returned token %q after %d tries", m.Token.ID, tries.Load())
		}
		if got := e.tokens(t); !slices.Equal(got, []string{"aa0001"}) || e.record(t, "n1") != "" || len(e.deleted()) != 0 {
			t.Errorf("tokens %v, record %q, deletes %v", got, e.record(t, "n1"), e.deleted())
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
