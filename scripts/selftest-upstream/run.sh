#!/usr/bin/env bash
# npm run selftest:upstream [-- --host-only | --lab-only]
#
# Builds the upstream KVM selftests node-kvm ports (build.sh: Debian's
# linux-source, cached outside the checkout), then prints, for this host and
# for the kernel lab (scripts/lab, when it is set up or LAB_CACHE is given),
# one table of upstream verdicts beside the ports' (compare.mjs). Fails when
# either table has a disagreement it does not explain.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
where=${1:-both}

[[ -s $repo/dist/cli/main.js ]] || { echo "selftest-upstream: build node-kvm first (npm run build)" >&2; exit 1; }
bindir=$(bash "$here/build.sh" | tail -n 1)
status=0
if [[ $where != --lab-only ]]; then
  echo "## this host"
  node "$here/compare.mjs" --bin "$bindir" || status=1
fi
if [[ $where != --host-only ]]; then
  echo
  echo "## kernel lab"
  # The lab boots a TDP kernel under QEMU and runs the command in this checkout;
  # the host's root (and so the built tests in the cache) is shared read-only.
  if bash "$repo/scripts/lab/run.sh" node scripts/selftest-upstream/compare.mjs --bin "$bindir"; then :; else status=1; fi
fi
exit $status
