#!/usr/bin/env bash
# Builds the Debian root filesystem the end-to-end test boots under
# systemd-nspawn (its own systemd as PID 1, its own cloud-init), with
# mmdebstrap, from Debian's packages, into
#   ${KUBESTRAP_CACHE:-$HOME/.cache/kubestrap}/rootfs/debian-<suite>-<key>.tar
# where <key> hashes the suite, the package list and $VERSION (bump it when
# the customization below changes). Built to a temporary name, then renamed,
# so a warm run is a no-op that prints the path.
#
#   rootfs.sh           build it if missing, print its path
#   rootfs.sh --print   print its path, build nothing
#
# Needs root (mmdebstrap's root mode; the test runs as root anyway),
# mmdebstrap, and Debian's mirror. A cold build takes about a minute, mostly
# downloading. KUBESTRAP_ROOTFS_SUITE picks another suite (default bookworm;
# untested with others: trixie's systemd 257 refuses cgroup v1 by default).
set -euo pipefail

mode=build
case ${1-} in
"") ;;
--print) mode=print ;;
*)
	echo "usage: $0 [--print]" >&2
	exit 2
	;;
esac

# VERSION names the customization: part of the cache key.
VERSION=1
SUITE=${KUBESTRAP_ROOTFS_SUITE:-bookworm}
# What a node image needs to boot and run a kubelet: systemd as init, dbus
# (systemctl, and the kubelet's systemd cgroup driver), cloud-init, a
# container runtime, curl to fetch a kubelet at boot, and the tools a node's
# services call: iptables (the kubelet's makeIPTablesUtilChains), modprobe
# (containerd.service's ExecStartPre), ip, conntrack (kube-proxy), ps.
PACKAGES=(
	ca-certificates
	cloud-init
	conntrack
	containerd
	curl
	dbus
	iproute2
	iptables
	kmod
	locales
	procps
	systemd
	systemd-sysv
)
key=$(printf '%s\n' "$SUITE" "${PACKAGES[@]}" "version=$VERSION" | sha256sum | cut -c1-16)
dir=${KUBESTRAP_CACHE:-$HOME/.cache/kubestrap}/rootfs
out=$dir/debian-$SUITE-$key.tar

if [[ $mode == print || -f $out ]]; then
	echo "$out"
	exit 0
fi
if ((EUID != 0)); then
	echo "rootfs.sh: building $out needs root (mmdebstrap --mode=root)" >&2
	exit 1
fi
command -v mmdebstrap >/dev/null || {
	echo "rootfs.sh: mmdebstrap not found (apt-get install mmdebstrap)" >&2
	exit 1
}

mkdir -p "$dir"
# mmdebstrap picks the format from the name: keep .tar at the end.
tmp=$(mktemp "$dir/.debian-$SUITE-$key.XXXXXX.tar")
trap 'rm -f "$tmp"' EXIT

# Customizations, run by mmdebstrap on the finished tree ($1) before its
# cleanup (which empties /etc/machine-id: an empty one is not a first boot,
# machine-id(5); the test writes "uninitialized" where it wants one).
customize=$(
	cat <<'EOF'
set -eu
root=$1
# A locale: cloud-init (Python) degrades without one.
echo 'en_US.UTF-8 UTF-8' >"$root/etc/locale.gen"
chroot "$root" locale-gen
echo 'LANG=en_US.UTF-8' >"$root/etc/default/locale"

# The container shares the test's network namespace: there is no network to
# wait for or to configure, and cloud-init must not try (its fallback would
# write a DHCP config for whatever interface it sees).
# Nor may anything configure it: a first boot (machine-id "uninitialized", as
# for Ignition) applies Debian's presets, which enable systemd-networkd.
systemctl --root="$root" mask systemd-networkd-wait-online.service \
	systemd-networkd.service systemd-networkd.socket systemd-network-generator.service
mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat >"$root/etc/cloud/cloud.cfg.d/90-kubestrap-e2e.cfg" <<'CFG'
# kubestrap e2e image (e2e/tools/rootfs.sh): the seed is NoCloud's, in
# /var/lib/cloud/seed/nocloud; the network is the test's namespace.
datasource_list: [NoCloud]
network: {config: disabled}
CFG
# No sshd in the image (it would listen on the namespace every machine
# shares): drop the modules that would warn about it (host keys, sshd's
# PasswordAuthentication), so that a warning in a test's boot is news
# (TestBootSmoke fails on any).
sed -i -e '/^ - ssh$/d' -e '/^ - set-passwords$/d' "$root/etc/cloud/cloud.cfg"

# The console is a pipe to the test's log: nobody logs in, and a getty or a
# first-boot prompt on it would wait forever.
systemctl --root="$root" mask console-getty.service systemd-firstboot.service

# nspawn mounts the cgroup v1 controller hierarchies read-only on a v1 host;
# the kubelet (and containerd) must create cgroups in them. Remount each
# writable before anything else runs (the container has CAP_SYS_ADMIN and
# its own cgroup namespace, so it sees only its own subtree).
cat >"$root/usr/local/sbin/kubestrap-cgroup-rw" <<'SH'
#!/bin/sh
# See kubestrap-cgroup-rw.service. Only the mount's own read-only flag is
# cleared (bind,rw): the hierarchies are the host's, already writable there.
set -eu
awk '$2 ~ "^/sys/fs/cgroup(/|$)" && $4 ~ "(^|,)ro(,|$)" { print $2 }' /proc/self/mounts |
	while read -r path; do
		mount -o remount,bind,rw "$path"
	done
SH
chmod 0755 "$root/usr/local/sbin/kubestrap-cgroup-rw"
cat >"$root/etc/systemd/system/kubestrap-cgroup-rw.service" <<'UNIT'
[Unit]
Description=Make the cgroup v1 hierarchies writable (kubestrap e2e image)
DefaultDependencies=no
Before=sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kubestrap-cgroup-rw

[Install]
WantedBy=sysinit.target
UNIT
systemctl --root="$root" enable kubestrap-cgroup-rw.service

# containerd as the hardened profile's kubelet expects it (cgroupDriver:
# systemd), and as this host allows: its bounding set lacks CAP_SYS_RESOURCE,
# so no process may lower its oom_score_adj, and runc fails every pod sandbox
# (containerd asks for -998) with "failed to update /proc/self/oom_score_adj:
# Permission denied" unless containerd keeps scores at or above its own.
cat >"$root/etc/containerd/config.toml" <<'TOML'
# kubestrap e2e image (e2e/tools/rootfs.sh).
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
TOML
# A CNI network config, which is all containerd needs to report
# NetworkReady (and a Node needs to be Ready): the test runs no CNI plugin
# daemon to write one. Loopback only: host-network pods need nothing more,
# and the image ships no plugin binaries (no pod network to give).
mkdir -p "$root/etc/cni/net.d"
cat >"$root/etc/cni/net.d/10-kubestrap-e2e.conflist" <<'CNI'
{"cniVersion": "1.0.0", "name": "kubestrap-e2e", "plugins": [{"type": "loopback"}]}
CNI

# The kernel's log is the host's, not the machine's: keep it out of the
# machine's journal (the kubelet reads /dev/kmsg itself, bound in by nspawn).
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nReadKMsg=no\n' >"$root/etc/systemd/journald.conf.d/kubestrap-e2e.conf"

# Each machine gets its own hostname (nspawn's machine name, then cloud-init's
# local-hostname); mmdebstrap copied the build host's.
rm -f "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
EOF
)

echo "rootfs.sh: building $out ($SUITE: ${PACKAGES[*]})" >&2
start=$SECONDS
mmdebstrap --mode=root --variant=minbase --format=tar \
	--include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)" \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--customize-hook="$customize" \
	"$SUITE" "$tmp" </dev/null >&2
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "rootfs.sh: $out ($((SECONDS - start))s)" >&2
echo "$out"
