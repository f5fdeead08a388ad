#!/usr/bin/env bash
# Prepare the kernel lab: host tools, a Debian kernel with real (TDP) KVM, and an
# initramfs that chroots into the host's root shared over 9p. See docs/lab.md.
#
# Idempotent: once the kernel and initramfs are in the cache, a second run only
# checks them and touches neither apt nor the network.
#
#   LAB_KERNEL=6.18            kernel series (default 6.18): 6.12 comes from trixie,
#                              any other series (6.19, 7.3, ...) from trixie-backports;
#                              sw-protected builds one from source (build-kernel.sh)
#   LAB_REFRESH=1              look for a newer kernel of the series even if one is cached
#   LAB_MIRROR=URI             Debian mirror to use instead of the one apt is set up with
#   LAB_SUITE=NAME             suite to take the kernel from (default: see below)
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=debian-apt.sh
. "$LAB_DIR/debian-apt.sh"

HOST_PACKAGES=(qemu-system-x86 busybox-static xz-utils cpio)

# Modules the guest needs. Their dependencies are worked out from each module's own
# .modinfo (the package has no modules.dep), which gives the order
# irqbypass, ccp, kvm, kvm-amd, netfs, 9pnet, 9pnet_virtio, 9p, overlay.
# virtio_console carries the command's stdout and stderr to the host.
WANTED_MODULES=(kvm_amd 9pnet_virtio 9p overlay virtio_console)

# Trixie itself ships 6.12; newer series come from trixie-backports.
if [[ -n ${LAB_SUITE:-} ]]; then
  SUITE=$LAB_SUITE
elif [[ $LAB_KERNEL == 6.12 ]]; then
  SUITE=trixie
else
  SUITE=trixie-backports
fi

APT_DIR=$LAB_CACHE/apt
DEB_DIR=$LAB_CACHE/debs

# ---------------------------------------------------------------- host tools

ensure_host_packages() {
  ensure_packages "host packages" "${HOST_PACKAGES[@]}"
}

# ------------------------------------------------------------- the kernel

# Every linux-image-<series>.N[+tag]-amd64 in the suite, newest first. The
# -unsigned and -dbg variants are left out; the signed image boots under QEMU the same.
kernel_candidates() {
  private_apt apt-cache pkgnames "linux-image-$LAB_KERNEL." |
    grep -E "^linux-image-${LAB_KERNEL//./\\.}\.[0-9]+(\+[a-z0-9.~]+)?-amd64$" |
    sort -rV || true
}

# The packages to unpack for one image package. Up to 6.18 the image package holds
# vmlinuz and the modules; later ones are empty and depend on linux-binary-<abi>
# (vmlinuz), linux-modules-<abi> and linux-base-<abi> (config, modules.builtin).
# So: the image plus those of its direct dependencies named linux-*-<abi> that the
# suite has. Fails (status 1) when linux-binary or linux-modules is named but absent,
# as happens when the archive keeps an old image but has dropped its modules. (The
# 6.18 images name a linux-base-<abi> that is gone too; they do not need it.)
kernel_parts() {
  local pkg=$1 abi=${1#linux-image-}
  printf '%s\n' "$pkg"
  # apt-cache depends shows a package it cannot find as <name>.
  private_apt apt-cache depends "$pkg" 2>/dev/null | awk -v abi="$abi" '
    $1 == "Depends:" || $1 == "|Depends:" {
      name = $2
      missing = (name ~ /^<.*>$/)
      gsub(/[<>]/, "", name)
      if (name !~ /^linux-/ || substr(name, length(name) - length(abi) + 1) != abi) next
      if (!missing) print name
      else if (name ~ /^linux-(binary|modules)-/) bad = 1
    }
    END { exit bad }'
}

# Copies one module (decompressed) and, first, the modules it depends on, so the
# order file lists every module after its dependencies.
declare -A MODULE_PATH=() MODULE_DONE=() MODULE_BUILTIN=()

module_text() {
  case $1 in
  *.ko.xz) xz -dc -- "$1" ;;
  *.ko.zst) zstd -qdc -- "$1" ;;
  *.ko.gz) gzip -dc -- "$1" ;;
  *) cat -- "$1" ;;
  esac
}

add_module() {
  local name=${1//-/_} outdir=$2 deps dep
  [[ -n ${MODULE_DONE[$name]:-} ]] && return 0
  MODULE_DONE[$name]=1
  if [[ -z ${MODULE_PATH[$name]:-} ]]; then
    # Built into the kernel: nothing to load.
    [[ -n ${MODULE_BUILTIN[$name]:-} ]] && return 0
    lab_die "kernel $KREL has no module or built-in '$name'"
  fi
  module_text "${MODULE_PATH[$name]}" >"$outdir/$name.ko" ||
    lab_die "cannot decompress ${MODULE_PATH[$name]}"
  # .modinfo holds NUL-separated key=value strings, among them depends=a,b.
  # (awk reads to the end, so no stage of the pipe dies of SIGPIPE.)
  deps=$(tr '\0' '\n' <"$outdir/$name.ko" | awk '/^depends=/ && !n++ { print substr($0, 9) }')
  local -a dep_list=()
  IFS=, read -r -a dep_list <<<"$deps"
  for dep in "${dep_list[@]}"; do
    if [[ -n $dep ]]; then add_module "$dep" "$outdir"; fi
  done
  printf '%s.ko\n' "$name" >>"$outdir/order"
}

fetch_kernel() {
  local mirror pkg deb tmp modroot f n
  mirror=$(detect_mirror)
  prepare_private_apt "$mirror"

  lab_say "reading $SUITE from $mirror"
  private_apt apt-get update >"$APT_DIR/update.log" 2>&1 ||
    lab_die "apt-get update for $SUITE failed; see $APT_DIR/update.log"

  # The newest candidate whose parts are all there.
  local cand list parts=() skipped=()
  pkg=
  while IFS= read -r cand; do
    if list=$(kernel_parts "$cand"); then
      mapfile -t parts <<<"$list"
      pkg=$cand
      break
    fi
    skipped+=("$cand")
  done < <(kernel_candidates)
  if ((${#skipped[@]})); then
    lab_say "skipped (parts missing from $SUITE): ${skipped[*]}"
  fi
  if [[ -z $pkg ]]; then
    local series
    series=$(private_apt apt-cache pkgnames linux-image- |
      sed -nE 's/^linux-image-([0-9]+\.[0-9]+)\.[0-9]+(\+[a-z0-9.~]+)?-amd64$/\1/p' | sort -uV | paste -sd' ')
    lab_die "no complete linux-image-$LAB_KERNEL.*-amd64 in $SUITE at $mirror (LAB_KERNEL=$LAB_KERNEL); series with images there: ${series:-none} (some may lack their modules)"
  fi

  # Already unpacked this exact package: nothing more to do.
  if [[ -s $LAB_KDIR/package && $(<"$LAB_KDIR/package") == "$pkg" && -s $LAB_KDIR/vmlinuz ]]; then
    lab_say "$pkg is current"
    return 0
  fi

  local debs=() d
  mkdir -p "$DEB_DIR"
  for d in "${parts[@]}"; do
    if ! compgen -G "$DEB_DIR/${d}_*.deb" >/dev/null; then
      lab_say "downloading $d"
      (cd "$DEB_DIR" && private_apt apt-get download "$d") >"$APT_DIR/download.log" 2>&1 ||
        lab_die "apt-get download $d failed; see $APT_DIR/download.log"
    fi
    deb=$(compgen -G "$DEB_DIR/${d}_*.deb" | head -n 1 || true)
    [[ -n $deb ]] || lab_die "apt-get download $d left no .deb in $DEB_DIR"
    debs+=("$deb")
  done

  tmp=$LAB_CACHE/tmp/extract-$LAB_KERNEL
  rm -rf -- "$tmp"
  mkdir -p "$tmp/root" "$tmp/out/modules"
  for deb in "${debs[@]}"; do
    lab_say "unpacking $(basename -- "$deb")"
    dpkg-deb -x "$deb" "$tmp/root" || lab_die "dpkg-deb -x $deb failed"
  done
  deb="${parts[*]}"

  # The kernel release is the name of its modules folder (usr/lib or lib).
  modroot=$(compgen -G "$tmp/root/usr/lib/modules/*" || compgen -G "$tmp/root/lib/modules/*" || true)
  [[ -n $modroot && $(wc -l <<<"$modroot") == 1 ]] ||
    lab_die "expected one modules folder in $deb"
  KREL=$(basename -- "$modroot")
  # Older packages put vmlinuz and config in /boot, newer ones in the modules folder.
  for f in "$tmp/root/boot/vmlinuz-$KREL" "$modroot/vmlinuz" ""; do
    [[ -s $f ]] && break
  done
  [[ -n $f ]] || lab_die "$deb has no boot/vmlinuz-$KREL nor modules/$KREL/vmlinuz"
  cp -- "$f" "$tmp/out/vmlinuz"
  for f in "$tmp/root/boot/config-$KREL" "$modroot/config"; do
    if [[ -s $f ]]; then
      cp -- "$f" "$tmp/out/config"
      break
    fi
  done

  # name -> file for every module in the package; and the built-in ones.
  while IFS= read -r f; do
    n=$(basename -- "$f")
    n=${n%%.ko*}
    MODULE_PATH[${n//-/_}]=$f
  done < <(find "$modroot" -name '*.ko*' -type f)
  if [[ -r $modroot/modules.builtin ]]; then
    while IFS= read -r f; do
      n=$(basename -- "$f" .ko)
      MODULE_BUILTIN[${n//-/_}]=1
    done <"$modroot/modules.builtin"
  fi
  : >"$tmp/out/modules/order"
  for n in "${WANTED_MODULES[@]}"; do
    add_module "$n" "$tmp/out/modules"
  done

  printf '%s\n' "$KREL" >"$tmp/out/release"
  printf '%s\n' "$pkg" >"$tmp/out/package"
  printf '%s\n' "${WANTED_MODULES[*]}" >"$tmp/out/wanted"
  # Swap the finished folder in whole, so an interrupted run leaves no half kernel.
  rm -rf -- "$LAB_KDIR.old"
  mkdir -p "$(dirname -- "$LAB_KDIR")"
  [[ -e $LAB_KDIR ]] && mv -- "$LAB_KDIR" "$LAB_KDIR.old"
  mv -- "$tmp/out" "$LAB_KDIR"
  rm -rf -- "$LAB_KDIR.old" "$tmp"
  # Everything needed is copied out; the packages (100-160 MB) are not kept.
  rm -f -- "${debs[@]}"
  lab_say "kernel $KREL ready: $(tr '\n' ' ' <"$LAB_KDIR/modules/order")"
}

# ------------------------------------------------------------ the initramfs

build_initramfs() {
  local busybox=/bin/busybox stamp tmp m img
  [[ -x $busybox ]] || lab_die "$busybox is missing (package busybox-static)"
  command -v cpio >/dev/null || lab_die "cpio is missing (package cpio)"

  # Named after a hash of the init script, the module set and busybox, so checkouts
  # with different init scripts can share one cache: each finds its own initramfs.
  stamp=$(lab_initramfs_stamp)
  img=$LAB_KDIR/initramfs-$stamp.img
  [[ -s $img ]] && return 0

  tmp=$LAB_CACHE/tmp/initramfs-$LAB_KERNEL
  rm -rf -- "$tmp"
  mkdir -p "$tmp"/{bin,dev,proc,sys,lib/modules,hostroot,newroot,lab,labout,rw}
  cp -- "$busybox" "$tmp/bin/busybox"
  ln -s busybox "$tmp/bin/sh"
  cp -- "$LAB_DIR/init.sh" "$tmp/init"
  chmod 0755 "$tmp/init"
  while IFS= read -r m; do
    cp -- "$LAB_KDIR/modules/$m" "$tmp/lib/modules/$m"
  done <"$LAB_KDIR/modules/order"
  cp -- "$LAB_KDIR/modules/order" "$tmp/lib/modules/order"
  # The kernel opens /dev/console for /init before anything is mounted.
  if [[ $(id -u) == 0 ]]; then
    mknod -m 0600 "$tmp/dev/console" c 5 1
  fi

  (cd "$tmp" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
    gzip -6n >"$img.new" ||
    lab_die "building the initramfs failed"
  mv -- "$img.new" "$img"
  rm -rf -- "$tmp"
  # Keep the four newest (about 1-2 MB each); older checkouts rebuild theirs.
  # shellcheck disable=SC2012  # our own names
  ls -1t -- "$LAB_KDIR"/initramfs-*.img 2>/dev/null | tail -n +5 | xargs -r rm -f --
  rm -f -- "$LAB_KDIR/initramfs.img" "$LAB_KDIR/initramfs.stamp"
  lab_say "initramfs built ($(du -h "$img" | cut -f1))"
}

# ------------------------------------------------------------------- main

# Scratch folders of this kernel series go whether the run succeeds or not.
cleanup_tmp() {
  rm -rf -- "$LAB_CACHE/tmp/extract-$LAB_KERNEL" "$LAB_CACHE/tmp/initramfs-$LAB_KERNEL" \
    "$LAB_CACHE/tmp/build-$LAB_KERNEL"
  rmdir -- "$LAB_CACHE/tmp" 2>/dev/null || true
}

# shellcheck source=build-kernel.sh
. "$LAB_DIR/build-kernel.sh"

main() {
  trap cleanup_tmp EXIT
  ensure_host_packages
  command -v qemu-system-x86_64 >/dev/null ||
    lab_die "qemu-system-x86_64 not found even though qemu-system-x86 is installed"

  mkdir -p "$LAB_CACHE"
  # Several checkouts (and CI) may share the cache: one setup per kernel at a time.
  exec 9>"$LAB_CACHE/setup-$LAB_KERNEL.lock"
  if ! flock -n 9; then
    lab_say "another setup of LAB_KERNEL=$LAB_KERNEL is running; waiting for it"
    flock 9
  fi
  if lab_kernel_is_built; then
    if [[ ${LAB_REFRESH:-0} == 1 ]] || ! built_kernel_is_current; then
      build_kernel
    fi
    build_initramfs
    lab_say "ready: kernel $(<"$LAB_KDIR/release") ($(<"$LAB_KDIR/package")) in $LAB_KDIR (LAB_KERNEL=$LAB_KERNEL)"
    return 0
  fi
  # A cached kernel whose module set differs from WANTED_MODULES is unpacked again.
  if [[ -e $LAB_KDIR && ! ( -s $LAB_KDIR/wanted && $(<"$LAB_KDIR/wanted") == "${WANTED_MODULES[*]}" ) ]]; then
    rm -f -- "$LAB_KDIR/package" "$LAB_KDIR/modules/order"
  fi
  # Fetched when asked to or when incomplete.
  if [[ ${LAB_REFRESH:-0} == 1 || ! -s $LAB_KDIR/vmlinuz || ! -s $LAB_KDIR/release ||
    ! -s $LAB_KDIR/modules/order ]]; then
    fetch_kernel
  fi
  build_initramfs
  lab_say "ready: kernel $(<"$LAB_KDIR/release") in $LAB_KDIR (LAB_KERNEL=$LAB_KERNEL)"
}

main "$@"
