package main

import (
	"context"
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/kubestrap/kubestrap/generator/discovery"
	"github.com/kubestrap/kubestrap/generator/model"
)

// clusterFlags are the inputs of the commands that read a live cluster
// against the node list (status, tokens prune), named as serve names them.
func clusterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cluster", Aliases: []string{"f"}, Usage: "cluster `FILE` (kind: Cluster)", TakesFile: true},
		&cli.StringFlag{Name: "env", Usage: "the guide's environment.sh `FILE`", TakesFile: true},
		&cli.StringFlag{Name: "nodes", Usage: "node list `FILE`: YAML, or CSV name,ip[,mac]; replaces the other file's nodes", TakesFile: true},
		&cli.StringFlag{Name: "kubeconfig", Usage: "admin kubeconfig `FILE` (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account)", TakesFile: true},
	}
}

// loadCluster loads the cluster of clusterFlags the way serve does: -f or
// --env, one of them, and --nodes; an admin client from the kubeconfig;
// the CA from that kubeconfig when the files name none. The node list is
// the one generate and serve would use, checked as strictly.
func loadCluster(c *cli.Context, d deps, parallel int, o model.Overrides) (*model.Cluster, *discovery.Client, error) {
	src := model.Sources{ClusterFile: c.String("cluster"), EnvFile: c.String("env"), NodesFile: c.String("nodes"), Overrides: o}
	switch {
	case src.ClusterFile == "" && src.EnvFile == "":
		return nil, nil, usagef("give the cluster with -f cluster.yaml or --env environment.sh")
	case src.ClusterFile != "" && src.EnvFile != "":
		return nil, nil, usagef("-f and --env both describe the cluster: give one")
	}
	client, err := discovery.NewClient(c.String("kubeconfig"), parallel)
	if err != nil {
		if errors.Is(err, discovery.ErrNoKubeconfig) {
			return nil, nil, usageError{err}
		}
		return nil, nil, err
	}
	src.CA = func(ctx context.Context) ([]byte, string, error) {
		return discovery.CA(ctx, client.Config, client.Source, client.Interface, nil)
	}
	// The cluster's warnings are about the documents it makes: serve
	// reports them; the other callers only read its nodes.
	cluster, err := model.Load(c.Context, src, d.now())
	if err != nil {
		return nil, nil, err
	}
	return cluster, client, nil
}
