package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kubestrap/kubestrap/fleet"
	"github.com/kubestrap/kubestrap/generator/model"
)

const tokensDescription = `tokens tidies the bootstrap token Secrets kubestrap minted: those in
kube-system labelled app.kubernetes.io/managed-by=kubestrap, by generate
or serve. Tokens of other tools (kubeadm's, your own) are never touched.

'prune' deletes the ones no node needs any more, each for one reason:
   expired      its expiration passed: the API server refuses it already
   joined       a kubelet client CSR made with it was approved and its
                certificate issued, and the node's Node exists: the kubelet
                authenticates with its certificate from then on
   not-in-list  it was minted for a node that is not in the node list

The node list (-f, --env, --nodes) must be the whole fleet: every token of
a node left out of it is not-in-list, unused ones included. Run it with
--dry-run first. Each delete holds only if the Secret is still the one
that was read (its UID): one replaced meanwhile is kept.`

func tokensCommand(d deps) *cli.Command {
	onUsage := func(_ *cli.Context, err error, _ bool) error {
		return usagef("%w (see kubestrap tokens --help)", err)
	}
	return &cli.Command{
		Name:         "tokens",
		Usage:        "tidy the bootstrap token Secrets kubestrap minted",
		Description:  tokensDescription,
		OnUsageError: onUsage,
		// Without it an unknown subcommand is a help topic not found, exit 1.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q (see kubestrap tokens --help)", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		Subcommands: []*cli.Command{{
			Name:         "prune",
			Usage:        "delete the tokens no node needs any more: expired, joined, or not in the node list",
			UsageText:    "kubestrap tokens prune -f cluster.yaml [--nodes FILE] [--kubeconfig FILE] [--dry-run]",
			Description:  tokensDescription,
			OnUsageError: onUsage,
			Flags:        append(clusterFlags(), &cli.BoolFlag{Name: "dry-run", Usage: "print what would be deleted, and delete nothing"}),
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return usagef("tokens prune takes no arguments, got %q", c.Args().Slice())
				}
				return runPrune(c, d)
			},
		}},
	}
}

func runPrune(c *cli.Context, d deps) error {
	cluster, client, err := loadCluster(c, d, 1, model.Overrides{})
	if err != nil {
		return err
	}
	snap, err := fleet.Read(c.Context, client.Interface)
	if err != nil {
		return fmt.Errorf("%s: %w", client.Source, err)
	}
	dryRun := c.Bool("dry-run")
	done, err := fleet.Prune(c.Context, client.Interface, snap.Prunable(cluster.Nodes, d.now()), dryRun)
	w := c.App.Writer
	count := map[fleet.Action]int{}
	for _, p := range done {
		node := p.Node
		if node == "" {
			node = "(none)"
		}
		fmt.Fprintf(w, "%s node %s %s %s\n", p.Secret, node, p.Reason, p.Action)
		count[p.Action]++
	}
	if err != nil {
		return fmt.Errorf("%s: %w (%d deleted before)", client.Source, err, count[fleet.ActionDeleted])
	}
	if dryRun {
		fmt.Fprintf(w, "%d of %d kubestrap token(s) would be deleted (dry run: nothing was)\n", count[fleet.ActionWouldDelete], snap.Tokens())
		return nil
	}
	summary := fmt.Sprintf("%d of %d kubestrap token(s) deleted", count[fleet.ActionDeleted], snap.Tokens())
	var also []string
	if n := count[fleet.ActionGone]; n > 0 {
		also = append(also, fmt.Sprintf("%d already gone", n))
	}
	if n := count[fleet.ActionReplaced]; n > 0 {
		also = append(also, fmt.Sprintf("%d replaced since read and kept", n))
	}
	if len(also) > 0 {
		summary += ", " + strings.Join(also, ", ")
	}
	fmt.Fprintln(w, summary)
	return nil
}
