import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';

describeKvm('system fd: MSR lists, feature MSRs, emulated CPUID', () => {
  it('lists the MSRs KVM saves, including the TSC and STAR', () => {
    using kvm = Kvm.open();
    const list = kvm.msrIndexList();
    expect(list.length).toBeGreaterThan(10);
    expect(list).toContain(0x10); // IA32_TSC
    expect(list).toContain(0xc0000081); // STAR (EFER itself travels in kvm_sregs)
    expect(new Set(list).size).toBe(list.length);
  });

  it('reads feature MSRs listed by msrFeatureIndexList, and names an unknown one', () => {
    using kvm = Kvm.open();
    const features = kvm.msrFeatureIndexList();
    if (kvm.checkExtension('GET_MSR_FEATURES') === 0) {
      expect(features).toEqual([]);
      return;
    }
    expect(features.length).toBeGreaterThan(0);
    const values = kvm.getMsrFeatures(features);
    expect(values.map((v) => v.index)).toEqual(features);
    for (const v of values) expect(typeof v.data).toBe('bigint');
    const e = expectKvmError(() => kvm.getMsrFeatures([features[0]!, 0x12345678]), 'EINVAL');
    expect(e.args.msr).toBe('0x12345678');
    expect(e.args.processed).toBe(1);
    expectKvmError(() => kvm.getMsrFeatures([-1]), 'EINVAL');
    expectKvmError(() => kvm.getMsrFeatures('x' as unknown as number[]), 'EINVAL');
  });

  it('emulatedCpuid returns CPUID entries (MOVBE/RDPID leaves)', () => {
    using kvm = Kvm.open();
    const entries = kvm.emulatedCpuid();
    expect(entries.length).toBeGreaterThan(0);
    expect(entries.every((e) => typeof e.function === 'number' && typeof e.eax === 'number')).toBe(true);
    expect(entries.some((e) => e.function === 1 || e.function === 7)).toBe(true);
  });

  it('refuses calls after close', () => {
    const kvm = Kvm.open();
    kvm.close();
    expectKvmError(() => kvm.msrIndexList(), 'ECLOSED');
    expectKvmError(() => kvm.emulatedCpuid(), 'ECLOSED');
  });
});
