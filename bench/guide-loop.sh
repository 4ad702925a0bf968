#!/usr/bin/env bash
# The guide's per-node procedure, as its kubelet chapter runs it, for N nodes:
# `kubeadm token create`, four `kubectl config` calls and a `sed` over the
# kubelet config template. bench/run.sh times it against kubestrap.
#
# usage: guide-loop.sh N KUBECONFIG CA_FILE KUBE_APISERVER KUBEADM KUBECTL WORKDIR
set -euo pipefail
n=$1 kubeconfig=$2 ca=$3 KUBE_APISERVER=$4 kubeadm=$5 kubectl=$6 work=$7
mkdir -p "$work" && cd "$work"

# The guide's template, minus its trailing comma (which made it invalid JSON).
cat >kubelet.config.json.template <<TEMPLATE
{
  "kind": "KubeletConfiguration",
  "apiVersion": "kubelet.config.k8s.io/v1beta1",
  "authentication": {"anonymous": {"enabled": true}},
  "authorization": {"mode": "AlwaysAllow"},
  "address": "##NODE_IP##",
  "readOnlyPort": 10255,
  "cgroupDriver": "cgroupfs",
  "clusterDomain": "cluster.local",
  "clusterDNS": ["10.96.0.10"]
}
TEMPLATE

for i in $(seq 1 "$n"); do
	node_name=guide-node-$i
	node_ip=10.202.$((i / 250)).$((i % 250 + 1))
	BOOTSTRAP_TOKEN=$("$kubeadm" token create \
		--description kubelet-bootstrap-token \
		--groups "system:bootstrappers:${node_name}" \
		--kubeconfig "$kubeconfig")
	"$kubectl" config set-cluster kubernetes \
		--certificate-authority="$ca" \
		--embed-certs=true \
		--server="${KUBE_APISERVER}" \
		--kubeconfig="kubelet-bootstrap-${node_name}.kubeconfig" >/dev/null
	"$kubectl" config set-credentials kubelet-bootstrap \
		--token="${BOOTSTRAP_TOKEN}" \
		--kubeconfig="kubelet-bootstrap-${node_name}.kubeconfig" >/dev/null
	"$kubectl" config set-context default \
		--cluster=kubernetes \
		--user=kubelet-bootstrap \
		--kubeconfig="kubelet-bootstrap-${node_name}.kubeconfig" >/dev/null
	"$kubectl" config use-context default --kubeconfig="kubelet-bootstrap-${node_name}.kubeconfig" >/dev/null
	sed -e "s/##NODE_IP##/${node_ip}/" kubelet.config.json.template >"kubelet.config-${node_ip}.json"
done
