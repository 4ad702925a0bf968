#!/bin/sh
# kubestrap-fetch URL HASH PATH MODE [LINK]
#
# Written by kubestrap. Downloads URL (with retries), checks it against HASH
# (sha256-<hex> or sha512-<hex>), and only then moves it to PATH with MODE,
# in one rename, so that nothing ever starts from a partial or unverified
# file; then links LINK to PATH. A PATH already in place with HASH is kept.
# (Indented with spaces: a tab would make the cloud-config carry this file
# as one quoted line instead of a readable block.)
set -eu
if [ $# -lt 4 ] || [ $# -gt 5 ]; then
  echo "usage: kubestrap-fetch URL HASH PATH MODE [LINK]" >&2
  exit 2
fi
url=$1 hash=$2 dest=$3 mode=$4 link=${5-}
alg=${hash%%-*}
want=${hash#*-}
case $alg in
sha256 | sha512) ;;
*)
  echo "kubestrap-fetch: $hash: unknown hash (want sha256-<hex> or sha512-<hex>)" >&2
  exit 2
  ;;
esac
digest() { "${alg}sum" "$1" | cut -d' ' -f1; }

if [ -f "$dest" ] && [ "$(digest "$dest")" = "$want" ]; then
  echo "kubestrap-fetch: $dest is in place ($alg verified)"
else
  if ! command -v curl >/dev/null 2>&1; then
    echo "kubestrap-fetch: curl is not installed; the image needs it to fetch $url" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dest")"
  # What an earlier run left when it was killed mid-download.
  rm -f "$dest".kubestrap-fetch.*
  tmp=$(mktemp "$dest.kubestrap-fetch.XXXXXX")
  # sh runs the EXIT trap on exit, not on a signal: turn those into exits.
  trap 'rm -f "$tmp"' EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # --globoff: the URL is fetched as written, as Ignition does; curl would
  # otherwise read [] and {} in it as patterns.
  if ! curl --globoff --fail --silent --show-error --location --retry 10 --retry-delay 3 --retry-connrefused \
    --connect-timeout 10 --max-time 900 --output "$tmp" "$url"; then
    echo "kubestrap-fetch: $url: download failed; $dest is not installed" >&2
    exit 1
  fi
  got=$(digest "$tmp")
  if [ "$got" != "$want" ]; then
    echo "kubestrap-fetch: $url: $alg mismatch: got $got, want $want; $dest is not installed" >&2
    exit 1
  fi
  chmod "$mode" "$tmp"
  # -T: never into a directory that happens to be at PATH.
  mv -f -T "$tmp" "$dest"
  trap - EXIT
  echo "kubestrap-fetch: installed $dest from $url ($alg verified)"
fi
if [ -n "$link" ]; then
  mkdir -p "$(dirname "$link")"
  ln -sfn "$dest" "$link"
fi
