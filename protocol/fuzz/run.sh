#!/usr/bin/env bash
# Fuzz every protocol decoder; fail on any crash. Options and environment:
# scripts/fuzz.sh.
#
#   protocol/fuzz/run.sh [seconds-per-target]     (default 20)
exec "$(dirname "$0")/../../scripts/fuzz.sh" "$(dirname "$0")" "$@"
