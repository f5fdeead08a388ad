import { expect, it } from 'vitest';
import { Device, Kvm } from '../../lib/index.js';
import { Asm, emitUcallDone, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError, kvmErrorOf } from '../support/kvm.js';

describeKvm('VM settings: TSS/identity-map addresses, clock, caps, boot CPU', () => {
  it('setTssAddr and setIdentityMapAddr accept a region below 4 GiB and refuse bad ones first', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.setIdentityMapAddr(0xfffb_c000n);
    vm.setTssAddr(0xfffb_d000n);
    expectKvmError(() => vm.setTssAddr(0xfffb_d001n), 'EINVAL');
    expectKvmError(() => vm.setTssAddr(0xffff_e000n), 'EINVAL'); // 3 pages would pass 4 GiB
    expectKvmError(() => vm.setIdentityMapAddr(1n << 32n), 'EINVAL');
    vm.createVcpu(0);
    expectKvmError(() => vm.setIdentityMapAddr(0xfffb_c000n), 'EINVAL'); // the kernel: only before vcpus exist
  });

  it('getClock/setClock: the clock runs, and setClock moves it', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const a = vm.getClock();
    const b = vm.getClock();
    expect(b.clock).toBeGreaterThanOrEqual(a.clock);
    vm.setClock({ clock: 10n ** 12n });
    const c = vm.getClock();
    expect(c.clock).toBeGreaterThanOrEqual(10n ** 12n);
    expect(c.clock).toBeLessThan(10n ** 12n + 10n ** 10n); // within 10 s of what was set
    expectKvmError(() => vm.setClock({ clock: 0n, flags: 1 }), 'EINVAL');
    expectKvmError(() => vm.setClock({ time: 1n } as never), 'EINVAL');
  });

  it('enableCap enables a VM capability by name, and refuses unknown ones', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    if (vm.checkExtension('MANUAL_DIRTY_LOG_PROTECT2') > 0) vm.enableCap('MANUAL_DIRTY_LOG_PROTECT2', [1]);
    expectKvmError(() => vm.enableCap('NOPE' as never), 'EINVAL');
    expectKvmError(() => vm.enableCap(0xffff), 'EINVAL'); // the kernel: not an enableable cap
    expectKvmError(() => vm.enableCap('IRQCHIP', [1, 2, 3, 4, 5]), 'EINVAL');
  });

  it('setBootCpuId before vcpus exist, EBUSY after', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    vm.setBootCpuId(1);
    vm.createVcpu(1);
    expectKvmError(() => vm.setBootCpuId(0), 'EBUSY');
  });
});

describeKvm('devices (KVM_CREATE_DEVICE)', () => {
  it('creates the KVM-VFIO device, answers hasAttr, and is closed with the VM', () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    expect(vm.createDevice('vfio', { test: true })).toBeUndefined();
    const dev = vm.createDevice('vfio');
    expect(dev).toBeInstanceOf(Device);
    expect(dev.type).toBe(4);
    expect(dev.hasAttr({ group: 1, attr: 1 })).toBe(true); // KVM_DEV_VFIO_FILE / _ADD
    expect(dev.hasAttr({ group: 1, attr: 99 })).toBe(false);
    // Adding a non-VFIO fd is refused by the kernel (EBADF for -1).
    expect(() => dev.setAttr({ group: 1, attr: 1, value: 0xffff_ffffn, size: 4 })).toThrow();
    expect(['EPERM', 'ENXIO']).toContain(kvmErrorOf(() => dev.getAttr({ group: 1, attr: 1 })).code); // KVM-VFIO attributes cannot be read
    expectKvmError(() => dev.setAttr({ group: 1, attr: 1, value: 1n << 40n, size: 4 }), 'EINVAL');
    expectKvmError(() => vm.createDevice('nope' as never), 'EINVAL');
    expectKvmError(() => vm.createDevice('arm-vgic-v3'), 'ENODEV');
    vm.close();
    expect(dev.closed).toBe(true);
    expectKvmError(() => dev.hasAttr({ group: 1, attr: 1 }), 'ECLOSED');
  });
});

describeKvm('coalesced MMIO', () => {
  it('writes to a registered zone are queued in the ring, not exits, and coalescedMmioRead drains them', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const zone = { addr: 0xd000_0000n, size: 0x1000 };
    vm.registerCoalescedMmio(zone);
    const program = new Asm().mov('rbx', 0xd000_0010).mov('eax', 0x11).store({ base: 'rbx' }, 'eax').mov('eax', 0x22).store({ base: 'rbx' }, 'al');
    emitUcallDone(program);
    using guest = Guest.create(vm, { program });
    expect((await guest.run()).kind).toBe('done');
    const writes = guest.vcpu.coalescedMmioRead();
    expect(writes).toEqual([
      { physAddr: 0xd000_0010n, len: 4, pio: false, data: [0x11, 0, 0, 0] },
      { physAddr: 0xd000_0010n, len: 1, pio: false, data: [0x22] },
    ]);
    expect(guest.vcpu.coalescedMmioRead()).toEqual([]);
    vm.unregisterCoalescedMmio(zone);
    expectKvmError(() => vm.registerCoalescedMmio({ addr: 0, size: 0 }), 'EINVAL');
    expectKvmError(() => vm.registerCoalescedMmio({ addr: 0, size: 1, io: true } as never), 'EINVAL');
  });
});
