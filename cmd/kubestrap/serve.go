package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"
	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/pipeline"
	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/kubestrap/kubestrap/serve"
)

const serveDescription = `serve answers machines that boot from the network with their own
documents, each holding a bootstrap token minted at the moment it is asked
for (--token-ttl, 1h by default). Asking again for the same node deletes the
token handed out before if no kubelet used it, so at most one unused token
per node exists. No document is ever served without a live token: with the
API server unreachable the answer is 503 with Retry-After.

Endpoints (GET):
   /ignition?mac=M             the node's Ignition config
   /nocloud/M/user-data        cloud-init's NoCloud seed over HTTP
   /nocloud/M/meta-data          (kernel argument ds=nocloud;s=URL/nocloud/M/,
   /nocloud/M/network-config      or seedfrom in meta-data or cloud.cfg)
   /boot.ipxe                  chains to /ipxe with what iPXE knows
   /ipxe?mac=M                 an iPXE script from --boot-profile
   /healthz /readyz /metrics   liveness, API server reachable, Prometheus

A machine is matched by its MAC (any notation: 52:54:00:12:34:56,
52-54-00-12-34-56, 525400123456), or by uuid=, serial= or hostname= as the
node list gives them. An unknown machine gets 404 and nothing is minted.

The node list is read once at start; several replicas may run behind one
address (all state is in the API server). deploy/serve/ runs it in the
cluster. Without --tls-cert the documents, tokens included, cross the
network in clear: run it on the provisioning network only.`

func serveCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:        "serve",
		Usage:       "serve per-node documents over HTTP with tokens minted per boot (PXE, iPXE, NoCloud-net)",
		UsageText:   "kubestrap serve -f cluster.yaml [--nodes FILE] [--kubeconfig FILE] [--listen ADDR:PORT] [flags]",
		Description: serveDescription,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "cluster", Aliases: []string{"f"}, Usage: "cluster `FILE` (kind: Cluster)", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "env", Usage: "the guide's environment.sh `FILE`", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "nodes", Usage: "node list `FILE`: YAML, or CSV name,ip[,mac]; replaces the other file's nodes", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "boot-profile", Usage: "`FILE` with the kernel, initrds and arguments /ipxe boots (see examples/boot-profiles)", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "variant", Usage: "Butane `VARIANT` when the cluster names no os: fcos or flatcar", Value: "fcos", Category: "Inputs"},
			&cli.StringFlag{Name: "kubeconfig", Usage: "admin kubeconfig `FILE` (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account)", TakesFile: true, Category: "Tokens"},
			&cli.StringFlag{Name: "namespace", Usage: "`NAMESPACE` of the boot records, the ConfigMaps that say which token is each node's current one", DefaultText: "the pod's own in a cluster, else kube-system", Category: "Tokens"},
			&cli.DurationFlag{Name: "token-ttl", Usage: "lifetime of a token minted for one boot", Value: time.Hour, Category: "Tokens"},
			&cli.StringFlag{Name: "listen", Usage: "`ADDR:PORT` to listen on", Value: ":8080", Category: "Server"},
			&cli.StringFlag{Name: "url", Usage: "`URL` machines reach this server at, for the URLs /ipxe hands on (default: the request's Host)", Category: "Server"},
			&cli.StringFlag{Name: "tls-cert", Usage: "serve HTTPS with this certificate `FILE` (PEM)", TakesFile: true, Category: "Server"},
			&cli.StringFlag{Name: "tls-key", Usage: "the certificate's key `FILE` (PEM)", TakesFile: true, Category: "Server"},
			&cli.BoolFlag{Name: "match-source-ip", Usage: "answer a node that has an ip only when the request comes from it", Category: "Server"},
			&cli.Float64Flag{Name: "node-rate", Usage: "token requests per minute each node may make, after a burst", Value: float64(serve.DefaultRate) * 60, Category: "Server"},
			&cli.IntFlag{Name: "parallel", Usage: "at most `N` token Secrets created at once (and 4N requests minting); more wait their turn", Value: serve.DefaultMaxInFlight, Category: "Server"},
			&cli.IntFlag{Name: "node-burst", Usage: "token requests a node may make at once", Value: serve.DefaultBurst, Category: "Server"},
			&cli.StringFlag{Name: "log-format", Usage: "`FORMAT` of the logs on stderr: json or text", Value: "json", Category: "Server"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usagef("%w (see kubestrap serve --help)", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("serve takes no arguments, got %q", c.Args().Slice())
			}
			return runServe(c, d)
		},
	}
}

func runServe(c *cli.Context, d deps) error {
	ctx := c.Context
	stderr := c.App.ErrWriter
	switch {
	case c.Duration("token-ttl") < time.Minute:
		return usagef("--token-ttl: %v is under a minute: no machine boots that fast", c.Duration("token-ttl"))
	case (c.String("tls-cert") == "") != (c.String("tls-key") == ""):
		return usagef("--tls-cert and --tls-key go together")
	case c.Float64("node-rate") <= 0 || c.Int("node-burst") < 1:
		return usagef("--node-rate must be positive and --node-burst at least 1")
	case c.Int("parallel") < 1 || c.Int("parallel") > 1024:
		return usagef("--parallel: %d is not between 1 and 1024", c.Int("parallel"))
	}
	log, err := newLogger(c.String("log-format"), stderr)
	if err != nil {
		return err
	}
	var profile *serve.BootProfile
	if f := c.String("boot-profile"); f != "" {
		if profile, err = serve.LoadBootProfile(f); err != nil {
			return usageError{err}
		}
	}
	var cert *tls.Certificate
	if c.String("tls-cert") != "" {
		kp, err := tls.LoadX509KeyPair(c.String("tls-cert"), c.String("tls-key"))
		if err != nil {
			return usagef("--tls-cert, --tls-key: %w", err)
		}
		cert = &kp
	}
	// Each mint is a create, a get and a create or update of the node's
	// boot record, and a delete.
	cluster, client, err := loadCluster(c, d, 2*c.Int("parallel"), model.Overrides{TokenTTL: c.Duration("token-ttl").String()})
	if err != nil {
		return err
	}
	for _, w := range cluster.Warnings {
		log.Warn("cluster", "warning", w.String())
	}

	// The documents the cluster's os boots with, and the user's additions,
	// decided as generate decides them.
	o := generateOptions{ignition: true, cloudInit: true, ign: ignition.Options{Variant: c.String("variant")}, variantSet: c.IsSet("variant")}
	if err := o.ign.Check(); err != nil {
		return usageError{err}
	}
	if err := o.documentsFor(cluster); err != nil {
		return err
	}
	snippets, user, err := o.additions(cluster, stderr)
	if err != nil {
		return err
	}
	opts := serve.Options{
		Cluster: cluster, Profile: profile, URL: c.String("url"), MatchSourceIP: c.Bool("match-source-ip"),
		Rate: rate.Limit(c.Float64("node-rate") / 60), Burst: c.Int("node-burst"), MaxInFlight: 4 * c.Int("parallel"), Log: log,
		Registry: prometheus.NewRegistry(),
	}
	if o.ignition {
		if opts.Ignition, err = pipeline.Ignition(o.ign, false, snippets...); err != nil {
			return err
		}
	}
	if o.cloudInit {
		opts.CloudInit = pipeline.CloudInit(pipeline.CloudInitOptions{User: user})
	}
	opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	factory := informers.NewSharedInformerFactory(client.Interface, 0)
	used, err := serve.NewUsedTokens(factory)
	if err != nil {
		return err
	}
	ns := c.String("namespace")
	if ns == "" {
		ns = podNamespace()
	}
	opts.Tokens = &token.Boot{Client: client.Interface, Namespace: ns, Parallel: c.Int("parallel"), TTL: cluster.TTL(), Signing: cluster.Token.Signing, Used: used.Used, Now: d.now, Generate: d.generateToken}
	opts.Ready = func(ctx context.Context) error {
		if !used.HasSynced() {
			return errors.New("the CSR informer has not synced")
		}
		return client.Interface.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}
	srv, err := serve.New(opts)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return usagef("--listen: %w", err)
	}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests in flight finish their mint on shutdown.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	// Tokens are only minted once the CSRs are known: a used token must
	// never look unused and be deleted.
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	synced := factory.WaitForCacheSync(syncCtx.Done())
	cancel()
	for _, ok := range synced {
		if !ok {
			ln.Close()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: the CSR list did not arrive within a minute (can this account list and watch certificatesigningrequests?)", client.Source)
		}
	}
	scheme := "http"
	if cert != nil {
		scheme = "https"
	} else {
		log.Warn("serving without TLS: documents and their tokens cross the network in clear")
	}
	log.Info("serving", "address", scheme+"://"+ln.Addr().String(), "nodes", len(cluster.Nodes), "os", cluster.OS,
		"boot_records", ns, "ignition", o.ignition, "cloud_init", o.cloudInit, "ipxe", profile != nil, "token_ttl", cluster.TTL().String())

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Long enough for a mint under way to finish (its timeout, then its
	// boot record's write): one cut off mid-way leaves a token unrecorded.
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 50*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// podNamespace is the namespace of the pod serve runs in, or kube-system
// outside a cluster.
func podNamespace() string {
	data, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if ns := strings.TrimSpace(string(data)); err == nil && ns != "" {
		return ns
	}
	return metav1.NamespaceSystem
}

func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	}
	return nil, usagef("--log-format: %q is not json or text", format)
}
