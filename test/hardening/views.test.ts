/**
 * Zero-copy views: a Uint8Array over guest or host memory is detached when
 * the memory is unmapped. Touching it afterwards is harmless: element reads
 * give undefined, writes are dropped, methods throw TypeError; it never
 * faults. Covered: HostMemory.bytes/view(), guest_memfd mappings, the vcpu's
 * kvm_run page and exit data, and views held across Vm.close().
 */
import { expect, it } from 'vitest';
import { Kvm, type HostMemory } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const MiB = 1n << 20n;

/** Asserts that a view is detached and every way of touching it is harmless. */
function expectDetached(view: Uint8Array): void {
  expect(view.length).toBe(0);
  expect(view.byteLength).toBe(0);
  expect(view.buffer.byteLength).toBe(0);
  expect(view[0]).toBeUndefined();
  expect(view[4095]).toBeUndefined();
  view[0] = 1; // dropped, no throw
  expect(view[0]).toBeUndefined();
  for (const touch of [
    () => view.fill(1),
    () => view.set([1]),
    () => view.slice(0, 1),
    () => view.subarray(0, 1),
    () => view.indexOf(0),
    () => [...view],
    () => new DataView(view.buffer),
    () => new Uint8Array(view.buffer),
    () => Buffer.from(view.buffer),
  ]) {
    expect(touch).toThrow(TypeError);
  }
}

/** Fills, reads back and returns views over memory while it is mapped. */
function liveViews(memory: HostMemory): { bytes: Uint8Array; sub: Uint8Array; data: DataView } {
  const bytes = memory.bytes;
  const sub = memory.view(4096, 8192);
  const data = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  bytes[0] = 0xa5;
  sub[0] = 0x5a;
  expect(bytes[4096]).toBe(0x5a);
  expect(data.getUint8(0)).toBe(0xa5);
  return { bytes, sub, data };
}

describeKvm('zero-copy views are detached on unmap, never dangling', () => {
  it('HostMemory.bytes and view() of anonymous memory', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(2n * MiB);
    const { bytes, sub, data } = liveViews(memory);
    memory.close();
    expectDetached(bytes);
    expectDetached(sub);
    expect(() => data.getUint8(0)).toThrow(TypeError);
    expectKvmError(() => memory.bytes, 'ECLOSED');
    expectKvmError(() => memory.view(0, 1), 'ECLOSED');
  });

  it('a guest_memfd mapping: valid after the guest_memfd fd is closed, detached when the mapping is', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const gmem = vm.createGuestMemfd({ size: 2n * MiB, flags: ['mmap', 'init-shared'] });
    const memory = gmem.map();
    const { bytes, sub } = liveViews(memory);
    // The mapping holds the file: closing the fd does not invalidate the view.
    gmem.close();
    expect(bytes[0]).toBe(0xa5);
    bytes[1] = 7;
    expect(bytes[1]).toBe(7);
    memory.close();
    expectDetached(bytes);
    expectDetached(sub);
  });

  it('views held across Vm.close(): memory from vm.allocateMemory() is detached, a guest_memfd mapping is not closed by the VM', () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    const owned = vm.allocateMemory(2n * MiB);
    const gmem = vm.createGuestMemfd({ size: 2n * MiB, flags: ['mmap', 'init-shared'] });
    const mapped = gmem.map();
    const ownedViews = liveViews(owned);
    const mappedViews = liveViews(mapped);
    vm.close();
    expect(owned.closed).toBe(true);
    expectDetached(ownedViews.bytes);
    expectDetached(ownedViews.sub);
    // guestMemfd.map() memory belongs to the caller (see docs/guarantees.md):
    // still mapped and usable after the VM is gone, until closed.
    expect(mapped.closed).toBe(false);
    expect(mappedViews.bytes[0]).toBe(0xa5);
    mapped.close();
    expectDetached(mappedViews.bytes);
  });

  it('Vm.close() while a vcpu runs: the memory stays mapped until the vcpu is out of KVM_RUN, then its views are detached', async () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    const g = Guest.create(vm, { program: new Asm().label('spin').pause().jmp('spin') });
    const { bytes } = liveViews(vm.allocateMemory(2n * MiB));
    const system = g.memory.bytes;
    const running = g.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 20));
    vm.close();
    // The guest may still be executing from this memory: it must not be unmapped yet.
    expect(system.length).toBe(2 * 1024 * 1024);
    expect((await running).reason).toBe('intr');
    await new Promise((r) => setImmediate(r));
    expectDetached(system);
    expectDetached(bytes);
  });

  it("the vcpu's kvm_run page and exit data are detached when the vcpu is closed", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const g = Guest.create(vm, { program: new Asm().mov('eax', 0x11223344).mov('edx', 0xe9).out('dx', 'eax') });
    const runState = g.vcpu.runState;
    const event = g.runSync();
    const data = (event as { exit: { data: Uint8Array } }).exit.data;
    expect([...data]).toEqual([0x44, 0x33, 0x22, 0x11]);
    g.vcpu.close();
    expectDetached(runState);
    expectDetached(data);
    expectKvmError(() => g.vcpu.runState, 'ECLOSED');
  });

  it('a view whose buffer was moved with ArrayBuffer.prototype.transfer() never points at unmapped memory', async () => {
    // Node 20 has no transfer(); from Node 22 it moves the backing store to a
    // new ArrayBuffer the addon cannot detach. Run in a child: a fault must not take vitest down.
    const r = await runNodeChild(`
const { Kvm } = await import(BUNDLE);
if (typeof ArrayBuffer.prototype.transfer !== 'function') { console.log(JSON.stringify({ skipped: 'no ArrayBuffer.prototype.transfer on ' + process.version })); process.exit(0); }
const kvm = Kvm.open();
const vm = kvm.createVm();
const memory = vm.allocateMemory(2n << 20n);
memory.bytes[0] = 42;
let moved;
try { moved = memory.bytes.buffer.transfer(); } catch (e) { console.log(JSON.stringify({ refused: e.name })); process.exit(0); }
memory.close();
const first = new Uint8Array(moved)[0];
console.log(JSON.stringify({ movedLength: moved.byteLength, first: first ?? null }));
`);
    const out = r.json as { skipped?: string; refused?: string; movedLength?: number; first?: number | null } | undefined;
    console.log(`transfer(): ${out?.skipped ?? (out?.refused ? `refused (${out.refused})` : `child exit ${r.code ?? r.signal}, ${JSON.stringify(out)}`)}`);
    expect(r.signal, 'reading a transferred view after close() faulted').toBeNull();
    expect(r.code, r.stderr).toBe(0);
  });

  it("protect('none') is the one way to make a view fault: documented, shown in a child process", async () => {
    const r = await runNodeChild(`
const { Kvm } = await import(BUNDLE);
const memory = Kvm.open().createVm().allocateMemory(1n << 20n);
const bytes = memory.bytes;
memory.protect('none');
console.log(JSON.stringify({ protectedOk: true }));
bytes[0] = 1; // SIGSEGV: the caller asked for PROT_NONE
console.log(JSON.stringify({ survived: true }));
`);
    expect(r.stdout).toContain('protectedOk');
    expect(r.stdout).not.toContain('survived');
    expect(r.signal ?? r.code).toBeTruthy();
  });
});
