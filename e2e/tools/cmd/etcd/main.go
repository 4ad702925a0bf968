// Command etcd is etcd's own server main, built at the version
// k8s.io/kubernetes requires (see go.mod), for the end-to-end test.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
