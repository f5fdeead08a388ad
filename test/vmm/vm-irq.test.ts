import { expect, it } from 'vitest';
import { EventFd, Kvm } from '../../lib/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';

describeKvm('VM interrupt ioctls', () => {
  it('createIrqchip, then getIrqchip/setIrqchip round-trip all three chips', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    expectKvmError(() => vm.getIrqchip('ioapic'), 'ENXIO');
    vm.createIrqchip();
    expectKvmError(() => vm.createIrqchip(), 'EEXIST');
    const ioapic = vm.getIrqchip('ioapic');
    expect(ioapic.chip).toBe('ioapic');
    if (ioapic.chip !== 'ioapic') throw new Error('narrowing');
    expect(ioapic.ioapic.baseAddress).toBe(0xfec00000n);
    expect(ioapic.ioapic.redirtbl).toHaveLength(24);
    const redirtbl = [...ioapic.ioapic.redirtbl];
    redirtbl[5] = 0x0000_0000_0000_0035n; // vector 0x35, unmasked
    vm.setIrqchip({ chip: 'ioapic', ioapic: { ...ioapic.ioapic, redirtbl } });
    const back = vm.getIrqchip('ioapic');
    expect(back.chip === 'ioapic' && back.ioapic.redirtbl[5]).toBe(0x35n);

    const master = vm.getIrqchip('pic-master');
    expect(master.chip).toBe('pic-master');
    if (master.chip === 'ioapic') throw new Error('narrowing');
    vm.setIrqchip({ chip: 'pic-master', pic: { ...master.pic, imr: 0xfb, irqBase: 0x20 } });
    const m2 = vm.getIrqchip('pic-master');
    expect(m2.chip !== 'ioapic' && m2.pic).toMatchObject({ imr: 0xfb, irqBase: 0x20 });
    expect(vm.getIrqchip('pic-slave').chip).toBe('pic-slave');

    expectKvmError(() => vm.getIrqchip('lapic' as never), 'EINVAL');
    expectKvmError(() => vm.setIrqchip({ chip: 'pic-master', pic: { ...master.pic, imr: 256 } }), 'EINVAL');
    expectKvmError(() => vm.setIrqchip({ chip: 'ioapic', ioapic: { ...ioapic.ioapic, redirtbl: [1n] } }), 'EINVAL');
    expectKvmError(() => vm.setIrqchip({ chip: 'ioapic', ioapic: ioapic.ioapic, extra: 1 } as never), 'EINVAL');
  });

  it('createPit2, getPit2/setPit2 round-trip', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    expectKvmError(() => vm.createPit2({ speaker: true } as never), 'EINVAL');
    vm.createIrqchip();
    vm.createPit2({ speakerDummy: true });
    const pit = vm.getPit2();
    expect(pit.channels).toHaveLength(3);
    const channels = pit.channels.map((c) => ({ ...c })) as typeof pit.channels;
    channels[2] = { ...channels[2], count: 0x1234, mode: 3, gate: 1 };
    vm.setPit2({ channels, flags: pit.flags });
    expect(vm.getPit2().channels[2]).toMatchObject({ count: 0x1234, mode: 3, gate: 1 });
    expectKvmError(() => vm.setPit2({ channels: [channels[0]], flags: 0 } as never), 'EINVAL');
  });

  it('irqLine and irqLineStatus drive a GSI; without an irqchip the kernel refuses', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    expectKvmError(() => vm.irqLine(4, true), 'ENXIO');
    vm.createIrqchip();
    vm.irqLine(4, true);
    vm.irqLine(4, false);
    expect(typeof vm.irqLineStatus(4, 1)).toBe('number');
    vm.irqLineStatus(4, 0);
    expectKvmError(() => vm.irqLine(4, 2 as never), 'EINVAL');
    expectKvmError(() => vm.irqLine(-1, true), 'EINVAL');
  });

  it('setGsiRouting takes irqchip and MSI routes and checks them first', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    vm.setGsiRouting([
      { gsi: 0, type: 'irqchip', irqchip: 'ioapic', pin: 2 },
      { gsi: 1, type: 'irqchip', irqchip: 'pic-master', pin: 1 },
      { gsi: 24, type: 'msi', address: 0xfee00000n, data: 0x41 },
    ]);
    vm.setGsiRouting([]);
    expectKvmError(() => vm.setGsiRouting([{ gsi: 0, type: 'irqchip', irqchip: 'ioapic', pin: 99 }]), 'EINVAL'); // kernel: pin out of range
    expectKvmError(() => vm.setGsiRouting([{ gsi: 0, type: 'hv' } as never]), 'EINVAL');
    expectKvmError(() => vm.setGsiRouting([{ gsi: 0, type: 'msi', address: 0n, data: 0, pin: 1 } as never]), 'EINVAL');
  });

  it('signalMsi delivers to the LAPIC (1) and validates', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    using vcpu = vm.createVcpu(0);
    vcpu.setLapic({ svr: 0x1ff });
    const rc = vm.signalMsi({ address: 0xfee00000n, data: 0x45 });
    expect(rc).toBeGreaterThanOrEqual(0);
    expectKvmError(() => vm.signalMsi({ address: 0xfee00000n } as never), 'EINVAL');
    expectKvmError(() => vm.signalMsi({ address: 0xfee00000n, data: 1, dev: 1 } as never), 'EINVAL');
  });

  it('registerIrqfd/unregisterIrqfd (with and without resample) and registerIoeventfd/unregisterIoeventfd', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    using a = new EventFd();
    using b = new EventFd();
    using resample = new EventFd();
    vm.registerIrqfd({ eventfd: a, gsi: 5 });
    expectKvmError(() => vm.registerIrqfd({ eventfd: a, gsi: 6 }), 'EBUSY'); // one GSI per eventfd
    vm.registerIrqfd({ eventfd: b, gsi: 10, resampleEventfd: resample });
    vm.unregisterIrqfd({ eventfd: a, gsi: 5 });
    vm.unregisterIrqfd({ eventfd: b, gsi: 10 });
    expectKvmError(() => vm.registerIrqfd({ eventfd: 3 as never, gsi: 1 }), 'EINVAL');
    expectKvmError(() => vm.registerIrqfd({ eventfd: a, gsi: 1, resample: b } as never), 'EINVAL');

    vm.registerIoeventfd({ eventfd: a, addr: 0x600, len: 2, pio: true });
    vm.registerIoeventfd({ eventfd: b, addr: 0xd000_0000n, len: 4, datamatch: 7 });
    expectKvmError(() => vm.registerIoeventfd({ eventfd: a, addr: 0x600, len: 2, pio: true }), 'EEXIST');
    vm.unregisterIoeventfd({ eventfd: a, addr: 0x600, len: 2, pio: true });
    vm.unregisterIoeventfd({ eventfd: b, addr: 0xd000_0000n, len: 4, datamatch: 7 });
    expectKvmError(() => vm.unregisterIoeventfd({ eventfd: b, addr: 0xd000_0000n, len: 4, datamatch: 7 }), 'ENOENT');
    expectKvmError(() => vm.registerIoeventfd({ eventfd: a, addr: 0x600, len: 3 as never }), 'EINVAL');
    expectKvmError(() => vm.registerIoeventfd({ eventfd: a, addr: 0x10000, len: 1, pio: true }), 'EINVAL');
    expectKvmError(() => vm.registerIoeventfd({ eventfd: a, addr: 0x60, len: 1, datamatch: 256 }), 'EINVAL');
    expectKvmError(() => vm.registerIoeventfd({ eventfd: a, addr: 0x60, len: 1, port: true } as never), 'EINVAL');
  });

  it('reads each option once: a getter cannot change what was checked', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    using e = new EventFd();
    let reads = 0;
    const tricky = {
      eventfd: e,
      get gsi(): number {
        reads++;
        return reads === 1 ? 3 : 0xffff_ffff;
      },
    };
    vm.registerIrqfd(tricky);
    expect(reads).toBe(1);
    vm.unregisterIrqfd({ eventfd: e, gsi: 3 });
  });
});
