/**
 * Port of the kernel's pre_fault_memory_test: three pre-faults of a 513-page
 * region (all of the first 2 MiB; a range crossing the slot's end; a range
 * wholly outside it), each racing the deletion and re-creation of the slot,
 * then a guest that reads every page. Runs with the 'auto' engine, so on a
 * host without KVM_PRE_FAULT_MEMORY it checks the software engine against
 * the same expectations (the TAP line says which engine ran: `[engine: software]`).
 * The private case binds the slot to a guest_memfd and sets the region private,
 * as upstream does.
 */
import type { VmType } from '../constants.js';
import { firstReason, needs } from './host.js';
import { checkOutcome, highTestGpa, PAGE, preFaultRacingDeletion, regionFixture, runGuestOverRegion, SIZE_2M, TEST_SIZE } from './prefault-common.js';
import type { SelftestCase, SelftestContext, SelftestSuite } from './types.js';

async function run(ctx: SelftestContext, type: VmType, isPrivate = false): Promise<void> {
  using f = regionFixture(ctx.kvm, type, highTestGpa(ctx.kvm), { private: isPrivate });
  const calls: [string, bigint, bigint, bigint][] = [
    ['(0, 2 MiB)', 0n, SIZE_2M, 0n],
    ['(2 MiB, 2 pages)', SIZE_2M, 2n * PAGE, PAGE],
    ['(513 pages, 1 page)', TEST_SIZE, PAGE, PAGE],
  ];
  for (const [what, offset, size, left] of calls) {
    const o = await preFaultRacingDeletion(f, offset, size);
    const engines = [...new Set(o.results.map((r) => r.engine))].join('+');
    ctx.log(`${what}: left ${o.left}, ${o.code ?? 'ok'}, engine ${engines}, slot deleted mid-call: ${o.raced}, eagain retries ${o.results.reduce((n, r) => n + r.retries.eagain, 0)}`);
    // On the TAP line too: an ok from the software engine is not the kernel's.
    ctx.note(`engine: ${engines || 'none'}`);
    checkOutcome(o, left, what);
  }
  await runGuestOverRegion(f);
}

function vmCase(name: string, type: VmType, skip: () => string | undefined): SelftestCase {
  return { name, skip, run: (ctx) => run(ctx, type) };
}

/** The suite. */
export const suite: SelftestSuite = {
  name: 'pre_fault_memory',
  description: 'KVM_PRE_FAULT_MEMORY semantics (progress, slot end, ENOENT) racing memslot deletion, then a guest reads the region',
  cases: [
    vmCase('default VM, shared memory', 'default', needs.preFaultRaceSafe),
    vmCase('sw-protected VM, shared memory', 'sw-protected', () => firstReason(needs.vmType('sw-protected'), needs.preFaultRaceSafe)),
    {
      name: 'sw-protected VM, private memory',
      skip: () => firstReason(needs.vmType('sw-protected'), needs.privateMemory, needs.guestMemfd, needs.preFaultRaceSafe),
      run: (ctx) => run(ctx, 'sw-protected', true),
    },
  ],
};
