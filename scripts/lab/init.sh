#!/bin/sh
# /init of the kernel lab's initramfs (busybox sh inside the guest; setup.sh copies
# this file in). It loads KVM and 9p, puts the host's root (shared read-only over 9p)
# under a tmpfs overlay so programs can write, chroots into it and runs the command
# that run.sh left in the control share. The command's stdout and stderr go to two
# virtio serial ports that run.sh connects to its own stdout and stderr; everything
# else, kernel messages included, goes to the console (ttyS0), which run.sh logs to
# a file. The exit code is written to the control share, then the guest powers off.
#
# Shares (mount tags): hostroot = host /, read-only; labctl = run.sh's folder for this
# run (cmd.sh in, status out); labout = a writable folder for the command's results.

PATH=/bin
export PATH
/bin/busybox --install -s /bin

mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

say() { echo "lab-init: $*"; }

# Tell run.sh why (when the control share is there), then stop the machine.
die() {
  say "error: $*"
  if mountpoint -q /lab; then
    echo "$*" >/lab/error
  fi
  poweroff -f
  sleep 10
}

# 512000 is the most the virtio transport takes (larger values are cut to it).
P9='trans=virtio,version=9p2000.L,msize=512000'

# Modules are in dependency order (setup.sh worked it out). A kernel the lab built
# itself has everything built in and an empty list.
if [ -s /lib/modules/order ]; then
  while read -r m; do
    insmod "/lib/modules/$m" || die "insmod $m failed"
  done </lib/modules/order
fi

mount -t 9p -o "$P9,cache=none" labctl /lab || die "cannot mount the control share"
[ -r /lab/cmd.sh ] || die "no cmd.sh in the control share"

# The host's files do not change under a run, so the guest may cache them (loose):
# node start-up reads many files, and every uncached 9p access is a round trip.
mount -t 9p -o "$P9,ro,cache=loose" hostroot /hostroot || die "cannot mount the host's root"
mount -t tmpfs -o mode=0755 tmpfs /rw || die "cannot mount a tmpfs"
mkdir -p /rw/upper /rw/work
# Writes inside the guest land in this tmpfs and vanish at power-off.
mount -t overlay -o lowerdir=/hostroot,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
  die "cannot mount the overlay over the host's root"

R=/newroot
mount -t proc proc $R/proc || die "cannot mount /proc in the chroot"
mount -t sysfs sysfs $R/sys || die "cannot mount /sys in the chroot"
# devtmpfs gives the guest's own /dev/kvm (and null, zero, urandom, ...).
mount -t devtmpfs devtmpfs $R/dev || die "cannot mount /dev in the chroot"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mkdir -p $R/run/lab $R/run/lab-out
mount --bind /lab $R/run/lab || die "cannot bind the control share"
if mount -t 9p -o "$P9,cache=none" labout /labout; then
  mount --bind /labout $R/run/lab-out
fi
[ -c $R/dev/kvm ] || die "no /dev/kvm in the guest (kvm_amd did not start?)"

# The virtio serial ports are named by run.sh; find their device nodes by name.
port() {
  for p in /sys/class/virtio-ports/*; do
    if [ "$(cat "$p/name" 2>/dev/null)" = "$1" ]; then
      echo "/dev/${p##*/}"
      return 0
    fi
  done
  return 1
}
out=$(port lab.stdout) || die "no virtio port lab.stdout"
err=$(port lab.stderr) || die "no virtio port lab.stderr"

# How fast the emulation runs right now: a fixed CPU loop, timed. SPEED_REF is what
# it takes on an idle 2-core machine under single-threaded TCG; on a busy machine it
# takes longer, and the ratio (at least 1) scales the timeouts of the tests and of
# `node-kvm selftest` (NODE_KVM_TIMEOUT_SCALE, read by lib/time-scale.ts and
# vitest.config.ts), so a slow run is slow, not failed.
SPEED_LOOPS=20000
SPEED_REF=0.35
t0=$(cut -d' ' -f1 /proc/uptime)
i=0
while [ $i -lt $SPEED_LOOPS ]; do i=$((i + 1)); done
t1=$(cut -d' ' -f1 /proc/uptime)
scale=$(awk -v a="$t0" -v b="$t1" -v r="$SPEED_REF" 'BEGIN { s = (b - a) / r; if (s < 1) s = 1; printf "%.2f", s }')
echo "$t0 $t1 $scale" >/lab/speed
say "speed loop $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s (reference $SPEED_REF s): timeout scale $scale"

cut -d' ' -f1 /proc/uptime >/lab/started
chroot $R /usr/bin/env -i NODE_KVM_TIMEOUT_SCALE="$scale" /bin/sh /run/lab/cmd.sh </dev/null >"$out" 2>"$err"
echo $? >/lab/status.tmp
mv /lab/status.tmp /lab/status
cut -d' ' -f1 /proc/uptime >/lab/finished

umount $R/run/lab $R/run/lab-out 2>/dev/null
poweroff -f
sleep 10
