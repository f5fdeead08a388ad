#!/usr/bin/env bash
# Runs the KVM integration tests and selftest ports inside the kernel lab (a
# real TDP kernel under QEMU, see docs/lab.md). NODE_KVM_LAB=1 makes the
# tests require the kernel engine, so a lab that silently fell back to the
# software engine fails instead of passing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/index.js ] || npm run build:ts
LAB_ENV_NODE_KVM_LAB=1 exec bash scripts/lab/run.sh node node_modules/vitest/vitest.mjs run test/kvm test/selftests "$@"
