import { expect, it } from 'vitest';
import { Kvm, type Vm } from '../../lib/index.js';
import { Asm, emitUcallDone, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';

const SLOT = 1;
const BASE = 0x4000_0000n;
const PAGES = 100; // not a multiple of 64: the last word is partial

/** A guest that stores once into each listed page of the logged slot, then DONE; re-entered, it does it all again. */
function writer(pages: readonly number[]): Asm {
  const a = new Asm().label('start');
  for (const p of pages) a.mov('rbx', BASE + BigInt(p) * 4096n + 8n).store({ base: 'rbx' }, 'rbx');
  emitUcallDone(a);
  a.jmp('start');
  return a;
}

function setup(kvm: Kvm, pages: readonly number[], manual = false): { vm: Vm; guest: Guest } {
  const vm = kvm.createVm();
  if (manual) vm.enableCap('MANUAL_DIRTY_LOG_PROTECT2', [1]); // KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
  const memory = vm.allocateMemory(BigInt(PAGES) * 4096n);
  vm.setMemoryRegion({ slot: SLOT, guestPhysAddr: BASE, memory, logDirtyPages: true });
  memory.bytes.fill(1); // host writes are not guest writes: never in the log
  const guest = Guest.create(vm, { program: writer(pages) });
  return { vm, guest };
}

describeKvm('dirty page log', () => {
  it('getDirtyLog reports exactly the pages the guest wrote, then (cleared) nothing', async () => {
    using kvm = Kvm.open();
    const written = [0, 3, 17, 63, 64, 99];
    const { vm, guest } = setup(kvm, written);
    using _vm = vm;
    const first = await guest.run();
    expect(first, JSON.stringify(first, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v instanceof Uint8Array ? [...v] : v))).toMatchObject({ kind: 'done' });
    const log = vm.getDirtyLog(SLOT);
    expect([...log.dirtyPageIndices()]).toEqual(written);
    expect([...log.dirtyPages()]).toEqual(written.map((p) => BASE + BigInt(p) * 4096n));
    expect(log.count).toBe(written.length);
    expect(log.isDirty(17)).toBe(true);
    expect(log.isDirty(18)).toBe(false);
    expect(log.bitmap.length).toBe(2);
    // Without manual protection KVM_GET_DIRTY_LOG also cleared the log.
    const into = new BigUint64Array(4);
    const again = vm.getDirtyLog(SLOT, into);
    expect(again.bitmap.buffer).toBe(into.buffer);
    expect(again.count).toBe(0);
    // Re-entering runs the same stores again: all of them are logged anew.
    expect((await guest.run()).kind).toBe('done');
    expect([...vm.getDirtyLog(SLOT, into).dirtyPageIndices()]).toEqual(written);
  });

  it('checks the slot and the bitmap first', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(0x10000n);
    vm.setMemoryRegion({ slot: 2, guestPhysAddr: 0x100000n, memory });
    expectKvmError(() => vm.getDirtyLog(2), 'ENOENT'); // not logging
    expectKvmError(() => vm.getDirtyLog(7), 'ENOENT');
    vm.setMemoryRegion({ slot: 3, guestPhysAddr: 0x200000n, memory: vm.allocateMemory(BigInt(200 * 4096)), logDirtyPages: true });
    expectKvmError(() => vm.getDirtyLog(3, new BigUint64Array(3)), 'EINVAL'); // 200 pages need 4 words
    expectKvmError(() => vm.getDirtyLog(3, new Uint8Array(64) as never), 'EINVAL');
  });
});

const manualUnavailable = (() => {
  try {
    using kvm = Kvm.open();
    return kvm.checkExtension('MANUAL_DIRTY_LOG_PROTECT2') & 1 ? undefined : 'KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 lacks ENABLE';
  } catch (e) {
    return (e as Error).message;
  }
})();

describeKvm('dirty page log with manual protection (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)', () => {
  it.skipIf(manualUnavailable !== undefined)('getDirtyLog keeps the bits until clearDirtyLog re-protects the pages', async () => {
    using kvm = Kvm.open();
    const written = [1, 2, 70];
    const { vm, guest } = setup(kvm, written, true);
    using _vm = vm;
    expect((await guest.run()).kind).toBe('done');
    expect([...vm.getDirtyLog(SLOT).dirtyPageIndices()]).toEqual(written);
    expect([...vm.getDirtyLog(SLOT).dirtyPageIndices()]).toEqual(written); // not cleared by get
    vm.clearDirtyLog(SLOT, 0, 64); // pages 0-63 only
    expect([...vm.getDirtyLog(SLOT).dirtyPageIndices()]).toEqual([70]);
    vm.clearDirtyLog(SLOT, 64, PAGES - 64); // to the slot's end: need not be a multiple of 64
    expect(vm.getDirtyLog(SLOT).count).toBe(0);
    expect((await guest.run()).kind).toBe('done');
    expect([...vm.getDirtyLog(SLOT).dirtyPageIndices()]).toEqual(written);
    expectKvmError(() => vm.clearDirtyLog(SLOT, 1, 64), 'EINVAL');
    expectKvmError(() => vm.clearDirtyLog(SLOT, 0, 65), 'EINVAL');
    expectKvmError(() => vm.clearDirtyLog(SLOT, 64, 64), 'EINVAL'); // past the slot
  });
});
