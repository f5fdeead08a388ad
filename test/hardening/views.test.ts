/**
 * Zero-copy views of unmapped memory: closing never detaches a view (Node may
 * be in the middle of an operation on it, see views-async.test.ts); the
 * pages are replaced by private zero pages and the address range stays
 * reserved until every view is collected. Touching a view afterwards is
 * harmless: reads give 0, writes land in the placeholder (never in memory
 * mapped later), methods work; it never faults. Covered: HostMemory.bytes /
 * view(), guest_memfd mappings, the vcpu's kvm_run page and exit data, and
 * views held across Vm.close().
 */
import { expect, it } from 'vitest';
import { HostMemory, Kvm } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const MiB = 1n << 20n;

/** Asserts that a view of unmapped memory keeps its length, reads zeros, and every way of touching it is harmless. */
function expectInert(view: Uint8Array): void {
  const length = view.length;
  expect(length).toBeGreaterThan(0);
  expect(view.buffer.byteLength).toBeGreaterThanOrEqual(length);
  expect(view[0]).toBe(0);
  expect(view[length - 1]).toBe(0);
  expect(view.indexOf(0xa5)).toBe(-1);
  expect(view.indexOf(0x5a)).toBe(-1);
  view[0] = 1;
  view.fill(0x77, 0, 16);
  expect([...view.slice(0, 2)]).toEqual([0x77, 0x77]);
  expect(Buffer.from(view.buffer, view.byteOffset, 4).length).toBe(4);
  new DataView(view.buffer).getUint8(0);
  // Memory mapped afterwards is not under the old view: it is still zero.
  const fresh = HostMemory.allocate(BigInt(Math.max(4096, Math.ceil(length / 4096) * 4096)));
  try {
    expect(fresh.bytes.indexOf(0x77)).toBe(-1);
  } finally {
    fresh.close();
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

describeKvm('zero-copy views of unmapped memory read zeros, never dangle', () => {
  it('HostMemory.bytes and view() of anonymous memory', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(2n * MiB);
    const { bytes, sub, data } = liveViews(memory);
    memory.close();
    expectInert(bytes);
    expectInert(sub);
    expect(data.getUint8(0)).toBe(0x77);
    expectKvmError(() => memory.bytes, 'ECLOSED');
    expectKvmError(() => memory.view(0, 1), 'ECLOSED');
  });

  it('a guest_memfd mapping: valid after the guest_memfd fd is closed, zeros when the mapping is', () => {
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
    expectInert(bytes);
    expectInert(sub);
  });

  it('views held across Vm.close(): memory from vm.allocateMemory() reads zeros, a guest_memfd mapping is not closed by the VM', () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    const owned = vm.allocateMemory(2n * MiB);
    const gmem = vm.createGuestMemfd({ size: 2n * MiB, flags: ['mmap', 'init-shared'] });
    const mapped = gmem.map();
    const ownedViews = liveViews(owned);
    const mappedViews = liveViews(mapped);
    vm.close();
    expect(owned.closed).toBe(true);
    expectInert(ownedViews.bytes);
    expectInert(ownedViews.sub);
    // guestMemfd.map() memory belongs to the caller (see docs/guarantees.md):
    // still mapped and usable after the VM is gone, until closed.
    expect(mapped.closed).toBe(false);
    expect(mappedViews.bytes[0]).toBe(0xa5);
    mapped.close();
    expectInert(mappedViews.bytes);
  });

  it('Vm.close() while a vcpu runs: the memory stays mapped until the vcpu is out of KVM_RUN, then its views read zeros', async () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    const g = Guest.create(vm, { program: new Asm().label('spin').pause().jmp('spin') });
    const { bytes } = liveViews(vm.allocateMemory(2n * MiB));
    const system = g.memory.bytes;
    const running = g.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 20));
    vm.close();
    // The guest may still be executing from this memory: it must not be unmapped yet.
    const code = [...system].findIndex((b) => b !== 0);
    expect(code).toBeGreaterThanOrEqual(0);
    expect((await running).reason).toBe('intr');
    await new Promise((r) => setImmediate(r));
    expectInert(system);
    expectInert(bytes);
  });

  it("the vcpu's kvm_run page and exit data read zeros when the vcpu is closed", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const g = Guest.create(vm, { program: new Asm().mov('eax', 0x11223344).mov('edx', 0xe9).out('dx', 'eax') });
    const runState = g.vcpu.runState;
    const event = g.runSync();
    const data = (event as { exit: { data: Uint8Array } }).exit.data;
    expect([...data]).toEqual([0x44, 0x33, 0x22, 0x11]);
    g.vcpu.close();
    expectInert(runState);
    expectInert(data);
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
