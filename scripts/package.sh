#!/usr/bin/env bash
# Build the Debian packages and the release tarballs of RTN into
# target/packages/ (docs/operations.md, installing from packages):
#
#   rtn-edge_<version>_<arch>.deb        edge-node, rtn-edge.service, /etc/rtn/edge.toml, the rtn user
#   rtn-controller_<version>_<arch>.deb  region-controller, rtn-controller.service, /etc/rtn/controller.toml, the rtn user
#   rtn-tools_<version>_<arch>.deb       loadtest
#   <bin>-<version>-linux-<arch>.tar.gz  each binary alone (with its unit and default config)
#   SHA256SUMS                           sha256sum of every file above (terraform's package.sha256)
#
#   scripts/package.sh                   cargo build --release (etcd support, never netem), then package
#   scripts/package.sh --profile dev     package target/debug's binaries as they are (what `cargo test`
#                                        built; built here only when missing): CI's install test
#                                        (packaging/test.sh), never a release
#
# Settings: RTN_PACKAGE_PROFILE (same as --profile), CARGO_TARGET_DIR,
# RTN_PACKAGE_OUT (default target/packages), SOURCE_DATE_EPOCH (file dates;
# default: the last commit's).
#
# The .deb files are made with dpkg-deb from a staged tree (DEBIAN/control,
# conffiles, maintainer scripts from packaging/debian/), not with cargo-deb:
# compiling cargo-deb would cost CI minutes, and dpkg-deb is on every Debian
# machine. The architecture is the build host's (dpkg --print-architecture):
# build on an arm64 host for arm64 packages. The version is the crates'
# (Cargo.toml); packages of the dev profile are versioned <version>~dev, so
# that they sort before the release of the same version and are never
# mistaken for it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

profile="${RTN_PACKAGE_PROFILE:-release}"
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a value (release or dev)}"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done
case "$profile" in
    release) profile_dir=release ;;
    dev | debug) profile=dev; profile_dir=debug ;;
    *) echo "package.sh: --profile must be release or dev, not $profile" >&2; exit 64 ;;
esac

log() { printf '\n==> %s\n' "$*"; }

target="${CARGO_TARGET_DIR:-$repo/target}"
bin_dir="$target/$profile_dir"
out="${RTN_PACKAGE_OUT:-$target/packages}"
arch="$(dpkg --print-architecture)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"

# The crate's version, from its Cargo.toml (through cargo: workspace
# inheritance resolved). `cargo pkgid` prints e.g. path+file:///.../edge-node#0.1.0.
crate_version() {
    local id
    id="$(cargo pkgid --offline -p "$1" 2>/dev/null || cargo pkgid -p "$1")"
    echo "${id##*[#@]}"
}

# A binary built without etcd support carries the error it would give; an
# edge-node built without the netem feature carries the error it gives for
# a [netem] section (the same markers terraform/test.sh reads).
has_etcd() { ! grep -q "built without etcd support" "$1"; }
has_netem() { ! grep -q "needs an edge-node built with" "$1"; }

bins=(edge-node region-controller loadtest)
if [ "$profile" = release ]; then
    log "cargo build --release: edge-node, region-controller, loadtest (etcd, no netem)"
    # Only these three packages are selected, so no other crate's features
    # (netem is the fuzz crate's and --all-features's) are unified in.
    cargo build --release --locked -p edge-node -p region-controller -p loadtest \
        --features edge-node/etcd,region-controller/etcd,loadtest/etcd
else
    missing=()
    for b in "${bins[@]}"; do [ -x "$bin_dir/$b" ] || missing+=(-p "$b"); done
    if [ ${#missing[@]} -gt 0 ]; then
        log "cargo build (dev profile) of the missing binaries"
        cargo build "${missing[@]}"
    fi
fi
for b in "${bins[@]}"; do
    [ -x "$bin_dir/$b" ] || { echo "package.sh: $bin_dir/$b is missing" >&2; exit 1; }
done
for b in edge-node region-controller; do
    has_etcd "$bin_dir/$b" || { echo "package.sh: $bin_dir/$b was built without etcd support" >&2; exit 1; }
done
if has_netem "$bin_dir/edge-node"; then
    if [ "$profile" = release ]; then
        echo "package.sh: $bin_dir/edge-node has the netem feature (lab code): never in a package" >&2
        exit 1
    fi
    echo "package.sh: note: $bin_dir/edge-node has the netem feature (cargo test --all-features built it): a test package only"
fi

version="$(crate_version edge-node)"
for b in region-controller loadtest; do
    v="$(crate_version "$b")"
    [ "$v" = "$version" ] || { echo "package.sh: $b is version $v, edge-node $version: release them together" >&2; exit 1; }
done
deb_version="$version"
[ "$profile" = release ] || deb_version="$version~dev"

work="$target/package-work"
rm -rf "$work"
mkdir -p "$work" "$out"
rm -f "$out"/rtn-*.deb "$out"/*-linux-*.tar.gz "$out"/SHA256SUMS

# The lowest glibc the binary asks for (its highest GLIBC_x.y symbol
# version): the package's libc6 dependency, so that dpkg refuses a host whose
# C library is too old instead of the binary failing at start.
libc_depends() {
    local v
    v="$(objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1 || true)"
    if [ -n "$v" ]; then echo "libc6 (>= $v)"; else echo "libc6"; fi
}

# Stage one package: stage NAME BIN SUMMARY DESCRIPTION [UNIT CONFIG SIBLINGS]
# (DESCRIPTION: the control file's extended description, lines indented by
# one space, "." for a blank line).
stage() {
    local pkg="$1" bin="$2" summary="$3" long="$4" unit="${5:-}" config="${6:-}" siblings="${7:-}"
    local root="$work/$pkg"
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/$pkg"
    # Debug info stripped (the release profile keeps it for profiling):
    # symbols stay, so backtraces still name functions.
    strip --strip-debug -o "$root/usr/bin/$bin" "$bin_dir/$bin"
    chmod 0755 "$root/usr/bin/$bin"
    install -m 0644 docs/operations.md "$root/usr/share/doc/$pkg/operations.md"
    cat >"$root/usr/share/doc/$pkg/copyright" <<EOF
RTN ($pkg $deb_version): $bin, a part of the RTN real-time relay network.
License: Apache-2.0 (/usr/share/common-licenses/Apache-2.0).
EOF
    if [ "$pkg" = rtn-tools ]; then
        # What monitoring the fleet takes: the alert rules (and their
        # promtool tests) and the Grafana dashboard, as operations.md §6 says.
        install -D -m 0644 -t "$root/usr/share/rtn/prometheus" \
            ops/prometheus/rtn-rules.yml ops/prometheus/rtn-rules.test.yml
        install -D -m 0644 -t "$root/usr/share/rtn/grafana" docs/grafana/rtn.json
    fi
    local depends
    depends="$(libc_depends "$root/usr/bin/$bin")"
    if [ -n "$unit" ]; then
        mkdir -p "$root/lib/systemd/system" "$root/etc/rtn"
        install -m 0644 "packaging/$bin/$unit" "$root/lib/systemd/system/$unit"
        install -m 0644 "packaging/$bin/$config" "$root/etc/rtn/$config"
        echo "/etc/rtn/$config" >"$root/DEBIAN/conffiles"
        for script in postinst prerm postrm; do
            sed -e "s/@PACKAGE@/$pkg/g" -e "s/@UNIT@/$unit/g" -e "s/@SIBLINGS@/$siblings/g" \
                "packaging/debian/$script" >"$root/DEBIAN/$script"
            chmod 0755 "$root/DEBIAN/$script"
        done
        # useradd (postinst), systemd >= 250 for the unit's settings (not a
        # dependency: containers and chroots install without it).
        depends="$depends, passwd"
    fi
    local testing=""
    [ "$profile" = release ] || testing=" (test build of the dev profile: not for hosts)"
    cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $deb_version
Architecture: $arch
Maintainer: RTN maintainers <rtn@localhost>
Section: net
Priority: optional
Depends: $depends
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: $summary$testing
$long
EOF
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

log "staging $arch packages $deb_version from $bin_dir"
stage rtn-edge edge-node "RTN edge relay" \
" The edge of RTN, a real-time relay network: the QUIC endpoint for clients
 (native and WebTransport) and for other edges, channels, forwarding along
 the overlay's lowest-latency paths, probes, registration in etcd.
 .
 Installs /usr/bin/edge-node, the hardened unit rtn-edge.service (neither
 enabled nor started), the default config /etc/rtn/edge.toml and the rtn
 system user. Per-host settings go in a drop-in,
 /etc/systemd/system/rtn-edge.service.d/, as terraform renders them." \
    rtn-edge.service edge.toml rtn-controller
stage rtn-controller region-controller "RTN region controller" \
" The region controller of RTN, a real-time relay network: path computation
 from the edges' probes, route publication through etcd, leader election,
 the public nearest-edge API and the operator's dashboard.
 .
 Installs /usr/bin/region-controller, the hardened unit
 rtn-controller.service (neither enabled nor started), the default config
 /etc/rtn/controller.toml and the rtn system user. Per-host settings go in a
 drop-in, /etc/systemd/system/rtn-controller.service.d/, as terraform
 renders them." \
    rtn-controller.service controller.toml rtn-edge
stage rtn-tools loadtest "RTN tools: loadtest" \
" The load generator of RTN, a real-time relay network: load scenarios
 against a running network, benchmarks, failure injection, reports, and the
 one-machine lab (a global mesh emulated on loopback).
 .
 Also the fleet's Prometheus alert rules (/usr/share/rtn/prometheus/) and
 Grafana dashboard (/usr/share/rtn/grafana/)."

# Release packages get dpkg-deb's default compression (xz); the dev
# profile's test packages fast gzip (they are installed once and deleted).
compress=()
[ "$profile" = release ] || compress=(-Zgzip -z1)
for pkg in rtn-edge rtn-controller rtn-tools; do
    dpkg-deb --root-owner-group "${compress[@]}" --build "$work/$pkg" "$out/${pkg}_${deb_version}_${arch}.deb" >/dev/null
done

# A tarball per binary: the binary, and for the services their unit and
# default config (for hosts without dpkg).
gzip_level=-9
[ "$profile" = release ] || gzip_level=-1
tarball() {
    local bin="$1" pkg="$2"
    local name="$bin-$deb_version-linux-$arch"
    mkdir -p "$work/tar/$name"
    cp -p "$work/$pkg/usr/bin/$bin" "$work/tar/$name/$bin"
    for f in "$work/$pkg"/lib/systemd/system/* "$work/$pkg"/etc/rtn/*; do
        [ -f "$f" ] && cp -p "$f" "$work/tar/$name/"
    done
    tar -C "$work/tar" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -cf - "$name" | gzip -n "$gzip_level" >"$out/$name.tar.gz"
}
tarball edge-node rtn-edge
tarball region-controller rtn-controller
tarball loadtest rtn-tools

(cd "$out" && sha256sum rtn-*.deb -- *-linux-*.tar.gz >SHA256SUMS)
rm -rf "$work"
log "packages in $out"
(cd "$out" && cat SHA256SUMS && du -h rtn-*.deb -- *-linux-*.tar.gz)
