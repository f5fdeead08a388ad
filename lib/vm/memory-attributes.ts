/**
 * KVM_SET_MEMORY_ATTRIBUTES (struct kvm_memory_attributes): reading
 * Vm.setMemoryAttributes()'s options once, checking the range, and the
 * ioctl. The Vm records the result (lib/attributes.ts) for the software MMU.
 */
import { MEMORY_ATTRIBUTE_PRIVATE } from '../constants.js';
import { callNative, invalidArgument } from '../errors.js';
import { requirePageAligned, toU64, U64_LIMIT, type U64Like } from '../int.js';
import type { KvmCapabilities } from '../kvm.js';
import { native } from '../native.js';
import { opt, readOptions } from '../options.js';

/** The ioctl named in errors of Vm.setMemoryAttributes(). */
export const ATTRIBUTES_OP = 'KVM_SET_MEMORY_ATTRIBUTES';

const ATTRIBUTE_OPTIONS = { guestPhysAddr: opt.u64, size: opt.u64, private: opt.boolean } as const;

/** Options of Vm.setMemoryAttributes(). */
export interface MemoryAttributesOptions {
  /** Start of the range; 4 KiB aligned. */
  guestPhysAddr: U64Like;
  /** Size of the range in bytes; a non-zero multiple of 4 KiB. */
  size: U64Like;
  /** Make the range private (KVM_MEMORY_ATTRIBUTE_PRIVATE) or shared. */
  private: boolean;
}

/** A setMemoryAttributes() request as plain values. */
export interface AttributesRequest {
  guestPhysAddr: bigint;
  size: bigint;
  private: boolean;
}

/** Reads the options once (before the VM's open check). */
export function readAttributeOptions(options: MemoryAttributesOptions): AttributesRequest {
  const op = ATTRIBUTES_OP;
  const o = readOptions(options, op, ATTRIBUTE_OPTIONS, { required: true });
  return { guestPhysAddr: toU64(o.guestPhysAddr, 'guestPhysAddr', op), size: toU64(o.size, 'size', op), private: o.private === true };
}

/** Checks the range and the VM's support, then issues KVM_SET_MEMORY_ATTRIBUTES. */
export function setMemoryAttributes(vmFd: number, caps: Pick<KvmCapabilities, 'memoryAttributes'>, r: AttributesRequest): void {
  const op = ATTRIBUTES_OP;
  const { guestPhysAddr: gpa, size } = r;
  const args = { guestPhysAddr: gpa, size, private: r.private };
  requirePageAligned(gpa, 'guestPhysAddr', op, args);
  requirePageAligned(size, 'size', op, args);
  if (size === 0n || gpa + size > U64_LIMIT) throw invalidArgument(op, 'size must be non-zero and gpa + size must not overflow', args);
  // Answered by the VM fd: private memory depends on the VM type (sw-protected, snp, tdx).
  if (!caps.memoryAttributes.includes('private')) {
    throw invalidArgument(op, 'private memory attributes are not supported by this host/VM type (KVM_CAP_MEMORY_ATTRIBUTES lacks PRIVATE)', args, 'EOPNOTSUPP');
  }
  callNative(op, args, () => native.setMemoryAttributes(vmFd, gpa, size, r.private ? MEMORY_ATTRIBUTE_PRIVATE : 0n, 0n));
}
