import { expect, it } from 'vitest';
import { Kvm, MemFlag, type Vm } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { scaledTimeout } from '../../lib/time-scale.js';
import { describeGuestMemfd, describeKvm, E, expectKvmError, guestMemfdUnavailable } from '../support/kvm.js';

const PAGE = 4096n;
const MiB = 1n << 20n;

function withVm<T>(fn: (vm: Vm, kvm: Kvm) => T): T {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  return fn(vm, kvm);
}

/** errno of a raw KVM_SET_USER_MEMORY_REGION(2) call, 0 on success. */
function rawRegion(vm: Vm, v: 1 | 2, slot: number, flags: number, gpa: bigint, size: bigint, uaddr: bigint, off = 0n, gfd = 0): number {
  try {
    if (v === 1) native.setUserMemoryRegion(vm.fd, slot, flags, gpa, size, uaddr);
    else native.setUserMemoryRegion2(vm.fd, slot, flags, gpa, size, uaddr, off, gfd);
    return 0;
  } catch (e) {
    return (e as { errno: number }).errno;
  }
}

describeKvm('memslots: basics', () => {
  it('creates, lists, finds, moves and deletes a slot', () =>
    withVm((vm) => {
      const mem = vm.allocateMemory(2n * MiB);
      const slot = vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: mem });
      expect(slot).toMatchObject({ slot: 1, guestPhysAddr: 0x100000n, size: 2n * MiB, userspaceAddr: mem.address, readonly: false });
      expect(vm.memorySlots().map((s) => s.slot)).toEqual([1]);
      expect(vm.slotAt(0x100000n + MiB)?.slot).toBe(1);
      expect(vm.slotAt(0x100000n + 2n * MiB)).toBeUndefined();
      vm.moveMemoryRegion(1, 0x400000);
      expect(vm.slotAt(0x100000)).toBeUndefined();
      expect(vm.slotAt(0x400000)?.slot).toBe(1);
      vm.deleteMemoryRegion(1);
      expect(vm.memorySlots()).toEqual([]);
      expectKvmError(() => vm.deleteMemoryRegion(1), 'EINVAL');
    }));

  it('rejects unaligned or empty ranges and slots outside the memory before the kernel', () =>
    withVm((vm) => {
      const mem = vm.allocateMemory(4n * PAGE);
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0x1001, memory: mem }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, size: 100, memory: mem }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, size: 0, memory: mem }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, size: 8n * PAGE, memory: mem }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, memory: mem, memoryOffset: 100 }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: (1n << 64n) - PAGE, size: 2n * PAGE, userspaceAddr: mem.address }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: -1, guestPhysAddr: 0, memory: mem }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0 }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion(null as never), 'EINVAL');
      expect(vm.memorySlots()).toEqual([]);
    }));

  it('reports overlapping guest ranges as EEXIST, like the kernel', () =>
    withVm((vm) => {
      const mem = vm.allocateMemory(4n * MiB);
      vm.setMemoryRegion({ slot: 1, guestPhysAddr: 2n * MiB, size: 2n * MiB, memory: mem });
      const e = expectKvmError(() => vm.setMemoryRegion({ slot: 2, guestPhysAddr: 3n * MiB, size: 2n * MiB, memory: mem, memoryOffset: 2n * MiB }), 'EEXIST');
      expect(e.args.otherSlot).toBe(1);
      expectKvmError(() => vm.setMemoryRegion({ slot: 2, guestPhysAddr: MiB, size: 2n * MiB, memory: mem }), 'EEXIST');
      vm.setMemoryRegion({ slot: 2, guestPhysAddr: 4n * MiB, size: 2n * MiB, memory: mem }); // adjacent is fine
      expect(rawRegion(vm, 2, 3, 0, 3n * MiB, 2n * MiB, mem.address)).toBe(E.EEXIST);
    }));

  it('allows read-only and dirty-logging slots', () =>
    withVm((vm) => {
      const mem = vm.allocateMemory(2n * MiB);
      expect(vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, size: MiB, memory: mem, readonly: true }).flags).toBe(MemFlag.READONLY);
      expect(vm.setMemoryRegion({ slot: 2, guestPhysAddr: MiB, size: MiB, memory: mem, memoryOffset: MiB, logDirtyPages: true }).flags).toBe(MemFlag.LOG_DIRTY_PAGES);
      // Only LOG_DIRTY_PAGES may change on an existing slot.
      vm.setMemoryRegion({ slot: 2, guestPhysAddr: MiB, size: MiB, memory: mem, memoryOffset: MiB });
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, size: MiB, memory: mem }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, size: 2n * PAGE, memory: mem, readonly: true }), 'EINVAL');
    }));

  it.skipIf(guestMemfdUnavailable !== undefined)(`uses the v1 ioctl on request, and refuses guest_memfd through it${guestMemfdUnavailable ? ` [skipped: ${guestMemfdUnavailable}]` : ''}`, () =>
    withVm((vm) => {
      const mem = vm.allocateMemory(2n * MiB);
      vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0, memory: mem, api: 'v1' });
      using g = vm.createGuestMemfd({ size: 2n * MiB });
      const e = expectKvmError(() => vm.setMemoryRegion({ slot: 2, guestPhysAddr: 4n * MiB, memory: mem, guestMemfd: g, api: 'v1' }), 'EINVAL');
      expect(e.ioctl).toBe('KVM_SET_USER_MEMORY_REGION');
      vm.deleteMemoryRegion(1);
    }));

  it('raw kernel: every unsupported flag bit gives EINVAL on v1 and v2', () =>
    withVm((vm) => {
      const mem = vm.allocateMemory(2n * MiB);
      const supported = MemFlag.LOG_DIRTY_PAGES | MemFlag.READONLY;
      for (let bit = 0; bit < 32; bit++) {
        const flag = (1 << bit) >>> 0;
        if (flag & supported) continue;
        expect(rawRegion(vm, 1, 1, flag, 0n, 2n * MiB, mem.address), `v1 bit ${bit}`).toBe(E.EINVAL);
        // GUEST_MEMFD with fd 0 (not a guest_memfd) is invalid too.
        expect(rawRegion(vm, 2, 1, flag, 0n, 2n * MiB, mem.address), `v2 bit ${bit}`).toBe(E.EINVAL);
      }
    }));

  it('accepts KVM_CAP_NR_MEMSLOTS slots and refuses one more (max memslots)', () =>
    withVm((vm) => {
      const n = vm.capabilities.nrMemslots;
      const slotSize = 2n * MiB;
      using mem = HostMemoryNoReserve(BigInt(n) * slotSize);
      for (let i = 0; i < n; i++) {
        vm.setMemoryRegion({ slot: i, guestPhysAddr: BigInt(i) * slotSize, size: slotSize, memory: mem, memoryOffset: BigInt(i) * slotSize });
      }
      expect(vm.memorySlots().length).toBe(n);
      expectKvmError(() => vm.setMemoryRegion({ slot: n, guestPhysAddr: BigInt(n) * slotSize, size: slotSize, userspaceAddr: mem.address }), 'EINVAL');
      expect(rawRegion(vm, 2, n, 0, BigInt(n) * slotSize, slotSize, mem.address)).toBe(E.EINVAL);
    }), scaledTimeout(120_000));

  it('throws ECLOSED once the VM is closed', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const mem = vm.allocateMemory(PAGE);
    vm.close();
    kvm.close();
    expect(mem.closed).toBe(true);
    expectKvmError(() => vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0, size: PAGE, userspaceAddr: 0x1000 }), 'ECLOSED');
    expectKvmError(() => vm.createVcpu(), 'ECLOSED');
  });
});

import { HostMemory } from '../../lib/index.js';
function HostMemoryNoReserve(size: bigint): HostMemory {
  return HostMemory.allocate(size, { noReserve: true });
}

describeGuestMemfd('memslots: guest_memfd bindings', () => {
  it('binds a guest_memfd at offset 0 and refuses unaligned offsets 1..4095', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 4n * MiB });
      for (let off = 1; off < 4096; off += 1) {
        expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 2n * MiB, guestMemfd: g, guestMemfdOffset: off }), 'EINVAL');
      }
      vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 2n * MiB, guestMemfd: g, guestMemfdOffset: 0 });
      expect(vm.slotAt(0xc0000000)?.guestMemfd).toBe(g);
    }));

  it('raw kernel: bad guest_memfd fds and offsets are EINVAL/EBADF', () =>
    withVm((vm, kvm) => {
      using g = vm.createGuestMemfd({ size: 4n * MiB });
      using kvm2 = Kvm.open();
      using vm2 = kvm2.createVm();
      using other = vm2.createGuestMemfd({ size: 4n * MiB });
      const memfd = native.memfdCreate('not-guest-memfd');
      try {
        const bind = (fd: number, off = 0n) => rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD, 0xc0000000n, 2n * MiB, 0n, off, fd);
        expect(bind(kvm.fd)).toBe(E.EINVAL);
        expect(bind(vm.fd)).toBe(E.EINVAL);
        expect(bind(memfd)).toBe(E.EINVAL);
        expect(bind(other.fd)).toBe(E.EINVAL);
        expect(bind(-1)).toBe(E.EBADF);
        for (const off of [1n, 4095n]) expect(bind(g.fd, off)).toBe(E.EINVAL);
        expect(bind(g.fd, 4n * MiB)).toBe(E.EINVAL); // past the end of the file
        expect(rawRegion(vm, 1, 10, MemFlag.GUEST_MEMFD, 0xc0000000n, 2n * MiB, 0n)).toBe(E.EINVAL);
        expect(bind(g.fd, 0n)).toBe(0);
      } finally {
        native.close(memfd);
      }
    }));

  it('refuses another VM\'s guest_memfd, a closed one, and one with readonly/dirty-log', () =>
    withVm((vm) => {
      using kvm2 = Kvm.open();
      using vm2 = kvm2.createVm();
      using other = vm2.createGuestMemfd({ size: 4n * MiB });
      expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 2n * MiB, guestMemfd: other }), 'EINVAL');
      const closed = vm.createGuestMemfd({ size: 4n * MiB });
      closed.close();
      expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 2n * MiB, guestMemfd: closed }), 'EBADF');
      using g = vm.createGuestMemfd({ size: 4n * MiB });
      const mem = vm.allocateMemory(2n * MiB);
      expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, memory: mem, guestMemfd: g, readonly: true }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, memory: mem, guestMemfd: g, logDirtyPages: true }), 'EINVAL');
      expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 2n * MiB, guestMemfd: g, guestMemfdOffset: 3n * MiB }), 'EINVAL');
    }));

  it('refuses moving a guest_memfd slot or changing its flags; deleting after closing the guest_memfd works', () =>
    withVm((vm) => {
      const g = vm.createGuestMemfd({ size: 4n * MiB });
      vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 2n * MiB, guestMemfd: g });
      expectKvmError(() => vm.moveMemoryRegion(10, 0xd0000000), 'EINVAL');
      const rawMove = rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD, 0xd0000000n, 2n * MiB, 0n, 0n, g.fd);
      expect(rawMove).toBe(E.EINVAL);
      g.close();
      vm.deleteMemoryRegion(10);
      expect(vm.memorySlots()).toEqual([]);
    }));

  it('overlapping guest_memfd bindings are always EEXIST', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 10n * MiB });
      vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: 0 });
      vm.setMemoryRegion({ slot: 11, guestPhysAddr: 0x180000000n, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: 4n * MiB });
      vm.deleteMemoryRegion(10);
      for (const off of [2n * MiB, 6n * MiB]) {
        expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: 0xc0000000, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: off }), 'EEXIST');
      }
      for (const gpa of [0x180000000n - 2n * MiB, 0x180000000n + 2n * MiB]) {
        expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: gpa, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: 0 }), 'EEXIST');
      }
    }));

  it('raw kernel records: overlapping offsets and an overflowing offset', () =>
    withVm((vm) => {
      using g = vm.createGuestMemfd({ size: 10n * MiB });
      expect(rawRegion(vm, 2, 11, MemFlag.GUEST_MEMFD, 0x180000000n, 4n * MiB, 0n, 4n * MiB, g.fd)).toBe(0);
      // Upstream 7.3 says EEXIST; the 6.18 kernel measured here says EINVAL. node-kvm always says EEXIST.
      expect([E.EEXIST, E.EINVAL]).toContain(rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD, 0xc0000000n, 4n * MiB, 0n, 2n * MiB, g.fd));
      // An offset whose end overflows a signed 64-bit value: upstream says EINVAL; node-kvm always says EINVAL.
      expectKvmError(() => vm.setMemoryRegion({ slot: 12, guestPhysAddr: 0, size: 4n * PAGE, guestMemfd: g, guestMemfdOffset: 0x7ffffffffffff000n }), 'EINVAL');
    }));
});

describeKvm('memory attributes', () => {
  it('are refused with EOPNOTSUPP where the VM lacks private memory, and the kernel agrees', () =>
    withVm((vm) => {
      const bits = vm.checkExtension('MEMORY_ATTRIBUTES');
      if ((bits & 8) !== 0) return; // this host supports them: covered by the lab/other hosts
      const e = expectKvmError(() => vm.setMemoryAttributes({ guestPhysAddr: 0, size: 4096, private: true }), 'EOPNOTSUPP');
      expect(e.ioctl).toBe('KVM_SET_MEMORY_ATTRIBUTES');
      expect(vm.privateRanges()).toEqual([]);
      let errno = 0;
      try {
        native.setMemoryAttributes(vm.fd, 0n, 4096n, 8n, 0n);
      } catch (err) {
        errno = (err as { errno: number }).errno;
      }
      expect(errno).not.toBe(0);
    }));

  it('validate their range before anything else', () =>
    withVm((vm) => {
      expectKvmError(() => vm.setMemoryAttributes({ guestPhysAddr: 1, size: 4096, private: true }), 'EINVAL');
      expectKvmError(() => vm.setMemoryAttributes({ guestPhysAddr: 0, size: 0, private: true }), 'EINVAL');
    }));
});
