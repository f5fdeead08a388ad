# shellcheck shell=bash disable=SC2034  # sourced; its variables are used by the sourcing script
# Shared by setup.sh and run.sh (sourced, not run). Paths and the kernel choice.
#
# LAB_KERNEL picks the kernel: a Debian series (6.18, the default; 6.12, 7.3, ...) or
# sw-protected (built from Debian's source with KVM_SW_PROTECTED_VM, see setup.sh).
# LAB_CACHE moves the cache. By default it is <repo>/.lab-cache when that folder
# exists (older checkouts), otherwise ${XDG_CACHE_HOME:-$HOME/.cache}/node-kvm/lab,
# outside the checkout, so every clone on the machine (CI's fresh ones too) shares
# the kernels, the built kernel and its ccache.

LAB_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
LAB_REPO=$(cd -- "$LAB_DIR/../.." && pwd)
if [[ -z ${LAB_CACHE:-} ]]; then
  if [[ -d $LAB_REPO/.lab-cache ]]; then
    LAB_CACHE=$LAB_REPO/.lab-cache
  else
    LAB_CACHE=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/node-kvm/lab
  fi
fi
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

# Only "major.minor" or a built kernel's name is accepted: it ends up in a regular
# expression and a path.
[[ $LAB_KERNEL =~ ^[0-9]+\.[0-9]+$ || $LAB_KERNEL == sw-protected ]] ||
  lab_die "LAB_KERNEL must be a Debian series like 6.18 or 'sw-protected' (got '$LAB_KERNEL')"

# True for kernels the lab builds itself from source (everything built in, no modules).
lab_kernel_is_built() {
  [[ $LAB_KERNEL == sw-protected ]]
}

# Everything for one kernel lives here: vmlinuz, config, the few modules the guest
# needs (none for a built kernel) and the initramfs built from them.
LAB_KDIR=$LAB_CACHE/kernels/$LAB_KERNEL

# The hash that names this checkout's initramfs for the kernel: its init script, the
# kernel's module list and busybox.
lab_initramfs_stamp() {
  cat -- "$LAB_DIR/init.sh" "$LAB_KDIR/modules/order" /bin/busybox 2>/dev/null | sha256sum | cut -c1-16
}
