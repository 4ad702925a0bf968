package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/kubestrap/kubestrap/generator/discovery"
	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/encode/rootfs"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/output"
	"github.com/kubestrap/kubestrap/generator/pipeline"
	"github.com/kubestrap/kubestrap/generator/rbac"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
)

// Formats the generate command writes.
const (
	formatIgnition  = "ignition"
	formatCloudInit = "cloud-init"
	formatTar       = "tar"
	formatISO       = "iso"
	formatMatchbox  = "matchbox"
)

const generateDescription = `Reads the cluster from a cluster file (-f) or from the guide's
environment.sh (--env), obtains one bootstrap token per node, and writes for
each node, under --out DIR:

   DIR/NODE/config.ign   Ignition config (Fedora CoreOS / Flatcar), validated
   DIR/NODE/config.bu    its Butane source (with --butane)
   DIR/NODE/user-data    #cloud-config
   DIR/NODE/meta-data    NoCloud meta-data (DIR/NODE is a NoCloud seed)
   DIR/tokens.yaml       with --offline: the tokens' Secrets, to kubectl apply
   DIR/.kubestrap-output what the run wrote, so --force knows what is its own

Tokens come from the cluster of the admin kubeconfig (--kubeconfig, else
$KUBECONFIG, else ~/.kube/config): one Secret kube-system/bootstrap-token-<id>
per node, as 'kubeadm token create --groups system:bootstrappers:<node>' makes
it. All or nothing: if any node's token or documents cannot be made, nothing
is written and the tokens the run created are deleted. Once its documents are
written, a run commits (one marker Secret, kube-system/kubestrap-run-<id>).

A re-run reuses a node's token if an earlier run committed it and it stays
valid for --reuse-margin (default: half the token TTL, at most 2h); tokens of
runs still in progress, or that failed, are never reused. --rotate mints a new
token for every node and, once the new documents are written, deletes the
node's earlier committed tokens: every other output holding them (earlier
output directories, images baked from them, copies on a PXE server) stops
working for machines that have not joined yet. Nodes that already joined keep
working: they hold certificates, not tokens. With --offline, tokens are minted
locally instead and no cluster is needed.

The CA nodes trust is --ca-file (or caFile), else the admin kubeconfig's, else
kube-public/cluster-info's when it matches a --ca-cert-hash pin.

Everything is written 0600 in 0700 directories; a run that fails writes
nothing. An existing non-empty DIR is only replaced with --force, and only if
everything in it is what an earlier run wrote there: a directory holding
anything else (your cluster.yaml, notes, an edited document) is refused and
left untouched. Token secrets are never printed.

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
			&cli.BoolFlag{Name: "rotate", Usage: "mint new tokens for every node and delete the committed ones they replace (outputs holding those stop working)", Category: "Tokens"},
			&cli.DurationFlag{Name: "reuse-margin", Usage: "reuse a node's committed token only if it stays valid this `LONG`", DefaultText: "half the token TTL, at most 2h", Category: "Tokens"},
			&cli.IntFlag{Name: "parallel", Usage: "at most `N` API calls in flight at once", Value: token.DefaultParallel, Category: "Tokens"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up on the cluster after this `LONG`", Value: 2 * time.Minute, Category: "Tokens"},
			&cli.StringSliceFlag{Name: "ca-cert-hash", Usage: "trust kube-public/cluster-info's CA if it has this pin (`sha256:HEX`)", Category: "Tokens"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "output `DIR` (required); - writes one node's one document to standard output (with --node and one format)", Category: "Output"},
			&cli.StringFlag{Name: "node", Usage: "with --out -: the `NAME` of the node whose document to write", Category: "Output"},
			&cli.StringFlag{Name: "tokens", Usage: "with --out - and --offline: a new `FILE` for the tokens' Secrets (tokens.yaml)", TakesFile: true, Category: "Output"},
			&cli.BoolFlag{Name: "force", Usage: "replace an output directory that holds only what an earlier run wrote", Category: "Output"},
			&cli.StringSliceFlag{Name: "format", Usage: "documents to write: ignition, cloud-init (user-data, meta-data, network-config), iso (cidata.iso: the same NoCloud seed as an image for virt-install --disk, libvirt, Proxmox), tar (rootfs.tar: the files a first boot lays down, for baking into an image), matchbox (DIR becomes matchbox's data directory: groups/, profiles/, ignition/; alone); default: what the cluster's os boots with, or ignition and cloud-init", Value: cli.NewStringSlice(formatIgnition, formatCloudInit), Category: "Output"},
			&cli.BoolFlag{Name: "gzip", Usage: "write user-data gzip-compressed (cloud-init decompresses it)", Category: "Output"},
			&cli.IntFlag{Name: "max-user-data", Usage: "fail if a node's user-data, as written, is over `BYTES` (AWS: 16384)", Category: "Output"},
			&cli.StringFlag{Name: "variant", Usage: "Butane `VARIANT`: fcos or flatcar", Value: "fcos", Category: "Output"},
			&cli.StringFlag{Name: "butane-version", Usage: "Butane spec `VERSION` (fcos 1.6.0 → Ignition 3.5, fcos 1.5.0 or flatcar 1.1.0 → 3.4); default: the variant's", Category: "Output"},
			&cli.BoolFlag{Name: "butane", Usage: "also write each node's Butane source (config.bu)", Category: "Output"},
			&cli.StringSliceFlag{Name: "snippet", Usage: "Butane `FILE` merged into every node's Ignition config with Ignition's merge, after extras.butane (repeatable)", TakesFile: true, Category: "Additions"},
			&cli.StringFlag{Name: "cloud-config", Usage: "#cloud-config `FILE` merged into every node's user-data (lists appended, other keys yours); replaces extras.cloudConfig", TakesFile: true, Category: "Additions"},
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
			return generate(c.Context, o, d, c.App.Writer, c.App.ErrWriter)
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
	// reuseMargin is the user's if reuseMarginSet, else the default for the
	// cluster's TTL once it is known.
	reuseMargin    time.Duration
	reuseMarginSet bool
	parallel       int
	timeout        time.Duration
	caCertHashes   []string
	out            string
	force          bool
	ignition       bool
	cloudInit      bool
	butane         bool
	ign            ignition.Options
	// formatSet and variantSet say the user chose them: otherwise the
	// cluster's os does.
	formatSet, variantSet bool
	// snippets and cloudConfig are the flags' additions, over the
	// cluster file's extras.
	snippets    []string
	cloudConfig string
	tar, iso    bool
	// matchbox makes the output matchbox's data directory, and so is the
	// run's only format.
	matchbox    bool
	gzip        bool
	maxUserData int
	// node and tokens go with out "-".
	node, tokens string
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
		reuseMarginSet:     c.IsSet("reuse-margin"),
		parallel:           c.Int("parallel"),
		timeout:            c.Duration("timeout"),
		caCertHashes:       c.StringSlice("ca-cert-hash"),
		out:                c.String("out"),
		force:              c.Bool("force"),
		butane:             c.Bool("butane"),
		ign:                ignition.Options{Variant: c.String("variant"), Version: c.String("butane-version")},
		formatSet:          c.IsSet("format"),
		variantSet:         c.IsSet("variant"),
		snippets:           c.StringSlice("snippet"),
		cloudConfig:        c.String("cloud-config"),
		gzip:               c.Bool("gzip"),
		maxUserData:        c.Int("max-user-data"),
		node:               c.String("node"),
		tokens:             c.String("tokens"),
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
	if o.reuseMargin < 0 {
		return o, usagef("--reuse-margin: %v is negative", o.reuseMargin)
	}
	if o.timeout <= 0 {
		return o, usagef("--timeout: %v is not positive", o.timeout)
	}
	for _, f := range c.StringSlice("format") {
		for _, f := range strings.Split(f, ",") {
			switch strings.TrimSpace(f) {
			case formatIgnition:
				o.ignition = true
			case formatCloudInit:
				o.cloudInit = true
			case formatTar:
				o.tar = true
			case formatISO:
				o.iso = true
			case formatMatchbox:
				o.matchbox = true
			default:
				return o, usagef("--format: unknown format %q (want %s, %s, %s, %s or %s)", f, formatIgnition, formatCloudInit, formatISO, formatTar, formatMatchbox)
			}
		}
	}
	if o.matchbox {
		if !o.formatSet || len(c.StringSlice("format")) != 1 || strings.Contains(c.StringSlice("format")[0], ",") {
			return o, usagef("--format matchbox makes DIR matchbox's data directory: give it alone")
		}
		if o.out == "-" || o.butane {
			return o, usagef("--format matchbox writes a directory of Ignition configs: --out - and --butane do not apply")
		}
		// Its documents are Ignition configs (their spec: matchboxSpec).
		o.ignition = true
	}
	if o.butane && !o.ignition {
		return o, usagef("--butane needs the ignition format")
	}
	if (o.gzip || o.maxUserData != 0) && !o.cloudInit && !o.iso {
		return o, usagef("--gzip and --max-user-data are about user-data: they need the cloud-init or iso format")
	}
	if o.maxUserData < 0 {
		return o, usagef("--max-user-data: %d is negative", o.maxUserData)
	}
	if o.out == "-" {
		switch {
		case o.node == "":
			return o, usagef("--out - writes one node's document: give --node NAME")
		case o.force || o.butane:
			return o, usagef("--out -: --force and --butane are for an output directory")
		case o.offline && o.tokens == "":
			return o, usagef("--out - with --offline: give --tokens FILE for the tokens' Secrets, which must be applied before the node boots")
		case !o.offline && o.tokens != "":
			return o, usagef("--tokens is for --offline: with a cluster, the tokens are created there")
		}
	} else if o.node != "" || o.tokens != "" {
		return o, usagef("--node and --tokens go with --out -")
	}
	if o.ignition || o.variantSet {
		if err := o.ign.Check(); err != nil {
			return o, usageError{err}
		}
	}
	return o, nil
}

// documentsFor settles which documents to write for the cluster's os: an
// Ignition OS gets its own variant's Ignition config and no cloud-init
// documents (it runs no cloud-init), a cloud-init OS no Ignition config.
// Without an os, both, as the flags say.
func (o *generateOptions) documentsFor(c *model.Cluster) error {
	info := c.OSInfo()
	switch {
	case c.OS == "":
		return nil
	case info.Ignition != "":
		if o.variantSet && o.ign.Variant != info.Ignition {
			return usagef("--variant %s: the cluster's os is %s, whose variant is %s", o.ign.Variant, c.OS, info.Ignition)
		}
		if o.tar {
			return usagef("--format %s: os %s boots with Ignition; the archive holds what the cloud-init document lays down", formatTar, c.OS)
		}
		o.ign.Variant = info.Ignition
		if o.formatSet && (o.cloudInit || o.iso) || o.gzip || o.maxUserData != 0 {
			return usagef("--format %s or %s, --gzip, --max-user-data: os %s boots with Ignition and runs no cloud-init", formatCloudInit, formatISO, c.OS)
		}
		o.ignition, o.cloudInit = !o.formatSet || o.ignition, false
		if err := o.ign.Check(); err != nil {
			return usageError{err}
		}
	default:
		if o.formatSet && o.ignition || o.butane || o.variantSet || o.ign.Version != "" || o.matchbox {
			return usagef("os %s boots with cloud-init, not Ignition: --format %s or %s, --variant, --butane-version and --butane do not apply", c.OS, formatIgnition, formatMatchbox)
		}
		o.ignition, o.cloudInit = false, !o.formatSet || o.cloudInit
	}
	return nil
}

// additions reads the user's Butane snippets and cloud-config: the cluster
// file's extras, then the flags'. Each is checked here, before any token
// exists; whether it touches what kubestrap writes is checked per node.
func (o *generateOptions) additions(c *model.Cluster, stderr io.Writer) ([]*ignition.Snippet, *cloudinit.UserConfig, error) {
	// The flags' additions need their document; the cluster file's apply
	// to whichever documents this run writes.
	if len(o.snippets) > 0 && !o.ignition {
		return nil, nil, usagef("--snippet %s: Butane snippets need the ignition format", strings.Join(o.snippets, ", "))
	}
	if o.cloudConfig != "" && !o.cloudInit && !o.iso {
		return nil, nil, usagef("--cloud-config %s: a cloud-config needs the cloud-init or iso format", o.cloudConfig)
	}
	var files []string
	if o.ignition {
		files = append(slices.Clone(c.Extras.Butane), o.snippets...)
	}
	var cloudConfig string
	if o.cloudInit || o.iso {
		cloudConfig = c.Extras.CloudConfig
		if o.cloudConfig != "" {
			cloudConfig = o.cloudConfig
		}
	}
	var snippets []*ignition.Snippet
	for _, f := range files {
		data, err := readAddition(f, ignition.MaxSnippetSize)
		if err != nil {
			return nil, nil, usageError{err}
		}
		s, warnings, err := ignition.NewSnippet(f, data, o.ign)
		if err != nil {
			return nil, nil, err
		}
		for _, w := range warnings {
			fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w)
		}
		snippets = append(snippets, s)
	}
	var user *cloudinit.UserConfig
	if cloudConfig != "" {
		data, err := readAddition(cloudConfig, cloudinit.MaxUserConfigSize)
		if err != nil {
			return nil, nil, usageError{err}
		}
		if user, err = cloudinit.ParseUserConfig(cloudConfig, data); err != nil {
			return nil, nil, err
		}
	}
	return snippets, user, nil
}

// readAddition reads a user's file of at most limit bytes (one more says it
// is too big; the parser says so).
func readAddition(name string, limit int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return io.ReadAll(io.LimitReader(f, int64(limit)+1))
}

// progressThreshold is the node count from which a terminal gets a progress line.
const progressThreshold = 50

func generate(ctx context.Context, o generateOptions, d deps, stdout, stderr io.Writer) error {
	var client *discovery.Client
	if !o.offline {
		var err error
		if client, err = discovery.NewClient(o.kubeconfig, o.parallel); err != nil {
			if errors.Is(err, discovery.ErrNoKubeconfig) {
				return usageError{err}
			}
			return err
		}
		o.sources.CA = func(ctx context.Context) ([]byte, string, error) {
			return discovery.CA(ctx, client.Config, client.Source, client.Interface, o.caCertHashes)
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
	for _, w := range cluster.Warnings {
		fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w)
	}
	if err := o.documentsFor(cluster); err != nil {
		return err
	}
	if o.matchbox {
		if err := o.matchboxSpec(); err != nil {
			return err
		}
	}
	var toStdout *pipeline.StdoutSink
	if o.out == "-" {
		if toStdout, err = o.stdoutFor(cluster, stdout); err != nil {
			return err
		}
	}
	if !o.reuseMarginSet {
		o.reuseMargin = token.DefaultReuseMargin(cluster.TTL())
	} else if err := token.CheckReuseMargin(o.reuseMargin, cluster.TTL()); err != nil {
		return usagef("--reuse-margin: %w", err)
	}

	snippets, user, err := o.additions(cluster, stderr)
	if err != nil {
		return err
	}
	var encoders []pipeline.Encoder
	if o.ignition {
		enc, err := pipeline.Ignition(o.ign, o.butane, snippets...)
		if err != nil {
			return err
		}
		encoders = append(encoders, enc)
	}
	if o.cloudInit || o.iso {
		encoders = append(encoders, pipeline.CloudInit(pipeline.CloudInitOptions{
			User: user, Gzip: o.gzip, MaxUserData: o.maxUserData, ISO: o.iso, NoFiles: !o.cloudInit,
		}))
	}
	if o.tar {
		encoders = append(encoders, pipeline.RootfsTar())
	}
	pl, err := pipeline.New(cluster, encoders...)
	if err != nil {
		return err
	}
	if len(cluster.Nodes) >= progressThreshold && isTerminal(stderr) {
		bar := newProgress(stderr, "nodes", len(cluster.Nodes))
		defer bar.done()
		pl.Progress = bar.set
	}

	// Refused input never reaches the cluster: the output is checked
	// before any token exists.
	var macs map[string]string
	if o.matchbox {
		if macs, err = matchboxMACs(cluster); err != nil {
			return err
		}
	}
	var sink pipeline.Sink = toStdout
	if toStdout == nil {
		stage, err := output.Begin(o.out, o.force)
		if err != nil {
			return err
		}
		for _, w := range stage.Warnings() {
			fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w)
		}
		sink = pipeline.DirSink{Stage: stage}
		if o.matchbox {
			sink = pipeline.MatchboxSink{Stage: stage, MACs: macs}
			fmt.Fprintf(stderr, "kubestrap: warning: matchbox serves its Ignition configs, and the bootstrap tokens in them, to anyone who asks it; keep it on a provisioning network, and keep the tokens' TTL short\n")
		}
	}

	var (
		provider token.Provider
		summary  string
		checked  = make(chan struct{})
	)
	if o.offline {
		provider = &token.Offline{TTL: cluster.TTL(), Signing: cluster.Token.Signing, Now: d.now, Generate: d.generateToken}
		tokens := filepath.Join(o.out, pipeline.TokensName)
		if toStdout != nil {
			tokens = o.tokens
		}
		summary = "apply the tokens before the nodes boot: kubectl apply -f " + tokens
		close(checked)
	} else {
		provider = &token.Cluster{
			Client: client.Interface, TTL: cluster.TTL(), Signing: cluster.Token.Signing,
			ReuseMargin: o.reuseMargin, Rotate: o.rotate, Parallel: o.parallel,
			Now: d.now, Generate: d.generateToken,
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("--timeout %v reached", o.timeout))
		defer cancel()
		// The checks only warn: they run beside the tokens, not before them.
		go func() {
			defer close(checked)
			clusterChecks(ctx, client.Interface, cluster.Bound(), cluster.Nodes, stderr)
		}()
	}
	res, err := pl.Run(ctx, cluster.Nodes, provider, sink)
	<-checked
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		if w.Nodes > 0 {
			fmt.Fprintf(stderr, "kubestrap: warning: %s (%d node(s))\n", w.Text, w.Nodes)
		} else {
			fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w.Text)
		}
	}
	printSummary(stderr, res.Nodes)
	if !o.offline {
		summary = fmt.Sprintf("tokens: %d created, %d reused", res.Tokens.Created, res.Tokens.Reused)
	}
	if toStdout != nil {
		fmt.Fprintf(stderr, "kubestrap: wrote node %s's %s to standard output; %s\n", o.node, toStdout.Document, summary)
		return nil
	}
	fmt.Fprintf(stderr, "kubestrap: wrote %d node(s) to %s; %s\n", len(res.Nodes), o.out, summary)
	return nil
}

// matchboxSpec picks, once the variant is settled, an Ignition spec matchbox
// reads: it parses what it serves (up to spec 3.4) and serves an empty
// config for one it cannot.
func (o *generateOptions) matchboxSpec() error {
	if o.ign.Version == "" && o.ign.Variant == ignition.VariantFCOS {
		o.ign.Version = "1.5.0"
	}
	if spec := o.ign.IgnitionSpec(); spec > "3.4.0" {
		return usagef("--format matchbox: matchbox serves Ignition up to spec 3.4.0, and --butane-version %s makes %s", o.ign.Version, spec)
	}
	return nil
}

// matchboxMACs is every node's MAC (its own, or its static network's), for
// matchbox's groups to select it by; a node without one is refused before
// any token exists.
func matchboxMACs(c *model.Cluster) (map[string]string, error) {
	macs := make(map[string]string, len(c.Nodes))
	var missing []string
	for _, n := range c.Nodes {
		mac := n.MAC
		if mac == "" && n.Network != nil {
			mac = n.Network.MAC
		}
		if mac == "" {
			missing = append(missing, n.Name)
			continue
		}
		macs[n.Name] = mac
	}
	if len(missing) > 0 {
		return nil, usagef("--format matchbox: matchbox selects machines by MAC, and %d node(s) have none: %s", len(missing), strings.Join(missing[:min(len(missing), 10)], ", "))
	}
	return macs, nil
}

// stdoutFor narrows the run to --node and picks the one document --out -
// writes.
func (o *generateOptions) stdoutFor(c *model.Cluster, w io.Writer) (*pipeline.StdoutSink, error) {
	var docs []string
	if o.ignition {
		docs = append(docs, pipeline.IgnitionName)
	}
	if o.cloudInit {
		docs = append(docs, pipeline.UserDataName)
	}
	if o.iso {
		docs = append(docs, pipeline.ISOName)
	}
	if o.tar {
		docs = append(docs, rootfs.Name)
	}
	if len(docs) != 1 {
		return nil, usagef("--out - writes one document, and this run makes %d (%s): give one --format", len(docs), strings.Join(docs, ", "))
	}
	i := slices.IndexFunc(c.Nodes, func(n model.Node) bool { return n.Name == o.node })
	if i < 0 {
		return nil, usagef("--node %s: no such node in the node list", o.node)
	}
	if o.cloudInit && c.Nodes[i].Network != nil {
		return nil, usagef("--out -: node %s has a static network, whose network-config would be left out: use --format iso (the whole seed) instead", o.node)
	}
	c.Nodes = c.Nodes[i : i+1]
	return &pipeline.StdoutSink{W: w, Document: docs[0], Tokens: o.tokens}, nil
}

// clusterChecks warns about a cluster that lacks the bootstrapping RBAC and
// about nodes whose names are already registered.
func clusterChecks(ctx context.Context, client kubernetes.Interface, bound bool, nodes []model.Node, stderr io.Writer) {
	apply := "kubestrap rbac apply"
	if bound {
		apply += " --bound"
	}
	if missing, err := rbac.Missing(ctx, client, bound); err != nil {
		fmt.Fprintf(stderr, "kubestrap: warning: cannot check TLS bootstrapping RBAC: %v\n", err)
	} else {
		for _, g := range missing {
			fmt.Fprintf(stderr, "kubestrap: warning: no ClusterRoleBinding gives group %s the ClusterRole %s (%s); nodes will not join until `%s` fixes it\n", g.Group, g.Role, g.Why, apply)
		}
	}
	if bound {
		if auto, err := rbac.TokensAutoApproved(ctx, client); err == nil && auto {
			fmt.Fprintf(stderr, "kubestrap: warning: approver is kubestrap, but bootstrap tokens may still create certificatesigningrequests/nodeclient, so kube-controller-manager approves any token's CSR for any node name: tokens are not bound until `kubestrap rbac apply --bound` is in force\n")
		}
	}
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	if registered, err := token.Registered(ctx, client, names); err != nil {
		fmt.Fprintf(stderr, "kubestrap: warning: cannot list Nodes: %v\n", err)
	} else {
		for _, n := range registered {
			fmt.Fprintf(stderr, "kubestrap: warning: node %s is already registered; a second machine booted with this name would take that Node over\n", n)
		}
	}
}

// printSummary writes one line per node, in columns. It is tabwriter's
// layout done in one pass for the widths: tabwriter took a tenth of a
// 20,000-node run.
func printSummary(w io.Writer, rows []pipeline.NodeResult) {
	const gap = 2
	nameWidth, idWidth := len("NODE"), len("TOKEN ID")
	for _, r := range rows {
		nameWidth, idWidth = max(nameWidth, len(r.Name)), max(idWidth, len(r.TokenID))
	}
	bw := bufio.NewWriter(w)
	line := func(name, id string, docs []string) {
		bw.WriteString(name)
		bw.WriteString(strings.Repeat(" ", nameWidth-len(name)+gap))
		bw.WriteString(id)
		bw.WriteString(strings.Repeat(" ", idWidth-len(id)+gap))
		bw.WriteString(strings.Join(docs, " "))
		bw.WriteByte('\n')
	}
	line("NODE", "TOKEN ID", []string{"FILES"})
	for _, r := range rows {
		line(r.Name, r.TokenID, r.Documents)
	}
	bw.Flush()
}

// isInputError reports whether err is the user's to fix (exit 2).
func isInputError(err error) bool {
	return slices.ContainsFunc([]error{model.ErrInvalid, render.ErrInput, ignition.ErrInvalidOptions, ignition.ErrSnippet, cloudinit.ErrUserConfig, pipeline.ErrTooBig, output.ErrExists, output.ErrFileExists, output.ErrNotOurs},
		func(target error) bool { return errors.Is(err, target) })
}

// tuneGC sets generate's garbage collection. The live heap is small (nodes
// stream through the pipeline, a few hundred bytes of bookkeeping stay per
// node), so collecting it 4x less often saves a quarter of a large run's
// CPU; the soft limit keeps the garbage that this lets pile up from growing
// with the node count. GOGC and GOMEMLIMIT still win when set. Not for
// serve, whose live heap is every request in flight: a soft limit there
// would have a storm of boots collect without end.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(96 << 20)
	}
}
