#!/usr/bin/env bash
# CI's test of the Debian packages (scripts/test.sh runs it after the cargo
# tests, in well under a minute): package the debug binaries `cargo test`
# built (scripts/package.sh --profile dev: no release build), install the
# three packages on this machine with dpkg -i, check the installed default
# configs with the installed binaries (accepted with their secrets set,
# refused without, readable by the service user), check the installed units
# with systemd-analyze verify and security, then purge the packages and check
# that nothing is left (files, user). Needs root (or sudo), dpkg and
# systemd-analyze; refuses to run where RTN packages are installed already.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

log() { printf '\n==> %s\n' "$*"; }
fail() { echo "packaging/test.sh: $*" >&2; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(rtn-edge rtn-controller rtn-tools)
# Worst systemd-analyze security exposure allowed (as terraform/tests/run_tests.py).
max_exposure=2.0

for p in "${packages[@]}"; do
    if dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
        fail "$p is installed on this machine already: this test installs and purges its own (dpkg --purge ${packages[*]} first)"
    fi
done
if getent passwd rtn >/dev/null; then
    fail "a user rtn exists already: the packages would take it over"
fi

if ! command -v systemd-analyze >/dev/null; then
    log "installing Debian's systemd (systemd-analyze)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq systemd >/dev/null
fi

scripts/package.sh --profile dev
out="${RTN_PACKAGE_OUT:-${CARGO_TARGET_DIR:-$PWD/target}/packages}"
debs=()
for p in "${packages[@]}"; do
    f=("$out/${p}"_*~dev_*.deb)
    [ -f "${f[0]}" ] || fail "no $p package in $out"
    debs+=("${f[0]}")
done
(cd "$out" && sha256sum --check --quiet SHA256SUMS) || fail "SHA256SUMS does not match the files"

purge() { $sudo dpkg --purge "${packages[@]}" >/dev/null 2>&1 || true; }
trap purge EXIT

log "dpkg -i ${debs[*]##*/}"
$sudo dpkg -i "${debs[@]}"
for p in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p")" = installed ] || fail "$p is not installed"
done
getent passwd rtn | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "no system user rtn: $(getent passwd rtn)"
for f in /usr/bin/edge-node /usr/bin/region-controller /usr/bin/loadtest \
    /lib/systemd/system/rtn-edge.service /lib/systemd/system/rtn-controller.service \
    /etc/rtn/edge.toml /etc/rtn/controller.toml \
    /usr/share/rtn/prometheus/rtn-rules.yml /usr/share/rtn/grafana/rtn.json; do
    [ -f "$f" ] || fail "$f is not installed"
done
if command -v promtool >/dev/null; then
    promtool check rules /usr/share/rtn/prometheus/rtn-rules.yml >/dev/null ||
        fail "the installed alert rules do not pass promtool check rules"
fi

log "check-config on the installed defaults"
secret="packaging-test-secret-0123456789"
# With the secrets the configs name: accepted, also by the service user.
env -i PATH=/usr/bin:/bin RTN_APP_SECRETS_DEMO="$secret" \
    /usr/bin/edge-node check-config --config /etc/rtn/edge.toml | tail -1
env -i PATH=/usr/bin:/bin RTN_CTL_ADMIN_TOKEN="$secret" \
    /usr/bin/region-controller check-config --config /etc/rtn/controller.toml | tail -1
$sudo runuser -u rtn -- env -i PATH=/usr/bin:/bin RTN_APP_SECRETS_DEMO="$secret" \
    /usr/bin/edge-node check-config --config /etc/rtn/edge.toml >/dev/null || fail "the rtn user cannot use /etc/rtn/edge.toml"
$sudo runuser -u rtn -- env -i PATH=/usr/bin:/bin RTN_CTL_ADMIN_TOKEN="$secret" \
    /usr/bin/region-controller check-config --config /etc/rtn/controller.toml >/dev/null || fail "the rtn user cannot use /etc/rtn/controller.toml"
# Without them: refused, naming the variable (the secrets come from there).
if err="$(env -i PATH=/usr/bin:/bin /usr/bin/edge-node check-config --config /etc/rtn/edge.toml 2>&1)"; then
    fail "edge-node check-config accepted the default config without its app secret"
fi
grep -q RTN_APP_SECRETS_DEMO <<<"$err" || fail "edge-node check-config: $err"
if err="$(env -i PATH=/usr/bin:/bin /usr/bin/region-controller check-config --config /etc/rtn/controller.toml 2>&1)"; then
    fail "region-controller check-config accepted the default config without the admin token"
fi
grep -q RTN_CTL_ADMIN_TOKEN <<<"$err" || fail "region-controller check-config: $err"
/usr/bin/loadtest --version

log "systemd-analyze verify and security of the installed units"
for unit in rtn-edge.service rtn-controller.service; do
    verify="$(systemd-analyze verify "/lib/systemd/system/$unit" 2>&1)" || fail "systemd-analyze verify $unit: $verify"
    # Units it pulls in that this machine lacks (rtn-firewall.service: terraform's) are not this unit's fault.
    noise="$(grep -v -e '^$' -e 'rtn-firewall.service' <<<"$verify" || true)"
    [ -z "$noise" ] || fail "systemd-analyze verify $unit: $noise"
    exposure="$(systemd-analyze security --offline=true --no-pager "/lib/systemd/system/$unit" |
        sed -n 's/^→ Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
    [ -n "$exposure" ] || fail "systemd-analyze security $unit printed no exposure"
    awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }' || fail "$unit: exposure $exposure above $max_exposure"
    echo "$unit: verified, exposure $exposure"
done

log "dpkg --purge ${packages[*]}"
trap - EXIT
$sudo dpkg --purge "${packages[@]}" >/dev/null
for p in "${packages[@]}"; do
    s="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || echo not-installed)"
    [ "$s" = not-installed ] || fail "$p is $s after the purge"
done
for f in /usr/bin/edge-node /usr/bin/region-controller /usr/bin/loadtest \
    /lib/systemd/system/rtn-edge.service /lib/systemd/system/rtn-controller.service \
    /etc/rtn/edge.toml /etc/rtn/controller.toml /usr/share/rtn; do
    [ ! -e "$f" ] || fail "$f is left after the purge"
done
! getent passwd rtn >/dev/null || fail "the rtn user is left after the purge"
! getent group rtn >/dev/null || fail "the rtn group is left after the purge"
echo "packaging/test.sh took $((SECONDS - start))s"
