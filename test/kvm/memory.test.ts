import { expect, it } from 'vitest';
import { constants as bufferConstants } from 'node:buffer';
import { HostMemory } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { describeKvm, expectKvmError, kvmErrorOfAsync } from '../support/kvm.js';

const MiB = 1 << 20;

describeKvm('HostMemory', () => {
  it('allocates 2 MiB aligned memory by default when large enough, 4 KiB otherwise', () => {
    using big = HostMemory.allocate(4 * MiB);
    expect(big.address % (2n << 20n)).toBe(0n);
    expect(big.size).toBe(BigInt(4 * MiB));
    using small = HostMemory.allocate(8192);
    expect(small.address % 4096n).toBe(0n);
    using aligned = HostMemory.allocate(8192, { alignment: 1 << 30 });
    expect(aligned.address % (1n << 30n)).toBe(0n);
  });

  it('exposes zero-filled pages as a zero-copy view', () => {
    using mem = HostMemory.allocate(2 * MiB, { hugePages: true });
    expect(mem.hugePages).toBe(true);
    const a = mem.bytes;
    expect(a.length).toBe(2 * MiB);
    expect(a[12345]).toBe(0);
    a[12345] = 7;
    expect(mem.bytes[12345]).toBe(7);
    expect(mem.view(12344, 2)).toEqual(new Uint8Array([0, 7]));
  });

  it('populates off the event loop and synchronously', async () => {
    using mem = HostMemory.allocate(4 * MiB);
    await mem.populate();
    await mem.populate({ write: false, offset: MiB, length: MiB });
    mem.populateSync({ offset: 0, length: 4096 });
    const e = await kvmErrorOfAsync(mem.populate({ offset: 8 * MiB, length: 4096 }));
    expect(e.code).toBe('EINVAL');
  });

  it('changes protection and reports bad protection names', () => {
    using mem = HostMemory.allocate(8192);
    mem.protect('read');
    expect(mem.bytes[0]).toBe(0);
    mem.protect('read-write');
    mem.bytes[0] = 1;
    expectKvmError(() => mem.protect('rwx' as never), 'EINVAL');
  });

  it('rejects bad sizes, alignments, advice and ranges', () => {
    expectKvmError(() => HostMemory.allocate(0), 'EINVAL');
    expectKvmError(() => HostMemory.allocate(100), 'EINVAL');
    expectKvmError(() => HostMemory.allocate(-4096), 'EINVAL');
    expectKvmError(() => HostMemory.allocate(Number.NaN), 'EINVAL');
    expectKvmError(() => HostMemory.allocate(4096, { alignment: 3000 }), 'EINVAL');
    using mem = HostMemory.allocate(8192);
    expectKvmError(() => mem.advise('nope' as never), 'EINVAL');
    expectKvmError(() => mem.advise('dontneed', 4096, 8192), 'EINVAL');
    expectKvmError(() => mem.view(8000, 1000), 'EINVAL');
  });

  it('views of closed memory read zeros; the memory throws ECLOSED after close', () => {
    const mem = HostMemory.allocate(8192);
    const view = mem.bytes;
    view[0] = 5;
    mem.close();
    mem.close();
    expect(view.byteLength).toBe(8192);
    expect(view[0]).toBe(0);
    view.set([1]); // lands in the placeholder, harmless
    expectKvmError(() => mem.bytes, 'ECLOSED');
    expectKvmError(() => mem.advise('dontneed'), 'ECLOSED');
  });

  it('defers unmapping until an in-flight populate settles', async () => {
    const mem = HostMemory.allocate(64 * MiB);
    const p = mem.populate();
    mem.close();
    await p;
    expect(mem.closed).toBe(true);
  });
});

describeKvm('HostMemory larger than one ArrayBuffer', () => {
  it('refuses a whole view beyond the Node limit with ERANGE and serves sub-range views', () => {
    const limit = BigInt(bufferConstants.MAX_LENGTH);
    const size = limit > 1n << 33n ? 1n << 33n : limit + (2n << 20n);
    using mem = HostMemory.allocate(size, { noReserve: true });
    if (size > limit) expectKvmError(() => mem.bytes, 'ERANGE');
    const tail = mem.view(size - 4096n, 4096n);
    tail[4095] = 9;
    expect(mem.view(size - 1n, 1n)[0]).toBe(9);
    mem.close();
    expect(tail[4095]).toBe(0);
  });

  it('raw addon: an oversized view is a RangeError, not a crash', () => {
    const m = new native.Mapping(-1, 8n << 30n, 3, 0x22 | 0x4000, 0n, 4096n);
    expect(() => m.buffer(undefined, undefined, 1n << 32n)).toThrow(RangeError);
    expect(() => m.buffer(0n, (1n << 32n) + 4096n)).toThrow(RangeError);
    expect(m.buffer(0n, 4096n).byteLength).toBe(4096);
    m.unmap();
  });
});
