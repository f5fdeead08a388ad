/**
 * Kernel numbers by name: KVM capabilities, VM types, guest_memfd flags,
 * memslot flags and the host mm constants node-kvm uses.
 */
import { invalidArgument } from './errors.js';
import { describe } from './int.js';

/** KVM capability numbers (KVM_CHECK_EXTENSION), named as in api.rst without KVM_CAP_. */
export const Cap = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  VAPIC: 6,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  MP_STATE: 14,
  SYNC_MMU: 16,
  IOEVENTFD: 36,
  MAX_VCPUS: 66,
  READONLY_MEM: 81,
  CHECK_EXTENSION_VM: 105,
  MAX_VCPU_ID: 128,
  IMMEDIATE_EXIT: 136,
  BINARY_STATS_FD: 203,
  SYSTEM_EVENT_DATA: 215,
  USER_MEMORY2: 231,
  MEMORY_FAULT_INFO: 232,
  MEMORY_ATTRIBUTES: 233,
  GUEST_MEMFD: 234,
  VM_TYPES: 235,
  PRE_FAULT_MEMORY: 236,
  GUEST_MEMFD_FLAGS: 244,
  // The VMM ioctls' capabilities.
  COALESCED_MMIO: 15,
  USER_NMI: 22,
  SET_GUEST_DEBUG: 23,
  IRQ_ROUTING: 25,
  IRQ_INJECT_STATUS: 26,
  IRQFD: 32,
  PIT2: 33,
  SET_BOOT_CPU_ID: 34,
  PIT_STATE2: 35,
  SET_IDENTITY_MAP_ADDR: 37,
  ADJUST_CLOCK: 39,
  VCPU_EVENTS: 41,
  DEBUGREGS: 50,
  XSAVE: 55,
  XCRS: 56,
  TSC_CONTROL: 60,
  GET_TSC_KHZ: 61,
  TSC_DEADLINE_TIMER: 72,
  KVMCLOCK_CTRL: 76,
  SIGNAL_MSI: 77,
  IRQFD_RESAMPLE: 82,
  DEVICE_CTRL: 89,
  EXT_EMUL_CPUID: 95,
  X86_SMM: 117,
  IOEVENTFD_ANY_LENGTH: 122,
  GET_MSR_FEATURES: 153,
  NESTED_STATE: 157,
  COALESCED_PIO: 162,
  MANUAL_DIRTY_LOG_PROTECT2: 168,
  XSAVE2: 208,
} as const;

/** A capability name of `Cap`. */
export type CapName = keyof typeof Cap;

/** VM types by name, in KVM_CREATE_VM's numbering. */
export const VM_TYPES = {
  default: 0,
  'sw-protected': 1,
  sev: 2,
  'sev-es': 3,
  snp: 4,
  tdx: 5,
} as const;

/** A VM type accepted by Kvm.createVm(). */
export type VmType = keyof typeof VM_TYPES;

/** guest_memfd creation flags by name. */
export const GUEST_MEMFD_FLAGS = {
  mmap: 1n << 0n,
  'init-shared': 1n << 1n,
} as const;

/** A guest_memfd flag name. */
export type GuestMemfdFlag = keyof typeof GUEST_MEMFD_FLAGS;

/** kvm_userspace_memory_region(2) flags. */
export const MemFlag = {
  LOG_DIRTY_PAGES: 1 << 0,
  READONLY: 1 << 1,
  GUEST_MEMFD: 1 << 2,
} as const;

/** KVM_SET_MEMORY_ATTRIBUTES bits. */
export const MEMORY_ATTRIBUTE_PRIVATE = 1n << 3n;

/** Host mm constants (Linux x86-64 values). */
export const Mm = {
  PROT_NONE: 0,
  PROT_READ: 1,
  PROT_WRITE: 2,
  MAP_SHARED: 0x01,
  MAP_PRIVATE: 0x02,
  MAP_ANONYMOUS: 0x20,
  MAP_NORESERVE: 0x4000,
  MADV_DONTNEED: 4,
  MADV_HUGEPAGE: 14,
  MADV_NOHUGEPAGE: 15,
  MADV_POPULATE_READ: 22,
  MADV_POPULATE_WRITE: 23,
  MADV_COLLAPSE: 25,
  FALLOC_FL_KEEP_SIZE: 0x01,
  FALLOC_FL_PUNCH_HOLE: 0x02,
} as const;

/** madvise() advice by name, as accepted by HostMemory.advise(). */
export const ADVICE = {
  'populate-write': Mm.MADV_POPULATE_WRITE,
  'populate-read': Mm.MADV_POPULATE_READ,
  hugepage: Mm.MADV_HUGEPAGE,
  nohugepage: Mm.MADV_NOHUGEPAGE,
  dontneed: Mm.MADV_DONTNEED,
  collapse: Mm.MADV_COLLAPSE,
} as const;

/** An advice name of `ADVICE`. */
export type Advice = keyof typeof ADVICE;

/** The number of capability `name`; KvmError EINVAL (naming `op`) for a name node-kvm does not know. */
export function capNumber(name: string, op: string): number {
  if (!Object.hasOwn(Cap, name)) throw invalidArgument(op, `unknown capability name ${describe(name)}`);
  return Cap[name as CapName];
}
