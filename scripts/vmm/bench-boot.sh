#!/usr/bin/env bash
# The boot benchmark in the kernel lab, from one command (npm run bench:boot):
# builds the test initramfs, then runs `node-kvm bench --boot` inside the lab
# (LAB_KERNEL, default 6.18) against the lab's tinyconfig 7.3 kernel, QEMU
# (-enable-kvm, with and without -mem-prealloc) booting the same files inside
# the same lab run as the reference. Results: the table on stdout, JSON and
# SVG under OUT (default .lab-cache/out or the lab cache's out/).
#
#   BOOT_KERNEL=path   bzImage to boot (default: the lab's sw-protected 7.3 build)
#   BOOT_REPS=3        repetitions per variant
#   Extra arguments go to `node-kvm bench --boot` (e.g. --boot-backing anon --no-reference).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../lab/lib.sh
. scripts/lab/lib.sh
[ -f dist/index.js ] || npm run build:ts
out=${LAB_OUT_DIR:-$LAB_CACHE/out}
mkdir -p "$out"
kernel=${BOOT_KERNEL:-$LAB_CACHE/kernels/sw-protected/vmlinuz}
[[ -s $kernel ]] || lab_die "no kernel at $kernel (LAB_KERNEL=sw-protected npm run lab:setup builds it, or set BOOT_KERNEL)"
bash scripts/vmm/build-initramfs.sh "$out/boot-bench-initrd.cpio.gz" reboot NODE_KVM_BOOT_MARKER >&2
# The guest sees $out as /run/lab-out.
LAB_OUT_DIR=$out LAB_VERBOSE=1 LAB_TIMEOUT=${LAB_TIMEOUT:-5400} \
  bash scripts/lab/run.sh node dist/cli/main.js bench --boot --kernel "$kernel" \
  --initrd /run/lab-out/boot-bench-initrd.cpio.gz --boot-reps "${BOOT_REPS:-3}" \
  --json /run/lab-out/boot-bench.json --chart /run/lab-out/boot-bench.svg "$@"
echo "results: $out/boot-bench.json, $out/boot-bench.svg" >&2
