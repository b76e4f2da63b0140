#!/usr/bin/env bash
# Run the whole RTN test suite on a fresh Debian machine with only the Rust
# toolchain: installs what the tests need, then formats, lints, tests, and
# fuzzes each decoder briefly. CI (.ci/run) calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_debian_packages() {
    local want=(protobuf-compiler etcd-server) missing=()
    for p in "${want[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
        log "installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_debian_packages
# prost's build script uses the vendored protoc unless PROTOC is set; prefer
# the distribution's when present.
if command -v protoc >/dev/null; then export PROTOC="$(command -v protoc)"; fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt

if [ -x protocol/fuzz/run.sh ]; then
    log "fuzzing every decoder for ${RTN_FUZZ_SECONDS:-20}s"
    protocol/fuzz/run.sh "${RTN_FUZZ_SECONDS:-20}"
fi

log "all tests passed"
