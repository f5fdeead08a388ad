/**
 * Capabilities answered by the VM fd (KVM_CHECK_EXTENSION on the VM): some
 * depend on the VM type and must not be taken from /dev/kvm. 6.12, for one,
 * says GUEST_MEMFD = 1 on /dev/kvm but 0 on a default VM.
 */
import { Cap, MEMORY_ATTRIBUTE_PRIVATE } from '../constants.js';
import { guestMemfdFlagNames } from '../guest-memfd.js';
import type { KvmCapabilities } from '../kvm.js';
import { native } from '../native.js';

/** KVM_CAP_MULTI_ADDRESS_SPACE: how many memslot address spaces (bits 16+ of a slot id) the VM has. */
const CAP_MULTI_ADDRESS_SPACE = 118;

/** What a new VM's fd says about itself. */
export interface VmCapabilityProbe {
  /** The host's capabilities with the VM-type-dependent ones answered by the VM fd. */
  caps: KvmCapabilities;
  /** Raw KVM_CAP_GUEST_MEMFD_FLAGS of this VM (bits node-kvm may not name yet included). */
  guestMemfdFlags: bigint;
  /** Memslot address spaces (1, or 2 with SMM): bits 16+ of a slot id must be below it. */
  addressSpaces: number;
}

/** KVM_CHECK_EXTENSION on the VM fd, 0 where the kernel refuses the question. */
function vmCap(fd: number, n: number): number {
  try {
    return native.checkExtension(fd, n);
  } catch {
    return 0;
  }
}

/** Asks the VM fd the questions whose answers depend on the VM type. */
export function probeVmCapabilities(fd: number, hostCaps: KvmCapabilities): VmCapabilityProbe {
  const addressSpaces = Math.max(1, vmCap(fd, CAP_MULTI_ADDRESS_SPACE));
  const guestMemfd = vmCap(fd, Cap.GUEST_MEMFD) > 0;
  const guestMemfdFlags = guestMemfd ? BigInt(vmCap(fd, Cap.GUEST_MEMFD_FLAGS)) : 0n;
  const caps: KvmCapabilities = {
    ...hostCaps,
    guestMemfd,
    guestMemfdFlags: guestMemfdFlagNames(guestMemfdFlags),
    memoryAttributes: (BigInt(vmCap(fd, Cap.MEMORY_ATTRIBUTES)) & MEMORY_ATTRIBUTE_PRIVATE) !== 0n ? ['private'] : [],
  };
  return { caps, guestMemfdFlags, addressSpaces };
}

/** KVM_CAP_MAX_VCPU_ID of the VM (KVM_CAP_MAX_VCPUS where the kernel does not say; else no limit). */
export function vcpuIdLimit(fd: number, caps: Pick<KvmCapabilities, 'maxVcpus'>): number {
  let n = 0;
  try {
    n = native.checkExtension(fd, Cap.MAX_VCPU_ID);
  } catch {
    // older kernels: fall back below
  }
  return n > 0 ? n : caps.maxVcpus > 0 ? caps.maxVcpus : 2 ** 32;
}
