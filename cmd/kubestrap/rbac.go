package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/kubestrap/kubestrap/generator/discovery"
	"github.com/kubestrap/kubestrap/generator/rbac"
)

func rbacCommand() *cli.Command {
	onUsage := func(_ *cli.Context, err error, _ bool) error {
		return usagef("%w (see kubestrap rbac --help)", err)
	}
	return &cli.Command{
		Name:  "rbac",
		Usage: "the ClusterRoleBindings kubelet TLS bootstrapping needs",
		Description: `Bootstrapping kubelets need three grants, as the guide set them up:
   - group system:bootstrappers may create CSRs (system:node-bootstrapper);
   - kube-controller-manager approves the client CSRs of system:bootstrappers
     (...certificatesigningrequests:nodeclient);
   - nodes may renew their own client certificates, approved likewise
     (...certificatesigningrequests:selfnodeclient, group system:nodes).
'apply' creates or updates them (running it again changes nothing); 'print'
writes them as YAML for kubectl apply or review. 'generate' warns when a grant
is missing.

--bound leaves out the second: kube-controller-manager then approves no
bootstrap token's client CSR, and 'kubestrap approve' approves each only for
the node its token was minted for. 'apply --bound' deletes the binding an
earlier 'apply' made, then asks the API server (as kube-controller-manager
does) whether bootstrap tokens may still have their CSRs approved; if a
binding of yours grants it (the nodeclient role bound to system:bootstrappers
or system:authenticated, or a role of your own), it is named, not deleted, and
apply fails until it is gone. kubeadm's kubeadm:node-autoapprove-bootstrap
binds only kubeadm's own tokens' group and may stay. Run 'kubestrap approve'
before switching, or CSRs wait.`,
		OnUsageError: onUsage,
		Subcommands: []*cli.Command{
			{
				Name:         "apply",
				Usage:        "create or update the bindings in the cluster",
				UsageText:    "kubestrap rbac apply [--bound] [--kubeconfig FILE]",
				OnUsageError: onUsage,
				Flags: []cli.Flag{
					boundFlag(),
					&cli.StringFlag{Name: "kubeconfig", Usage: "admin kubeconfig `FILE` (default: $KUBECONFIG, then ~/.kube/config)", TakesFile: true},
					&cli.DurationFlag{Name: "timeout", Usage: "give up after this `LONG`", Value: time.Minute},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usagef("rbac apply takes no arguments")
					}
					cfg, source, err := discovery.Kubeconfig(c.String("kubeconfig"))
					if err != nil {
						if errors.Is(err, discovery.ErrNoKubeconfig) {
							return usageError{err}
						}
						return err
					}
					client, err := kubernetes.NewForConfig(cfg)
					if err != nil {
						return fmt.Errorf("%s: %w", source, err)
					}
					ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
					defer cancel()
					results, err := rbac.Apply(ctx, client, c.Bool("bound"))
					for _, r := range results {
						fmt.Fprintf(c.App.Writer, "clusterrolebinding/%s %s\n", r.Binding, r.Action)
					}
					if err != nil || !c.Bool("bound") {
						return err
					}
					auto, err := rbac.TokensAutoApproved(ctx, client)
					if err != nil || !auto {
						return err
					}
					blanket, err := rbac.Blanket(ctx, client)
					if err != nil {
						return err
					}
					if len(blanket) == 0 {
						return errors.New("bound mode is not in force: bootstrap tokens may still create certificatesigningrequests/nodeclient, so kube-controller-manager approves any token's client CSR for any node; " +
							"find the binding that grants it (kubectl auth can-i create certificatesigningrequests/nodeclient --as system:bootstrap:x --as-group system:bootstrappers) and delete it once 'kubestrap approve' runs")
					}
					return fmt.Errorf("bound mode is not in force: ClusterRoleBinding %s lets kube-controller-manager approve any bootstrap token's client CSR for any node; "+
						"once 'kubestrap approve' runs, delete it: kubectl delete clusterrolebinding %s", strings.Join(blanket, ", "), strings.Join(blanket, " "))
				},
			},
			{
				Name:         "print",
				Usage:        "write the bindings as YAML to stdout",
				UsageText:    "kubestrap rbac print [--bound]",
				OnUsageError: onUsage,
				Flags:        []cli.Flag{boundFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usagef("rbac print takes no arguments")
					}
					data, err := rbac.Print(c.Bool("bound"))
					if err != nil {
						return err
					}
					_, err = c.App.Writer.Write(data)
					return err
				},
			},
		},
	}
}

func boundFlag() cli.Flag {
	return &cli.BoolFlag{Name: "bound", Usage: "bound mode: no blanket approval by kube-controller-manager; 'kubestrap approve' binds each token to its node"}
}
