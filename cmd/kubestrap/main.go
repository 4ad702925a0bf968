// Command kubestrap turns a cluster description and a node list into
// per-node first-boot documents (Ignition and cloud-init) that make each
// node's kubelet join the cluster by TLS bootstrapping.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "generate" {
		tuneGC()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}, defaultDeps())
	stop()
	os.Exit(code)
}
