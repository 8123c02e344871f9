#!/usr/bin/env bash
# Installs the Debian packages vmms builds and tests with; safe to run again.
# Unicorn comes from Debian 13 (trixie), pinned low so nothing else is taken from it:
# 2.1.1 runs call-heavy guest code ~24x faster than bookworm's 2.0.1.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES=(
  build-essential meson ninja-build pkg-config clang-format
  libglib2.0-dev libglib2.0-dev-bin libglib2.0-bin
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libsqlite3-dev sqlite3
  libgrpc-dev protobuf-compiler-grpc
  python3-grpcio python3-protobuf python3-gi
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

if [ ! -f /etc/apt/sources.list.d/vmms-trixie.sources ]; then
  $SUDO tee /etc/apt/sources.list.d/vmms-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
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
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
$SUDO apt-get install -y -q --no-install-recommends -t trixie libunicorn-dev
