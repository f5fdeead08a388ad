/**
 * What this machine's KVM is, checked against shared/notes/host-facts.md.
 * When the host changes (a TDP kernel, a new module), these fail by name.
 */
import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { describeUnless, isKvmPvm, kvmUnavailable } from '../support/kvm.js';

describeUnless(kvmUnavailable ?? (isKvmPvm ? undefined : 'this host is not kvm_pvm'), 'host facts: kvm_pvm (shadow paging)', () => {
  it('capabilities match the documented values', () => {
    using kvm = Kvm.open();
    const caps = kvm.capabilities();
    expect(caps).toMatchObject({
      apiVersion: 12,
      userMemory2: true,
      memoryFaultInfo: true,
      memoryAttributes: [],
      guestMemfd: true,
      vmTypes: ['default'],
      preFaultMemory: false,
      guestMemfdFlags: ['mmap', 'init-shared'],
      nrMemslots: 32764,
      vcpuMmapSize: 12288,
    });
  });
});
