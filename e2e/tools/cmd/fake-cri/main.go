// Command fake-cri serves Kubernetes' fake CRI runtime and image services
// (k8s.io/cri-client/pkg/fake) on a unix socket, so a kubelet can run
// without a container runtime. It reports RuntimeReady and NetworkReady.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cri-client/pkg/fake"
)

func main() {
	listen := flag.String("listen", "", "unix socket `ENDPOINT` to serve, e.g. unix:///run/fake-cri.sock")
	flag.Parse()
	if *listen == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: fake-cri --listen unix:///PATH")
		os.Exit(2)
	}
	rt := fake.NewFakeRemoteRuntime()
	if err := rt.Start(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "fake-cri:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "fake-cri: serving on", *listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	rt.Stop()
}
