#!/usr/bin/env bash
# Browser tests of @rtn/sdk: Debian's Chromium (headless, fake camera and
# microphone) in the lab's demo page, against `loadtest lab --lab-control`
# on loopback (loadtest/topologies/browser.toml: 3 edges, no clients) with a
# Rust SDK peer on another edge. Tests and figures: test.mjs.
#
#   sdk-js/tests/browser/run.sh            # every test
#   ONLY=a,b sdk-js/tests/browser/run.sh   # some
#
# Installs what it needs: chromium (apt, when missing and run as root),
# node_modules (npm ci) and the SDK bundle (npm run build); the lab binary
# is ${CARGO_TARGET_DIR:-target}/debug/loadtest if built, else built here.
# Bounded (timeout); the lab and Chromium are always stopped; non-zero exit
# on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
sdkjs=$(cd "$here/../.." && pwd)
repo=$(cd "$sdkjs/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
lab_seconds=${LAB_SECONDS:-900}
test_seconds=${TEST_SECONDS:-840}

log() { printf '==> browser tests: %s\n' "$*"; }

work=$(mktemp -d -t rtn-browser.XXXXXX)
lab_pid=
chrome_pid=
cleanup() {
  local rc=$?
  if [ -n "$chrome_pid" ] && kill -0 "$chrome_pid" 2>/dev/null; then
    # Its own process group (setsid): the browser and its helpers.
    kill -TERM -- "-$chrome_pid" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$chrome_pid" 2>/dev/null || true
  fi
  if [ -n "$lab_pid" ] && kill -0 "$lab_pid" 2>/dev/null; then
    kill -TERM "$lab_pid" 2>/dev/null || true   # the lab stops cleanly on SIGTERM
    for _ in $(seq 1 50); do kill -0 "$lab_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$lab_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$work/lab.log" ]; then
    log "lab output (last 40 lines):"
    tail -n 40 "$work/lab.log" || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Chromium: Debian's package, never a downloaded browser.
chrome=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chrome" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  [ -x "$chrome" ] || { echo "no Chromium at $chrome (apt-get install chromium)" >&2; exit 1; }
fi

cd "$sdkjs"
if [ ! -d node_modules/playwright-core ]; then
  log "npm ci"
  npm ci --no-audit --no-fund
fi
log "npm run build"
npm run build >/dev/null

bin="$target/debug/loadtest"
if [ ! -x "$bin" ]; then
  log "cargo build -p loadtest"
  (cd "$repo" && cargo build -p loadtest)
fi

# A line of $1 matching the extended regex $2, within $3 seconds, while
# process $4 lives.
wait_for_line() {
  local file=$1 re=$2 limit=$3 pid=$4 line
  for _ in $(seq 1 $((limit * 5))); do
    line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then printf '%s\n' "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "process $pid exited; its output:" >&2; tail -n 30 "$file" >&2; return 1; }
    sleep 0.2
  done
  echo "no line matching /$re/ in $file within ${limit}s" >&2
  tail -n 30 "$file" >&2
  return 1
}

log "starting the lab ($bin, browser.toml, --lab-control, ${lab_seconds}s at most)"
"$bin" lab --topology "$repo/loadtest/topologies/browser.toml" --lab-control \
  --duration "$lab_seconds" >"$work/lab.log" 2>&1 &
lab_pid=$!
demo_line=$(wait_for_line "$work/lab.log" 'demo: http://' 120 "$lab_pid")
demo_url=$(printf '%s\n' "$demo_line" | grep -oE 'http://[^ ]+')
sed -n '1,/demo: http/p' "$work/lab.log"

log "starting chromium"
# WebTransport needs QUIC: no --disable-quic. The background-throttling
# flags keep timers of pages that are not in front running on time.
setsid "$chrome" --headless=new --no-sandbox --disable-gpu --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --use-fake-device-for-media-stream --use-fake-ui-for-media-stream \
  --autoplay-policy=no-user-gesture-required \
  --disable-background-timer-throttling --disable-renderer-backgrounding \
  --disable-backgrounding-occluded-windows \
  --user-data-dir="$work/profile" --remote-debugging-port=0 about:blank \
  >"$work/chrome.log" 2>&1 &
chrome_pid=$!
cdp_line=$(wait_for_line "$work/chrome.log" 'DevTools listening on ws://' 30 "$chrome_pid")
cdp_url=$(printf '%s\n' "$cdp_line" | grep -oE 'ws://[^ ]+')

log "running test.mjs (demo $demo_url)"
rc=0
DEMO_URL="$demo_url" CDP_URL="$cdp_url" timeout --kill-after=10 "$test_seconds" \
  node "$here/test.mjs" || rc=$?
if [ "$rc" -eq 124 ]; then echo "FAIL test.mjs did not finish within ${test_seconds}s" >&2; fi
exit "$rc"
