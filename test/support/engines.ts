/**
 * Which pre-fault engines this host can run: software always; kernel when a
 * one-page KVM_PRE_FAULT_MEMORY on a scratch VM succeeds (capability 236 alone
 * is not proof).
 */
import { Kvm, type PreFaultEngineName } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { kvmUnavailable } from './kvm.js';

/** errno of a one-page KVM_PRE_FAULT_MEMORY trial on a scratch VM (0 = works). */
export function kernelPreFaultTrialErrno(): number {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  const mem = vm.allocateMemory(4096);
  vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0x100000, memory: mem });
  using vcpu = vm.createVcpu(0);
  const r = native.preFaultMemory(vcpu.fd, 0x100000n, 4096n, 0n);
  return r.rc < 0 ? r.errno : 0;
}

/** Engines to run the scenario table against. */
export const engines: PreFaultEngineName[] = kvmUnavailable ? [] : kernelPreFaultTrialErrno() === 0 ? ['kernel', 'software'] : ['software'];

/** Why the kernel engine is not tested here, if it is not. */
export const kernelEngineMissing: string | undefined = engines.includes('kernel') ? undefined : 'KVM_PRE_FAULT_MEMORY does not work on this host (run npm run test:lab for a TDP kernel)';

/** Set by the kernel lab: the kernel engine must be available and used. */
export const inLab = process.env.NODE_KVM_LAB === '1';
