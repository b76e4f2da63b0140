#!/usr/bin/env bash
# Run the whole RTN test suite on a fresh Debian machine with only the Rust
# toolchain: installs what the tests need, then formats, lints, tests, and
# fuzzes each decoder briefly. CI (.ci/run) calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_debian_packages() {
    # etcd for the control-store tests (etcd-client's build uses the
    # vendored protoc: scripts/protoc).
    local want=(etcd-server prometheus) missing=()
    for p in "${want[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Builds take several GB (about 6 GB from scratch); a full disk shows up as
# a linker's "Bus error" far from its cause, so say up front.
report_disk() {
    local free_kb
    free_kb="$(df -Pk . | awk 'NR == 2 {print $4}')"
    log "disk: $((free_kb / 1024 / 1024)) GiB free here; target/ holds $(du -sh target 2>/dev/null | cut -f1)"
    if [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
        echo "warning: less than 8 GiB free; the build may run out of disk" >&2
    fi
}

install_debian_packages
mkdir -p target
report_disk

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "cargo test"
cargo test --workspace --all-features --no-fail-fast 2>&1 | tee target/test-output.txt
region-controller/tests/dashboard/run.sh  # the dashboard in headless Chromium against a lab; screenshots in target/dashboard-screenshots/
sdk-js/scripts/check.sh  # the browser SDK: npm ci, strict type-check and bundles, eslint, node tests (protocol vectors, reorder, replay, e2ee), bundle under 50 KB gzipped
sdk-js/tests/browser/run.sh  # the browser SDK in headless Chromium against a lab (the loadtest binary cargo test built): a call with a Rust client across two edges, failover on kill and drain, e2ee, WebCodecs media, bad input, time to first media
terraform/test.sh  # terraform modules: fmt, validate, terraform test, rendered configs checked and run by the binaries

if [ -x protocol/fuzz/run.sh ]; then
    log "fuzzing every decoder for ${RTN_FUZZ_SECONDS:-20}s"
    protocol/fuzz/run.sh "${RTN_FUZZ_SECONDS:-20}"
fi
if [ -x fuzz/run.sh ]; then
    log "fuzzing every config, topology, chaos plan and WAN rule parser for ${RTN_FUZZ_SECONDS:-20}s"
    fuzz/run.sh "${RTN_FUZZ_SECONDS:-20}"
fi

report_disk
log "all tests passed"
