#!/usr/bin/env bash
# Installs the Debian packages vmms builds and tests with; safe to run again.
# Unicorn comes from Debian 13 (trixie), pinned low so nothing else is taken from it:
# 2.1.1 runs call-heavy guest code ~24x faster than bookworm's 2.0.1. Trixie is fetched
# from the Debian mirror this machine's apt sources already use: no host name is
# written here.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES=(
  build-essential meson ninja-build pkg-config clang-format
  libglib2.0-dev libglib2.0-dev-bin libglib2.0-bin
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libsqlite3-dev sqlite3
  # the migration stream's and saved file's CRC-32 at PCLMUL speed (vmwp falls back to zlib's)
  libdeflate-dev
  libgrpc-dev protobuf-compiler-grpc
  # the JSON vmctl -Json, hvctl --json and the C benchmarks print
  libjson-glib-dev
  # the libvirt engine (vmmsd builds it when libvirt-dev is there), and the libvirtd and QEMU
  # test_libvirt_quick starts privately (scripts/libvirt-deps.sh adds the rest the boots need)
  libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  python3-grpcio python3-protobuf python3-gi
  # the benchmark and seed-case plots (bench/dm_seed_case.py, test_dm_seed)
  python3-matplotlib
  # vmmsd --metrics (libsoup; glib-networking for its TLS), and the metrics test's Prometheus and parser
  libsoup-3.0-dev glib-networking prometheus python3-prometheus-client
  # the cluster's shared state (vmmsd --cluster) and the cluster tests' private members
  etcd-server etcd-client
  # the man pages' source format
  scdoc
  dbus dbus-bin dbus-daemon
  # busctl, one of the D-Bus tests' clients; the package installs without systemd as init
  systemd
)

need=()
for p in "${PACKAGES[@]}" libunicorn-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ! pkg-config --atleast-version=2.1 unicorn 2>/dev/null; then
  need+=(libunicorn-dev)
fi
[ ${#need[@]} -eq 0 ] && exit 0

# The URI of the first source of the running release's main archive, read from both of
# apt's formats: one-line (sources.list, *.list) and deb822 (*.sources).
debian_mirror() {
  local codename f
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || return 0
  {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v c="$codename" '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == c) print $i
      }'
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && [ "$f" != /etc/apt/sources.list.d/vmms-trixie.sources ] || continue
      awk -v c="$codename" '
        function flush(  n, k, u) {
          if ((" " types " ") ~ / deb / && (" " suites " ") ~ (" " c " ")) {
            n = split(uris, u, " "); for (k = 1; k <= n; k++) print u[k]
          }
          types = suites = uris = ""
        }
        /^[ \t]*$/ { flush(); next }
        /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
        /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
        /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
        END { flush() }' "$f"
    done
  } | head -n 1
}

if [ ! -f /etc/apt/sources.list.d/vmms-trixie.sources ]; then
  mirror=$(debian_mirror)
  if [ -z "$mirror" ]; then
    echo "install-deps: no apt source for this release's Debian archive in /etc/apt/sources.list or" \
      "/etc/apt/sources.list.d/; add one, or install libunicorn-dev >= 2.1 by hand" >&2
    exit 1
  fi
  $SUDO tee /etc/apt/sources.list.d/vmms-trixie.sources >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO tee /etc/apt/preferences.d/vmms-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${PACKAGES[@]}"
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends -t trixie libunicorn-dev
