package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/urfave/cli/v2"
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
	return deps{now: time.Now, generateToken: token.Generate}
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
		Version:        version(),
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   func(_ *cli.Context, err error, _ bool) error { return usageError{err} },
		Commands:       []*cli.Command{generateCommand(d), serveCommand(d), approveCommand(d), rbacCommand(), statusCommand(d), tokensCommand(d)},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q (see kubestrap --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

// version is the module version and the VCS revision the binary was built
// from, as the Go toolchain recorded them: "v0.3.0", or for a build from a
// checkout "v0.0.0-20261201235649-387c607ec27c, modified" (or "(devel)"
// when built with -buildvcs=false), then the Go version.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	// A build from a checkout has a pseudo-version that already ends in
	// the revision (v0.0.0-20261201235649-387c607ec27c).
	if rev = rev[:min(len(rev), 12)]; rev != "" && !strings.Contains(v, rev) {
		v += " " + rev
	}
	v += modified
	return v + " " + info.GoVersion
}

// run is main without os.Exit, for tests.
func run(ctx context.Context, args []string, io stdio, d deps) int {
	app := newApp(io, d)
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	// Every line carries the prefix, so each problem of a long report can
	// be told from other programs' output and grepped on its own.
	for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
		fmt.Fprintf(io.err, "kubestrap: %s\n", line)
	}
	var ue usageError
	if errors.As(err, &ue) || isInputError(err) {
		return exitUsage
	}
	return exitRuntime
}
