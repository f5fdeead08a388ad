#!/usr/bin/env bash
# The package as a user gets it: `npm pack` (whose prepack builds dist/ and
# the N-API prebuild), then install the tarball into a fresh project with
# --ignore-scripts on a PATH without a compiler (no cc/gcc/g++/clang/make/
# python), import it as ESM and CommonJS, type-check strict TypeScript with
# `using` against the shipped .d.ts, and run the README's example.
# Then the same tarball without its prebuild, still without a compiler: the
# install must fail with node-kvm's own message, not a node-gyp traceback.
#
# PACK_TEST_NODES="/path/to/node24 ..." also imports it (ESM, CommonJS) and
# runs the README example with each of those Node binaries.
# PACK_TEST_SOURCE_BUILD=1 also times an install of the prebuild-less
# tarball with the compiler on PATH (it compiles the addon: slow).
# PACK_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/node-kvm-pack-test.XXXXXX")
cleanup() { if [ "${PACK_TEST_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
fail() { echo "pack-test: FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
say() { printf 'pack-test: %s\n' "$*"; }

# 1. Pack (prepack builds dist/ and prebuilds/).
t0=$(now_ms)
(cd "$root" && npm pack --silent --pack-destination "$work" >"$work/pack.out")
tarball="$work/$(tail -n1 "$work/pack.out")"
[ -f "$tarball" ] || fail "npm pack gave no tarball ($(cat "$work/pack.out"))"
say "packed $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB) in $(( $(now_ms) - t0 )) ms"

tar tzf "$tarball" >"$work/contents"
for f in package/package.json package/LICENSE package/dist/index.js package/dist/index.d.ts package/scripts/install.cjs package/scripts/bench/reference.c; do
    grep -qx "$f" "$work/contents" || fail "the tarball lacks $f"
done
grep -q '^package/prebuilds/linux-x64/.*\.node$' "$work/contents" || fail 'the tarball has no prebuilds/linux-x64/*.node'
if grep -q '\.map$' "$work/contents"; then fail "the tarball ships source maps of sources it does not ship: $(grep '\.map$' "$work/contents" | head -3 | tr '\n' ' ')"; fi
if grep -q '^package/build/' "$work/contents"; then fail 'the tarball ships a local build/ directory'; fi
mkdir -p "$work/unpacked" && tar xzf "$tarball" -C "$work/unpacked"
if grep -rl '@internal' "$work/unpacked/package/dist" --include='*.d.ts' >/dev/null; then
    fail "@internal members in the published types: $(grep -rl '@internal' "$work/unpacked/package/dist" --include='*.d.ts' | head -3 | tr '\n' ' ')"
fi
say "contents: $(wc -l <"$work/contents") files, $(grep -c '^package/prebuilds/' "$work/contents") prebuild(s), no source maps, no @internal in .d.ts"

# 2. A PATH with node and npm but no compiler, make or python.
bin="$work/bin"
mkdir -p "$bin"
for tool in node npm npx sh bash env; do
    p=$(command -v "$tool") || fail "$tool not found"
    ln -s "$(readlink -f "$p")" "$bin/$tool"
done
for tool in cc gcc g++ c++ clang clang++ make python python3; do
    if PATH="$bin" command -v "$tool" >/dev/null 2>&1; then fail "$tool is still on the test PATH"; fi
done
nocc() { env -i HOME="$HOME" PATH="$bin" TMPDIR="${TMPDIR:-/tmp}" npm_config_cache="${npm_config_cache:-$HOME/.npm}" "$@"; }

project() {
    local dir=$1
    mkdir -p "$dir"
    printf '{ "name": "%s", "version": "1.0.0", "private": true }\n' "$(basename "$dir")" >"$dir/package.json"
}

# 3. Install the tarball with --ignore-scripts, no compiler.
app="$work/app"
project "$app"
t0=$(now_ms)
(cd "$app" && nocc npm install --ignore-scripts --no-audit --no-fund --prefer-offline "$tarball" >"$work/install.log" 2>&1) || { cat "$work/install.log" >&2; fail 'npm install of the tarball failed'; }
install_ms=$(( $(now_ms) - t0 ))
say "installed with --ignore-scripts, no compiler on PATH, in $install_ms ms"
[ -d "$app/node_modules/node-kvm/build" ] && fail 'the install produced a build/ directory'
deps=$(cd "$app" && nocc npm ls --all --omit=dev --omit=optional --parseable 2>/dev/null | tail -n +2 | sed 's|.*/node_modules/||')
if printf '%s\n' "$deps" | grep -Eq '^(vega|d3-|canvas)'; then fail "charting packages installed: $(printf '%s\n' "$deps" | grep -E '^(vega|d3-|canvas)' | head -5 | tr '\n' ' ')"; fi
say "dependencies installed: $(printf '%s\n' "$deps" | grep -c .) ($(printf '%s\n' "$deps" | tr '\n' ' '))"

# 4. ESM, CommonJS, the README example, strict TypeScript.
out=$(cd "$app" && nocc node --input-type=module -e "import { Kvm, addonPath } from 'node-kvm'; const k = Kvm.open(); console.log(k.apiVersion, addonPath()); k.close();")
case "$out" in "12 "*"/node_modules/node-kvm/prebuilds/linux-x64/"*) say "ESM import: API 12 through the prebuild" ;; *) fail "ESM import printed: $out" ;; esac
out=$(cd "$app" && nocc node --no-warnings -e "const { Kvm } = require('node-kvm'); const k = Kvm.open(); console.log(k.apiVersion); k.close();")
[ "$out" = 12 ] || fail "require() printed: $out"
say "CommonJS require(): API 12"

node -e '
  const readme = require("fs").readFileSync(process.argv[1], "utf8");
  const m = /```js\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf("## Example")));
  if (!m) { console.error("README has no ```js block under ## Example"); process.exit(1); }
  process.stdout.write(m[1]);
' "$root/README.md" >"$app/example.mjs"
out=$(cd "$app" && nocc node example.mjs) || fail "the README example failed: $out"
printf '%s\n' "$out" | sed 's/^/  example: /'
printf '%s\n' "$out" | grep -q 'KVM API 12' || fail 'the README example did not print the API version'
printf '%s\n' "$out" | grep -q 'guest done' || fail 'the README example did not finish its guest'

for other in ${PACK_TEST_NODES:-}; do
    [ -x "$other" ] || fail "PACK_TEST_NODES: $other is not an executable"
    ln -sf "$(readlink -f "$other")" "$bin/node"
    v=$(cd "$app" && nocc node --version)
    out=$(cd "$app" && nocc node --input-type=module -e "import { Kvm } from 'node-kvm'; const k = Kvm.open(); console.log(k.apiVersion); k.close();")
    [ "$out" = 12 ] || fail "ESM import on $v printed: $out"
    out=$(cd "$app" && nocc node --no-warnings -e "const { Kvm } = require('node-kvm'); const k = Kvm.open(); console.log(k.apiVersion); k.close();")
    [ "$out" = 12 ] || fail "require() on $v printed: $out"
    (cd "$app" && nocc node example.mjs >/dev/null) || fail "the README example failed on $v"
    say "on Node $v too: ESM import, require() and the README example"
    ln -sf "$(readlink -f "$(command -v node)")" "$bin/node"
done

cat >"$app/check.mts" <<'TS'
import { Kvm, KvmError, guest, type PreFaultResult } from 'node-kvm';
using kvm = Kvm.open();
using vm = kvm.createVm();
const memory = vm.allocateMemory(2n << 20n);
vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0n, memory });
const code: string = new KvmError('x', { code: 'EINVAL' }).code;
const asm: guest.Asm = new guest.Asm();
const r: PreFaultResult | undefined = undefined;
console.log(code, asm.constructor.name, r, vm.stats());
TS
cat >"$app/tsconfig.json" <<JSON
{ "compilerOptions": { "strict": true, "noEmit": true, "skipLibCheck": false, "module": "NodeNext", "moduleResolution": "NodeNext",
  "target": "ES2022", "lib": ["ES2023", "ESNext.Disposable"], "types": ["node"], "typeRoots": ["$root/node_modules/@types"] },
  "files": ["check.mts"] }
JSON
(cd "$app" && nocc node "$root/node_modules/typescript/bin/tsc" -p tsconfig.json) || fail 'strict TypeScript (with using) does not type-check against the shipped .d.ts'
say 'strict TypeScript with using type-checks against the shipped .d.ts (skipLibCheck off)'

# 5. The tarball without its prebuild, no compiler: a clear message.
rm -rf "$work/unpacked/package/prebuilds"
nopre="$work/node-kvm-noprebuild.tgz"
tar czf "$nopre" -C "$work/unpacked" package
bare="$work/app-noprebuild"
project "$bare"
if (cd "$bare" && nocc npm install --no-audit --no-fund --prefer-offline "$nopre" >"$work/noprebuild.log" 2>&1); then
    fail 'installing without a prebuild and without a compiler succeeded?'
fi
grep -q 'node-kvm: no prebuilt addon' "$work/noprebuild.log" || { cat "$work/noprebuild.log" >&2; fail 'no clear message without a prebuild and a compiler'; }
say "without a prebuild or a compiler the install fails with: $(grep -m1 'node-kvm: no prebuilt addon' "$work/noprebuild.log" | sed 's/^npm error //')"

# 6. Optional: the same without a prebuild but with the compiler (a source build).
if [ "${PACK_TEST_SOURCE_BUILD:-0}" = 1 ]; then
    src="$work/app-source"
    project "$src"
    t0=$(now_ms)
    (cd "$src" && npm install --no-audit --no-fund --prefer-offline "$nopre" >"$work/source.log" 2>&1) || { cat "$work/source.log" >&2; fail 'the source build failed'; }
    source_ms=$(( $(now_ms) - t0 ))
    [ -f "$src/node_modules/node-kvm/build/Release/node_kvm.node" ] || fail 'the source build left no build/Release/node_kvm.node'
    say "without a prebuild, compiling: installed in $source_ms ms (with the prebuild: $install_ms ms)"
fi
say 'PASS'
