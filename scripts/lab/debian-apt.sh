# shellcheck shell=bash
# Debian packages without touching the system's apt state: the host packages a step
# needs, the mirror the system already uses, and apt-get/apt-cache with private lists
# and caches. Sourced (after lib.sh, which defines lab_die and lab_say) by setup.sh,
# build-kernel.sh (through setup.sh) and scripts/selftest-upstream/build.sh, so the
# lab and the upstream selftests read the archive the same way.
#
# The sourcing script sets APT_DIR (where the private state lives) and SUITE (the
# suite to read) before calling prepare_private_apt; LAB_MIRROR overrides the mirror.

is_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

# ensure_packages WHAT PACKAGE...: installs the packages that are missing (as root),
# or fails naming them. WHAT says what they are for in the message.
ensure_packages() {
  local what=$1 missing=() p
  shift
  for p in "$@"; do
    is_installed "$p" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] ||
    lab_die "missing $what: ${missing[*]}; install them as root (apt-get install ${missing[*]}) or rerun this as root"
  lab_say "installing ${missing[*]}"
  # The package lists may be stale or absent on a fresh machine: refresh them once.
  apt-get update -q >/dev/null || lab_die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    lab_die "apt-get install ${missing[*]} failed"
}

# The first URI that the system's apt uses for its own release (one-line
# sources.list entries and deb822 .sources files both count). That mirror also
# carries trixie and trixie-backports, so nothing about hosts is hard-coded here.
detect_mirror() {
  if [[ -n ${LAB_MIRROR:-} ]]; then
    printf '%s\n' "$LAB_MIRROR"
    return
  fi
  local codename f uri
  codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
  [[ -n $codename ]] || lab_die "cannot tell the system's release from /etc/os-release; set LAB_MIRROR"

  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    # deb [options] URI suite components...
    uri=$(awk -v want="$codename" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
        if ($(i + 1) == want) { print $i; exit }
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done

  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    # One paragraph per source; fields Types, URIs, Suites, Enabled.
    uri=$(awk -v want="$codename" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = uris = suites = enabled = ""
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^#/) continue
          if (line ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", line);   types = line }
          if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line);    uris = line }
          if (line ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", line);  suites = line }
          if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = line }
        }
        if (enabled == "no") next
        if ((" " types " ") !~ / deb /) next
        if ((" " suites " ") !~ (" " want " ")) next
        split(uris, u, /[ \t]+/)
        print u[1]
        exit
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done
  lab_die "found no Debian mirror for '$codename' in /etc/apt/sources.list(.d); set LAB_MIRROR"
}

# apt-get/apt-cache that read only our sources file and keep their lists and
# caches under $APT_DIR, so the system's apt configuration and state are never
# touched. The host's apt.conf.d still applies (proxies, no translations).
private_apt() {
  local tool=$1
  shift
  "$tool" -q \
    -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
    -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
    -o Dir::Etc::Preferences="$APT_DIR/preferences" \
    -o Dir::Etc::PreferencesParts="$APT_DIR/preferences.d" \
    -o Dir::State="$APT_DIR/state" \
    -o Dir::State::Lists="$APT_DIR/lists" \
    -o Dir::State::status="$APT_DIR/status" \
    -o Dir::Cache="$APT_DIR/cache" \
    -o Acquire::Languages=none \
    -o APT::Architecture=amd64 \
    -o APT::Architectures::=amd64 \
    -o APT::Sandbox::User=root \
    "$@"
}

# prepare_private_apt MIRROR: the private state under $APT_DIR, reading $SUITE.
prepare_private_apt() {
  local mirror=$1
  mkdir -p "$APT_DIR"/{sources.list.d,preferences.d,state,lists/partial,cache/archives/partial}
  : >"$APT_DIR/status"
  : >"$APT_DIR/preferences"
  # Debian's archive keyring (installed everywhere) holds the trixie keys too.
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -r $keyring ]] || lab_die "$keyring is missing (package debian-archive-keyring)"
  printf 'deb [arch=amd64 signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$SUITE" \
    >"$APT_DIR/sources.list"
}
