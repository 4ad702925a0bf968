package approve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/kubestrap/kubestrap/generator/token"
)

// Options wire a Controller.
type Options struct {
	Client kubernetes.Interface
	// WatchClient feeds the informers (Client when nil): a client whose
	// requests time out would cut every watch at that timeout.
	WatchClient kubernetes.Interface
	Policy      *Policy
	// Workers decide CSRs side by side (DefaultWorkers when 0).
	Workers int
	// Identity names this replica in the conditions it writes.
	Identity string
	Log      *slog.Logger
	// Recorder gets an Event per decision; nil records none.
	Recorder record.EventRecorder
	Metrics  *Metrics
	Now      func() time.Time
}

// DefaultWorkers is how many CSRs are decided at once.
const DefaultWorkers = 8

// Controller approves and denies kubelet CSRs by a Policy and deletes a
// node's bootstrap token once the node has joined. Its informers may run
// before it leads (a standby's caches are warm when it takes over); only
// Run writes.
type Controller struct {
	o       Options
	csrs    certlisters.CertificateSigningRequestLister
	csrIdx  cache.Indexer
	secrets corelisters.SecretLister
	nodes   corelisters.NodeLister
	queue   workqueue.TypedRateLimitingInterface[string]
	synced  []cache.InformerSynced
	// Factories to Start: all CSRs and Nodes; kubestrap's token Secrets.
	cluster, system informers.SharedInformerFactory
}

// CSR indexes: the node a bootstrap CSR's token belongs to, and the requester.
const (
	indexBootstrapNode = "bootstrapNode"
	indexUsername      = "username"
)

// New makes the controller and its informers; Start starts the informers.
func New(o Options) (*Controller, error) {
	if o.Client == nil || o.Policy == nil {
		return nil, errors.New("approve: Client and Policy are required")
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.WatchClient == nil {
		o.WatchClient = o.Client
	}
	c := &Controller{
		o:       o,
		cluster: informers.NewSharedInformerFactory(o.WatchClient, 0),
		// Only kubestrap's tokens: the cache holds no other Secret.
		system: informers.NewSharedInformerFactoryWithOptions(o.WatchClient, 0, informers.WithNamespace(metav1.NamespaceSystem),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
				lo.LabelSelector = token.LabelManagedBy + "=" + token.ManagedBy
				lo.FieldSelector = "type=" + string(bootstrapapi.SecretTypeBootstrapToken)
			})),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubestrap-approve"}),
	}
	csrInf := c.cluster.Certificates().V1().CertificateSigningRequests()
	nodeInf := c.cluster.Core().V1().Nodes()
	secretInf := c.system.Core().V1().Secrets()
	err := csrInf.Informer().AddIndexers(cache.Indexers{
		indexBootstrapNode: func(obj any) ([]string, error) {
			csr, ok := obj.(*certv1.CertificateSigningRequest)
			if !ok {
				return nil, nil
			}
			if node, _, ok := o.Policy.BootstrapNode(csr); ok {
				return []string{node}, nil
			}
			return nil, nil
		},
		indexUsername: func(obj any) ([]string, error) {
			if csr, ok := obj.(*certv1.CertificateSigningRequest); ok {
				return []string{csr.Spec.Username}, nil
			}
			return nil, nil
		},
	})
	if err != nil {
		return nil, err
	}
	// The cache keeps no token's secret: decisions read a token's node,
	// groups and expiration, never the bearer half.
	if err := secretInf.Informer().SetTransform(withoutTokenSecret); err != nil {
		return nil, err
	}
	c.csrs, c.csrIdx = csrInf.Lister(), csrInf.Informer().GetIndexer()
	c.nodes, c.secrets = nodeInf.Lister(), secretInf.Lister()
	enqueue := func(obj any) {
		if csr, ok := obj.(*certv1.CertificateSigningRequest); ok && ours(csr) {
			c.queue.Add(csr.Name)
		}
	}
	if _, err := csrInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	// A node that appears may end the token it joined with.
	if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*corev1.Node); ok {
				c.enqueueNode(n.Name)
			}
		},
	}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{csrInf.Informer().HasSynced, nodeInf.Informer().HasSynced, secretInf.Informer().HasSynced}
	o.Metrics.expiredUnused = c.expiredUnused
	return c, nil
}

// ours says whether a CSR is for one of the two signers the approver decides.
func ours(csr *certv1.CertificateSigningRequest) bool {
	return csr.Spec.SignerName == certv1.KubeAPIServerClientKubeletSignerName || csr.Spec.SignerName == certv1.KubeletServingSignerName
}

func (c *Controller) enqueueNode(name string) {
	objs, _ := c.csrIdx.ByIndex(indexBootstrapNode, name)
	for _, obj := range objs {
		c.queue.Add(obj.(*certv1.CertificateSigningRequest).Name)
	}
}

// Start starts the informers; they stop with ctx.
func (c *Controller) Start(ctx context.Context) {
	c.cluster.Start(ctx.Done())
	c.system.Start(ctx.Done())
}

// HasSynced reports whether every informer has its first list.
func (c *Controller) HasSynced() bool {
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Run decides CSRs until ctx ends, then waits for the decisions under way.
func (c *Controller) Run(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("the informers did not sync")
	}
	done := make(chan struct{})
	for range c.o.Workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for c.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown()
	for range c.o.Workers {
		<-done
	}
	return nil
}

// Shutdown stops the queue; a controller that never ran uses it to let go.
func (c *Controller) Shutdown() { c.queue.ShutDown() }

func (c *Controller) next(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	if err := c.sync(ctx, name); err != nil {
		c.o.Metrics.syncErrors.Inc()
		if ctx.Err() == nil && c.queue.NumRequeues(name) < 15 {
			c.o.Log.Warn("retrying", "csr", name, "error", err.Error())
			c.queue.AddRateLimited(name)
			return true
		}
		c.o.Log.Error("giving up", "csr", name, "error", err.Error())
	}
	c.queue.Forget(name)
	return true
}

func (c *Controller) sync(ctx context.Context, name string) error {
	csr, err := c.csrs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if Finished(csr) {
		return c.endToken(ctx, csr)
	}
	tokens := c.tokenSecret
	if _, id, ok := c.o.Policy.BootstrapNode(csr); ok && c.tokenSecret(id) == nil {
		// The cache holds kubestrap's tokens only: a token it lacks is
		// gone, or another tool's carrying a node's group, which must not
		// pass for kubestrap's. Ask the API server.
		live, err := c.o.Client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("reading token %s: %w", id, err)
		default:
			tokens = func(string) *corev1.Secret { return live }
		}
	}
	d := c.o.Policy.Decide(csr, Lookups{Token: tokens, Node: c.cachedNode})
	if d.Verdict == Deny && d.Kind == KindServing {
		// The Node may be newer than the cache: ask the API server before
		// refusing an address its status gives; an error is retried, not
		// taken for "no Node".
		live, err := c.o.Client.CoreV1().Nodes().Get(ctx, d.Node, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading Node %s: %w", d.Node, err)
		}
		d = c.o.Policy.Decide(csr, Lookups{Token: tokens, Node: func(string) *corev1.Node {
			if err != nil {
				return nil
			}
			return live
		}})
	}
	if d.Verdict == Skip {
		c.o.Metrics.decisions.WithLabelValues(string(d.Kind), d.Verdict.String()).Inc()
		c.o.Log.Debug("left alone", "csr", name, "kind", d.Kind, "why", d.Message)
		return nil
	}
	cond := certv1.CertificateSigningRequestCondition{
		Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: d.Reason,
		Message: d.Message + " (" + c.o.Identity + ")", LastUpdateTime: metav1.NewTime(c.o.Now()),
	}
	if d.Verdict == Deny {
		cond.Type = certv1.CertificateDenied
	}
	// The cached object's resourceVersion makes the write conditional: a
	// replica that decided the CSR a moment ago makes this one a conflict,
	// so no CSR is decided twice.
	upd := csr.DeepCopy()
	upd.Status.Conditions = append(upd.Status.Conditions, cond)
	_, err = c.o.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, upd, metav1.UpdateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		return fmt.Errorf("CSR changed while deciding: %w", err)
	case err != nil:
		return fmt.Errorf("writing the decision: %w", err)
	}
	c.o.Metrics.decisions.WithLabelValues(string(d.Kind), d.Verdict.String()).Inc()
	attrs := []any{"csr", name, "kind", d.Kind, "node", d.Node, "why", d.Message}
	if d.TokenID != "" {
		attrs = append(attrs, "token_id", d.TokenID)
	}
	if d.Verdict == Approve {
		c.o.Log.Info("approved", attrs...)
		if c.o.Recorder != nil {
			c.o.Recorder.Event(csr, corev1.EventTypeNormal, d.Reason, d.Message)
		}
	} else {
		c.o.Log.Warn("denied", attrs...)
		if c.o.Recorder != nil {
			c.o.Recorder.Event(csr, corev1.EventTypeWarning, d.Reason, d.Message)
		}
	}
	return nil
}

// endToken deletes the bootstrap token a CSR was made with, and the node's
// older ones, once its certificate is issued and its node's Node object
// exists: the kubelet authenticates with its certificate from then on, and
// the tokens in the node's user-data open nothing any more.
func (c *Controller) endToken(ctx context.Context, csr *certv1.CertificateSigningRequest) error {
	if csr.Spec.SignerName != certv1.KubeAPIServerClientKubeletSignerName || !Approved(csr) || len(csr.Status.Certificate) == 0 {
		return nil
	}
	node, id, ok := c.o.Policy.BootstrapNode(csr)
	if !ok {
		return nil
	}
	if _, err := c.nodes.Get(node); err != nil {
		return nil
	}
	// Every token of the node minted before this CSR ends: the one it
	// joined with, and any other a reader of its documents may hold (one
	// that made a CSR, even a denied one, serve keeps as used). A token
	// minted since is for a later boot of the node and stays.
	list, err := c.secrets.Secrets(metav1.NamespaceSystem).List(labels.Everything())
	if err != nil {
		return err
	}
	for _, s := range list {
		if !Owned(s) || s.Annotations[token.AnnotationNode] != node {
			continue
		}
		if sid := string(s.Data[bootstrapapi.BootstrapTokenIDKey]); sid != id && !s.CreationTimestamp.Before(&csr.CreationTimestamp) {
			continue
		}
		uid := s.UID
		err := c.o.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, s.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("deleting token %s of node %s, which joined: %w", s.Data[bootstrapapi.BootstrapTokenIDKey], node, err)
		}
		c.o.Metrics.tokensDeleted.Inc()
		c.o.Log.Info("token ended", "node", node, "token_id", string(s.Data[bootstrapapi.BootstrapTokenIDKey]), "joined_with", id, "why", "the node joined")
	}
	return nil
}

func (c *Controller) tokenSecret(id string) *corev1.Secret {
	s, err := c.secrets.Secrets(metav1.NamespaceSystem).Get(bootstraputil.BootstrapTokenSecretName(id))
	if err != nil {
		return nil
	}
	return s
}

func (c *Controller) cachedNode(name string) *corev1.Node {
	n, err := c.nodes.Get(name)
	if err != nil {
		return nil
	}
	return n
}

// expiredUnused counts kubestrap's tokens past their expiration that no
// CSR was ever made with.
func (c *Controller) expiredUnused() float64 {
	list, err := c.secrets.Secrets(metav1.NamespaceSystem).List(labels.Everything())
	if err != nil {
		return 0
	}
	now := c.o.Now()
	n := 0
	for _, s := range list {
		exp, err := time.Parse(time.RFC3339, string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]))
		if err != nil || exp.After(now) {
			continue
		}
		used, _ := c.csrIdx.ByIndex(indexUsername, BootstrapUserPrefix+string(s.Data[bootstrapapi.BootstrapTokenIDKey]))
		if len(used) == 0 {
			n++
		}
	}
	return float64(n)
}

// withoutTokenSecret is a cached Secret with the token's secret taken out.
func withoutTokenSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok || s.Data[bootstrapapi.BootstrapTokenSecretKey] == nil {
		return obj, nil
	}
	s = s.DeepCopy()
	delete(s.Data, bootstrapapi.BootstrapTokenSecretKey)
	return s, nil
}
