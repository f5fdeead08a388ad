/**
 * Extra vcpus for the multi-vcpu ports: each starts where the guest kit's
 * first vcpu starts (same CPUID and special registers, same code), on its own
 * stack page below the first one's, with the general registers the port
 * gives it (upstream gives each vcpu its own slice of the test memory).
 */
import type { Guest } from '../guest/guest.js';
import { DEFAULT_GUEST_LAYOUT, initialRegs } from '../guest/layout.js';
import type { Kvm } from '../kvm.js';
import type { RegsUpdate, Vcpu } from '../vcpu.js';

/**
 * Creates vcpus 1..count-1 beside `guest.vcpu` and pushes each onto `into`
 * as soon as it exists (so a caller's cleanup closes it even if a later one
 * fails). `regsOf(i)` gives vcpu i's own registers (rbx, rcx, ...).
 */
export function addSiblingVcpus(kvm: Kvm, guest: Guest, count: number, regsOf: (i: number) => RegsUpdate, into: Vcpu[]): void {
  const sregs = guest.vcpu.getSregs();
  const cpuid = kvm.supportedCpuid();
  for (let i = 1; i < count; i++) {
    const v = guest.vcpu.vm.createVcpu(i);
    into.push(v);
    v.setCpuid(cpuid);
    v.setSregs(sregs);
    v.setRegs({ ...initialRegs({ rip: guest.codeGpa, rsp: DEFAULT_GUEST_LAYOUT.stackTop - BigInt(i) * 0x1000n }), ...regsOf(i) });
  }
}
