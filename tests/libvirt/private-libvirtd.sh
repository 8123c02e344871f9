#!/usr/bin/env bash
# A private libvirtd for tests and demos, never the system's: its own sockets, pid
# file, configuration, state and logs under DIR, in its own mount namespace (bind
# mounts over /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and
# /etc/libvirt, which libvirtd's paths are fixed to). QEMU runs as root with no
# security driver. Prints the URI vmmsd --libvirt-uri takes.
#   private-libvirtd.sh start DIR   -> prints qemu:///system?socket=DIR/run/libvirt-sock
#   private-libvirtd.sh stop DIR    -> destroys its domains and networks (their bridges), stops it
set -euo pipefail

cmd=${1:?usage: private-libvirtd.sh start|stop DIR}
dir=${2:?usage: private-libvirtd.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
uri="qemu:///system?socket=$dir/run/libvirt-sock"

case $cmd in
start)
  command -v libvirtd >/dev/null || { echo "private-libvirtd.sh: libvirtd is missing (scripts/libvirt-deps.sh)" >&2; exit 1; }
  # libvirtd's QEMU driver refuses to start without the account it would run QEMU as.
  getent passwd libvirt-qemu >/dev/null ||
    { echo "private-libvirtd.sh: no libvirt-qemu account (scripts/libvirt-deps.sh creates it)" >&2; exit 1; }
  mkdir -p "$dir"/{etc,run,lib,log,cache} "$dir/lib/dnsmasq"  # dnsmasq/: networks' MAC lists
  cp -rn /etc/libvirt/. "$dir/etc/" 2>/dev/null || true
  cat > "$dir/etc/libvirtd.conf" <<CONF
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
  cat > "$dir/etc/qemu.conf" <<CONF
user = "root"
group = "root"
security_driver = "none"
stdio_handler = "file"
dynamic_ownership = 0
CONF
  rm -f "$dir/run/libvirt-sock"
  unshare --mount --propagation private sh -c '
    d=$1
    mount --bind "$d/etc" /etc/libvirt
    mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    mount --bind "$d/run" /run/libvirt
    mount --bind "$d/lib" /var/lib/libvirt
    mount --bind "$d/log" /var/log/libvirt
    mount --bind "$d/cache" /var/cache/libvirt
    exec libvirtd -p /run/libvirt/libvirtd.pid -f /etc/libvirt/libvirtd.conf
  ' sh "$dir" </dev/null >>"$dir/libvirtd.out" 2>&1 &
  for _ in $(seq 100); do
    [ -S "$dir/run/libvirt-sock" ] && { echo "$uri"; exit 0; }
    sleep 0.1
  done
  echo "private-libvirtd.sh: libvirtd did not come up in 10 s: $(tail -3 "$dir/libvirtd.out" "$dir/log/libvirtd.log" 2>/dev/null)" >&2
  exit 1;;
stop)
  if [ -S "$dir/run/libvirt-sock" ]; then
    for dom in $(virsh -c "$uri" list --name 2>/dev/null); do
      virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
    done
    for net in $(virsh -c "$uri" net-list --name 2>/dev/null); do
      virsh -c "$uri" net-destroy "$net" >/dev/null 2>&1 || true
    done
  fi
  if [ -s "$dir/run/libvirtd.pid" ]; then
    pid=$(cat "$dir/run/libvirtd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi;;
*)
  echo "usage: private-libvirtd.sh start|stop DIR" >&2; exit 2;;
esac
