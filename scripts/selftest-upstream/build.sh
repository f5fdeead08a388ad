#!/usr/bin/env bash
# Builds the upstream KVM selftests that node-kvm ports, from Debian's
# linux-source package, outside the checkout (nothing fetched is committed):
#
#   $UPSTREAM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/node-kvm/upstream-selftests)
#     debs/      the linux-source .deb (or the lab's copy is used, see below)
#     apt/       private apt state (never the system's), as scripts/lab/setup.sh does
#     src/       the unpacked parts of the tree the selftests need
#     bin/<ver>/ the built tests and a `version` file
#
# The .deb is shared with the kernel lab: if scripts/lab already downloaded it
# (its cache: $LAB_CACHE/debs, default ${XDG_CACHE_HOME:-$HOME/.cache}/node-kvm/lab/debs),
# that file is used and nothing is downloaded.
#
#   UPSTREAM_SOURCE_PACKAGE=linux-source-7.3   the package (suite trixie-backports)
#   UPSTREAM_MIRROR=URI                        Debian mirror (default: the system apt's)
#   UPSTREAM_REFRESH=1                         ask the archive for a newer version
#
# Prints the folder holding the binaries on its last line.
set -euo pipefail

PACKAGE=${UPSTREAM_SOURCE_PACKAGE:-linux-source-7.3}
SUITE=trixie-backports
CACHE=${UPSTREAM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/node-kvm/upstream-selftests}
APT_DIR=$CACHE/apt
DEB_DIR=$CACHE/debs
# The tests node-kvm has ports of (see scripts/selftest-upstream/cases.json).
TESTS=(guest_memfd_test set_memory_region_test demand_paging_test pre_fault_memory_test
  memslot_modification_stress_test mmu_stress_test memslot_perf_test dirty_log_test)
# (max_guest_memory_test is called mmu_stress_test since Linux 6.12.)
BUILD_TOOLS=(gcc make xz-utils rsync)

say() { printf 'selftest-upstream: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ $PACKAGE =~ ^linux-source-[0-9]+\.[0-9]+$ ]] || die "UPSTREAM_SOURCE_PACKAGE must look like linux-source-7.3"

# The lab's paths (LAB_CACHE, whose debs/ may already hold the package) and its way of
# reading the archive (the system's mirror, private apt state under $APT_DIR).
# shellcheck source=../lab/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lab/lib.sh"
# shellcheck source=../lab/debian-apt.sh
. "$LAB_DIR/debian-apt.sh"
# Their messages are this script's.
lab_die() { die "$@"; }
lab_say() { say "$@"; }
LAB_MIRROR=${UPSTREAM_MIRROR:-${LAB_MIRROR:-}}

ensure_tools() {
  ensure_packages "build tools" "${BUILD_TOOLS[@]}"
}

find_deb() {
  local d f
  # This checkout's lab cache, then the default one that every clone shares.
  for d in "$DEB_DIR" "$LAB_CACHE/debs" "${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/node-kvm/lab/debs"; do
    f=$(compgen -G "$d/${PACKAGE}_*_all.deb" | sort -V | tail -n 1 || true)
    [[ -n $f ]] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

download_deb() {
  local mirror
  mirror=$(detect_mirror)
  prepare_private_apt "$mirror"
  mkdir -p "$DEB_DIR"
  say "reading $SUITE from $mirror"
  private_apt apt-get update >"$APT_DIR/update.log" 2>&1 || die "apt-get update failed; see $APT_DIR/update.log"
  say "downloading $PACKAGE"
  (cd "$DEB_DIR" && private_apt apt-get download "$PACKAGE") >"$APT_DIR/download.log" 2>&1 ||
    die "apt-get download $PACKAGE failed; see $APT_DIR/download.log"
}

# extract DEB DEST MEMBER...: members of the kernel tarball inside the .deb (paths
# relative to the tree's top), streamed: nothing but them is written.
extract() {
  local deb=$1 dest=$2 top
  shift 2
  top=$(dpkg-deb -c "$deb" | awk '{ print $NF }' | grep -m1 -E '^\./usr/src/linux-source-[0-9.]+\.tar\.xz$') ||
    die "no linux-source tarball in $deb"
  local name
  name=$(basename -- "$top" .tar.xz)
  local members=() m
  for m in "$@"; do members+=("$name/$m"); done
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "$top" | tar -xJ -C "$dest" --strip-components=1 "${members[@]}" ||
    die "unpacking ${*} from $deb failed"
}

all_built() {
  local t
  for t in "${TESTS[@]}"; do [[ -x $1/$t ]] || return 1; done
}

main() {
  ensure_tools
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  local deb
  if [[ ${UPSTREAM_REFRESH:-0} == 1 ]] || ! deb=$(find_deb); then
    download_deb
    deb=$(find_deb) || die "no $PACKAGE .deb after downloading"
  fi
  local version
  version=$(dpkg-deb -f "$deb" Version)
  local out=$CACHE/bin/$version
  if [[ -s $out/version ]] && all_built "$out"; then
    say "built tests of $PACKAGE $version are current"
    printf '%s\n' "$out"
    return 0
  fi

  local src=$CACHE/src/$version
  if [[ ! -s $src/.unpacked ]]; then
    say "unpacking the parts of $(basename -- "$deb") the selftests need (a minute or two)"
    rm -rf -- "$src"
    mkdir -p "$src"
    # make headers needs the top Makefile, scripts/, include/, arch/x86; the tests need tools/.
    extract "$deb" "$src" Makefile Kbuild Kconfig scripts include arch/x86 tools usr
    # The selftests link a few driver headers from the rest of the tree (the vfio library).
    local wanted=() target
    while IFS= read -r target; do
      [[ $target == "$src"/* ]] && wanted+=("${target#"$src"/}")
    done < <(find "$src/tools/testing/selftests/kvm" "$src/tools/testing/selftests/vfio" -xtype l -exec realpath -m -- {} + | sort -u)
    ((${#wanted[@]} == 0)) || extract "$deb" "$src" "${wanted[@]}"
    printf '%s\n' "$version" >"$src/.unpacked"
  fi

  local jobs=${UPSTREAM_JOBS:-$(nproc)}
  say "make headers"
  make -C "$src" -j"$jobs" headers >"$CACHE/headers.log" 2>&1 || die "make headers failed; see $CACHE/headers.log"
  mkdir -p "$out"
  local targets=() t
  for t in "${TESTS[@]}"; do targets+=("$out/$t"); done
  say "building ${TESTS[*]}"
  make -C "$src/tools/testing/selftests/kvm" -j"$jobs" OUTPUT="$out" "${targets[@]}" >"$CACHE/build.log" 2>&1 ||
    die "building the selftests failed; see $CACHE/build.log"
  printf '%s %s\n' "$PACKAGE" "$version" >"$out/version"
  printf '%s\n' "$out"
}

main "$@"
