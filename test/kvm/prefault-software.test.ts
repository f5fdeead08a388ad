/**
 * The software engine against a real VM: what it records in the soft MMU,
 * how it stays consistent, and what it buys a real guest (fewer exits).
 */
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { Kvm, PreFaultError, type Vm } from '../../lib/index.js';
import { Guest, touchPagesProgram } from '../../lib/guest/index.js';
import { describeKvm, describeUnless, guestMemfdUnavailable, isKvmPvm, kvmUnavailable, preFaultErrorOf } from '../support/kvm.js';
import { transparentHugePageMode } from '../../lib/prefault/host-level.js';

const PAGE = 4096n;
const MiB = 1n << 20n;
const BASE = 4n << 30n;

function vmWith(size: bigint, hugePages: boolean): { kvm: Kvm; vm: Vm } & Disposable {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const memory = vm.allocateMemory(size, { hugePages });
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
  return { kvm, vm, [Symbol.dispose]: () => { vm.close(); kvm.close(); } };
}

describeKvm('software engine: the soft MMU', () => {
  it('records 2 MiB leaves for THP memory and 4 KiB leaves otherwise', async () => {
    // With THP in 'always' mode (the kernel lab) plain memory gets huge pages too.
    const plain = transparentHugePageMode() === 'always' ? (['2m', 4] as const) : (['4k', 2048] as const);
    for (const [huge, level, count] of [[true, '2m', 4], [false, ...plain]] as const) {
      using f = vmWith(8n * MiB, huge);
      using vcpu = f.vm.createVcpu(0);
      const r = await vcpu.preFaultMemory({ gpa: BASE, size: 8n * MiB }, { engine: 'software' });
      expect(r.levels[level]).toBe(count);
      expect(f.vm.softMmu.lookup(BASE + 5n * MiB)).toMatchObject({ level, slot: 1, private: false, writable: true });
      expect(f.vm.softMmu.stats().bytesMapped).toBe(8n * MiB);
    }
  });

  it('a one-page request inside a huge-mappable area maps the whole leaf but reports one page', async () => {
    using f = vmWith(4n * MiB, true);
    using vcpu = f.vm.createVcpu(0);
    const r = await vcpu.preFaultMemory({ gpa: BASE + PAGE, size: PAGE }, { engine: 'software' });
    expect(r.bytesMapped).toBe(PAGE);
    expect(r.levels['2m']).toBe(1);
    expect(f.vm.softMmu.lookup(BASE)?.level).toBe('2m');
  });

  it('populates the host pages for real (they are resident afterwards)', async () => {
    using f = vmWith(8n * MiB, false);
    using vcpu = f.vm.createVcpu(0);
    const before = residentKiB();
    await vcpu.preFaultMemory({ gpa: BASE, size: 8n * MiB }, { engine: 'software', threads: 2 });
    expect(residentKiB() - before).toBeGreaterThanOrEqual(7 * 1024);
  });

  it('zaps on slot delete, slot move and memory close', async () => {
    using f = vmWith(4n * MiB, false);
    using vcpu = f.vm.createVcpu(0);
    await vcpu.preFaultMemory({ gpa: BASE, size: 4n * MiB }, { engine: 'software' });
    f.vm.moveMemoryRegion(1, 8n << 30n);
    expect(f.vm.softMmu.lookup(BASE)).toBeUndefined();
    expect(f.vm.softMmu.stats().bytesMapped).toBe(0n);
    await vcpu.preFaultMemory({ gpa: 8n << 30n, size: 4n * MiB }, { engine: 'software' });
    f.vm.deleteMemoryRegion(1);
    expect(f.vm.softMmu.stats().bytesMapped).toBe(0n);

    const mem = f.vm.allocateMemory(2n * MiB);
    f.vm.setMemoryRegion({ slot: 2, guestPhysAddr: BASE, memory: mem });
    await vcpu.preFaultMemory({ gpa: BASE, size: 2n * MiB }, { engine: 'software' });
    expect(f.vm.softMmu.stats().bytesMapped).toBe(2n * MiB);
    mem.close();
    expect(f.vm.softMmu.stats().bytesMapped).toBe(0n);
  });

  it.skipIf(guestMemfdUnavailable !== undefined)(`zaps the bound range on punch-hole, and populates a guest_memfd through its mmap${guestMemfdUnavailable ? ` [skipped: ${guestMemfdUnavailable}]` : ''}`, async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const gmem = vm.createGuestMemfd({ size: 4n * MiB, flags: ['mmap', 'init-shared'] });
    const memory = gmem.map();
    vm.setMemoryRegion({ slot: 3, guestPhysAddr: BASE, memory, guestMemfd: gmem });
    using vcpu = vm.createVcpu(0);
    const r = await vcpu.preFaultMemory({ gpa: BASE, size: 4n * MiB }, { engine: 'software' });
    expect(r.bytesMapped).toBe(4n * MiB);
    expect(vm.softMmu.lookup(BASE + MiB)?.level).toBe('4k');
    gmem.punchHole(MiB, MiB);
    expect(vm.softMmu.lookup(BASE + MiB)).toBeUndefined();
    expect(vm.softMmu.lookup(BASE)).toBeDefined();
    expect(vm.softMmu.lookup(BASE + 2n * MiB)).toBeDefined();
  });

  it.skipIf(guestMemfdUnavailable !== undefined)(`populates a guest_memfd without mmap by allocating it${guestMemfdUnavailable ? ` [skipped: ${guestMemfdUnavailable}]` : ''}`, async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const gmem = vm.createGuestMemfd({ size: 2n * MiB });
    const memory = vm.allocateMemory(2n * MiB);
    vm.setMemoryRegion({ slot: 3, guestPhysAddr: BASE, memory, guestMemfd: gmem });
    using vcpu = vm.createVcpu(0);
    const r = await vcpu.preFaultMemory({ gpa: BASE, size: 2n * MiB }, { engine: 'software' });
    expect(r.bytesMapped).toBe(2n * MiB);
  });

  it('populates read-only slots for read', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(2n * MiB);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory, readonly: true });
    using vcpu = vm.createVcpu(0);
    await vcpu.preFaultMemory({ gpa: BASE, size: 2n * MiB }, { engine: 'software' });
    expect(vm.softMmu.lookup(BASE)).toMatchObject({ writable: false });
  });
});

function residentKiB(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? 0);
}

// On a TDP host a first touch is resolved without the exits the shadow MMU
// takes, so the exit count measures the software engine only under shadow paging.
describeUnless(kvmUnavailable ?? (isKvmPvm ? undefined : 'exit counts measure the software engine only on a shadow-paging (kvm_pvm) host'), 'software engine: a real guest takes fewer exits', () => {
  async function exitsForFirstTouch(size: bigint, hugePages: boolean, prefault: boolean): Promise<bigint> {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(size, { hugePages });
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
    const program = touchPagesProgram({ startGva: BASE, pages: size / PAGE, write: true, ucall: true });
    using guest = Guest.create(vm, { program, map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, { gpa: BASE, size, pageSize: '2m' }] });
    if (prefault) await guest.vcpu.preFaultMemory({ gpa: BASE, size }, { engine: 'software' });
    const before = guest.vcpu.stats().exits as bigint;
    await guest.runToDone();
    const exits = (guest.vcpu.stats().exits as bigint) - before;
    // The guest stored each page's address in it: check the writes landed.
    const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);
    expect(view.getBigUint64(Number(size - PAGE), true)).toBe(BASE + size - PAGE);
    return exits;
  }

  it('4 KiB memory: pre-faulted first touch takes at least 4x fewer exits than demand faulting', async () => {
    const size = 16n * MiB;
    const demand = await exitsForFirstTouch(size, false, false);
    const prefaulted = await exitsForFirstTouch(size, false, true);
    console.log(`exits for 4096 pages, 4 KiB host pages: demand ${demand}, pre-faulted ${prefaulted} (${Number(demand) / Number(prefaulted)}x)`);
    expect(demand).toBeGreaterThanOrEqual(4n * prefaulted);
  });

  it('THP memory: about one exit per 2 MiB, pre-faulted or not (KVM maps 2 MiB at once)', async () => {
    const size = 16n * MiB;
    const demand = await exitsForFirstTouch(size, true, false);
    const prefaulted = await exitsForFirstTouch(size, true, true);
    console.log(`exits for 4096 pages, THP: demand ${demand}, pre-faulted ${prefaulted}`);
    // 8 huge pages, plus the ucall's exit and a few unrelated ones.
    const bound = size / (2n * MiB) + 8n;
    expect(demand).toBeLessThanOrEqual(bound);
    expect(prefaulted).toBeLessThanOrEqual(bound);
  });
});

describeKvm('software engine: memslot changes during a step', () => {
  it('a slot deleted while a step populates gives EAGAIN, then ENOENT with the progress kept', async () => {
    using f = vmWith(64n * MiB, false);
    using vcpu = f.vm.createVcpu(0);
    // One 64 MiB step populating 16,384 pages on a worker thread takes tens of
    // milliseconds: the deletion below lands while it runs.
    const p = vcpu.preFaultMemory({ gpa: BASE, size: 64n * MiB }, { engine: 'software', maxStepBytes: 64n * MiB, threads: 1 });
    setImmediate(() => f.vm.deleteMemoryRegion(1));
    const e = await preFaultErrorOf(p);
    expect(e.code).toBe('ENOENT');
    expect(e.result.retries.eagain).toBe(1);
    expect(e.bytesMapped).toBe(0n);
    expect(f.vm.softMmu.stats().bytesMapped).toBe(0n);
  });
});
