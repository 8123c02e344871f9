#!/usr/bin/env bash
# Builds the libvirt engine's test guest from Debian's packages only: Debian's kernel
# (vmlinuz) and a busybox initramfs whose init loads the virtio, balloon, block, network
# and virtio-mem modules, lists the disks and NICs it sees ("vmms-guest: disks vda vdb
# ...", "vmms-guest: nics eth0 ..." with each NIC's MAC), prints "vmms-guest: up" on
# the serial console (pvpanic reports a panic), powers off when the ACPI power button
# is pressed (Stop-VM), and runs what the kernel command line asks for:
#   vmms.soak_mb=N      fill N MiB of tmpfs (memory the guest cannot give back)
#   vmms.poweroff_s=N   power itself off after N seconds ("vmms-guest: powering off")
#   vmms.grow_mb=N      after the marker, fill N MiB of tmpfs 8 MiB a second (memory that
#                       grows past what the guest started with: Dynamic Memory must add)
#   vmms.tick_s=N       print "vmms-guest: tick K" every N seconds, K counting from 1 (a
#                       guest that moved goes on from its own count)
#   vmms.burn=N         N busy loops, one per vCPU it is meant to keep busy (CPU policy)
# Usage: make-guest.sh OUTDIR   -> OUTDIR/vmlinuz, OUTDIR/initrd.img (kept if present and
# built by this version of the script: OUTDIR/guest-version).
set -euo pipefail

out=${1:?usage: make-guest.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
GUEST_VERSION=4  # bump when the initramfs changes
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ "$(cat "$out/guest-version" 2>/dev/null)" = $GUEST_VERSION ]; then
  exit 0
fi
for tool in /bin/busybox cpio; do
  command -v "$tool" >/dev/null || { echo "make-guest.sh: $tool is missing (scripts/libvirt-deps.sh installs it)" >&2; exit 1; }
done
[ -x /bin/busybox ] && /bin/busybox --list | grep -x insmod >/dev/null ||
  { echo "make-guest.sh: /bin/busybox has no insmod (install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# linux-image-amd64 is a metapackage: the kernel is the package it depends on.
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "make-guest.sh: apt knows no linux-image-amd64" >&2; exit 1; }
apt-get download "$kpkg" >/dev/null 2>&1 || apt-get download "$kpkg"
dpkg-deb -x ./"$kpkg"_*.deb kernel
kver=${kpkg#linux-image-}
mods=kernel/lib/modules/$kver/kernel

mkdir -p root/bin root/dev root/proc root/sys root/tmp root/soak root/modules
cp /bin/busybox root/bin/busybox
for m in drivers/input/evdev drivers/acpi/button drivers/virtio/virtio drivers/virtio/virtio_ring \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci drivers/virtio/virtio_balloon drivers/misc/pvpanic/pvpanic drivers/misc/pvpanic/pvpanic-mmio \
         drivers/block/virtio_blk net/core/failover drivers/net/net_failover drivers/net/virtio_net \
         drivers/virtio/virtio_mem; do
  cp "$mods/$m.ko" root/modules/
done
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in evdev button virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon pvpanic pvpanic-mmio \
         virtio_blk failover net_failover virtio_net virtio_mem; do
  insmod /modules/$m.ko || echo "vmms-guest: insmod $m failed"
done
# What the guest was given: its disks and NICs (a NIC as name=MAC).
echo "vmms-guest: disks $(ls /sys/block | grep -v -e '^loop' -e '^ram' | tr '\n' ' ')"
nics=""
for n in /sys/class/net/*; do
  [ "${n##*/}" = lo ] || nics="$nics ${n##*/}=$(cat $n/address)"
done
echo "vmms-guest: nics$nics"
# The soak comes before the marker: the balancer's first look at the guest includes it.
for arg in $(cat /proc/cmdline); do
  case $arg in
  vmms.soak_mb=*)
    mount -t tmpfs -o size=100% tmpfs /soak
    dd if=/dev/zero of=/soak/fill bs=1M count=${arg#*=} 2>/dev/null
    echo "vmms-guest: soaked ${arg#*=} MiB";;
  esac
done
echo "vmms-guest: up ($(grep MemTotal /proc/meminfo | tr -s ' '))"
# Stop-VM presses the ACPI power button: any event on its input device powers off.
for ev in /sys/class/input/event*; do
  if [ "$(cat $ev/device/name 2>/dev/null)" = "Power Button" ]; then
    # input_event: 16 bytes of time, u16 type, u16 code, s32 value; EV_KEY (1),
    # KEY_POWER (116) pressed (1). One open descriptor, so no event falls between reads.
    (exec 3</dev/input/${ev##*/}
     while true; do
       set -- $(dd bs=24 count=1 <&3 2>/dev/null | od -An -tu2 -w24 -v)
       [ "$9" = 1 ] && [ "${10}" = 116 ] && [ "${11}" = 1 ] && break
     done
     echo "vmms-guest: power button"; poweroff -f) &
  fi
done
for arg in $(cat /proc/cmdline); do
  case $arg in
  vmms.poweroff_s=*)
    (sleep ${arg#*=}; echo "vmms-guest: powering off"; poweroff -f) &;;
  vmms.grow_mb=*)
    mkdir -p /grow && mount -t tmpfs -o size=4g tmpfs /grow
    (i=0; while [ $i -lt ${arg#*=} ]; do
       dd if=/dev/zero of=/grow/$i bs=1M count=8 2>/dev/null; i=$((i + 8)); sleep 1
     done; echo "vmms-guest: grew ${arg#*=} MiB") &;;
  vmms.tick_s=*)
    (k=0; while true; do sleep ${arg#*=}; k=$((k + 1)); echo "vmms-guest: tick $k"; done) &;;
  vmms.burn=*)
    i=0; while [ $i -lt ${arg#*=} ]; do (while :; do :; done) & i=$((i + 1)); done;;
  esac
done
while true; do
  sleep 5
  echo "vmms-guest: $(grep MemTotal /proc/meminfo | tr -s ' ')"
done
INIT
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.tmp"
cp kernel/boot/vmlinuz-"$kver" "$out/vmlinuz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo $GUEST_VERSION > "$out/guest-version"
echo "make-guest.sh: $out/vmlinuz ($kver) and $out/initrd.img"
