/**
 * KVM_PRE_FAULT_MEMORY for real (runs where the kernel engine works: the
 * kernel lab): the differential test against the software engine, EINTR from
 * real signals, and the racing slot deletion.
 */
import { expect, it } from 'vitest';
import { Kvm, PreFaultError, type PreFaultEngineName, type Vm } from '../../lib/index.js';
import { highTestGpa, preFaultRacingDeletion, regionFixture, checkOutcome, PAGE, SIZE_2M, TEST_SIZE } from '../../lib/selftests/prefault-common.js';
import { describeUnless } from '../support/kvm.js';
import { needs } from '../../lib/selftests/host.js';
import { kernelEngineMissing } from '../support/engines.js';

const MiB = 1n << 20n;
const BASE = 64n << 30n;

interface Layout {
  name: string;
  slots: { gpa: bigint; size: bigint }[];
  hugePages: boolean;
}

const layouts: Layout[] = [
  { name: 'one 513-page slot', slots: [{ gpa: BASE, size: 2n * MiB + PAGE }], hugePages: false },
  { name: 'one 513-page slot, THP', slots: [{ gpa: BASE, size: 2n * MiB + PAGE }], hugePages: true },
  { name: 'two adjacent slots', slots: [{ gpa: BASE, size: 2n * MiB }, { gpa: BASE + 2n * MiB, size: 2n * MiB }], hugePages: true },
  { name: 'two slots with a gap', slots: [{ gpa: BASE, size: MiB }, { gpa: BASE + 2n * MiB, size: MiB }], hugePages: false },
  { name: 'unaligned slot start', slots: [{ gpa: BASE + 3n * PAGE, size: 3n * MiB }], hugePages: true },
];

const ranges: [string, bigint, bigint][] = [
  ['first 2 MiB', 0n, 2n * MiB],
  ['one page', PAGE, PAGE],
  ['crossing the first slot end', MiB, 2n * MiB],
  ['whole span', 0n, 4n * MiB],
  ['outside', 8n * MiB, PAGE],
];

function build(layout: Layout): { vm: Vm; kvm: Kvm } & Disposable {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  layout.slots.forEach((s, i) => {
    const memory = vm.allocateMemory(s.size + (2n * MiB - (s.size % (2n * MiB))), { hugePages: layout.hugePages });
    vm.setMemoryRegion({ slot: i + 1, guestPhysAddr: s.gpa, size: s.size, memory });
  });
  return { kvm, vm, [Symbol.dispose]: () => { vm.close(); kvm.close(); } };
}

async function outcome(layout: Layout, engine: PreFaultEngineName, offset: bigint, size: bigint): Promise<unknown> {
  using f = build(layout);
  using vcpu = f.vm.createVcpu(0);
  try {
    const r = await vcpu.preFaultMemory({ gpa: BASE + offset, size }, { engine });
    return { ok: true, bytesMapped: r.bytesMapped, remaining: r.remaining };
  } catch (e) {
    if (!(e instanceof PreFaultError)) throw e;
    return { code: e.code, bytesMapped: e.bytesMapped, remaining: e.remaining };
  }
}

describeUnless(kernelEngineMissing, 'differential: kernel and software engines agree', () => {
  for (const layout of layouts) {
    for (const [name, offset, size] of ranges) {
      it(`${layout.name}: ${name}`, async () => {
        const kernel = await outcome(layout, 'kernel', offset, size);
        const software = await outcome(layout, 'software', offset, size);
        expect(software).toEqual(kernel);
      });
    }
  }
});

describeUnless(kernelEngineMissing, 'kernel engine under signals and races', () => {
  it('EINTR from real signals during a large pre-fault loses no progress', async () => {
    const size = 256n * MiB;
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(size, { noReserve: true });
    // 4 KiB pages make this 65,536 faults: long enough for signals to land.
    memory.advise('nohugepage');
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
    using vcpu = vm.createVcpu(0);
    let signals = 0;
    const timer = setInterval(() => {
      if (vcpu.interruptIoctl()) signals++;
    }, 1);
    const r = await vcpu.preFaultMemory({ gpa: BASE, size }, { engine: 'kernel', maxStepBytes: size }).finally(() => clearInterval(timer));
    expect(r.bytesMapped).toBe(size);
    expect(r.remaining.size).toBe(0n);
    expect(signals).toBeGreaterThan(0);
    // Each signal ends the ioctl early: with partial progress (another call) or EINTR (a retry).
    expect(r.calls - 1 + r.retries.eintr).toBeGreaterThan(0);
    console.log(`256 MiB under ${signals} signals: ${r.calls} calls, ${r.retries.eintr} EINTR retries`);
  });

  it.skipIf(needs.preFaultRaceSafe() !== undefined)(`the three upstream calls racing slot deletion give the expected remainders${needs.preFaultRaceSafe() ? ` [skipped: ${needs.preFaultRaceSafe()}]` : ''}`, async () => {
    using kvm = Kvm.open();
    using f = regionFixture(kvm, 'default', highTestGpa(kvm));
    for (const [what, offset, size, left] of [['(0, 2 MiB)', 0n, SIZE_2M, 0n], ['(2 MiB, 2 pages)', SIZE_2M, 2n * PAGE, PAGE], ['(513 pages, 1 page)', TEST_SIZE, PAGE, PAGE]] as const) {
      const o = await preFaultRacingDeletion(f, offset, size);
      expect(o.results.every((r) => r.engine === 'kernel')).toBe(true);
      checkOutcome(o, left, what);
    }
    await f.guest.runToDone();
  });
});
