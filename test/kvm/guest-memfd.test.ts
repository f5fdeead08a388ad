import { readSync, writeSync } from 'node:fs';
import { expect, it } from 'vitest';
import { Kvm, type GuestMemfdFlag } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { describeGuestMemfd, describeUnless, E, expectKvmError, guestMemfdUnavailable, kvmErrorOfAsync, kvmUnavailable } from '../support/kvm.js';

const PAGE = 4096;

function withVm<T>(fn: (vm: ReturnType<Kvm['createVm']>) => T): T {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  return fn(vm);
}

function fsErrno(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
}

describeGuestMemfd('guest_memfd: creation', () => {
  it('accepts exactly the flag bits the VM reports, for each of the 64 single bits', () =>
    withVm((vm) => {
      const supported = BigInt(vm.checkExtension('GUEST_MEMFD_FLAGS'));
      for (let bit = 0n; bit < 64n; bit++) {
        const flag = 1n << bit;
        const ok = (flag & supported) !== 0n && flag !== 2n; // init-shared alone needs mmap
        if (ok) {
          using g = vm.createGuestMemfd({ size: PAGE, flags: flag });
          expect(g.flagMask).toBe(flag);
        } else {
          const e = expectKvmError(() => vm.createGuestMemfd({ size: PAGE, flags: flag }), 'EINVAL');
          expect(e.ioctl).toBe('KVM_CREATE_GUEST_MEMFD');
        }
      }
    }));

  it('raw kernel: the 64 single bits are accepted exactly when in KVM_CAP_GUEST_MEMFD_FLAGS', () =>
    withVm((vm) => {
      const supported = BigInt(vm.checkExtension('GUEST_MEMFD_FLAGS'));
      for (let bit = 0n; bit < 64n; bit++) {
        const flag = 1n << bit;
        let errno = 0;
        try {
          native.close(native.createGuestMemfd(vm.fd, BigInt(PAGE), flag));
        } catch (e) {
          errno = (e as { errno: number }).errno;
        }
        expect(errno === 0, `bit ${bit}`).toBe((flag & supported) !== 0n);
        if (errno) expect(errno).toBe(E.EINVAL);
      }
    }));

  it('names the supported flags when one is refused', () =>
    withVm((vm) => {
      const e = expectKvmError(() => vm.createGuestMemfd({ size: PAGE, flags: 1n << 40n }), 'EINVAL');
      expect(e.message).toMatch(/supported: mmap, init-shared/);
      expectKvmError(() => vm.createGuestMemfd({ size: PAGE, flags: ['bogus' as GuestMemfdFlag] }), 'EINVAL');
    }));

  it('refuses every size 1..4095, 0, page+1 and 2^63', () =>
    withVm((vm) => {
      for (let size = 1; size < PAGE; size++) expectKvmError(() => vm.createGuestMemfd({ size }), 'EINVAL');
      for (const size of [0, PAGE + 1, 1n << 63n]) expectKvmError(() => vm.createGuestMemfd({ size }), 'EINVAL');
      expectKvmError(() => vm.createGuestMemfd({ size: -PAGE }), 'EINVAL');
      expectKvmError(() => vm.createGuestMemfd({ size: 1.5 }), 'EINVAL');
      expectKvmError(() => vm.createGuestMemfd({ size: '4096' as never }), 'EINVAL');
    }));

  it('raw kernel: sizes 1..4095 give EINVAL', () =>
    withVm((vm) => {
      for (const size of [1n, 100n, 4095n, 4097n]) {
        expect(() => native.createGuestMemfd(vm.fd, size, 0n)).toThrow(expect.objectContaining({ errno: E.EINVAL }));
      }
    }));

  it('creates independent files (create_multiple)', () =>
    withVm((vm) => {
      using a = vm.createGuestMemfd({ size: PAGE });
      using b = vm.createGuestMemfd({ size: 2 * PAGE });
      expect(a.stat().size).toBe(BigInt(PAGE));
      expect(b.stat().size).toBe(BigInt(2 * PAGE));
      expect(a.stat().size).toBe(BigInt(PAGE));
      expect(a.stat().inode).not.toBe(b.stat().inode);
    }));

  it('reports st_size and st_blksize (file_size)', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE });
      expect(g.stat()).toMatchObject({ size: BigInt(4 * PAGE), blockSize: PAGE });
    }));

  it('refuses read, write, pread and pwrite (file_read_write)', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE });
      const buf = Buffer.alloc(64);
      expect(fsErrno(() => readSync(g.fd, buf))).toBe('EINVAL');
      expect(fsErrno(() => writeSync(g.fd, buf))).toBe('EINVAL');
      expect(fsErrno(() => readSync(g.fd, buf, 0, 64, 0))).toBe('ESPIPE');
      expect(fsErrno(() => writeSync(g.fd, buf, 0, 64, 0))).toBe('ESPIPE');
    }));
});

describeGuestMemfd('guest_memfd: mmap', () => {
  it('without the mmap flag, map() fails with ENODEV like the kernel', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE });
      expectKvmError(() => g.map(), 'ENODEV');
      for (const pages of [1, 4]) {
        expect(() => new native.Mapping(g.fd, BigInt(pages * PAGE), 3, 1, 0n, 4096n)).toThrow(expect.objectContaining({ errno: E.ENODEV }));
      }
    }));

  it('MAP_PRIVATE is refused by the kernel (mmap_cow)', () =>
    withVm((vm) => {
      for (const flags of [['mmap'], ['mmap', 'init-shared']] as GuestMemfdFlag[][]) {
        using g = vm.createGuestMemfd({ size: 4 * PAGE, flags });
        expect(() => new native.Mapping(g.fd, BigInt(4 * PAGE), 3, 2 /* MAP_PRIVATE */, 0n, 4096n)).toThrow(expect.objectContaining({ errno: E.EINVAL }));
      }
    }));

  it('with mmap|init-shared: write, punch a hole, read zeros, rewrite (mmap_supported)', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE, flags: ['mmap', 'init-shared'] });
      using m = g.map();
      const bytes = m.bytes;
      expect(bytes.length).toBe(4 * PAGE);
      bytes.fill(0xaa);
      expect(bytes.every((b) => b === 0xaa)).toBe(true);
      g.punchHole(0, PAGE);
      expect(bytes.subarray(0, PAGE).every((b) => b === 0)).toBe(true);
      expect(bytes.subarray(PAGE).every((b) => b === 0xaa)).toBe(true);
      bytes.fill(0xaa, 0, PAGE);
      expect(bytes.every((b) => b === 0xaa)).toBe(true);
    }));

  it('refuses to map past the end of the file (would SIGBUS)', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE, flags: ['mmap', 'init-shared'] });
      expectKvmError(() => g.map({ length: 16 * PAGE }), 'EINVAL');
      expectKvmError(() => g.map({ offset: 2 * PAGE, length: 3 * PAGE }), 'EINVAL');
    }));

  it('without init-shared the mapping exists but refuses host access (would SIGBUS)', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE, flags: ['mmap'] });
      using m = g.map();
      expect(m.hostAccessible).toBe(false);
      expectKvmError(() => m.bytes, 'EACCES');
    }));

  it('huge-page advice on a 2 MiB mapping (collapse)', () =>
    withVm((vm) => {
      const size = 2 << 20;
      using g = vm.createGuestMemfd({ size, flags: ['mmap', 'init-shared'] });
      using m = g.map();
      expect(m.address % (2n << 20n)).toBe(0n);
      let sum = 0;
      for (let off = 0; off < size; off += PAGE) sum += m.bytes[off]!;
      expect(sum).toBe(0);
      m.advise('hugepage');
      expectKvmError(() => m.advise('collapse'), 'EINVAL');
      m.advise('dontneed');
      expect(m.bytes[size - 1]).toBe(0);
    }));

  it('a view of a closed mapping reads zeros (never detached under Node, never faulting)', () =>
    withVm((vm) => {
      const g = vm.createGuestMemfd({ size: 4 * PAGE, flags: ['mmap', 'init-shared'] });
      const m = g.map();
      const bytes = m.bytes;
      bytes[0] = 1;
      m.close();
      expect(bytes.length).toBe(4 * PAGE);
      expect(bytes[0]).toBe(0); // the file's pages are gone: zero placeholder pages
      bytes.fill(1); // harmless
      expectKvmError(() => m.bytes, 'ECLOSED');
      g.close();
    }));
});

describeGuestMemfd('guest_memfd: fallocate', () => {
  it('follows the allocate/punch-hole rules in order', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE });
      g.allocate(0, 4 * PAGE);
      expectKvmError(() => g.punchHole(PAGE - 1, PAGE), 'EINVAL');
      expectKvmError(() => g.allocate(4 * PAGE, PAGE), 'EINVAL');
      expectKvmError(() => g.allocate(5 * PAGE, PAGE), 'EINVAL');
      g.punchHole(4 * PAGE, PAGE);
      g.punchHole(5 * PAGE, PAGE);
      expectKvmError(() => g.punchHole(PAGE, PAGE - 1), 'EINVAL');
      g.punchHole(PAGE, PAGE);
      g.allocate(PAGE, PAGE);
    }));

  it('raw kernel: the same sequence gives the same answers, and mode 0 is EOPNOTSUPP', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE });
      const P = BigInt(PAGE);
      const KEEP = 1;
      const PUNCH = 3;
      const run = (mode: number, off: bigint, len: bigint): number => {
        try {
          native.fallocate(g.fd, mode, off, len);
          return 0;
        } catch (e) {
          return (e as { errno: number }).errno;
        }
      };
      expect([
        run(KEEP, 0n, 4n * P), run(PUNCH, P - 1n, P), run(KEEP, 4n * P, P), run(KEEP, 5n * P, P),
        run(PUNCH, 4n * P, P), run(PUNCH, 5n * P, P), run(PUNCH, P, P - 1n), run(PUNCH, P, P), run(KEEP, P, P),
      ]).toEqual([0, E.EINVAL, E.EINVAL, E.EINVAL, 0, 0, E.EINVAL, 0, 0]);
      expect(run(0, 0n, P)).toBe(E.EOPNOTSUPP);
    }));

  it('refuses every unaligned punch-hole (invalid_punch_hole)', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4 * PAGE });
      const P = PAGE;
      for (const [off, len] of [[0, 1], [0, P - 1], [0, P + 1], [1, 1], [1, P - 1], [1, P], [1, P + 1], [P, 1], [P, P - 1], [P, P + 1]] as const) {
        expectKvmError(() => g.punchHole(off, len), 'EINVAL');
      }
    }));

  it('allocates asynchronously off the event loop', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using g = vm.createGuestMemfd({ size: 64 * PAGE });
    await expect(g.allocateAsync(0, 64 * PAGE)).resolves.toBeUndefined();
    const e = await kvmErrorOfAsync(g.allocateAsync(60 * PAGE, 8 * PAGE));
    expect(e.code).toBe('EINVAL');
  });

  it('throws ECLOSED after close', () =>
    withVm((vm) => {
      const g = vm.createGuestMemfd({ size: PAGE });
      g.close();
      expectKvmError(() => g.allocate(0, PAGE), 'ECLOSED');
      expectKvmError(() => g.fd, 'ECLOSED');
    }));
});

describeUnless(kvmUnavailable ?? (guestMemfdUnavailable ? undefined : 'this kernel has guest_memfd (run LAB_KERNEL=6.12 npm run test:lab for one without)'), 'guest_memfd absent', () => {
  it('is detected, and createGuestMemfd fails with EOPNOTSUPP before the kernel', () =>
    withVm((vm) => {
      expect(vm.capabilities.guestMemfd).toBe(false);
      expect(vm.checkExtension('GUEST_MEMFD')).toBe(0);
      expectKvmError(() => vm.createGuestMemfd({ size: PAGE }), 'EOPNOTSUPP');
    }));
});
