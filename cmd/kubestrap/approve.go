package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/kubestrap/kubestrap/approve"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/rbac"
)

const approveDescription = `approve decides the CSRs of kubelets by the node list, so that the bootstrap
token in one node's user-data can only ever become that node:

   - a kubelet client CSR made with a bootstrap token kubestrap minted is
     approved only when it asks for exactly CN=system:node:<the token's node>,
     O=system:nodes, client usages and no SANs; else it is denied, with the
     reason in the CSR's condition and an Event;
   - a node renewing its own client certificate is approved;
   - a kubelet serving CSR (serverTLSBootstrap) is approved only when every IP
     it names is the node's ip, one of its network addresses, or in its Node's
     status.addresses — never one in the service CIDR, the API server's, or
     another listed node's — and every DNS name is the node's name or
     hostname;
   - once a node's client certificate is issued and its Node exists, the token
     it joined with is deleted, with the node's tokens minted before it.

CSRs of other bootstrap tokens (kubeadm's) and of nodes not in the list are
left to other approvers, or denied with --strict.

kube-controller-manager approves every bootstrap token's client CSR while the
binding of system:bootstrappers to ...:nodeclient exists: remove it with
'kubestrap rbac apply --bound' (see the README's "Bound bootstrap").

With --leader-elect, replicas share a Lease and one decides at a time; a
decision is written against the CSR's resourceVersion, so no CSR is decided
twice. /healthz, /readyz and /metrics are served on --listen.`

func approveCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:        "approve",
		Usage:       "approve kubelet CSRs by the node list: a node's token can only become that node",
		UsageText:   "kubestrap approve -f cluster.yaml [--nodes FILE] [--kubeconfig FILE] [--leader-elect] [flags]",
		Description: approveDescription,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "cluster", Aliases: []string{"f"}, Usage: "cluster `FILE` (kind: Cluster)", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "env", Usage: "the guide's environment.sh `FILE`", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "nodes", Usage: "node list `FILE`: YAML, or CSV name,ip[,mac]; replaces the other file's nodes", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig `FILE` (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account)", TakesFile: true, Category: "Cluster"},
			&cli.BoolFlag{Name: "strict", Usage: "deny the kubelet CSRs that are not kubestrap's instead of leaving them to other approvers", Category: "Decisions"},
			&cli.DurationFlag{Name: "max-serving-expiration", Usage: "longest lifetime a serving CSR may ask for", Value: approve.DefaultMaxServingExpiration, Category: "Decisions"},
			&cli.IntFlag{Name: "workers", Usage: "`N` CSRs decided at once", Value: approve.DefaultWorkers, Category: "Decisions"},
			&cli.BoolFlag{Name: "leader-elect", Usage: "take a Lease before deciding, so that replicas take turns", Category: "Leader election"},
			&cli.StringFlag{Name: "lease-namespace", Usage: "`NAMESPACE` of the Lease", DefaultText: "the pod's own in a cluster, else kube-system", Category: "Leader election"},
			&cli.StringFlag{Name: "lease-name", Usage: "`NAME` of the Lease", Value: "kubestrap-approve", Category: "Leader election"},
			&cli.DurationFlag{Name: "lease-duration", Usage: "how long a leader that stopped renewing keeps the Lease", Value: 15 * time.Second, Category: "Leader election"},
			&cli.DurationFlag{Name: "renew-deadline", Usage: "how long the leader tries to renew before it gives up leading", Value: 10 * time.Second, Category: "Leader election"},
			&cli.DurationFlag{Name: "retry-period", Usage: "how often candidates try to take the Lease", Value: 2 * time.Second, Category: "Leader election"},
			&cli.StringFlag{Name: "identity", Usage: "`NAME` of this replica in the Lease and in its decisions", DefaultText: "hostname_random", Category: "Leader election"},
			&cli.StringFlag{Name: "listen", Usage: "`ADDR:PORT` of /healthz, /readyz and /metrics", Value: ":8081", Category: "Server"},
			&cli.StringFlag{Name: "log-format", Usage: "`FORMAT` of the logs on stderr: json or text", Value: "json", Category: "Server"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usagef("%w (see kubestrap approve --help)", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("approve takes no arguments, got %q", c.Args().Slice())
			}
			return runApprove(c, d)
		},
	}
}

func runApprove(c *cli.Context, d deps) error {
	ctx := c.Context
	switch {
	case c.Int("workers") < 1 || c.Int("workers") > 256:
		return usagef("--workers: %d is not between 1 and 256", c.Int("workers"))
	case c.Duration("max-serving-expiration") < time.Hour:
		return usagef("--max-serving-expiration: %v is under an hour", c.Duration("max-serving-expiration"))
	case c.Bool("leader-elect") && !(c.Duration("lease-duration") > c.Duration("renew-deadline") && c.Duration("renew-deadline") > c.Duration("retry-period") && c.Duration("retry-period") > 0):
		return usagef("--lease-duration > --renew-deadline > --retry-period > 0, as client-go's leader election wants")
	}
	log, err := newLogger(c.String("log-format"), c.App.ErrWriter)
	if err != nil {
		return err
	}
	cluster, client, err := loadCluster(c, d, c.Int("workers"), model.Overrides{})
	if err != nil {
		return err
	}
	identity := c.String("identity")
	if identity == "" {
		host, _ := os.Hostname()
		identity = host + "_" + uuid.NewString()[:8]
	}

	// The informers' watches last as long as the server keeps them, not
	// the request timeout the writes have.
	watchCfg := rest.CopyConfig(client.Config)
	watchCfg.Timeout = 0
	watchClient, err := kubernetes.NewForConfig(watchCfg)
	if err != nil {
		return err
	}
	policy := approve.NewPolicy(cluster.Nodes, approve.ReservedFor(cluster)...)
	policy.Strict, policy.MaxServingExpiration = c.Bool("strict"), c.Duration("max-serving-expiration")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := approve.NewMetrics(reg)
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.Interface.CoreV1().Events("")})
	ctrl, err := approve.New(approve.Options{
		Client: client.Interface, WatchClient: watchClient, Policy: policy, Workers: c.Int("workers"), Identity: identity, Log: log, Metrics: metrics,
		Recorder: events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubestrap-approve"}), Now: d.now,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return usagef("--listen: %w", err)
	}
	watchdog := leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// A leader that can no longer renew its Lease is unhealthy: a
		// restart lets another replica lead.
		if err := watchdog.Check(r); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ctrl.HasSynced() {
			http.Error(w, "the informers have not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health server", "error", err.Error())
		}
	}()
	defer func() {
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		hs.Shutdown(shut) //nolint:errcheck // the process is ending
	}()

	ctrl.Start(ctx)
	metrics.SetBlanket(-1)
	go watchBlanket(ctx, client.Interface, metrics, log, 5*time.Minute)
	log.Info("starting", "identity", identity, "nodes", len(cluster.Nodes), "strict", policy.Strict,
		"leader_elect", c.Bool("leader-elect"), "health", "http://"+ln.Addr().String())
	if !c.Bool("leader-elect") {
		metrics.SetLeader(true)
		return ctrl.Run(ctx)
	}

	ns := c.String("lease-namespace")
	if ns == "" {
		ns = podNamespace()
	}
	// OnStartedLeading runs on a goroutine of its own, which may outlive
	// elector.Run by the decisions under way: its result comes back here.
	ran := make(chan error, 1)
	var led atomic.Bool
	lost := false
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: c.String("lease-name")},
			Client:     client.Interface.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
		},
		LeaseDuration:   c.Duration("lease-duration"),
		RenewDeadline:   c.Duration("renew-deadline"),
		RetryPeriod:     c.Duration("retry-period"),
		ReleaseOnCancel: true,
		Name:            "kubestrap-approve",
		WatchDog:        watchdog,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				led.Store(true)
				metrics.SetLeader(true)
				log.Info("leading", "lease", ns+"/"+c.String("lease-name"))
				ran <- ctrl.Run(lctx)
			},
			OnStoppedLeading: func() {
				metrics.SetLeader(false)
				lost = ctx.Err() == nil
			},
			OnNewLeader: func(who string) {
				if who != identity {
					log.Info("following", "leader", who)
				}
			},
		},
	})
	if err != nil {
		return usagef("leader election: %w", err)
	}
	watchdog.SetLeaderElection(elector)
	elector.Run(ctx)
	if led.Load() {
		select {
		case err := <-ran:
			if err != nil {
				return err
			}
		case <-time.After(10 * time.Second):
			log.Warn("decisions still under way after 10s; leaving them")
		}
	}
	if lost {
		// Stop rather than go back to candidacy: whatever this replica
		// had under way is abandoned, and a fresh start is a clean one.
		return fmt.Errorf("lost the Lease %s/%s", ns, c.String("lease-name"))
	}
	log.Info("stopped")
	return nil
}

// watchBlanket asks now and then whether bound mode is in force: a binding
// re-created by an upgrade tool would let kube-controller-manager approve
// any token's CSR for any node again, whatever this approver denies.
func watchBlanket(ctx context.Context, client kubernetes.Interface, m *approve.Metrics, log *slog.Logger, every time.Duration) {
	for {
		auto, err := rbac.TokensAutoApproved(ctx, client)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.SetBlanket(-1)
			log.Warn("cannot tell whether bound mode is in force", "error", err.Error())
		case auto:
			m.SetBlanket(1)
			log.Warn("bound mode is not in force: bootstrap tokens may create certificatesigningrequests/nodeclient, so kube-controller-manager approves any token's CSR for any node (kubestrap rbac apply --bound)")
		default:
			m.SetBlanket(0)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
