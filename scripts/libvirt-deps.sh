#!/usr/bin/env bash
# What the libvirt engine's tests need beyond scripts/install-deps.sh: libvirtd with its
# QEMU driver, QEMU, virsh, qemu-img (the tests' disk images), the pieces of the test guest
# (busybox-static, cpio), and
# the libvirt-qemu account libvirtd's QEMU driver insists on (Debian's
# libvirt-daemon-system would create it, with a system libvirtd the tests never use).
# Safe to run again.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES=(libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          busybox-static cpio)
need=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"
fi
getent passwd libvirt-qemu >/dev/null ||
  $SUDO useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu
