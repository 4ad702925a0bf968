package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/output"
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
environment.sh (--env), mints one bootstrap token per node, and writes for each
node, under --out DIR:

   DIR/NODE/config.ign   Ignition config (Fedora CoreOS / Flatcar), validated
   DIR/NODE/config.bu    its Butane source (with --butane)
   DIR/NODE/user-data    #cloud-config
   DIR/NODE/meta-data    NoCloud meta-data (DIR/NODE is a NoCloud seed)
   DIR/tokens.yaml       the tokens' Secrets (--offline), to kubectl apply

Everything is written 0600 in 0700 directories; a run that fails writes nothing,
and an existing non-empty DIR is only replaced with --force. Token secrets are
never printed.

Values missing from the files come from flags, then from defaults: profile
hardened, token TTL 24h, kubelet binary /usr/bin/kubelet, kubernetesVersion
` + model.NewestVersion + ` (supported: ` + model.MinVersion + ` up to v1.37.x).

Examples:
   kubestrap generate --offline -f cluster.yaml --out out
   kubestrap generate --offline --env environment.sh --ca-file ca.pem --out out
   kubestrap generate --offline -f cluster.yaml --nodes rack3.csv --variant flatcar --out rack3`

func generateCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:        "generate",
		Usage:       "write per-node Ignition and cloud-init documents",
		UsageText:   "kubestrap generate --offline (-f cluster.yaml | --env environment.sh) [--nodes FILE] --out DIR [flags]",
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
			&cli.BoolFlag{Name: "offline", Usage: "mint tokens locally and write their Secrets to DIR/tokens.yaml", Category: "Tokens"},
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
		out:                c.String("out"),
		force:              c.Bool("force"),
		butane:             c.Bool("butane"),
		ign:                ignition.Options{Variant: c.String("variant"), Version: c.String("butane-version")},
	}
	if o.out == "" {
		return o, usagef("--out DIR is required")
	}
	if !c.Bool("offline") {
		return o, usagef("--offline is required: this version mints tokens locally and does not talk to a cluster yet")
	}
	if o.sources.ClusterFile == "" && o.sources.EnvFile == "" {
		return o, usagef("give the cluster with -f cluster.yaml or --env environment.sh")
	}
	if o.sources.ClusterFile != "" && o.sources.EnvFile != "" {
		return o, usagef("-f and --env both describe the cluster: give one")
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

func generate(ctx context.Context, o generateOptions, d deps, stderr io.Writer) (err error) {
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
	for _, w := range r.Warnings {
		fmt.Fprintf(stderr, "kubestrap: warning: %s\n", w)
	}

	stage, err := output.Begin(o.out, o.force)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			stage.Abort()
		}
	}()

	// Encoder warnings are usually the same for every node: say each once.
	warnings := map[string]int{}
	minter := &token.Offline{TTL: cluster.TTL(), Signing: cluster.Token.Signing, Now: d.now, Generate: d.generateToken}
	tokens := make([]token.Token, 0, len(cluster.Nodes))
	rows := make([]summaryRow, 0, len(cluster.Nodes))
	for _, n := range cluster.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		tok, err := minter.Mint(n.Name)
		if err != nil {
			return err
		}
		files, err := nodeDocuments(r, n, tok, o, warnings)
		if err != nil {
			return err
		}
		row := summaryRow{node: n.Name, tokenID: tok.ID}
		for _, f := range files {
			if err := stage.WriteFile(path.Join(n.Name, f.name), f.data, secretMode); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			row.files = append(row.files, f.name)
		}
		tokens = append(tokens, tok)
		rows = append(rows, row)
	}
	manifests, err := token.Manifests(tokens)
	if err != nil {
		return err
	}
	if err := stage.WriteFile(fileTokens, manifests, secretMode); err != nil {
		return err
	}
	if err := stage.Commit(); err != nil {
		return err
	}
	committed = true
	for _, w := range slices.Sorted(maps.Keys(warnings)) {
		fmt.Fprintf(stderr, "kubestrap: warning: %s (%d node(s))\n", w, warnings[w])
	}
	printSummary(stderr, o.out, rows)
	return nil
}

type namedFile struct {
	name string
	data []byte
}

// nodeDocuments renders one node and encodes it in every format asked for.
func nodeDocuments(r *render.Renderer, n model.Node, tok token.Token, o generateOptions, warnings map[string]int) ([]namedFile, error) {
	assets, err := r.Node(n, tok)
	if err != nil {
		return nil, err
	}
	var files []namedFile
	if o.ignition {
		res, err := ignition.Encode(assets, o.ign)
		if err != nil {
			return nil, fmt.Errorf("node %s: ignition: %w", n.Name, err)
		}
		for _, w := range res.Warnings {
			warnings["ignition: "+w]++
		}
		files = append(files, namedFile{fileIgnition, res.Ignition})
		if o.butane {
			files = append(files, namedFile{fileButane, res.Butane})
		}
	}
	if o.cloudInit {
		ud, err := cloudinit.UserData(assets)
		if err != nil {
			return nil, fmt.Errorf("node %s: cloud-init: %w", n.Name, err)
		}
		md, err := cloudinit.MetaData(assets)
		if err != nil {
			return nil, fmt.Errorf("node %s: cloud-init: %w", n.Name, err)
		}
		files = append(files, namedFile{fileUserData, ud}, namedFile{fileMetaData, md})
	}
	return files, nil
}

func printSummary(w io.Writer, out string, rows []summaryRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTOKEN ID\tFILES")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.node, r.tokenID, strings.Join(r.files, " "))
	}
	tw.Flush()
	fmt.Fprintf(w, "kubestrap: wrote %d node(s) to %s; apply the tokens before the nodes boot: kubectl apply -f %s\n",
		len(rows), out, filepath.Join(out, fileTokens))
}

// isInputError reports whether err is the user's to fix (exit 2).
func isInputError(err error) bool {
	return slices.ContainsFunc([]error{model.ErrInvalid, render.ErrInput, ignition.ErrInvalidOptions, output.ErrExists},
		func(target error) bool { return errors.Is(err, target) })
}
