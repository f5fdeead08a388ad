#!/bin/sh
# Build scripts/bench/reference.c into .cache/bench/reference (ignored by git),
# only when the source (or this script) is newer than the binary. Prints the
# binary's path on stdout.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
src="$here/reference.c"
out_dir="$root/.cache/bench"
out="$out_dir/reference"
cc=${CC:-gcc}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build-reference.sh: '$cc' not found; install gcc (apt-get install gcc) or set CC" >&2
    exit 1
fi

if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ "$here/build-reference.sh" -nt "$out" ]; then
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
