// Package deploy holds no code: it is where the manifests that run
// kubestrap in a cluster live (serve/ runs `kubestrap serve`, approve/ runs
// `kubestrap approve` beside it, each applied with kubectl apply -k). Its
// tests decode them as the API server would, check the RBAC and the
// admission policies against the calls serve and approve make, check the
// Deployments' arguments against the commands' flags, and load the example
// inputs and the boot profiles in examples/boot-profiles with kubestrap's
// own loaders.
package deploy
