#!/usr/bin/env bash
# Runs the test suites against the addon built with AddressSanitizer and
# UndefinedBehaviorSanitizer (meant as `npm run test:asan`).
#
# The sanitized addon is built in a scratch copy of binding.gyp + native/
# (node_modules/.cache/node-kvm-asan by default, NODE_KVM_ASAN_DIR to move it),
# so build/ and prebuilds/ are never touched and there is nothing to restore:
# the normal build is what every other run keeps loading. The suites load the
# sanitized copy through node-gyp-build's NODE_KVM_PREBUILD override, which
# child processes and worker threads inherit.
#
# Node itself is not instrumented, so gcc's ASan runtime is preloaded into it
# (it must come first in the library list). V8 keeps memory until exit by
# design, hence detect_leaks=0; fd and RSS leaks are what test/hardening/leaks
# checks. Any ASan report or UBSan finding aborts the process that hit it, so
# the suite fails.
#
# Usage: scripts/test-asan.sh [vitest args...]   (default: test/kvm test/hardening test/unit)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${NODE_KVM_ASAN_DIR:-$root/node_modules/.cache/node-kvm-asan}
started=$(date +%s)

cc=${CC:-gcc}
libasan=$("$cc" -print-file-name=libasan.so)
libubsan=$("$cc" -print-file-name=libubsan.so)
if [ ! -e "$libasan" ] || [ ! -e "$libubsan" ]; then
  echo "test-asan: $cc has no libasan/libubsan (Debian: apt-get install libasan8 libubsan1)" >&2
  exit 2
fi

# 1. A scratch copy of the addon's sources, sharing node_modules (node-addon-api, node-gyp).
mkdir -p "$out"
rm -rf "$out/native" "$out/build"
cp -r binding.gyp native "$out/"
printf '{ "name": "node-kvm", "private": true }\n' >"$out/package.json"
ln -sfn "$root/node_modules" "$out/node_modules"

# 2. Build it sanitized. gyp's Makefiles append CFLAGS/CXXFLAGS/LDFLAGS from the environment.
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
nodedir=${npm_config_nodedir:-$(npm config get nodedir 2>/dev/null || true)}
gyp_args=(rebuild --jobs=max)
if [ -n "$nodedir" ] && [ "$nodedir" != "undefined" ]; then gyp_args+=("--nodedir=$nodedir"); fi
echo "test-asan: building the addon with ASan+UBSan in $out"
(
  cd "$out"
  CFLAGS="$san" CXXFLAGS="$san" LDFLAGS="-fsanitize=address,undefined" \
    node "$root/node_modules/node-gyp/bin/node-gyp.js" "${gyp_args[@]}" >"$out/build.log" 2>&1
) || {
  tail -40 "$out/build.log" >&2
  echo "test-asan: the sanitized build failed (full log: $out/build.log)" >&2
  exit 1
}
addon="$out/build/Release/node_kvm.node"
built=$(date +%s)

export NODE_KVM_PREBUILD="$out"
# Tells tests that RSS is the sanitizer's (its quarantine holds up to 256 MiB of freed memory).
export NODE_KVM_SANITIZED=1
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allow_user_segv_handler=1:detect_stack_use_after_return=0:print_summary=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
preload="$libasan${LD_PRELOAD:+:$LD_PRELOAD}"

# 3. Check the sanitized addon is the one that loads, and that it is instrumented.
loaded=$(LD_PRELOAD="$preload" node -e "
  const r = require('$root/node_modules/node-gyp-build').resolve('$root');
  const n = require(r);
  const fd = n.open('/dev/kvm'); n.close(fd);
  process.stdout.write(r);
" 2>/dev/null || true)
if [ "$loaded" != "$addon" ]; then
  echo "test-asan: expected node-gyp-build to load $addon, got '${loaded:-nothing (does /dev/kvm open?)}'" >&2
  exit 1
fi
if ! nm -D "$addon" 2>/dev/null | grep '__asan_init' >/dev/null; then
  echo "test-asan: $addon is not instrumented" >&2
  exit 1
fi
echo "test-asan: loading $addon (built in $((built - started)) s)"

# 4. The suites. vitest's forks inherit LD_PRELOAD and the options.
if [ $# -eq 0 ]; then set -- test/kvm test/hardening test/unit; fi
status=0
LD_PRELOAD="$preload" node "$root/node_modules/vitest/vitest.mjs" run "$@" || status=$?
echo "test-asan: $(( $(date +%s) - started )) s in all (build $((built - started)) s); exit $status"
exit $status
