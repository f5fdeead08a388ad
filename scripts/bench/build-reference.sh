#!/bin/sh
# build-reference.sh [reference|memslot-perf]
# Build scripts/bench/reference.c (or memslot-perf.c) into the user's cache directory, not into
# the package (which may sit read-only in node_modules):
#   $NODE_KVM_CACHE_DIR, else $XDG_CACHE_HOME/node-kvm, else ~/.cache/node-kvm,
# under bench/<name>-<checksum of the source, kvm-cpl3.h and this script>, so
# different versions of the package never share a stale binary. Builds only
# when that file is missing. Prints the binary's path on stdout.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
name=${1:-reference}
case $name in
    reference|memslot-perf) ;;
    *) echo "build-reference.sh: unknown program '$name' (reference, memslot-perf)" >&2; exit 2 ;;
esac
src="$here/$name.c"
if [ -n "${NODE_KVM_CACHE_DIR:-}" ]; then
    cache=$NODE_KVM_CACHE_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    cache=$XDG_CACHE_HOME/node-kvm
elif [ -n "${HOME:-}" ]; then
    cache=$HOME/.cache/node-kvm
else
    cache=${TMPDIR:-/tmp}/node-kvm-$(id -u)
fi
out_dir="$cache/bench"
sum=$(cat "$src" "$here/kvm-cpl3.h" "$here/build-reference.sh" | cksum | cut -d' ' -f1)
out="$out_dir/$name-$sum"
cc=${CC:-gcc}

if [ ! -x "$out" ]; then
    if ! command -v "$cc" >/dev/null 2>&1; then
        echo "build-reference.sh: '$cc' not found; install gcc (apt-get install gcc) or set CC" >&2
        exit 1
    fi
    mkdir -p "$out_dir"
    tmp="$out.tmp.$$"
    if ! "$cc" -std=c11 -O2 -Wall -Wextra -Werror -pthread -o "$tmp" "$src"; then
        rm -f "$tmp"
        echo "build-reference.sh: compiling $src failed" >&2
        exit 1
    fi
    mv -f "$tmp" "$out"
fi

echo "$out"
