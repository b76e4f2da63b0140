#!/usr/bin/env bash
# Fuzz every parser of the files operators and testers write (configs, lab
# topologies, chaos plans, WAN rules); fail on any crash. Options and
# environment: scripts/fuzz.sh.
#
#   fuzz/run.sh [seconds-per-target]     (default 20)
exec "$(dirname "$0")/../scripts/fuzz.sh" "$(dirname "$0")" "$@"
