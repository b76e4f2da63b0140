#!/usr/bin/env bash
# Everything CI checks for the browser SDK: install (from package-lock.json),
# build (type-check + bundles), lint, tests, bundle size. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n==> sdk-js: %s\n' "$*"; }
log "npm ci";        npm ci --no-audit --no-fund
log "npm run build"; npm run build
log "npm run lint";  npm run lint
log "npm test";      npm test
log "npm run size";  npm run size
