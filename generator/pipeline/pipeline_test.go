package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/output"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// now is after the fixture CA's notBefore.
var now = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

func guide(t *testing.T) *model.Cluster {
	t.Helper()
	c, err := model.Load(context.Background(), model.Sources{ClusterFile: "../../fixtures/guide/cluster.yaml"}, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func seq(prefix string) func() (string, error) {
	var n atomic.Int64
	return func() (string, error) {
		i := n.Add(1)
		return fmt.Sprintf("%s%04d.%016d", prefix, i, i), nil
	}
}

func newPipeline(t *testing.T, c *model.Cluster) *Pipeline {
	t.Helper()
	ign, err := Ignition(ignition.Options{}, true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, ign, CloudInit(CloudInitOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func clusterTokens(client *fake.Clientset) *token.Cluster {
	return &token.Cluster{
		Client: client, TTL: 24 * time.Hour, Parallel: 2,
		Now: func() time.Time { return now }, Generate: seq("tk"),
		Backoff: func(int) time.Duration { return 0 },
	}
}

func stage(t *testing.T, out string) DirSink {
	t.Helper()
	s, err := output.Begin(out, false)
	if err != nil {
		t.Fatal(err)
	}
	return DirSink{Stage: s}
}

// tokenSecrets lists the bootstrap-token Secrets in the fake cluster.
func tokenSecrets(t *testing.T, client *fake.Clientset) map[string]corev1.Secret {
	t.Helper()
	list, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		if s.Type == bootstrapapi.SecretTypeBootstrapToken {
			out[s.Name] = s
		}
	}
	return out
}

func markers(t *testing.T, client *fake.Clientset) int {
	t.Helper()
	list, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range list.Items {
		if s.Type == token.SecretTypeRunMarker {
			n++
		}
	}
	return n
}

// assertNothingWritten checks that a failed run left no output and no
// staging directory beside it.
func assertNothingWritten(t *testing.T, out string) {
	t.Helper()
	if _, err := os.Lstat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed run left %s (%v)", out, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*kubestrap*")); len(left) > 0 {
		t.Errorf("the failed run left %v", left)
	}
}

// kubeconfigToken reads the bootstrap token a node's user-data carries.
func kubeconfigToken(t *testing.T, userData []byte) string {
	t.Helper()
	doc, err := parseback.CloudInit(userData)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := doc.Lookup(render.BootstrapKubeconfigPath)
	if !ok {
		t.Fatal("no bootstrap kubeconfig")
	}
	cfg, err := clientcmd.Load(e.Contents)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.AuthInfos[render.KubeconfigUser].Token
}

func TestRunOffline(t *testing.T) {
	c := guide(t)
	out := filepath.Join(t.TempDir(), "out")
	tokens := &token.Offline{TTL: c.TTL(), Now: func() time.Time { return now }, Generate: seq("of")}
	res, err := newPipeline(t, c).Run(context.Background(), c.Nodes, tokens, stage(t, out))
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens.Created != 3 || len(res.Nodes) != 3 {
		t.Fatalf("result %+v", res)
	}
	manifests, err := os.ReadFile(filepath.Join(out, TokensName))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for _, doc := range strings.Split(string(manifests), "---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var s corev1.Secret
		if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
			t.Fatal(err)
		}
		secrets[s.Annotations[token.AnnotationNode]] = string(s.Data["token-id"]) + "." + string(s.Data["token-secret"])
	}
	for i, n := range c.Nodes {
		row := res.Nodes[i]
		if row.Name != n.Name || strings.Join(row.Documents, " ") != "config.ign config.bu user-data meta-data" {
			t.Errorf("row %d: %+v", i, row)
		}
		ud, err := os.ReadFile(filepath.Join(out, n.Name, UserDataName))
		if err != nil {
			t.Fatal(err)
		}
		if got := kubeconfigToken(t, ud); got != secrets[n.Name] || !strings.HasPrefix(got, row.TokenID+".") {
			t.Errorf("%s: user-data token is not the one tokens.yaml applies", n.Name)
		}
		ign, err := os.ReadFile(filepath.Join(out, n.Name, IgnitionName))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := parseback.Ignition(ign)
		if err != nil {
			t.Fatal(err)
		}
		if e, _ := doc.Lookup(render.BootstrapKubeconfigPath); !bytes.Contains(e.Contents, []byte(secrets[n.Name])) {
			t.Errorf("%s: config.ign does not carry the node's token", n.Name)
		}
	}
}

// The live path, in-process: a write failure after tokens were created
// rolls them back and leaves no output.
func TestRunRollsBackOnWriteFailure(t *testing.T) {
	c := guide(t)
	client := fake.NewClientset()
	out := filepath.Join(t.TempDir(), "out")
	sink := &failingSink{DirSink: stage(t, out), failNode: c.Nodes[1].Name}
	_, err := newPipeline(t, c).Run(context.Background(), c.Nodes, clusterTokens(client), sink)
	if err == nil || !strings.Contains(err.Error(), "node kube-node2: disk full") {
		t.Fatalf("err = %v, want the write failure of kube-node2", err)
	}
	if !sink.aborted {
		t.Error("the sink was not aborted")
	}
	if left := tokenSecrets(t, client); len(left) != 0 {
		t.Errorf("%d token Secrets left after a failed run", len(left))
	}
	if n := markers(t, client); n != 0 {
		t.Errorf("a failed run committed (%d markers)", n)
	}
	assertNothingWritten(t, out)
}

// A sink that cannot commit fails the run: the tokens are rolled back.
func TestRunRollsBackOnCommitFailure(t *testing.T) {
	c := guide(t)
	client := fake.NewClientset()
	out := filepath.Join(t.TempDir(), "out")
	sink := &failingSink{DirSink: stage(t, out), failCommit: true}
	_, err := newPipeline(t, c).Run(context.Background(), c.Nodes, clusterTokens(client), sink)
	if err == nil || !strings.Contains(err.Error(), "rename refused") {
		t.Fatalf("err = %v", err)
	}
	if left := tokenSecrets(t, client); len(left) != 0 {
		t.Errorf("%d token Secrets left after a failed commit", len(left))
	}
	assertNothingWritten(t, out)
}

// A node whose token cannot be made fails the run before anything is
// visible, and the tokens made for the others are deleted.
func TestRunTokenFailure(t *testing.T) {
	c := guide(t)
	client := fake.NewClientset()
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.CreateAction).GetObject().(*corev1.Secret)
		if s.Annotations[token.AnnotationNode] == "kube-node3" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, s.Name, errors.New("quota"))
		}
		return false, nil, nil
	})
	out := filepath.Join(t.TempDir(), "out")
	_, err := newPipeline(t, c).Run(context.Background(), c.Nodes, clusterTokens(client), stage(t, out))
	var ne *token.NodeError
	if !errors.As(err, &ne) || !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v", err)
	}
	if left := tokenSecrets(t, client); len(left) != 0 {
		t.Errorf("%d token Secrets left", len(left))
	}
	assertNothingWritten(t, out)
}

// A successful live run commits after its documents are visible, so the
// next run reuses its tokens and writes the same ones.
func TestRunCommits(t *testing.T) {
	c := guide(t)
	client := fake.NewClientset()
	dir := t.TempDir()
	p := newPipeline(t, c)
	first, err := p.Run(context.Background(), c.Nodes, clusterTokens(client), stage(t, filepath.Join(dir, "a")))
	if err != nil {
		t.Fatal(err)
	}
	if markers(t, client) != 1 || len(tokenSecrets(t, client)) != 3 {
		t.Fatalf("%d markers, %d tokens after one run", markers(t, client), len(tokenSecrets(t, client)))
	}
	again, err := p.Run(context.Background(), c.Nodes, clusterTokens(client), stage(t, filepath.Join(dir, "b")))
	if err != nil {
		t.Fatal(err)
	}
	if again.Tokens.Reused != 3 {
		t.Errorf("second run reused %d tokens, want 3", again.Tokens.Reused)
	}
	for i, n := range c.Nodes {
		a, _ := os.ReadFile(filepath.Join(dir, "a", n.Name, UserDataName))
		b, _ := os.ReadFile(filepath.Join(dir, "b", n.Name, UserDataName))
		if first.Nodes[i].TokenID != again.Nodes[i].TokenID || kubeconfigToken(t, a) != kubeconfigToken(t, b) {
			t.Errorf("%s: the second run's documents hold another token", n.Name)
		}
	}
}

// A run interrupted (Ctrl-C) while its documents are being written leaves
// nothing, in the cluster or on disk.
func TestRunCancelled(t *testing.T) {
	c := guide(t)
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	out := filepath.Join(t.TempDir(), "out")
	sink := &failingSink{DirSink: stage(t, out), onNode: cancel}
	_, err := newPipeline(t, c).Run(ctx, c.Nodes, clusterTokens(client), sink)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if left := tokenSecrets(t, client); len(left) != 0 {
		t.Errorf("%d token Secrets left", len(left))
	}
	assertNothingWritten(t, out)
}

// Node is the pipeline for one machine, as a server answering it calls it.
func TestNode(t *testing.T) {
	c := guide(t)
	tok, err := token.New("abcdef.0123456789abcdef", c.Nodes[0].Name, now.Add(time.Hour), false)
	if err != nil {
		t.Fatal(err)
	}
	docs, _, err := newPipeline(t, c).Node(c.Nodes[0], tok)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]byte{}
	for _, d := range docs {
		byName[d.Name] = d.Data
	}
	if len(byName) != 4 {
		t.Fatalf("documents %v", docs)
	}
	if got := kubeconfigToken(t, byName[UserDataName]); got != tok.Value() {
		t.Errorf("user-data carries %q", got)
	}
	if !bytes.Contains(byName[MetaDataName], []byte("local-hostname: kube-node1")) {
		t.Errorf("meta-data %s", byName[MetaDataName])
	}
}

type failingSink struct {
	DirSink
	failNode   string
	failCommit bool
	onNode     func()
	aborted    bool
}

func (s *failingSink) Node(name string, docs []Document) error {
	if s.onNode != nil {
		s.onNode()
	}
	if name == s.failNode {
		return errors.New("disk full")
	}
	return s.DirSink.Node(name, docs)
}

func (s *failingSink) File(name string, write func(io.Writer) error) error {
	return s.DirSink.File(name, write)
}

func (s *failingSink) Commit() ([]string, error) {
	if s.failCommit {
		return nil, errors.New("rename refused")
	}
	return s.DirSink.Commit()
}

func (s *failingSink) Abort() error {
	s.aborted = true
	return s.DirSink.Abort()
}

// TestCloudInitGzip: gzip'd user-data is the same document once
// decompressed, with cloud-init's own gzip reader, and the meta-data is the
// same (its instance-id hashes the document, not its compression); a limit
// below its size fails with both numbers.
func TestCloudInitGzip(t *testing.T) {
	a := sample.Assets()
	plain, _, err := CloudInit(CloudInitOptions{}).Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	zipped, _, err := CloudInit(CloudInitOptions{Gzip: true}).Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(zipped[0].Data, []byte{0x1f, 0x8b}) || len(zipped[0].Data) >= len(plain[0].Data) {
		t.Fatalf("user-data is not gzip-compressed (%d bytes, plain %d)", len(zipped[0].Data), len(plain[0].Data))
	}
	if !bytes.Equal(zipped[1].Data, plain[1].Data) {
		t.Error("meta-data differs with --gzip")
	}
	again, _, _ := CloudInit(CloudInitOptions{Gzip: true}).Encode(a)
	if !bytes.Equal(again[0].Data, zipped[0].Data) {
		t.Error("gzip output is not deterministic")
	}
	t.Run("cloud-init", func(t *testing.T) {
		python := sample.CloudInitPython(t)
		p := filepath.Join(t.TempDir(), "user-data")
		if err := os.WriteFile(p, zipped[0].Data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(python, "-c", "import sys\nfrom cloudinit import util\nsys.stdout.write(util.decomp_gzip(open(sys.argv[1], 'rb').read(), quiet=False))", p).Output()
		if err != nil {
			t.Fatalf("cloud-init's decomp_gzip: %v", err)
		}
		if !bytes.Equal(out, plain[0].Data) {
			t.Error("cloud-init decompresses another document")
		}
	})
	limit := len(zipped[0].Data) - 1
	_, _, err = CloudInit(CloudInitOptions{Gzip: true, MaxUserData: limit}).Encode(a)
	if !errors.Is(err, ErrTooBig) || !strings.Contains(err.Error(), fmt.Sprintf("user-data is %d bytes gzip-compressed, over the limit of %d", limit+1, limit)) {
		t.Errorf("limit: %v", err)
	}
	if _, _, err := CloudInit(CloudInitOptions{Gzip: true, MaxUserData: limit + 1}).Encode(a); err != nil {
		t.Errorf("at the limit: %v", err)
	}
}
