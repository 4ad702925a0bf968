package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// Exit codes: bad input or usage is the user's to fix; anything else failed
// while running.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// deps are what tests replace to make a run repeatable.
type deps struct {
	now           func() time.Time
	generateToken func() (string, error)
}

func defaultDeps() deps {
	return deps{now: time.Now, generateToken: bootstraputil.GenerateBootstrapToken}
}

// usageError marks an error as the user's (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func newApp(io stdio, d deps) *cli.App {
	return &cli.App{
		Name:  "kubestrap",
		Usage: "make Kubernetes nodes join their cluster by themselves at first boot",
		Description: `kubestrap turns a cluster description and a node list into per-node
first-boot documents — an Ignition config (Fedora CoreOS, Flatcar) and a
cloud-init #cloud-config with NoCloud meta-data — that write the kubelet's
bootstrap kubeconfig, its configuration and its systemd unit, then start it.
The kubelet joins through TLS bootstrapping with a per-node bootstrap token:
no SSH step.`,
		Reader:         io.in,
		Writer:         io.out,
		ErrWriter:      io.err,
		HideVersion:    true,
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   func(_ *cli.Context, err error, _ bool) error { return usageError{err} },
		Commands:       []*cli.Command{generateCommand(d), rbacCommand()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q (see kubestrap --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

// run is main without os.Exit, for tests.
func run(ctx context.Context, args []string, io stdio, d deps) int {
	app := newApp(io, d)
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(io.err, "kubestrap: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || isInputError(err) {
		return exitUsage
	}
	return exitRuntime
}
