/** stats(): values shaped by their descriptors, and typed by them. */
import { expect, expectTypeOf, it } from 'vitest';
import { Kvm, type VcpuStats, type VmStats } from '../../lib/index.js';
import { describeKvm } from '../support/kvm.js';

describeKvm('binary stats', () => {
  it('histograms read as arrays of buckets, everything else as one bigint, as the descriptors say', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    for (const [values, descriptors] of [[vcpu.stats(), vcpu.statsDescriptors()], [vm.stats(), vm.statsDescriptors()]] as const) {
      expect(descriptors.length).toBeGreaterThan(0);
      for (const d of descriptors) {
        const v = (values as Record<string, unknown>)[d.name];
        if (d.type === 'linear-hist' || d.type === 'log-hist') expect(v, d.name).toHaveLength(d.size);
        else expect(typeof v, d.name).toBe('bigint');
      }
    }
    expect(typeof vcpu.stats().exits).toBe('bigint');
    expect(typeof vm.stats().pages_4k).toBe('bigint');
  });

  it('types the names KVM is known to report', () => {
    expectTypeOf<VcpuStats['exits']>().toEqualTypeOf<bigint>();
    expectTypeOf<VcpuStats['halt_wait_hist']>().toEqualTypeOf<bigint[] | undefined>();
    expectTypeOf<VcpuStats['pf_taken']>().toEqualTypeOf<bigint | undefined>();
    expectTypeOf<VmStats['pages_2m']>().toEqualTypeOf<bigint>();
    expectTypeOf<VmStats['some_future_stat']>().toEqualTypeOf<bigint | bigint[]>();
  });
});
