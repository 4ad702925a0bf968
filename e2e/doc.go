// Package e2e holds kubestrap's end-to-end test: a real etcd, kube-apiserver
// and kube-controller-manager on loopback, two nodes provisioned from the
// documents `kubestrap generate` writes (one with ignition-apply, one with
// cloud-init), and their kubelets joining through TLS bootstrapping.
//
// The binaries come from e2e/tools (build.sh). The test is skipped unless
// KUBESTRAP_E2E=1 or CI=true; see README.md.
package e2e
