#!/usr/bin/env bash
# Run the whole RTN test suite on a fresh Debian machine with only the Rust
# toolchain: installs what the tests need, then formats, lints, tests, and
# fuzzes each decoder briefly. CI (.ci/run) calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# The data plane needs nothing beyond the Rust toolchain: protoc comes from
# the protoc-bin-vendored crate. (The control-plane tests will add etcd here.)
mkdir -p target

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
