// Package deploy holds no code: it is where the manifests that run
// kubestrap in a cluster live (serve/ runs `kubestrap serve`, applied with
// kubectl apply -k). Its tests decode them as the API server would, check
// the RBAC and the admission policy against the calls serve makes, and load
// the example inputs and the boot profiles in examples/boot-profiles with
// kubestrap's own loaders.
package deploy
