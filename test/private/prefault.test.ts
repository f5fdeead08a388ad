/**
 * Pre-fault of private and mixed ranges on a software-protected VM, against the
 * kernel (runs where both exist: the lab's sw-protected kernel):
 * - differential: the kernel engine and the software engine give the same
 *   bytesMapped, remaining and error codes for private, shared and mixed layouts;
 * - levels: the software engine's predicted leaves equal the TDP MMU's own
 *   counters (VM stats pages_4k / pages_2m / pages_1g) after a kernel pre-fault of
 *   the same slots, for 4 KiB, THP and guest_memfd backings.
 */
import { expect, it } from 'vitest';
import { PreFaultError, type PreFaultEngineName, type PreFaultLevels, type Vm } from '../../lib/index.js';
import { describeUnless } from '../support/kvm.js';
import { MiB, PAGE, privateKernelUnavailable, SIZE_2M, swProtectedVm } from './support.js';

const BASE = 64n << 30n;

interface SlotSpec {
  /** Offset from BASE. */
  at: bigint;
  size: bigint;
  /** Bind the slot to a guest_memfd (private pages come from it). */
  guestMemfd: boolean;
  /** Anonymous memory with MADV_HUGEPAGE for the shared side. */
  hugePages: boolean;
}

interface Layout {
  name: string;
  slots: SlotSpec[];
  /** Private ranges (offsets from BASE); everything else is shared. */
  private: { at: bigint; size: bigint }[];
}

const gmemSlot = (size: bigint, hugePages: boolean, at = 0n): SlotSpec => ({ at, size, guestMemfd: true, hugePages });

const layouts: Layout[] = [
  { name: 'guest_memfd slot, all private', slots: [gmemSlot(4n * MiB + PAGE, false)], private: [{ at: 0n, size: 4n * MiB + PAGE }] },
  { name: 'guest_memfd slot, THP, all shared', slots: [gmemSlot(4n * MiB + PAGE, true)], private: [] },
  { name: 'guest_memfd slot, THP, second 2 MiB private', slots: [gmemSlot(4n * MiB + PAGE, true)], private: [{ at: SIZE_2M, size: SIZE_2M }] },
  { name: 'guest_memfd slot, THP, private run across a 2 MiB boundary', slots: [gmemSlot(4n * MiB + PAGE, true)], private: [{ at: MiB + 3n * PAGE, size: 2n * MiB }] },
  { name: 'guest_memfd slot, scattered private pages', slots: [gmemSlot(4n * MiB, true)], private: [{ at: PAGE, size: PAGE }, { at: 5n * PAGE, size: 3n * PAGE }, { at: SIZE_2M + 7n * PAGE, size: PAGE }] },
  { name: 'private range in a slot without guest_memfd', slots: [{ at: 0n, size: 4n * MiB, guestMemfd: false, hugePages: true }], private: [{ at: MiB, size: MiB }] },
  {
    name: 'two slots: private guest_memfd, then plain shared',
    slots: [gmemSlot(SIZE_2M, false), { at: SIZE_2M, size: SIZE_2M, guestMemfd: false, hugePages: true }],
    private: [{ at: 0n, size: SIZE_2M }],
  },
];

const ranges: [string, bigint, bigint][] = [
  ['whole span and past it', 0n, 6n * MiB],
  ['first 2 MiB', 0n, SIZE_2M],
  ['one page inside a private run', MiB + 4n * PAGE, PAGE],
  ['crossing the middle', MiB, 2n * MiB],
  ['outside', 16n * MiB, PAGE],
];

function build(layout: Layout): { vm: Vm } & Disposable {
  const f = swProtectedVm();
  try {
    layout.slots.forEach((s, i) => {
      const rounded = (s.size + SIZE_2M - 1n) & ~(SIZE_2M - 1n);
      const memory = f.vm.allocateMemory(rounded, { hugePages: s.hugePages });
      const guestMemfd = s.guestMemfd ? f.vm.createGuestMemfd({ size: rounded }) : undefined;
      f.vm.setMemoryRegion({ slot: i + 1, guestPhysAddr: BASE + s.at, size: s.size, memory, ...(guestMemfd ? { guestMemfd } : {}) });
    });
    for (const p of layout.private) f.vm.setMemoryAttributes({ guestPhysAddr: BASE + p.at, size: p.size, private: true });
    return { vm: f.vm, [Symbol.dispose]: () => f[Symbol.dispose]() };
  } catch (e) {
    f[Symbol.dispose]();
    throw e;
  }
}

interface Outcome {
  ok?: true;
  code?: string;
  bytesMapped: bigint;
  remaining: { gpa: bigint; size: bigint };
  levels: PreFaultLevels;
  /** The TDP MMU's leaf counters after the call (kernel engine) or the soft MMU's (software). */
  counters: PreFaultLevels;
}

function counters(vm: Vm, engine: PreFaultEngineName): PreFaultLevels {
  if (engine === 'software') {
    const byLevel = vm.softMmu.stats().leaves;
    return { '4k': byLevel['4k'], '2m': byLevel['2m'], '1g': byLevel['1g'] };
  }
  const s = vm.stats();
  return { '4k': Number(s.pages_4k), '2m': Number(s.pages_2m), '1g': Number(s.pages_1g) };
}

async function outcome(layout: Layout, engine: PreFaultEngineName, offset: bigint, size: bigint): Promise<Outcome> {
  using f = build(layout);
  using vcpu = f.vm.createVcpu(0);
  try {
    const r = await vcpu.preFaultMemory({ gpa: BASE + offset, size }, { engine });
    return { ok: true, bytesMapped: r.bytesMapped, remaining: r.remaining, levels: r.levels, counters: counters(f.vm, engine) };
  } catch (e) {
    if (!(e instanceof PreFaultError)) throw e;
    return { code: e.code, bytesMapped: e.bytesMapped, remaining: e.remaining, levels: e.result.levels, counters: counters(f.vm, engine) };
  }
}

describeUnless(privateKernelUnavailable, 'private differential: kernel and software engines agree on a sw-protected VM', () => {
  for (const layout of layouts) {
    for (const [name, offset, size] of ranges) {
      it(`${layout.name}: ${name}`, async () => {
        const kernel = await outcome(layout, 'kernel', offset, size);
        const software = await outcome(layout, 'software', offset, size);
        const { levels: kl, counters: kc, ...kernelContract } = kernel;
        const { levels: sl, counters: sc, ...softwareContract } = software;
        expect(softwareContract).toEqual(kernelContract);
        // The levels the software engine predicts are the TDP MMU's own.
        expect({ levels: sl, counters: sc }).toEqual({ levels: kl, counters: kc });
      });
    }
  }
});

/** Backings for the level comparison: one slot of 8 MiB + 1 page at BASE. */
const backings: { name: string; layout: Layout }[] = [
  { name: '4 KiB anonymous memory', layout: { name: '4k', slots: [{ at: 0n, size: 8n * MiB + PAGE, guestMemfd: false, hugePages: false }], private: [] } },
  { name: 'THP anonymous memory', layout: { name: 'thp', slots: [{ at: 0n, size: 8n * MiB + PAGE, guestMemfd: false, hugePages: true }], private: [] } },
  { name: 'guest_memfd (private)', layout: { name: 'gmem', slots: [gmemSlot(8n * MiB + PAGE, true)], private: [{ at: 0n, size: 8n * MiB + PAGE }] } },
  { name: 'guest_memfd, half private over THP', layout: { name: 'mixed', slots: [gmemSlot(8n * MiB + PAGE, true)], private: [{ at: 3n * MiB, size: 4n * MiB }] } },
];

describeUnless(privateKernelUnavailable, "levels: the software engine's prediction equals the TDP MMU's pages_4k/2m/1g", () => {
  for (const { name, layout } of backings) {
    it(name, async () => {
      const kernel = await outcome(layout, 'kernel', 0n, 8n * MiB + PAGE);
      const software = await outcome(layout, 'software', 0n, 8n * MiB + PAGE);
      expect(kernel.ok).toBe(true);
      expect(kernel.counters['4k'] + kernel.counters['2m'] * 512).toBe(8 * 256 + 1);
      expect(software.counters).toEqual(kernel.counters);
      expect(software.levels).toEqual(kernel.levels);
    });
  }
});
