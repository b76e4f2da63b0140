#!/bin/sh
# rtn-install URL SHA256 DEST [MODE]
# rtn-install --package URL SHA256
#
# Fetch a release file (URL: https, or an absolute path of a file already on
# this host), check its SHA-256 and atomically replace DEST (mode 0755 unless
# given). With --package, URL is a Debian package (scripts/package.sh's
# rtn-edge_*.deb, rtn-controller_*.deb): it is kept in /var/cache/rtn and
# installed with apt-get, which pulls its dependencies, waits for a running
# apt (unattended upgrades at first boot), and keeps the config files already
# on the host (terraform's) over the package's defaults; an older version
# replaces a newer one (a rollback). Installing never starts or restarts a
# service. Runs at first boot (cloud-init) and for upgrades, e.g.
#   rtn-install --package https://.../rtn-edge_0.4.0_amd64.deb <sha256>
#   systemctl restart rtn-edge      # drains: clients get a goaway and move
#   rtn-install https://.../city.mmdb <sha256> /etc/rtn/geoip/city.mmdb 0644
set -eu
usage() {
    echo "usage: rtn-install URL SHA256 DEST [MODE] | rtn-install --package URL SHA256" >&2
    exit 64
}
package=""
if [ "${1:-}" = "--package" ]; then
    [ "$#" -eq 3 ] || usage
    package=yes
    url="$2"
    sha256="$3"
    dest="/var/cache/rtn/$(basename "$url")"
    mode=0644
    case "$dest" in
        *.deb) ;;
        *) echo "rtn-install: --package needs a .deb: $url" >&2; exit 64 ;;
    esac
else
    if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
        usage
    fi
    url="$1"
    sha256="$2"
    dest="$3"
    mode="${4:-0755}"
fi
case "$dest" in
    /*) ;;
    *) echo "rtn-install: DEST must be an absolute path: $dest" >&2; exit 64 ;;
esac
mkdir -p "$(dirname "$dest")"
tmp="$(mktemp "$dest.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
case "$url" in
    https://*)
        curl --fail --silent --show-error --location --proto '=https' \
            --retry 5 --retry-delay 2 --retry-all-errors --output "$tmp" "$url"
        ;;
    /*) cp "$url" "$tmp" ;;
    *) echo "rtn-install: URL must be https:// or an absolute path: $url" >&2; exit 64 ;;
esac
if ! echo "$sha256  $tmp" | sha256sum --check --status; then
    echo "rtn-install: SHA-256 of $url is not $sha256" >&2
    exit 1
fi
chmod "$mode" "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
echo "rtn-install: installed $dest ($sha256)"
if [ -n "$package" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades \
        -o DPkg::Lock::Timeout=600 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$dest"
    echo "rtn-install: installed $(dpkg-deb --field "$dest" Package) $(dpkg-deb --field "$dest" Version)"
fi
