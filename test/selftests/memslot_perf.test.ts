/**
 * The memslot_perf port beyond its six cases (which suites.test.ts runs):
 * the geometry against upstream's own table, the settings, and that its
 * checks can fail: an MMIO exit the test does not allow fails the case
 * (and stops the host loop) instead of passing or hanging.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { MEMSLOT_PERF_TESTS, memslotPerfGeometry, memslotPerfProgram, slotLayout, slotPages, MOVE_SIZE, PAGE } from '../../lib/selftests/memslot_perf-guest.js';
import { memslotPerfParams, suite, testSlots } from '../../lib/selftests/memslot_perf.js';
import { runMemslotPerf } from '../../lib/selftests/memslot_perf-workload.js';
import { loadSuite, type SelftestContext } from '../../lib/selftests/index.js';
import { describeKvm } from '../support/kvm.js';

function ctxWith(kvm: Kvm, settings: Record<string, string>): SelftestContext {
  return { kvm, settings: new Map(Object.entries(settings)), log: () => {}, todo: () => {}, note: () => {} };
}

describe('memslot_perf geometry', () => {
  it('at full size cuts memory as upstream does on x86 (32763 slots: 4 pages each, 160 KiB in the last)', () => {
    const g = memslotPerfGeometry('move active area', 1);
    expect(g.memSize).toBe((512n << 20n) + (64n << 10n));
    const layout = slotLayout(g.memSize, 32763)!;
    expect(layout.pagesPerSlot).toBe(4n);
    expect(slotPages(layout, 32762) * PAGE).toBe(160n << 10n);
    expect(slotPages(layout, 32762) * PAGE >= MOVE_SIZE / 2n).toBe(true);
    expect(memslotPerfGeometry('map', 1).testSize).toBe(32n << 20n);
    expect(memslotPerfGeometry('unmap chunked', 8).chunkPages).toBe(512n);
    expect(memslotPerfGeometry('unmap', 8).chunkPages).toBe(1n);
    expect(slotLayout(64n * PAGE, 65)).toBeUndefined();
    expect(() => memslotPerfGeometry('RW', 3)).toThrow(RangeError);
  });

  it('has the six upstream tests, each with a guest program', () => {
    expect(suite.cases.map((c) => c.name)).toEqual([...MEMSLOT_PERF_TESTS]);
    for (const t of MEMSLOT_PERF_TESTS) expect(memslotPerfProgram(memslotPerfGeometry(t, 8)).assemble(0x10000n).length).toBeGreaterThan(40);
  });

  it('is registered', async () => {
    expect((await loadSuite('memslot_perf')).name).toBe('memslot_perf');
  });
});

describeKvm('memslot_perf settings and failures', () => {
  it('reads its settings and refuses bad ones', () => {
    using kvm = Kvm.open();
    const max = kvm.checkExtension('NR_MEMSLOTS');
    expect(testSlots(kvm, undefined)).toBe(Math.min(257, max) - 1);
    expect(testSlots(kvm, 'max')).toBe(max - 1);
    expect(memslotPerfParams(ctxWith(kvm, {}), 'map')).toMatchObject({ scale: 32, seconds: 0.2, minIterations: 1, verify: true });
    const p = memslotPerfParams(ctxWith(kvm, { 'memslot_perf.slots': '33', 'memslot_perf.scale': '16', 'memslot_perf.seconds': '0.5', 'memslot_perf.verify': '0' }), 'RW');
    expect(p).toMatchObject({ test: 'RW', slots: 32, scale: 16, seconds: 0.5, verify: false, minIterations: 1 });
    expect(() => memslotPerfParams(ctxWith(kvm, { 'memslot_perf.scale': '3' }), 'map')).toThrow(/scale/);
    expect(() => memslotPerfParams(ctxWith(kvm, { 'memslot_perf.slots': '1' }), 'map')).toThrow(/slots/);
    expect(() => memslotPerfParams(ctxWith(kvm, { 'memslot_perf.seconds': 'soon' }), 'map')).toThrow(/seconds/);
  });

  it('fails, naming the reason, when there are more slots than pages', async () => {
    using kvm = Kvm.open();
    await expect(runMemslotPerf(kvm, { test: 'map', slots: 20000, scale: 32, seconds: 0, minIterations: 1, verify: true })).rejects.toThrow(/too many/);
  });

  it('fails (and does not hang) when the vcpu thread sees an MMIO exit the test does not allow', async () => {
    using kvm = Kvm.open();
    const run = runMemslotPerf(kvm, { test: 'move active area', slots: 32, scale: 32, seconds: 60, minIterations: 1, verify: true, forbidMmio: true });
    await expect(run).rejects.toThrow(/vcpu thread: unexpected MMIO exit at 0x/);
  });

  it('the same run with the MMIO window allowed passes and counts the exits', async () => {
    using kvm = Kvm.open();
    const r = await runMemslotPerf(kvm, { test: 'move active area', slots: 32, scale: 32, seconds: 0, minIterations: 20, verify: true });
    expect(r.iterations).toBeGreaterThanOrEqual(20);
    expect(r.slots).toBe(32);
    expect(r.nsPerIteration).toBeGreaterThan(0);
  });
});
