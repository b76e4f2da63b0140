#!/bin/sh
# rtn-install URL SHA256 DEST [MODE]
#
# Download a release file over https, check its SHA-256 and atomically
# replace DEST (mode 0755 unless given). Runs at first boot (cloud-init) and
# for upgrades, e.g.
#   rtn-install https://.../edge-node <sha256> /usr/local/bin/edge-node
#   systemctl restart rtn-edge      # drains: clients get a goaway and move
set -eu
if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
    echo "usage: rtn-install URL SHA256 DEST [MODE]" >&2
    exit 64
fi
url="$1"
sha256="$2"
dest="$3"
mode="${4:-0755}"
case "$dest" in
    /*) ;;
    *) echo "rtn-install: DEST must be an absolute path: $dest" >&2; exit 64 ;;
esac
mkdir -p "$(dirname "$dest")"
tmp="$(mktemp "$dest.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
curl --fail --silent --show-error --location --proto '=https' \
    --retry 5 --retry-delay 2 --retry-all-errors --output "$tmp" "$url"
if ! echo "$sha256  $tmp" | sha256sum --check --status; then
    echo "rtn-install: SHA-256 of $url is not $sha256" >&2
    exit 1
fi
chmod "$mode" "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
echo "rtn-install: installed $dest ($sha256)"
