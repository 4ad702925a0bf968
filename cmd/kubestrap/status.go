package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/fleet"
	"github.com/kubestrap/kubestrap/generator/model"
)

const statusDescription = `status reads the cluster and shows, for each node of the list, how far
its bootstrap went: its kubestrap token, its kubelet's client CSR, and its
Node. Only a token's 6-character id is ever shown, never its secret.

TOKEN is the node's newest kubestrap token ("abcdef (+2)": 2 older ones
are left, see kubestrap tokens prune); EXPIRES its expiration (UTC); AGE
how long ago it was minted. STATE is the token's:
   unused     no CSR was made with it yet: no kubelet has booted with it
   used       a CSR was made with it: a kubelet booted with it
   expired    its expiration passed before any CSR was made with it: the
              node can no longer join with it (generate it again)
   deleted    the node has no token Secret left, but a CSR made with one of
              its tokens is (a joined node whose token was pruned)
   none       no token Secret, and no CSR made with one (never generated, or
              pruned and its CSR cleaned up since)

CSR is the node's newest kubelet client CSR (signer
kubernetes.io/kube-apiserver-client-kubelet), made with one of its tokens
or, for a renewal, by the node itself:
   none       there is none
   pending    neither approved nor denied yet (is an approver running?)
   approved   approved, no certificate yet
   denied     denied: the table is followed by its reason and message
   issued     approved and signed: the kubelet has its certificate
   failed     approved, but the signer failed (reason and message follow)

NODE-STATE is the Node object's: absent (not registered), NotReady, or
Ready; VERSION is its kubelet's.

-o json and -o yaml print the same, one object per node with its CSR's
name and any denial in full. --watch reads the cluster again every
--interval and prints what changed (in a table, only the rows that did,
each after the time); it exits 0 once every node is Ready, or 1 naming
the nodes that are not when --timeout passes.`

func statusCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:        "status",
		Usage:       "show how far each node's bootstrap went: token, client CSR, Node",
		UsageText:   "kubestrap status -f cluster.yaml [--nodes FILE] [--kubeconfig FILE] [-o table|json|yaml] [--watch [--timeout 10m] [--interval 2s]]",
		Description: statusDescription,
		Flags: append(clusterFlags(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "`FORMAT`: table, json or yaml", Value: "table"},
			&cli.BoolFlag{Name: "watch", Usage: "read the cluster again every --interval, print what changed, and exit once every node is Ready"},
			&cli.DurationFlag{Name: "timeout", Usage: "with --watch: give up after this `LONG` (exit 1)", Value: 10 * time.Minute},
			&cli.DurationFlag{Name: "interval", Usage: "with --watch: read the cluster every `INTERVAL`", Value: 2 * time.Second},
		),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usagef("%w (see kubestrap status --help)", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("status takes no arguments, got %q", c.Args().Slice())
			}
			return runStatus(c, d)
		},
	}
}

func runStatus(c *cli.Context, d deps) error {
	format, watch := c.String("output"), c.Bool("watch")
	interval, timeout := c.Duration("interval"), c.Duration("timeout")
	switch {
	case format != "table" && format != "json" && format != "yaml":
		return usagef("-o: %q is not table, json or yaml", format)
	case !watch && (c.IsSet("timeout") || c.IsSet("interval")):
		return usagef("--timeout and --interval go with --watch")
	case interval <= 0 || timeout <= 0:
		return usagef("--interval and --timeout must be positive")
	}
	cluster, client, err := loadCluster(c, d, 1, model.Overrides{})
	if err != nil {
		return err
	}
	gather := func(ctx context.Context) ([]fleet.NodeStatus, error) {
		rows, err := fleet.Gather(ctx, client.Interface, cluster.Nodes, d.now())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", client.Source, err)
		}
		return rows, nil
	}
	p := &statusPrinter{w: c.App.Writer, format: format, watch: watch, now: d.now}
	if !watch {
		rows, err := gather(c.Context)
		if err != nil {
			return err
		}
		return p.print(rows)
	}
	return watchStatus(c.Context, p, gather, interval, timeout, c.App.ErrWriter)
}

// errTimedOut is the cause of a watch's end at --timeout.
var errTimedOut = errors.New("--timeout passed")

// watchStatus gathers every interval and prints what changed, until every
// node is Ready (nil) or timeout passes (an error naming the nodes that
// are not). A first read that fails ends it; later failures are reported
// on stderr and tried again, as an API server may restart meanwhile.
func watchStatus(ctx context.Context, p *statusPrinter, gather func(context.Context) ([]fleet.NodeStatus, error), interval, timeout time.Duration, stderr io.Writer) error {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimedOut)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var (
		last    []fleet.NodeStatus
		lastErr string
	)
	for {
		rows, err := gather(ctx)
		switch {
		case err == nil:
			if err := p.print(rows); err != nil {
				return err
			}
			last, lastErr = rows, ""
			if len(notReady(rows)) == 0 {
				return nil
			}
		case last == nil:
			return err
		case ctx.Err() != nil:
			// Cut short by the timeout or an interrupt: said below.
		case err.Error() != lastErr:
			lastErr = err.Error()
			fmt.Fprintf(stderr, "kubestrap: %s %v (trying again every %v)\n", p.now().Format(time.TimeOnly), err, interval)
		}
		select {
		case <-ctx.Done():
			waiting := notReady(last)
			msg := fmt.Sprintf("%d node(s) not Ready: %s", len(waiting), strings.Join(waiting, ", "))
			if lastErr != "" {
				msg += " (as last seen: the reads since failed)"
			}
			if errors.Is(context.Cause(ctx), errTimedOut) {
				return fmt.Errorf("--timeout %v passed with %s", timeout, msg)
			}
			return fmt.Errorf("interrupted with %s", msg)
		case <-tick.C:
		}
	}
}

// notReady names the nodes that are not Ready, with their state.
func notReady(rows []fleet.NodeStatus) []string {
	var names []string
	for _, r := range rows {
		if r.Node.State != fleet.NodeReady {
			names = append(names, fmt.Sprintf("%s (%s)", r.Name, r.Node.State))
		}
	}
	return names
}

// statusPrinter prints gathered statuses; in watch mode only when they
// changed.
type statusPrinter struct {
	w      io.Writer
	format string
	watch  bool
	now    func() time.Time
	// seen holds each node's row as last printed, its age left out: the
	// age alone changing is no news.
	seen map[string]string
}

func (p *statusPrinter) print(rows []fleet.NodeStatus) error {
	first := p.seen == nil
	if first {
		p.seen = map[string]string{}
	}
	changed := make([]bool, len(rows))
	anyChange := first
	for i, r := range rows {
		r.Token.Age = ""
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if k := string(data); p.seen[r.Name] != k {
			p.seen[r.Name], changed[i], anyChange = k, true, true
		}
	}
	if !anyChange {
		return nil
	}
	switch p.format {
	case "json":
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "yaml":
		data, err := yaml.Marshal(rows)
		if err != nil {
			return err
		}
		if p.watch {
			data = append([]byte("---\n"), data...)
		}
		_, err = p.w.Write(data)
		return err
	}
	return p.table(rows, changed, first)
}

// table writes the header the first time, then the rows that changed,
// followed by what denied or failed their CSRs. The columns are sized by
// all rows, changed or not, so that rows printed later line up with the
// earlier ones as long as no value grows.
func (p *statusPrinter) table(rows []fleet.NodeStatus, changed []bool, first bool) error {
	var stamp string
	if p.watch {
		stamp = p.now().Format(time.TimeOnly) + "\t"
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 8, 3, ' ', 0)
	header := "NODE\tTOKEN\tEXPIRES\tSTATE\tCSR\tNODE-STATE\tVERSION\tAGE"
	if p.watch {
		header = "TIME\t" + header
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, stamp+strings.Join(cells(r), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lines := strings.SplitAfter(buf.String(), "\n")
	var out strings.Builder
	if first {
		out.WriteString(lines[0])
	}
	var notes []string
	for i, r := range rows {
		if !changed[i] {
			continue
		}
		out.WriteString(lines[i+1])
		if s := r.CSR.State; s == fleet.CSRDenied || s == fleet.CSRFailed {
			notes = append(notes, fmt.Sprintf("%s: CSR %s %s: %s: %s", r.Name, r.CSR.Name, s, r.CSR.Reason, r.CSR.Message))
		}
	}
	for _, n := range notes {
		out.WriteString(strings.ReplaceAll(stamp, "\t", " ") + n + "\n")
	}
	_, err := io.WriteString(p.w, out.String())
	return err
}

// cells is a node's row of the table, "-" where there is nothing to show.
func cells(r fleet.NodeStatus) []string {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	id := dash(r.Token.ID)
	if r.Token.Others > 0 {
		id += " (+" + strconv.Itoa(r.Token.Others) + ")"
	}
	expires := "-"
	switch {
	case r.Token.Expires != nil:
		expires = r.Token.Expires.UTC().Format(time.RFC3339)
	case r.Token.Minted != nil:
		expires = "never"
	}
	return []string{r.Name, id, expires, string(r.Token.State), string(r.CSR.State), string(r.Node.State), dash(r.Node.KubeletVersion), dash(r.Token.Age)}
}
