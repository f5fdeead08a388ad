/**
 * Closing memory while Node itself is using one of its views. An
 * asynchronous zlib stream (and fs.write on the thread pool) keeps the
 * pointer and length of a buffer it was given; closing used to detach the
 * buffer under it, which aborted Node 20 (an assertion in node_zlib) and
 * killed Node 24 with an uncaught RangeError. Now close() never detaches: the
 * pages become zero pages until the views are collected. And on Node 22+,
 * ArrayBuffer.prototype.transfer() of a memory view must not break the
 * library. Each case runs in a child process and asserts its exit status.
 */
import { expect, it } from 'vitest';
import { describeKvm } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const hasTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

const expectClean = (r: { code: number | null; signal: string | null; stderr: string }): void => {
  expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
};

describeKvm('closing memory while Node operates on its views (child processes)', () => {
  it('an asynchronous zlib stream reading a view while the memory is closed: no abort, no uncaught error', async () => {
    const r = await runNodeChild(`
const { Kvm } = await import(BUNDLE);
const zlib = await import('node:zlib');
const kvm = Kvm.open();
const vm = kvm.createVm();
const results = [];
for (const when of ['sync', 'immediate', 'timeout']) {
  for (const kind of ['bytes', 'view', 'gmem']) {
    const gmem = kind === 'gmem' ? vm.createGuestMemfd({ size: 16n << 20n, flags: ['mmap', 'init-shared'] }) : undefined;
    const memory = gmem ? gmem.map() : vm.allocateMemory(16n << 20n);
    const bytes = kind === 'view' ? memory.view(4096n, (16n << 20n) - 8192n) : memory.bytes;
    for (let i = 0; i < bytes.length; i += 97) bytes[i] = i & 0xff;
    const gzip = zlib.createGzip({ level: 1 });
    let out = 0;
    gzip.on('data', (c) => (out += c.length));
    const done = new Promise((resolve, reject) => { gzip.on('end', resolve); gzip.on('error', reject); });
    gzip.write(bytes);
    gzip.end();
    const close = () => { memory.close(); gmem?.close(); };
    if (when === 'sync') close();
    else if (when === 'immediate') setImmediate(close);
    else setTimeout(close, 1);
    await done;
    results.push({ when, kind, out, closed: memory.closed });
  }
}
// fs.write on the thread pool, closed under it.
const fs = await import('node:fs');
const memory = vm.allocateMemory(8n << 20n);
const fd = fs.openSync('/dev/null', 'w');
const written = new Promise((resolve, reject) => fs.write(fd, memory.bytes, 0, memory.bytes.length, null, (e, n) => (e ? reject(e) : resolve(n))));
memory.close();
const n = await written;
fs.closeSync(fd);
vm.close();
kvm.close();
console.log(JSON.stringify({ results, fsWritten: n }));
`);
    expectClean(r);
    const o = r.json as { results: { out: number; closed: boolean }[]; fsWritten: number };
    expect(o.results).toHaveLength(9);
    for (const x of o.results) expect(x).toMatchObject({ closed: true, out: expect.any(Number) });
    expect(o.fsWritten).toBe(8 << 20);
  });

  it.skipIf(!hasTransfer)(`ArrayBuffer.prototype.transfer() of a memory view does not break the library${hasTransfer ? '' : ` (skipped: ${process.version} has no ArrayBuffer.prototype.transfer, Node 22+; run npm run test:node24)`}`, async () => {
    const r = await runNodeChild(`
const { Kvm, HostMemory } = await import(BUNDLE);
const { guest: { Asm, Guest } } = await import(BUNDLE);
const kvm = Kvm.open();
const vm = kvm.createVm();
const out = {};
const memory = vm.allocateMemory(4n << 20n);
memory.bytes[5] = 9;
const moved = memory.bytes.buffer.transfer();
out.movedLength = moved.byteLength;
out.bytesLength = memory.bytes.length;
out.stillThere = memory.bytes[5];
memory.bytes[6] = 10;
out.viewSees = memory.view(0n, 4096n)[6];
// The library keeps working over transferred memory: a slot, a pre-fault, closing.
vm.setMemoryRegion({ slot: 1, guestPhysAddr: 4n << 30n, memory });
const vcpu = vm.createVcpu(1);
out.prefault = (await vcpu.preFaultMemory({ gpa: 4n << 30n, size: 4n << 20n }, { engine: 'software' })).bytesMapped;
vcpu.close();
// A guest whose memory's view was transferred still loads and runs.
const g = Guest.create(vm, { program: new Asm().mov('eax', 0x77).mov('edx', 0xe9).out('dx', 'eax'), vcpuId: 2 });
g.memory.bytes.buffer.transfer();
out.exit = g.runSync().exit?.reason;
memory.close();
out.afterClose = new Uint8Array(moved)[5];
vm.close();
kvm.close();
console.log(JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? v + 'n' : v)));
`);
    expectClean(r);
    expect(r.json).toEqual({ movedLength: 4 << 20, bytesLength: 4 << 20, stillThere: 9, viewSees: 10, prefault: 4n << 20n, exit: 'io', afterClose: 0 });
  });
});
