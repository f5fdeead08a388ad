#!/usr/bin/env bash
# Builds the test initramfs for `node-kvm boot`: Debian's static busybox and an
# /init that prints a marker line and then reboots (the default: Linux resets
# through the i8042 with reboot=k, which ends the VMM with status 0) or powers
# off (the kernel says "reboot: Power down", which the VMM also takes as the end).
#
# usage: scripts/vmm/build-initramfs.sh OUT.cpio.gz [reboot|poweroff] [MARKER]
# Needs busybox-static and cpio (apt-get install busybox-static cpio).
set -euo pipefail

out=${1:?usage: build-initramfs.sh OUT.cpio.gz [reboot|poweroff] [MARKER]}
action=${2:-reboot}
marker=${3:-NODE_KVM_BOOT_MARKER}
case $action in reboot|poweroff) ;; *) echo "action must be reboot or poweroff" >&2; exit 2 ;; esac

busybox=${BUSYBOX:-/bin/busybox}
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  echo "build-initramfs.sh: $busybox is not a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
command -v cpio >/dev/null || { echo "build-initramfs.sh: cpio is missing (apt-get install cpio)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys}
cp "$busybox" "$root/bin/busybox"
for tool in sh mount echo cat reboot poweroff uname; do ln -s busybox "$root/bin/$tool"; done
cat > "$root/init" <<INIT
#!/bin/busybox sh
# The marker first, from the shell itself: no fork, no signal before it.
echo "$marker"
/bin/busybox mount -t proc proc /proc
# Another vcpu's printk can land inside that line (seen with 2 vcpus: the marker split by
# "IPI shorthand broadcast: enabled"): keep the kernel off the console from here, and say
# the marker again on a line of its own. Watchers take its first whole appearance.
echo 1 > /proc/sys/kernel/printk
echo "$marker"
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
echo "kernel \$(/bin/busybox uname -r), uptime \$(/bin/busybox cat /proc/uptime)"
/bin/busybox $action -f
INIT
chmod +x "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -9 > "$out"
echo "$out: $(stat -c %s "$out") bytes, /init prints '$marker' then runs '$action -f'"
