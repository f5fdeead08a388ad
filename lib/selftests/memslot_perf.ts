/**
 * Port of the kernel's memslot_perf_test: six memslot workloads, each run
 * for a while with the guest and the host working at once on memory cut into
 * many memslots (upstream: as many as KVM allows):
 * - map: the guest writes (maps) one half of the area while the host
 *   unmaps (MADV_DONTNEED) the other, then the halves swap;
 * - unmap, unmap chunked: the guest touches one page per half while the
 *   host unmaps the other half page by page, or in 2 MiB chunks;
 * - move active area, move inactive area: the host moves the last memslot
 *   away and back while the guest writes an area half inside it (its writes
 *   exit as MMIO while the slot is away) or wholly before it;
 * - RW: the guest writes every page, the host checks and rewrites them, the
 *   guest checks the host's values.
 * Guest and host hand over through a flag in guest memory, as upstream. A
 * case fails when a value does not read back, an MMIO exit is not one the
 * test allows, or a memslot call fails: a kernel that misbehaves is `not ok`.
 * Figures (time per iteration) are logged; timing goals belong to
 * `node-kvm bench --family memslot-perf`, never to this test.
 *
 * Settings (upstream's options in brackets), scaled by default to a small
 * shared machine:
 * - `memslot_perf.slots` [-s]: memslots including slot 0, or `max`
 *   (KVM_CAP_NR_MEMSLOTS, upstream's default); default 257.
 * - `memslot_perf.scale`: memory sizes are upstream's divided by this (1, 2,
 *   4, 8, 16, 32); default 32 (16 MiB for RW, 4 MiB for unmap: in the
 *   emulated lab one single-page unmap costs ~4 ms).
 * - `memslot_perf.seconds` [-l]: how long each test runs (decimal); default 0.2 (upstream 5).
 * - `memslot_perf.iterations`: at least this many iterations; default 1.
 * - `memslot_perf.verify` [-d]: 1 (default) checks the guest's values before
 *   unmapping them, 0 does not (upstream's default).
 * Upstream's full run: `--set memslot_perf.slots=max --set memslot_perf.scale=1 --set memslot_perf.seconds=5 --set memslot_perf.verify=0`.
 */
import type { Kvm } from '../kvm.js';
import { SelftestFailure } from './assert.js';
import { MEMSLOT_PERF_SCALES, MEMSLOT_PERF_TESTS, type MemslotPerfTest } from './memslot_perf-guest.js';
import { runMemslotPerf, type MemslotPerfParams } from './memslot_perf-workload.js';
import { parseSize } from './settings.js';
import type { SelftestContext, SelftestSuite } from './types.js';

/** The settings' defaults (see the module comment). */
export const MEMSLOT_PERF_DEFAULTS = { slots: 257, scale: 32, seconds: 0.2, iterations: 1, verify: true } as const;

function intSetting(ctx: SelftestContext, key: string, fallback: number, min: number, max: number): number {
  const text = ctx.settings.get(`memslot_perf.${key}`);
  if (text === undefined) return fallback;
  const n = parseSize(text);
  if (n === undefined || n < BigInt(min) || n > BigInt(max)) throw new SelftestFailure(`setting memslot_perf.${key}=${text}: expected ${min}..${max}`);
  return Number(n);
}

/** Test slots (not counting slot 0) for a `slots` setting: a count including slot 0, or 'max'. */
export function testSlots(kvm: Kvm, text: string | undefined): number {
  const max = kvm.checkExtension('NR_MEMSLOTS');
  if (text === undefined) return Math.min(MEMSLOT_PERF_DEFAULTS.slots, max) - 1;
  if (text.trim() === 'max' || text.trim() === '-1') return max - 1;
  const n = parseSize(text);
  if (n === undefined || n < 2n) throw new SelftestFailure(`setting memslot_perf.slots=${text}: expected a count above 1 or max`);
  return Math.min(Number(n), max) - 1;
}

/** The run's parameters from the settings. */
export function memslotPerfParams(ctx: SelftestContext, test: MemslotPerfTest): MemslotPerfParams {
  const scale = intSetting(ctx, 'scale', MEMSLOT_PERF_DEFAULTS.scale, 1, 32);
  if (!MEMSLOT_PERF_SCALES.includes(scale)) throw new SelftestFailure(`setting memslot_perf.scale=${scale}: expected one of ${MEMSLOT_PERF_SCALES.join(', ')}`);
  const secondsText = ctx.settings.get('memslot_perf.seconds');
  const seconds = secondsText === undefined ? MEMSLOT_PERF_DEFAULTS.seconds : Number(secondsText);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 3600) throw new SelftestFailure(`setting memslot_perf.seconds=${secondsText}: expected 0..3600`);
  return {
    test,
    slots: testSlots(ctx.kvm, ctx.settings.get('memslot_perf.slots')),
    scale,
    seconds,
    minIterations: intSetting(ctx, 'iterations', MEMSLOT_PERF_DEFAULTS.iterations, 1, 1_000_000),
    verify: intSetting(ctx, 'verify', 1, 0, 1) === 1,
  };
}

function testCase(test: MemslotPerfTest): SelftestSuite['cases'][number] {
  return {
    name: test,
    run: async (ctx) => {
      const p = memslotPerfParams(ctx, test);
      const r = await runMemslotPerf(ctx.kvm, p);
      if (test === 'move active area' && r.mmioExits === 0) ctx.log('no MMIO exit seen: the guest never wrote the moved half while it was away (a short run)');
      ctx.log(
        `${r.slots + 1} slots (${r.pagesPerSlot} page${r.pagesPerSlot === 1 ? '' : 's'} each), scale 1/${p.scale}: slot setup ${(r.slotSetupNs / 1e6).toFixed(1)} ms, ` +
          `${r.iterations} iterations in ${(r.runtimeNs / 1e9).toFixed(3)} s, ${(r.nsPerIteration / 1e3).toFixed(1)} us each` +
          (test === 'move active area' ? `, ${r.mmioExits} MMIO exits` : ''),
      );
    },
  };
}

/** The memslot_perf selftest port. */
export const suite: SelftestSuite = {
  name: 'memslot_perf',
  description: 'map, unmap, move and read/write guest memory cut into many memslots while the guest runs',
  cases: MEMSLOT_PERF_TESTS.map(testCase),
};
