# shellcheck shell=bash
# Sourced by setup.sh for LAB_KERNEL=sw-protected: builds a kernel with
# CONFIG_KVM_SW_PROTECTED_VM from Debian's linux-source package (no Debian kernel
# enables it), `make tinyconfig` plus the committed fragment sw-protected.config,
# everything built in. The bzImage is cached under $LAB_KDIR, keyed by the fragment's
# hash, the source package's version and RECIPE below: a warm setup checks the key
# and builds nothing (and, unless LAB_REFRESH=1, uses no network). ccache keeps its
# objects in $LAB_CACHE/ccache, so a changed fragment rebuilds in about 1.5 minutes
# instead of 12-40.
#
#   LAB_SOURCE_PACKAGE=linux-source-7.3   the source package (suite trixie-backports)
#   LAB_JOBS=N                            make -j (default: the number of CPUs)

# Bump when the steps below change in a way that changes the kernel.
RECIPE=1
SOURCE_PACKAGE=${LAB_SOURCE_PACKAGE:-linux-source-7.3}
FRAGMENT=$LAB_DIR/sw-protected.config
BUILD_TOOLS=(gcc make flex bison bc libelf-dev xz-utils)

fragment_hash() {
  sha256sum -- "$FRAGMENT" | cut -c1-16
}

# The key a cached build must carry: recipe, fragment, source package and version.
build_key() {
  printf 'recipe %s fragment %s source %s %s\n' "$RECIPE" "$(fragment_hash)" "$SOURCE_PACKAGE" "$1"
}

# Cached and current without asking the archive: the key's recipe and fragment part
# match (the source version is whatever was built; LAB_REFRESH=1 looks for a newer).
built_kernel_is_current() {
  [[ -s $LAB_KDIR/vmlinuz && -s $LAB_KDIR/build-key && -s $LAB_KDIR/release ]] || return 1
  local have
  have=$(<"$LAB_KDIR/build-key")
  [[ $have == "recipe $RECIPE fragment $(fragment_hash) source $SOURCE_PACKAGE "* ]]
}

ensure_build_tools() {
  ensure_packages "build tools" "${BUILD_TOOLS[@]}"
  # ccache is optional: installed when we can (as root), otherwise the build goes without it.
  if ! is_installed ccache && [[ $(id -u) == 0 ]]; then ensure_packages ccache ccache; fi
}

# Checks that every CONFIG_X=y / =n / =value line of the fragment survived
# olddefconfig (a dependency missing from the fragment silently drops an option).
check_config() {
  local config=$1 line name want got bad=()
  while IFS= read -r line; do
    [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || continue
    name=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
    if got=$(grep -m1 -E "^$name=" "$config"); then
      got=${got#*=}
    else
      got=n
    fi
    [[ $got == "$want" ]] || bad+=("$name=$want (got $got)")
  done <"$FRAGMENT"
  ((${#bad[@]} == 0)) || lab_die "the kernel config lost options of $(basename -- "$FRAGMENT"): ${bad[*]}"
}

build_kernel() {
  local mirror version deb tmp src tarball jobs cc t0 t1 release
  ensure_build_tools
  mirror=$(detect_mirror)
  prepare_private_apt "$mirror"
  lab_say "reading $SUITE from $mirror"
  private_apt apt-get update >"$APT_DIR/update.log" 2>&1 ||
    lab_die "apt-get update for $SUITE failed; see $APT_DIR/update.log"
  version=$(private_apt apt-cache show --no-all-versions "$SOURCE_PACKAGE" 2>/dev/null |
    awk '$1 == "Version:" { print $2; exit }')
  [[ -n $version ]] || lab_die "$SOURCE_PACKAGE is not in $SUITE at $mirror (LAB_SOURCE_PACKAGE)"

  if [[ -s $LAB_KDIR/build-key && $(<"$LAB_KDIR/build-key") == "$(build_key "$version")" &&
    -s $LAB_KDIR/vmlinuz ]]; then
    lab_say "kernel built from $SOURCE_PACKAGE $version is current"
    return 0
  fi

  t0=$(date +%s)
  mkdir -p "$DEB_DIR"
  deb=$(compgen -G "$DEB_DIR/${SOURCE_PACKAGE}_${version//:/%3a}_*.deb" | head -n 1 || true)
  if [[ -z $deb ]]; then
    lab_say "downloading $SOURCE_PACKAGE $version"
    (cd "$DEB_DIR" && private_apt apt-get download "$SOURCE_PACKAGE=$version") >"$APT_DIR/download.log" 2>&1 ||
      lab_die "apt-get download $SOURCE_PACKAGE failed; see $APT_DIR/download.log"
    deb=$(compgen -G "$DEB_DIR/${SOURCE_PACKAGE}_*.deb" | head -n 1 || true)
    [[ -n $deb ]] || lab_die "apt-get download $SOURCE_PACKAGE left no .deb in $DEB_DIR"
  fi

  # One fixed path, so ccache's hashes (and CCACHE_BASEDIR) match from build to build.
  tmp=$LAB_CACHE/tmp/build-$LAB_KERNEL
  rm -rf -- "$tmp"
  mkdir -p "$tmp/deb" "$tmp/out"
  lab_say "unpacking $(basename -- "$deb")"
  dpkg-deb -x "$deb" "$tmp/deb" || lab_die "dpkg-deb -x $deb failed"
  tarball=$(compgen -G "$tmp/deb/usr/src/linux-source-*.tar.*" | head -n 1 || true)
  [[ -n $tarball ]] || lab_die "$deb holds no usr/src/linux-source-*.tar.*"
  tar -xf "$tarball" -C "$tmp" || lab_die "unpacking $tarball failed"
  rm -rf -- "$tmp/deb"
  src=$(compgen -G "$tmp/linux-source-*" | head -n 1 || true)
  [[ -d $src ]] || lab_die "$tarball holds no linux-source-* folder"

  jobs=${LAB_JOBS:-$(nproc)}
  cc=gcc
  if command -v ccache >/dev/null; then
    cc="ccache gcc"
    export CCACHE_DIR=$LAB_CACHE/ccache CCACHE_BASEDIR=$tmp CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-500M}
    export CCACHE_NOHASHDIR=1 CCACHE_COMPRESS=1
    # The kernel embeds the build's time and host; fixed values keep ccache hits.
    export KBUILD_BUILD_TIMESTAMP='2026-01-01' KBUILD_BUILD_USER=lab KBUILD_BUILD_HOST=lab
  fi
  local log=$LAB_CACHE/tmp/build-$LAB_KERNEL.log
  : >"$log"
  lab_say "configuring (tinyconfig + $(basename -- "$FRAGMENT")); log: $log"
  (
    cd "$src" &&
      make ARCH=x86_64 CC="$cc" tinyconfig &&
      KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" &&
      make ARCH=x86_64 CC="$cc" olddefconfig
  ) >>"$log" 2>&1 || lab_die "configuring the kernel failed; see $log"
  check_config "$src/.config"
  lab_say "building bzImage with make -j$jobs ($cc); this takes 12-40 minutes cold"
  (cd "$src" && make ARCH=x86_64 CC="$cc" -j"$jobs" bzImage) >>"$log" 2>&1 ||
    { tail -n 30 -- "$log" >&2; lab_die "building the kernel failed; see $log"; }
  release=$(cd "$src" && make -s ARCH=x86_64 CC="$cc" kernelrelease 2>/dev/null)
  cp -- "$src/arch/x86/boot/bzImage" "$tmp/out/vmlinuz"
  cp -- "$src/.config" "$tmp/out/config"
  mkdir -p "$tmp/out/modules"
  : >"$tmp/out/modules/order"
  printf '%s\n' "$release" >"$tmp/out/release"
  printf '%s %s\n' "$SOURCE_PACKAGE" "$version" >"$tmp/out/package"
  build_key "$version" >"$tmp/out/build-key"
  t1=$(date +%s)
  printf '%s\n' "$((t1 - t0))" >"$tmp/out/build-seconds"
  cp -- "$log" "$tmp/out/build.log"

  rm -rf -- "$LAB_KDIR.old"
  mkdir -p "$(dirname -- "$LAB_KDIR")"
  [[ -e $LAB_KDIR ]] && mv -- "$LAB_KDIR" "$LAB_KDIR.old"
  mv -- "$tmp/out" "$LAB_KDIR"
  # The tree is about 1.5 GB once built; the .deb (about 170 MB) is kept for rebuilds.
  rm -rf -- "$LAB_KDIR.old" "$tmp" "$log"
  if command -v ccache >/dev/null; then
    lab_say "ccache: $(ccache -s 2>/dev/null | grep -iE 'hits|cache size' | tr -s ' ' | paste -sd';')"
  fi
  lab_say "kernel $release built in $((t1 - t0)) s ($(du -h "$LAB_KDIR/vmlinuz" | cut -f1))"
}
