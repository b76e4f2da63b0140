#!/usr/bin/env bash
# Run the whole RTN test suite on a fresh Debian machine with only the Rust
# toolchain: installs what the tests need, then formats, lints, tests, and
# fuzzes each decoder briefly. CI (.ci/run) calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_debian_packages() {
    # etcd for the control-store tests (etcd-client's build uses the
    # vendored protoc: scripts/protoc); python3-venv, nodejs and npm for the
    # token examples (below), which run before the browser tests would
    # install node.
    local want=(etcd-server prometheus python3-venv) missing=()
    for p in "${want[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
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

# The libraries of the token examples (examples/tokens/), which
# edge-node/tests/token_examples.rs runs against a real edge: PyJWT in a
# venv (Debian's python3 refuses pip installs outside one), the Node
# example's jsonwebtoken from its package-lock.json. The test finds the
# venv's python through RTN_TOKEN_PYTHON, and fails rather than skips
# with RTN_TOKEN_EXAMPLES_REQUIRED set.
install_token_examples() {
    local venv="${RTN_TOKENS_VENV:-$PWD/target/tokens-venv}"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import jwt' 2>/dev/null; then
        log "creating $venv with PyJWT (examples/tokens/python)"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check 'pyjwt>=2.8,<3'
    fi
    log "npm ci in examples/tokens/node"
    (cd examples/tokens/node && npm ci --no-audit --no-fund)
    export RTN_TOKEN_PYTHON="$venv/bin/python" RTN_TOKEN_EXAMPLES_REQUIRED=1
}

install_debian_packages
mkdir -p target
report_disk
install_token_examples

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "cargo test"
cargo test --workspace --all-features --no-fail-fast 2>&1 | tee target/test-output.txt
packaging/test.sh  # the Debian packages of the debug binaries cargo test built (scripts/package.sh --profile dev): dpkg -i, check-config on the installed defaults, systemd-analyze verify and security, dpkg --purge (a few seconds)
region-controller/tests/dashboard/run.sh  # the dashboard in headless Chromium against a lab; screenshots in target/dashboard-screenshots/
log "alert rules (ops/prometheus): promtool check rules, promtool test rules"
promtool check rules ops/prometheus/rtn-rules.yml  # syntax, and every expression parses
promtool test rules ops/prometheus/rtn-rules.test.yml  # every alert fired by its test series, labels and annotations checked, and quiet on healthy ones
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
