package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubestrap/kubestrap/generator/discovery"
	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/output"
	"github.com/kubestrap/kubestrap/generator/rbac"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
)

// Formats the generate command writes.
const (
	formatIgnition  = "ignition"
	formatCloudInit = "cloud-init"
)

// Output file names inside DIR/<node>/ and DIR/.
const (
	fileIgnition = "config.ign"
	fileButane   = "config.bu"
	fileUserData = "user-data"
	fileMetaData = "meta-data"
	fileTokens   = "tokens.yaml"
)

// secretMode is for every file that holds a token (all but meta-data hold
// one, and meta-data gets it too: one rule is easier to audit than two).
const secretMode = 0o600

const generateDescription = `Reads the cluster from a cluster file (-f) or from the guide's
environment.sh (--env), obtains one bootstrap token per node, and writes for
each node, under --out DIR:

   DIR/NODE/config.ign   Ignition config (Fedora CoreOS / Flatcar), validated
   DIR/NODE/config.bu    its Butane source (with --butane)
   DIR/NODE/user-data    #cloud-config
   DIR/NODE/meta-data    NoCloud meta-data (DIR/NODE is a NoCloud seed)
   DIR/tokens.yaml       with --offline: the tokens' Secrets, to kubectl apply

Tokens come from the cluster of the admin kubeconfig (--kubeconfig, else
$KUBECONFIG, else ~/.kube/config): one Secret kube-system/bootstrap-token-<id>
per node, as 'kubeadm token create --groups system:bootstrappers:<node>' makes
it. A re-run reuses a node's token while it stays valid for --reuse-margin;
--rotate replaces them all. If any node's token cannot be obtained, nothing is
written and the tokens the run created are deleted. With --offline, tokens are
minted locally instead and no cluster is needed.

The CA nodes trust is --ca-file (or caFile), else the admin kubeconfig's, else
kube-public/cluster-info's when it matches a --ca-cert-hash pin.

Everything is written 0600 in 0700 directories; a run that fails writes nothing,
and an existing non-empty DIR is only replaced with --force. Token secrets are
never printed.

Values missing from the files come from flags, then from defaults: profile
hardened, token TTL 24h, kubelet binary /usr/bin/kubelet, kubernetesVersion
` + model.NewestVersion + ` (supported: ` + model.MinVersion + ` up to v1.37.x).

Examples:
   kubestrap generate -f cluster.yaml --out out
   kubestrap generate --offline -f cluster.yaml --out out
   kubestrap generate --offline --env environment.sh --ca-file ca.pem --out out
   kubestrap generate -f cluster.yaml --nodes rack3.csv --variant flatcar --out rack3`

func generateCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:        "generate",
		Usage:       "write per-node Ignition and cloud-init documents",
		UsageText:   "kubestrap generate (-f cluster.yaml | --env environment.sh) [--nodes FILE] --out DIR [flags]",
		Description: generateDescription,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "cluster", Aliases: []string{"f"}, Usage: "cluster `FILE` (kind: Cluster)", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "env", Usage: "the guide's environment.sh `FILE`, read with a shell parser, never run", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "nodes", Usage: "node list `FILE`: YAML list, or CSV name,ip[,mac]; replaces the other file's nodes", TakesFile: true, Category: "Inputs"},
			&cli.StringFlag{Name: "ca-file", Usage: "cluster CA certificate `PEM` (overrides caFile)", TakesFile: true, Category: "Overrides"},
			&cli.StringFlag{Name: "api-server", Usage: "`URL` nodes dial (overrides apiServer)", Category: "Overrides"},
			&cli.StringFlag{Name: "kubernetes-version", Usage: "target kubelet `VERSION` (overrides kubernetesVersion)", Category: "Overrides"},
			&cli.StringFlag{Name: "cluster-domain", Usage: "cluster DNS `DOMAIN` (overrides clusterDomain)", Category: "Overrides"},
			&cli.StringFlag{Name: "profile", Usage: "kubelet `PROFILE`: hardened or legacy (overrides kubelet.profile)", Category: "Overrides"},
			&cli.StringFlag{Name: "kubelet-binary", Usage: "kubelet `PATH` on the node (overrides kubelet.binary)", Category: "Overrides"},
			&cli.StringFlag{Name: "token-ttl", Usage: "token lifetime as a Go `DURATION` (overrides token.ttl)", Category: "Overrides"},
			&cli.BoolFlag{Name: "token-signing", Usage: "add the signing usage to tokens (only cluster-info discovery needs it)", Category: "Overrides"},
			&cli.BoolFlag{Name: "server-tls-bootstrap", Usage: "have kubelets request CA-signed serving certificates (their CSRs need an approver)", Category: "Overrides"},
			&cli.StringFlag{Name: "kubeconfig", Usage: "admin kubeconfig `FILE` (default: $KUBECONFIG, then ~/.kube/config)", TakesFile: true, Category: "Tokens"},
			&cli.BoolFlag{Name: "offline", Usage: "mint tokens locally, without a cluster, and write their Secrets to DIR/tokens.yaml", Category: "Tokens"},
			&cli.BoolFlag{Name: "rotate", Usage: "mint new tokens for every node and delete the ones they replace", Category: "Tokens"},
			&cli.DurationFlag{Name: "reuse-margin", Usage: "reuse a node's token only if it stays valid this `LONG`", Value: token.DefaultReuseMargin, Category: "Tokens"},
			&cli.IntFlag{Name: "parallel", Usage: "API calls in flight at once", Value: token.DefaultParallel, Category: "Tokens"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up on the cluster after this `LONG`", Value: 2 * time.Minute, Category: "Tokens"},
			&cli.StringSliceFlag{Name: "ca-cert-hash", Usage: "trust kube-public/cluster-info's CA if it has this pin (`sha256:HEX`)", Category: "Tokens"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "output `DIR` (required)", Category: "Output"},
			&cli.BoolFlag{Name: "force", Usage: "replace a non-empty output directory", Category: "Output"},
			&cli.StringSliceFlag{Name: "format", Usage: "documents to write: ignition, cloud-init", Value: cli.NewStringSlice(formatIgnition, formatCloudInit), Category: "Output"},
			&cli.StringFlag{Name: "variant", Usage: "Butane `VARIANT`: fcos or flatcar", Value: "fcos", Category: "Output"},
			&cli.StringFlag{Name: "butane-version", Usage: "Butane spec `VERSION` (fcos 1.6.0 → Ignition 3.5, fcos 1.5.0 or flatcar 1.1.0 → 3.4); default: the variant's", Category: "Output"},
			&cli.BoolFlag{Name: "butane", Usage: "also write each node's Butane source (config.bu)", Category: "Output"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usagef("%w (see kubestrap generate --help)", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("generate takes no arguments, got %q", c.Args().Slice())
			}
			o, err := generateOptionsFrom(c)
			if err != nil {
				return err
			}
			return generate(c.Context, o, d, c.App.ErrWriter)
		},
	}
}

type generateOptions struct {
	sources            model.Sources
	tokenSigning       bool
	serverTLSBootstrap bool
	offline            bool
	kubeconfig         string
	rotate             bool
	reuseMargin        time.Duration
	parallel           int
	timeout            time.Duration
	caCertHashes       []string
	out                string
	force              bool
	ignition           bool
	cloudInit          bool
	butane             bool
	ign                ignition.Options
}

func generateOptionsFrom(c *cli.Context) (generateOptions, error) {
	o := generateOptions{
		sources: model.Sources{
			ClusterFile: c.String("cluster"),
			EnvFile:     c.String("env"),
			NodesFile:   c.String("nodes"),
			Overrides: model.Overrides{
				APIServer:         c.String("api-server"),
				CAFile:            c.String("ca-file"),
				KubernetesVersion: c.String("kubernetes-version"),
				Profile:           c.String("profile"),
				TokenTTL:          c.String("token-ttl"),
				KubeletBinary:     c.String("kubelet-binary"),
				ClusterDomain:     c.String("cluster-domain"),
			},
		},
		tokenSigning:       c.Bool("token-signing"),
		serverTLSBootstrap: c.Bool("server-tls-bootstrap"),
		offline:            c.Bool("offline"),
		kubeconfig:         c.String("kubeconfig"),
		rotate:             c.Bool("rotate"),
		reuseMargin:        c.Duration("reuse-margin"),
		parallel:           c.Int("parallel"),
		timeout:            c.Duration("timeout"),
		caCertHashes:       c.StringSlice("ca-cert-hash"),
		out:                c.String("out"),
		force:              c.Bool("force"),
		butane:             c.Bool("butane"),
		ign:                ignition.Options{Variant: c.String("variant"), Version: c.String("butane-version")},
	}
	if o.out == "" {
		return o, usagef("--out DIR is required")
	}
	if o.sources.ClusterFile == "" && o.sources.EnvFile == "" {
		return o, usagef("give the cluster with -f cluster.yaml or --env environment.sh")
	}
	if o.sources.ClusterFile != "" && o.sources.EnvFile != "" {
		return o, usagef("-f and --env both describe the cluster: give one")
	}
	if o.offline {
		for _, name := range []string{"kubeconfig", "rotate", "reuse-margin", "parallel", "timeout", "ca-cert-hash"} {
			if c.IsSet(name) {
				return o, usagef("--%s needs a cluster: it does nothing with --offline", name)
			}
		}
	}
	if o.parallel < 1 || o.parallel > 1024 {
		return o, usagef("--parallel: %d is not between 1 and 1024", o.parallel)
	}
	if o.reuseMargin < 0 || o.timeout <= 0 {
		return o, usagef("--reuse-margin and --timeout must be positive")
	}
	for _, f := range c.StringSlice("format") {
		for _, f := range strings.Split(f, ",") {
			switch strings.TrimSpace(f) {
			case formatIgnition:
				o.ignition = true
			case formatCloudInit:
				o.cloudInit = true
			default:
				return o, usagef("--format: unknown format %q (want %s or %s)", f, formatIgnition, formatCloudInit)
			}
		}
	}
	if o.butane && !o.ignition {
		return o, usagef("--butane needs the ignition format")
	}
	if o.ignition {
		if err := o.ign.Check(); err != nil {
			return o, usageError{err}
		}
	}
	return o, nil
}

// summaryRow is one node's line in the summary: never the token secret.
type summaryRow struct {
	node, tokenID string
	files         []string
}

// tokens is what either token source yields for a run. Tokens may still be
// arriving: the index of each node whose token is in list comes on ready,
// which is closed when no more will; wait then says whether all came.
type tokens struct {
	list  []token.Token
	ready <-chan int
	wait  func() error
	// cancel stops a source that is still working (after a failure).
	cancel func()
	// manifests writes tokens.yaml (offline only).
	manifests func(io.Writer) error
	// rollback undoes what the source did in the cluster; finish completes it
	// once the documents are written (deletes rotated-out tokens).
	rollback, finish func(context.Context) error
	summary          string
}

func generate(ctx context.Context, o generateOptions, d deps, stderr io.Writer) (err error) {
	var (
		cfg    *rest.Config
		client kubernetes.Interface
	)
	if !o.offline {
		var source string
		if cfg, source, err = discovery.Kubeconfig(o.kubeconfig); err != nil {
			if errors.Is(err, discovery.ErrNoKubeconfig) {
				return usageError{err}
			}
			return err
		}
		// At most --parallel calls are in flight; the client-side limiter
		// must not be what holds them back (its default is 5 per second).
		cfg.QPS, cfg.Burst = float32(50*o.parallel), 100*o.parallel
		if cfg.Timeout == 0 {
			cfg.Timeout = 15 * time.Second
		}
		if client, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
		o.sources.CA = func(ctx context.Context) ([]byte, string, error) {
			return discovery.CA(ctx, cfg, source, client, o.caCertHashes)
		}
	}
	cluster, err := model.Load(ctx, o.sources, d.now())
	if err != nil {
		return err
	}
	if o.tokenSigning {
		cluster.Token.Signing = true
	}
	if o.serverTLSBootstrap {
		cluster.Kubelet.ServerTLSBootstrap = true
	}
	r, err := render.New(cluster)
	if err != nil {
		return err
	}
	for _, w := range cluster.Warnings {
		fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w)
	}
	// Refuse bad input before any token exists in a cluster.
	var inputErrs []error
	names := make([]string, len(cluster.Nodes))
	for i, n := range cluster.Nodes {
		names[i] = n.Name
		if err := r.Check(n); err != nil {
			inputErrs = append(inputErrs, err)
		}
	}
	if len(inputErrs) > 0 {
		return errors.Join(inputErrs...)
	}

	stage, err := output.Begin(o.out, o.force)
	if err != nil {
		return err
	}
	for _, w := range stage.Warnings() {
		fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w)
	}
	var toks *tokens
	defer func() {
		if err == nil {
			return
		}
		if aerr := stage.Abort(); aerr != nil {
			fmt.Fprintf(stderr, "kubestrap: warning: removing the unfinished output: %v\n", aerr)
		}
		if toks != nil {
			toks.cancel()
			toks.wait() // its error is the one being returned, or moot
			if rerr := toks.rollback(ctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing the run's tokens: %w", rerr))
			}
		}
	}()
	if o.offline {
		toks, err = offlineTokens(cluster, names, d, o.out)
	} else {
		toks, err = clusterTokens(ctx, o, cluster, names, client, d, stderr)
	}
	if err != nil {
		return err
	}

	// Each node's documents are written as soon as its token is there.
	rows, warnings, err := writeNodes(ctx, r, cluster.Nodes, toks.list, toks.ready, o, stage)
	if err != nil {
		return err
	}
	if err := toks.wait(); err != nil {
		return err
	}
	if toks.manifests != nil {
		f, err := stage.Create(fileTokens, secretMode)
		if err != nil {
			return err
		}
		bw := bufio.NewWriterSize(f, 64<<10)
		if err = toks.manifests(bw); err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", fileTokens, err)
		}
	}
	if err := stage.Commit(); err != nil {
		// Once the documents are in place they are the run's result: their
		// tokens must stay, whatever went wrong tidying up.
		var cleanup *output.CleanupError
		if !errors.As(err, &cleanup) {
			return err
		}
		fmt.Fprintf(stderr, "kubestrap: warning: %v\n", err)
	}
	for _, w := range slices.Sorted(maps.Keys(warnings)) {
		fmt.Fprintf(stderr, "kubestrap: warning: %s (%d node(s))\n", w, warnings[w])
	}
	printSummary(stderr, rows)
	fmt.Fprintf(stderr, "kubestrap: wrote %d node(s) to %s; %s\n", len(rows), o.out, toks.summary)
	// The documents are on disk: the tokens they replace can go.
	if err := toks.finish(ctx); err != nil {
		fmt.Fprintf(stderr, "kubestrap: warning: deleting replaced tokens: %v\n", err)
	}
	return nil
}

func offlineTokens(c *model.Cluster, names []string, d deps, out string) (*tokens, error) {
	minter := &token.Offline{TTL: c.TTL(), Signing: c.Token.Signing, Now: d.now, Generate: d.generateToken}
	ready := make(chan int, len(names))
	t := &tokens{
		ready:    ready,
		wait:     func() error { return nil },
		cancel:   func() {},
		rollback: func(context.Context) error { return nil },
		finish:   func(context.Context) error { return nil },
	}
	for i, n := range names {
		tok, err := minter.Mint(n)
		if err != nil {
			return nil, err
		}
		t.list = append(t.list, tok)
		ready <- i
	}
	close(ready)
	t.manifests = func(w io.Writer) error { return token.WriteManifests(w, t.list) }
	t.summary = "apply the tokens before the nodes boot: kubectl apply -f " + filepath.Join(out, fileTokens)
	return t, nil
}

// progressThreshold is the node count from which a terminal gets a progress line.
const progressThreshold = 50

// clusterTokens checks the cluster, then starts obtaining the tokens and
// returns while they arrive.
func clusterTokens(parent context.Context, o generateOptions, c *model.Cluster, names []string, client kubernetes.Interface, d deps, stderr io.Writer) (*tokens, error) {
	timeout := fmt.Errorf("--timeout %v reached", o.timeout)
	ctx, cancel := context.WithTimeoutCause(parent, o.timeout, timeout)
	p := &token.Cluster{
		Client: client, TTL: c.TTL(), Signing: c.Token.Signing,
		ReuseMargin: o.reuseMargin, Rotate: o.rotate, Parallel: o.parallel,
		Now: d.now, Generate: d.generateToken,
	}
	var bar *progress
	if len(names) >= progressThreshold && isTerminal(stderr) {
		bar = newProgress(stderr, "tokens", len(names))
		p.Progress = bar.set
	}
	ready := make(chan int, len(names))
	t := &tokens{
		list:     make([]token.Token, len(names)),
		ready:    ready,
		cancel:   cancel,
		rollback: func(context.Context) error { return nil },
		finish:   func(context.Context) error { return nil },
	}
	// The channel has room for every node, so OnToken never blocks Obtain.
	p.OnToken = func(i int, tok token.Token) {
		t.list[i] = tok
		ready <- i
	}
	var (
		got  *token.Obtained
		oerr error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		defer close(ready)
		defer cancel()
		got, oerr = p.Obtain(ctx, names)
		if bar != nil {
			bar.done()
		}
	}()
	// The checks only warn: they run beside the tokens, not before them.
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		// Not ctx: that ends as soon as the tokens are all there.
		ctx, cancel := context.WithTimeoutCause(parent, o.timeout, timeout)
		defer cancel()
		clusterChecks(ctx, client, names, stderr)
	}()
	t.wait = func() error {
		<-done
		<-checked
		if oerr != nil {
			return oerr
		}
		t.rollback, t.finish = got.Rollback, got.Finish
		t.summary = fmt.Sprintf("tokens: %d created, %d reused", got.Created, got.Reused)
		return nil
	}
	return t, nil
}

// clusterChecks warns about a cluster that lacks the bootstrapping RBAC and
// about nodes whose names are already registered.
func clusterChecks(ctx context.Context, client kubernetes.Interface, names []string, stderr io.Writer) {
	if missing, err := rbac.Missing(ctx, client); err != nil {
		fmt.Fprintf(stderr, "kubestrap: warning: cannot check TLS bootstrapping RBAC: %v\n", err)
	} else {
		for _, g := range missing {
			fmt.Fprintf(stderr, "kubestrap: warning: no ClusterRoleBinding gives group %s the ClusterRole %s (%s); nodes will not join until `kubestrap rbac apply` fixes it\n", g.Group, g.Role, g.Why)
		}
	}
	if registered, err := token.Registered(ctx, client, names); err != nil {
		fmt.Fprintf(stderr, "kubestrap: warning: cannot list Nodes: %v\n", err)
	} else {
		for _, n := range registered {
			fmt.Fprintf(stderr, "kubestrap: warning: node %s is already registered; a second machine booted with this name would take that Node over\n", n)
		}
	}
}

type namedFile struct {
	name string
	data []byte
}

// nodeDocuments encodes one node's assets in every format asked for, and
// returns the encoders' warnings.
func nodeDocuments(assets render.Assets, enc *ignitionEncoder, o generateOptions) ([]namedFile, []string, error) {
	var (
		files    []namedFile
		warnings []string
	)
	if o.ignition {
		ign, w, err := enc.encode(assets)
		if err != nil {
			return nil, nil, fmt.Errorf("node %s: ignition: %w", assets.Node, err)
		}
		warnings = w
		files = append(files, namedFile{fileIgnition, ign})
		if o.butane {
			bu, err := ignition.Butane(assets, o.ign)
			if err != nil {
				return nil, nil, fmt.Errorf("node %s: butane: %w", assets.Node, err)
			}
			files = append(files, namedFile{fileButane, bu})
		}
	}
	if o.cloudInit {
		ud, err := cloudinit.UserData(assets)
		if err != nil {
			return nil, nil, fmt.Errorf("node %s: cloud-init: %w", assets.Node, err)
		}
		md, err := cloudinit.MetaData(assets, ud)
		if err != nil {
			return nil, nil, fmt.Errorf("node %s: cloud-init: %w", assets.Node, err)
		}
		files = append(files, namedFile{fileUserData, ud}, namedFile{fileMetaData, md})
	}
	return files, warnings, nil
}

func printSummary(w io.Writer, rows []summaryRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTOKEN ID\tFILES")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.node, r.tokenID, strings.Join(r.files, " "))
	}
	tw.Flush()
}

// isInputError reports whether err is the user's to fix (exit 2).
func isInputError(err error) bool {
	return slices.ContainsFunc([]error{model.ErrInvalid, render.ErrInput, ignition.ErrInvalidOptions, output.ErrExists, output.ErrNotOurs},
		func(target error) bool { return errors.Is(err, target) })
}
