/**
 * userfaultfd through node-kvm: MISSING on anonymous memory and MINOR on
 * shared memory, with a guest touching the pages inside KVM_RUN, answered by
 * the native default, by a JS handler (sync and async), by a handler that
 * throws, and on close with an answer still pending; plus the checks on
 * arguments and lifetimes.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Guest, touchPagesProgram } from '../../lib/guest/index.js';
import { HostMemory } from '../../lib/memory.js';
import { Kvm } from '../../lib/kvm.js';
import { allocateSharedMemory, userfaultSupport, type UserfaultFault } from '../../lib/userfault.js';
import type { Vm } from '../../lib/vm.js';
import { kvmErrorOf, kvmUnavailable } from '../support/kvm.js';
import { runNodeChild } from '../hardening/support/child.js';

const P = 4096n;
const GPA = 4n << 30n;
const PAGES = 64n;
const SIZE = 2n << 20n;

const skip = kvmUnavailable ?? userfaultSupport().unavailable;

/** A guest that reads (or writes its address into) the first u64 of each of PAGES pages at GPA, then DONE. */
function guestOver(vm: Vm, memory: HostMemory, write: boolean): Guest {
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: GPA, memory });
  return Guest.create(vm, {
    program: touchPagesProgram({ startGva: GPA, pages: PAGES, write }),
    map: [
      { gpa: 0n, size: SIZE, pageSize: '2m' },
      { gpa: GPA, size: SIZE, pageSize: '4k' },
    ],
  });
}

/** Page i's contents in these tests: every byte is (i * 7 + 1) & 0xff. */
function pattern(i: number): Uint8Array {
  return new Uint8Array(Number(P)).fill((i * 7 + 1) & 0xff);
}

function expectPatterned(bytes: Uint8Array, pages: number, skipPage?: number): void {
  for (let i = 0; i < pages; i++) {
    const want = i === skipPage ? 0 : (i * 7 + 1) & 0xff;
    const page = bytes.subarray(i * 4096, (i + 1) * 4096);
    expect({ page: i, ok: page.every((b) => b === want) }).toEqual({ page: i, ok: true });
  }
}

describe.skipIf(skip)('userfaultfd', () => {
  it('probes the kernel: MINOR on shmem is there (Linux >= 5.14), as root userfaultfd opens without UFFD_USER_MODE_ONLY', () => {
    const s = userfaultSupport();
    expect(s.unavailable).toBeUndefined();
    expect(s.minorShmem).toBe(true);
  });

  it("missing, native default 'zero': a writing guest gets every page, one fault per page", async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(SIZE);
    memory.advise('nohugepage');
    using uf = memory.registerUserfault({ mode: 'missing' });
    using guest = guestOver(vm, memory, true);
    await guest.runToDone();
    const s = uf.stats();
    expect(s.faults).toBeGreaterThanOrEqual(PAGES);
    expect(s.zeroed + s.copied).toBe(s.faults - s.errors);
    expect(s.errors).toBe(0n);
    const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);
    for (let i = 0n; i < PAGES; i++) expect(view.getBigUint64(Number(i * P), true)).toBe(GPA + i * P);
  });

  it('missing, native default from bytes: the guest reads the snapshot', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(SIZE);
    const snapshot = new Uint8Array(Number(PAGES * P));
    for (let i = 0; i < Number(PAGES); i++) snapshot.set(pattern(i), i * 4096);
    using uf = memory.registerUserfault({ mode: 'missing', source: snapshot });
    using guest = guestOver(vm, memory, false);
    await guest.runToDone();
    expect(uf.stats().copied).toBeGreaterThanOrEqual(PAGES);
    expectPatterned(memory.bytes, Number(PAGES));
    expect(memory.bytes.subarray(Number(PAGES * P)).every((b) => b === 0)).toBe(true); // not touched, not faulted: zero
  });

  it('missing, native default from a file (pread; past its end, zeros): a lazily restored snapshot', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'node-kvm-uffd-'));
    const file = join(dir, 'snapshot');
    const snapshot = new Uint8Array(Number((PAGES / 2n) * P));
    for (let i = 0; i < Number(PAGES / 2n); i++) snapshot.set(pattern(i), i * 4096);
    writeFileSync(file, snapshot);
    const fd = openSync(file, 'r');
    try {
      using kvm = Kvm.open();
      using vm = kvm.createVm();
      const memory = vm.allocateMemory(SIZE);
      memory.advise('nohugepage');
      using uf = memory.registerUserfault({ mode: 'missing', source: { fd } });
      closeSync(fd); // the Userfault holds its own duplicate
      using guest = guestOver(vm, memory, false);
      await guest.runToDone();
      expect(uf.errors).toEqual([]);
      expectPatterned(memory.bytes, Number(PAGES / 2n));
      expect(memory.bytes.subarray(Number((PAGES / 2n) * P), Number(PAGES * P)).every((b) => b === 0)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('missing, JS handler (sync and async): called on the JS thread for vcpu faults, its bytes are what the guest reads', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(SIZE);
    memory.advise('nohugepage');
    const seen: UserfaultFault[] = [];
    using uf = memory.registerUserfault({
      mode: 'missing',
      handler: (f) => {
        seen.push(f);
        const i = Number(f.offset / P);
        // Odd pages answer later, as a lazily fetched snapshot would.
        return i % 2 ? new Promise((resolve) => setImmediate(() => resolve(pattern(i)))) : pattern(i);
      },
    });
    using guest = guestOver(vm, memory, false);
    await guest.runToDone();
    expect(seen.length).toBeGreaterThanOrEqual(Number(PAGES));
    expect(seen.every((f) => f.length === P && !f.write && !f.minor && f.threadId > 0)).toBe(true);
    expect(new Set(seen.map((f) => f.offset)).size).toBe(Number(PAGES));
    expect(uf.stats().jsAnswers).toBe(BigInt(seen.length));
    expect(uf.errors).toEqual([]);
    expectPatterned(memory.bytes, Number(PAGES));
  });

  it("minor on shared memory: the handler rewrites even pages, 'keep' maps odd ones as the page cache has them", async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = allocateSharedMemory(SIZE);
    expect(memory.kind).toBe('memfd');
    // The file holds 0xee everywhere; this mapping then drops its pages, so the
    // guest's touches are MINOR faults (page cache hit, not mapped here).
    memory.bytes.fill(0xee);
    memory.advise('dontneed');
    const seen: UserfaultFault[] = [];
    using uf = memory.registerUserfault({
      mode: 'minor',
      handler: (f) => {
        seen.push(f);
        const i = Number(f.offset / P);
        return i % 2 ? 'keep' : pattern(i);
      },
    });
    using guest = guestOver(vm, memory, false);
    await guest.runToDone();
    expect(seen.length).toBeGreaterThanOrEqual(Number(PAGES));
    expect(seen.every((f) => f.minor)).toBe(true);
    expect(uf.stats().continued).toBeGreaterThanOrEqual(PAGES);
    for (let i = 0; i < Number(PAGES); i++) {
      const page = memory.bytes.subarray(i * 4096, (i + 1) * 4096);
      const want = i % 2 ? 0xee : (i * 7 + 1) & 0xff;
      expect({ page: i, ok: page.every((b) => b === want) }).toEqual({ page: i, ok: true });
    }
  });

  it('a handler that throws (or returns junk) gets the fault answered with zeros and the error reported; the guest finishes', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(SIZE);
    memory.advise('nohugepage');
    const reported: string[] = [];
    using uf = memory.registerUserfault({
      mode: 'missing',
      onError: (e) => reported.push(`${e.code} ${e.message}`),
      handler: (f) => {
        const i = Number(f.offset / P);
        if (i === 3) throw new Error('snapshot page 3 is corrupt');
        if (i === 5) return 42 as unknown as Uint8Array;
        if (i === 7) return Promise.reject(new Error('fetch failed'));
        return pattern(i);
      },
    });
    using guest = guestOver(vm, memory, false);
    await guest.runToDone();
    await new Promise((resolve) => setImmediate(resolve));
    for (const i of [3, 5, 7]) expect(memory.bytes.subarray(i * 4096, (i + 1) * 4096).every((b) => b === 0)).toBe(true);
    expect(memory.bytes[2 * 4096]).toBe(15);
    expect(uf.errors.map((e) => e.code)).toEqual(['EIO', 'EIO', 'EIO']);
    expect(uf.errors[0]!.message).toMatch(/offset 0x3000 \(answered with zeros\): snapshot page 3 is corrupt/);
    expect(uf.errors[1]!.message).toMatch(/returned 42/);
    expect(reported).toHaveLength(3);
  });

  it('the JS thread touching a range its JS handler serves is answered from source and reported (EDEADLK), not a hang', () => {
    const memory = HostMemory.allocate(SIZE);
    using uf = memory.registerUserfault({ mode: 'missing', source: pattern(0), handler: () => 'zero' });
    expect(memory.bytes[0]).toBe(1);
    expect(memory.bytes[4096]).toBe(0);
    // The report travels through the event loop; poll for it.
    return new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      const tick = (): void => {
        if (uf.errors.length >= 2) {
          expect(uf.errors.map((e) => e.code)).toEqual(['EDEADLK', 'EDEADLK']);
          memory.close();
          expect(uf.closed).toBe(true);
          resolve();
        } else if (Date.now() - t0 > 20_000) reject(new Error(`no EDEADLK reports: ${uf.errors.map((e) => e.message).join('; ')}`));
        else setTimeout(tick, 5);
      };
      tick();
    });
  });

  it('close() with an answer pending releases the vcpu with the source answer', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(SIZE);
    memory.advise('nohugepage');
    let calls = 0;
    let onFirst: () => void = () => {};
    const first = new Promise<void>((resolve) => (onFirst = resolve));
    const uf = memory.registerUserfault({
      mode: 'missing',
      handler: () => {
        calls++;
        onFirst();
        return new Promise<undefined>(() => {}); // never settles
      },
    });
    using guest = guestOver(vm, memory, true);
    const done = guest.runToDone();
    await first;
    uf.close();
    await done; // the rest of the pages fault as plain anonymous memory
    expect(calls).toBe(1);
    expect(kvmErrorOf(() => uf.stats()).code).toBe('ECLOSED');
    const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);
    for (let i = 0n; i < PAGES; i++) expect(view.getBigUint64(Number(i * P), true)).toBe(GPA + i * P);
  });

  it('process.exit() while a vcpu waits for a JS answer completes (the fault is answered at exit)', async () => {
    const r = await runNodeChild(
      `const { Kvm, guest } = await import(BUNDLE);
       const kvm = Kvm.open(); const vm = kvm.createVm();
       const mem = vm.allocateMemory(2n << 20n); mem.advise('nohugepage');
       vm.setMemoryRegion({ slot: 1, guestPhysAddr: 4n << 30n, memory: mem });
       mem.registerUserfault({ mode: 'missing', handler: () => { setTimeout(() => process.exit(0), 10); return new Promise(() => {}); } });
       const g = guest.Guest.create(vm, { program: guest.touchPagesProgram({ startGva: 4n << 30n, pages: 512, write: true }),
         map: [{ gpa: 0n, size: 2n << 20n, pageSize: '2m' }, { gpa: 4n << 30n, size: 2n << 20n, pageSize: '4k' }] });
       await g.runToDone();`,
      { timeoutMs: 60_000 },
    );
    expect({ code: r.code, signal: r.signal, stderr: r.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
  });

  it('refuses bad arguments with KvmError EINVAL naming them, and closes with its memory', () => {
    const anon = HostMemory.allocate(SIZE);
    const shared = allocateSharedMemory(SIZE);
    try {
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing', typo: 1 } as never)).message).toMatch(/unknown option "typo"; accepted: mode, source/);
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'both' as never })).code).toBe('EINVAL');
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'minor' })).message).toMatch(/allocateSharedMemory/);
      expect(kvmErrorOf(() => shared.registerUserfault({ mode: 'missing' })).message).toMatch(/anonymous memory/);
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing', source: 'keep' })).code).toBe('EINVAL');
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing', offset: 1n })).code).toBe('EINVAL');
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing', length: SIZE + P })).code).toBe('EINVAL');
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing', granule: '1g' as never })).code).toBe('EINVAL');
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing', source: { fd: -1 } })).code).toBe('EINVAL');
      // A second registration of the same range: the kernel says EBUSY.
      using uf = anon.registerUserfault({ mode: 'missing', granule: '2m' });
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing' })).code).toBe('EBUSY');
      expect(anon.bytes[SIZE === 0n ? 0 : 12345]).toBe(0);
      expect(uf.stats().zeroed).toBe(1n); // one 2 MiB answer
      anon.close();
      expect(uf.closed).toBe(true);
      expect(kvmErrorOf(() => anon.registerUserfault({ mode: 'missing' })).code).toBe('ECLOSED');
    } finally {
      anon.close();
      shared.close();
    }
  });
});
