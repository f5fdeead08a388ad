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
LAB_DEBS=${LAB_CACHE:+$LAB_CACHE/debs}
LAB_DEBS_DEFAULT=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/node-kvm/lab/debs
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

is_installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]; }

ensure_tools() {
  local missing=() p
  for p in "${BUILD_TOOLS[@]}"; do is_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (apt-get install ${missing[*]})"
  say "installing ${missing[*]}"
  apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# The first deb URI of the system's own release (one-line or deb822 sources).
detect_mirror() {
  if [[ -n ${UPSTREAM_MIRROR:-${LAB_MIRROR:-}} ]]; then printf '%s\n' "${UPSTREAM_MIRROR:-$LAB_MIRROR}"; return; fi
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ } if ($i ~ /debian\/?$/) { print $i; exit } }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/) { print $i; exit } }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done
  die "found no Debian mirror in /etc/apt; set UPSTREAM_MIRROR"
}

# apt with its own lists and caches under $APT_DIR: the system's apt state is never touched.
private_apt() {
  local tool=$1
  shift
  "$tool" -q -o Dir::Etc::SourceList="$APT_DIR/sources.list" -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
    -o Dir::Etc::Preferences="$APT_DIR/preferences" -o Dir::Etc::PreferencesParts="$APT_DIR/preferences.d" \
    -o Dir::State="$APT_DIR/state" -o Dir::State::Lists="$APT_DIR/lists" -o Dir::State::status="$APT_DIR/status" \
    -o Dir::Cache="$APT_DIR/cache" -o Acquire::Languages=none -o APT::Architecture=amd64 \
    -o APT::Architectures::=amd64 -o APT::Sandbox::User=root "$@"
}

find_deb() {
  local d f
  for d in "$DEB_DIR" ${LAB_DEBS:+"$LAB_DEBS"} "$LAB_DEBS_DEFAULT"; do
    f=$(compgen -G "$d/${PACKAGE}_*_all.deb" | sort -V | tail -n 1 || true)
    [[ -n $f ]] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

download_deb() {
  local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -r $keyring ]] || die "$keyring is missing (package debian-archive-keyring)"
  mirror=$(detect_mirror)
  mkdir -p "$APT_DIR"/{sources.list.d,preferences.d,state,lists/partial,cache/archives/partial} "$DEB_DIR"
  : >"$APT_DIR/status"
  : >"$APT_DIR/preferences"
  printf 'deb [arch=amd64 signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$SUITE" >"$APT_DIR/sources.list"
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
