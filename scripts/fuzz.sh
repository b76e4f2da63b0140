#!/usr/bin/env bash
# Fuzz every target of one cargo-fuzz crate for a while; fail on any crash.
# protocol/fuzz/run.sh and fuzz/run.sh call this with their own folder.
#
#   scripts/fuzz.sh <fuzz-crate-dir> [seconds-per-target]     (default 20)
#
# Environment:
#   RTN_FUZZ_TARGETS    space-separated subset of targets (default: all of
#                       the crate's, from `cargo fuzz list`)
#   RTN_FUZZ_SANITIZER  address (default) or none
#   RTN_FUZZ_JOBS       libFuzzer processes per target (default 1)
#   RTN_FUZZ_CLEAN      1: delete the crate's build (target/, about 1 GB of
#                       sanitized binaries) when done; .ci/run sets it
#
# Works on a stable toolchain: cargo-fuzz needs nightly-only flags, which
# RUSTC_BOOTSTRAP=1 unlocks. cargo-fuzz is installed if missing. The
# committed seed corpora (corpus/<target>/) are only read: what a run
# discovers goes to a scratch corpus that is deleted afterwards, so the
# repository stays clean. A crashing input is kept in artifacts/<target>/
# (ignored by git) and printed in hex and as text. A dict/<target>.dict, if
# present, holds the format's keywords for libFuzzer to splice in.
set -euo pipefail
crate="${1:?usage: $0 <fuzz-crate-dir> [seconds-per-target]}"
cd "$crate"

seconds="${2:-20}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 <fuzz-crate-dir> [seconds-per-target]" >&2; exit 2 ;;
esac
sanitizer="${RTN_FUZZ_SANITIZER:-address}"
jobs="${RTN_FUZZ_JOBS:-1}"

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
targets="${RTN_FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"

echo "==> building fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build -s "$sanitizer"

scratch="$(mktemp -d)"
cleanup() {
    rm -rf "$scratch"
    if [ "${RTN_FUZZ_CLEAN:-0}" = 1 ]; then rm -rf target; fi
}
trap cleanup EXIT
summary=()
crashed=()
for t in $targets; do
    mkdir -p "$scratch/$t" "corpus/$t"
    log="$scratch/$t.log"
    echo "==> fuzzing $t for ${seconds}s"
    # First corpus dir: where libFuzzer writes new inputs (scratch); the
    # committed seeds are read from the second.
    args=(-max_total_time="$seconds" -timeout=20 -max_len=8192 -print_final_stats=1)
    if [ "$jobs" -gt 1 ]; then
        args+=(-jobs="$jobs" -workers="$jobs")
    fi
    # Field names, actions, city codes...: tokens libFuzzer splices in.
    if [ -f "dict/$t.dict" ]; then
        args+=(-dict="dict/$t.dict")
    fi
    if cargo fuzz run -s "$sanitizer" "$t" "$scratch/$t" "corpus/$t" -- "${args[@]}" \
        >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        crashed+=("$t")
    fi
    # With -jobs > 1 the workers log to fuzz-N.log in the current directory.
    if [ "$jobs" -gt 1 ]; then
        cat fuzz-*.log >>"$log" 2>/dev/null || true
        rm -f fuzz-*.log
    fi
    runs="$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" |
        awk '{s += $2} END {print s + 0}')"
    corpus="$(find "$scratch/$t" -type f | wc -l)"
    summary+=("$(printf '%-18s %-6s %12s executions %6s corpus inputs' "$t" "$status" "$runs" "$corpus")")
    if [ "$status" != ok ]; then
        echo "---- $t: libFuzzer output (last 60 lines) ----"
        tail -n 60 "$log"
        for a in $(grep -Eo 'Test unit written to [^ ]+' "$log" | awk '{print $5}'); do
            echo "---- crashing input $a ($(wc -c <"$a") bytes) ----"
            od -A d -t x1 "$a" | head -n 40
            echo "---- as text ----"
            head -c 4000 "$a" | cat -v
            echo
            echo "reproduce: cd $crate && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $a"
        done
    fi
done

echo
echo "==> fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#crashed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in: ${crashed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash in $(echo $targets | wc -w) targets"
