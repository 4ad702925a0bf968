#!/usr/bin/env bash
# Builds the binaries the end-to-end test runs, from the Go modules pinned in
# this directory's go.mod, into
#   ${KUBESTRAP_CACHE:-$HOME/.cache/kubestrap}/bin/<name>-<version>
# Each binary is built only when missing (to a temporary name, then renamed),
# so a warm run is a no-op. Builds run one at a time: a kube-apiserver link
# alone wants several GB and both cores.
#
#   build.sh           build what is missing
#   build.sh --print   print "<name> <version> <path>" for every binary, build nothing
#   build.sh --check   exit 1 (naming them) when some are missing
set -euo pipefail
cd "$(dirname "$0")"

mode=build
case ${1-} in
"") ;;
--print) mode=print ;;
--check) mode=check ;;
*)
	echo "usage: $0 [--print|--check]" >&2
	exit 2
	;;
esac

export GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
bin=${KUBESTRAP_CACHE:-$HOME/.cache/kubestrap}/bin

# version MODULE: the version go.mod requires.
version() {
	local v
	v=$(awk -v m="$1" '($1 == m || $1 == "require" && $2 == m) { print ($1 == m ? $2 : $3); exit }' go.mod)
	if [[ -z $v ]]; then
		echo "build.sh: go.mod does not require $1" >&2
		exit 1
	fi
	echo "$v"
}
K8S=$(version k8s.io/kubernetes)
ETCD=$(version go.etcd.io/etcd/server/v3)
CRI=$(version k8s.io/cri-client)
IGNITION=$(version github.com/coreos/ignition/v2)

# The version variables Kubernetes' own build sets (hack/lib/version.sh), so
# `--version` says what it is: the kubelet and the apiserver compare versions.
k8s_ldflags() {
	local major minor
	major=${K8S#v}
	major=${major%%.*}
	minor=${K8S#v*.}
	minor=${minor%%.*}
	local pkg key val
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		for key in gitVersion=$K8S gitMajor=$major gitMinor=$minor gitTreeState=clean buildDate=1970-01-01T00:00:00Z; do
			printf -- ' -X %s.%s' "$pkg" "$key"
		done
	done
}

# name, version, CGO_ENABLED, package
targets=(
	"kube-apiserver $K8S 0 k8s.io/kubernetes/cmd/kube-apiserver"
	"kube-controller-manager $K8S 0 k8s.io/kubernetes/cmd/kube-controller-manager"
	"kubelet $K8S 0 k8s.io/kubernetes/cmd/kubelet"
	"etcd $ETCD 0 ./cmd/etcd"
	"fake-cri $CRI 0 ./cmd/fake-cri"
	# Ignition's main dispatches on argv[0]: run it as "ignition-apply".
	# It needs cgo and libblkid (apt-get install libblkid-dev).
	"ignition-apply $IGNITION 1 github.com/coreos/ignition/v2/internal"
)
# The benchmark (bench/run.sh) also times the guide's procedure, which needs
# kubeadm and kubectl; CI does not build them.
if [[ ${KUBESTRAP_BENCH_TOOLS-} == 1 ]]; then
	targets+=(
		"kubeadm $K8S 0 k8s.io/kubernetes/cmd/kubeadm"
		"kubectl $K8S 0 k8s.io/kubernetes/cmd/kubectl"
	)
fi

missing=()
for t in "${targets[@]}"; do
	read -r name ver _ <<<"$t"
	case $mode in
	print) echo "$name $ver $bin/$name-$ver" ;;
	*) [[ -x $bin/$name-$ver ]] || missing+=("$t") ;;
	esac
done
[[ $mode == print ]] && exit 0
if [[ $mode == check ]]; then
	if ((${#missing[@]})); then
		for t in "${missing[@]}"; do
			read -r name ver _ <<<"$t"
			echo "missing: $bin/$name-$ver" >&2
		done
		echo "build them with $(pwd)/build.sh" >&2
		exit 1
	fi
	exit 0
fi
((${#missing[@]})) || exit 0

mkdir -p "$bin"
for t in "${missing[@]}"; do
	read -r name ver cgo pkg <<<"$t"
	out=$bin/$name-$ver
	tmp=$(mktemp "$bin/.$name-$ver.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	ldflags="-s -w"
	tags=""
	case $pkg in
	k8s.io/kubernetes/*)
		ldflags+=$(k8s_ldflags)
		# What Kubernetes' release build uses (hack/lib/golang.sh).
		tags="-tags=selinux,notest"
		;;
	github.com/coreos/ignition/*) ldflags+=" -X github.com/coreos/ignition/v2/internal/version.Raw=$ver" ;;
	esac
	echo "build.sh: building $name $ver" >&2
	start=$SECONDS
	if ! CGO_ENABLED=$cgo go build -trimpath $tags -ldflags "$ldflags" -o "$tmp" "$pkg"; then
		rm -f "$tmp"
		echo "build.sh: building $name $ver failed" >&2
		exit 1
	fi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$out"
	trap - EXIT
	echo "build.sh: $out ($((SECONDS - start))s)" >&2
done
