#!/usr/bin/env bash
# Browser test of the region controller's path-quality dashboard: builds the
# dashboard lab (region-controller/examples/dashboard_lab.rs), installs
# Debian's Chromium and playwright-core if missing, and drives the page in
# headless Chromium (dashboard.test.mjs). Screenshots and the lab's log go
# to target/dashboard-screenshots/. Exits non-zero on any failure; bounded
# in time, and the lab never outlives it (it exits when its stdin closes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
shots="$target/dashboard-screenshots"

log() { printf '\n==> dashboard: %s\n' "$*"; }

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
chromium_bin="$(command -v chromium)"

log "playwright-core (npm ci)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

log "building the lab"
# The workspace's feature set, as scripts/test.sh builds it, so that this
# reuses the test build's artefacts.
cargo build --quiet --workspace --all-features --example dashboard_lab

rm -rf "$shots"
mkdir -p "$shots"
log "driving $chromium_bin ($("$chromium_bin" --version 2>/dev/null || echo unknown version))"
timeout --kill-after=10 150 node "$here/dashboard.test.mjs" \
    --lab "$target/debug/examples/dashboard_lab" \
    --screenshots "$shots" \
    --chromium "$chromium_bin"
