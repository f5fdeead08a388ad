# shellcheck shell=bash disable=SC2034  # sourced; its variables are used by the sourcing script
# Shared by setup.sh and run.sh (sourced, not run). Paths and the kernel choice.
#
# LAB_KERNEL picks the kernel series: 6.18 (default), 6.19 or 6.12.
# LAB_CACHE moves the cache (default: <repo>/.lab-cache, which git ignores).

LAB_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
LAB_REPO=$(cd -- "$LAB_DIR/../.." && pwd)
LAB_CACHE=${LAB_CACHE:-$LAB_REPO/.lab-cache}
LAB_KERNEL=${LAB_KERNEL:-6.18}

# run.sh sets LAB_DIE_STATUS so that its own failures are told apart from the
# command's exit codes.
lab_die() {
  printf 'lab: error: %s\n' "$*" >&2
  exit "${LAB_DIE_STATUS:-1}"
}

lab_say() {
  printf 'lab: %s\n' "$*" >&2
}

# Only "major.minor" is accepted: it ends up in a regular expression and a path.
[[ $LAB_KERNEL =~ ^[0-9]+\.[0-9]+$ ]] ||
  lab_die "LAB_KERNEL must look like 6.18 (got '$LAB_KERNEL')"

# Everything for one kernel series lives here: vmlinuz, config, the few modules
# the guest needs and the initramfs built from them.
LAB_KDIR=$LAB_CACHE/kernels/$LAB_KERNEL
