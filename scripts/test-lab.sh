#!/usr/bin/env bash
# Runs the KVM integration tests, the selftest ports and the private-memory tests
# inside the kernel lab (real TDP kernels under QEMU, see docs/lab.md), once per
# kernel. NODE_KVM_LAB=1 makes the tests require the kernel engine, so a lab that
# silently fell back to the software engine fails instead of passing;
# NODE_KVM_LAB_KERNEL names the kernel, so tests that must not skip there (private
# memory on sw-protected) fail when they would.
#
#   LAB_KERNELS="6.18 sw-protected"   kernels to run on, in order (default; add 7.3 for
#                                     Debian's own 7.3; LAB_KERNEL=x alone runs only x)
#   LAB_TIMEOUT=3600                  seconds per kernel before its guest is stopped
#
# Each kernel is set up first (warm: a check, no network; cold: a download, or the
# sw-protected build). Every kernel runs even when an earlier one fails; the exit
# status is the first failure's. Extra arguments go to vitest on every kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/index.js ] || npm run build:ts

if [[ -n ${LAB_KERNELS:-} ]]; then
  read -r -a kernels <<<"${LAB_KERNELS//,/ }"
elif [[ -n ${LAB_KERNEL:-} ]]; then
  kernels=("$LAB_KERNEL")
else
  kernels=(6.18 sw-protected)
fi
export LAB_TIMEOUT=${LAB_TIMEOUT:-3600}

status=0
summary=()
t_all=$(date +%s)
# The VMM's boot tests (run on 6.18) boot the sw-protected tinyconfig build: set it up
# before the first suite, so a cold cache builds it first and the boots run, not skip.
boot_kernel_ready=0
if [[ " ${kernels[*]} " == *" 6.18 "* ]]; then
  printf '\n=== kernel lab: sw-protected first (the boot tests boot its kernel)\n' >&2
  if LAB_KERNEL=sw-protected bash scripts/lab/setup.sh; then boot_kernel_ready=1; fi
fi
for k in "${kernels[@]}"; do
  printf '\n=== kernel lab: %s\n' "$k" >&2
  t0=$(date +%s)
  if ! LAB_KERNEL=$k bash scripts/lab/setup.sh; then
    summary+=("$k: setup failed")
    ((status)) || status=125
    continue
  fi
  t1=$(date +%s)
  rc=0
  # On 6.18 also the VMM's boot tests: Linux (the lab's tinyconfig 7.3 build) booted
  # with node-kvm to its marker once per pre-fault mode, 30-80 s each.
  # NODE_KVM_LAB_BOOT=1 makes a missing kernel or initramfs a failure there, not a skip.
  boot=()
  if [[ $k == 6.18 ]]; then boot=(test/vmm-boot); fi
  LAB_KERNEL=$k LAB_VERBOSE=1 LAB_ENV_NODE_KVM_LAB=1 LAB_ENV_NODE_KVM_LAB_KERNEL=$k \
    LAB_ENV_NODE_KVM_LAB_BOOT=$boot_kernel_ready \
    bash scripts/lab/run.sh node node_modules/vitest/vitest.mjs run test/kvm test/selftests test/private test/vmm/ "${boot[@]}" "$@" || rc=$?
  t2=$(date +%s)
  summary+=("$k: exit $rc, setup $((t1 - t0)) s, suite $((t2 - t1)) s")
  if ((rc != 0 && status == 0)); then status=$rc; fi
done

printf '\n=== kernel lab summary (%s s in all)\n' "$(($(date +%s) - t_all))" >&2
printf '  %s\n' "${summary[@]}" >&2
exit "$status"
