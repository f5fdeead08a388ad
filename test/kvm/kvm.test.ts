import { expect, it } from 'vitest';
import { Cap, Kvm, KvmError, VM_TYPES, type VmType } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { describeKvm, E, expectKvmError } from '../support/kvm.js';

describeKvm('Kvm (system fd)', () => {
  it('opens /dev/kvm with API version 12', () => {
    using kvm = Kvm.open();
    expect(kvm.apiVersion).toBe(12);
    expect(kvm.path).toBe('/dev/kvm');
    expect(kvm.fd).toBeGreaterThan(2);
  });

  it('fails to open a missing device with ENOENT and a hint', () => {
    const e = expectKvmError(() => Kvm.open({ path: '/dev/no-such-kvm' }), 'ENOENT', E.ENOENT);
    expect(e.syscall).toBe('open');
    expect(e.args.path).toBe('/dev/no-such-kvm');
    expect(e.message).toMatch(/load the KVM module/);
  });

  it('rejects a device that is not KVM', () => {
    const e = expectKvmError(() => Kvm.open({ path: '/dev/null' }), 'ENOTTY');
    expect(e.ioctl).toBe('KVM_GET_API_VERSION');
  });

  it('checkExtension by number and by name agree; unknown names are EINVAL', () => {
    using kvm = Kvm.open();
    expect(kvm.checkExtension(Cap.NR_MEMSLOTS)).toBe(kvm.checkExtension('NR_MEMSLOTS'));
    expect(kvm.checkExtension(0xfffff)).toBe(0);
    expectKvmError(() => kvm.checkExtension('NOPE' as never), 'EINVAL');
    expectKvmError(() => kvm.checkExtension(-1), 'EINVAL');
  });

  it('decodes capabilities consistently with the raw capability numbers', () => {
    using kvm = Kvm.open();
    const caps = kvm.capabilities();
    expect(caps.apiVersion).toBe(12);
    expect(caps.userMemory2).toBe(kvm.checkExtension(231) > 0);
    expect(caps.guestMemfd).toBe(kvm.checkExtension(234) > 0);
    expect(caps.preFaultMemory).toBe(kvm.checkExtension(236) > 0);
    expect(caps.nrMemslots).toBe(kvm.checkExtension(10));
    const flagBits = kvm.checkExtension(244);
    expect(caps.guestMemfdFlags.includes('mmap')).toBe((flagBits & 1) !== 0);
    expect(caps.guestMemfdFlags.includes('init-shared')).toBe((flagBits & 2) !== 0);
    const typeBits = kvm.checkExtension(235);
    for (const t of Object.keys(VM_TYPES) as VmType[]) {
      if (t !== 'default') expect(caps.vmTypes.includes(t)).toBe((typeBits & (1 << VM_TYPES[t])) !== 0);
    }
    expect(caps.vmTypes).toContain('default');
    expect(caps.vcpuMmapSize).toBeGreaterThanOrEqual(4096);
  });

  it('returns the supported CPUID with a long-mode leaf', () => {
    using kvm = Kvm.open();
    const cpuid = kvm.supportedCpuid();
    expect(cpuid.length).toBeGreaterThan(4);
    const ext = cpuid.find((e) => e.function === 0x80000001);
    expect(ext).toBeDefined();
    expect((ext!.edx >>> 29) & 1).toBe(1); // LM
  });

  it('throws ECLOSED after close, and close is idempotent', () => {
    const kvm = Kvm.open();
    kvm.close();
    kvm.close();
    expect(kvm.closed).toBe(true);
    const e = expectKvmError(() => kvm.apiVersion, 'ECLOSED');
    expect(e).toBeInstanceOf(KvmError);
    expectKvmError(() => kvm.createVm(), 'ECLOSED');
  });
});

describeKvm('Kvm.createVm', () => {
  it('creates a default VM that outlives the system fd', () => {
    const kvm = Kvm.open();
    using vm = kvm.createVm({ type: 'default' });
    kvm.close();
    expect(vm.checkExtension('NR_MEMSLOTS')).toBeGreaterThan(0);
    expect(vm.type).toBe('default');
  });

  it('rejects each unsupported VM type with the supported list', () => {
    using kvm = Kvm.open();
    const supported = kvm.capabilities().vmTypes;
    for (const t of Object.keys(VM_TYPES) as VmType[]) {
      if (supported.includes(t)) continue;
      const e = expectKvmError(() => kvm.createVm({ type: t }), 'EINVAL');
      expect(e.ioctl).toBe('KVM_CREATE_VM');
      expect(e.message).toContain(`supported: ${supported.join(', ')}`);
    }
  });

  it('rejects unknown VM type names', () => {
    using kvm = Kvm.open();
    expectKvmError(() => kvm.createVm({ type: 'bogus' as VmType }), 'EINVAL');
  });

  it('raw kernel: unsupported VM type numbers give EINVAL (records the kernel behaviour)', () => {
    using kvm = Kvm.open();
    const bits = kvm.checkExtension('VM_TYPES');
    for (let type = 1; type <= 5; type++) {
      if (bits & (1 << type)) continue;
      let errno = 0;
      try {
        native.close(native.createVm(kvm.fd, type));
      } catch (e) {
        errno = (e as { errno: number }).errno;
      }
      expect(errno, `type ${type}`).toBe(E.EINVAL);
    }
  });
});

describeKvm('Kvm.open argument checks', () => {
  it('refuses a path with a NUL instead of opening a shorter one', () => {
    expectKvmError(() => Kvm.open({ path: '/dev/kvm\0x' }), 'EINVAL');
  });
});
