/**
 * Byte offsets inside struct kvm_run on x86-64, laid out from the kernel's
 * api.rst (section "The kvm_run structure") by the C alignment rules: the
 * header, then the 256-byte exit union at 32, then kvm_valid_regs,
 * kvm_dirty_regs and the sync regs. test/kvm/exits.test.ts checks the ones a
 * guest can provoke against what the kernel writes.
 */

/** The exit union starts here and is 256 bytes long. */
const U = 32;

/** Offsets of kvm_run fields (x86-64). */
export const KVM_RUN_LAYOUT = {
  requestInterruptWindow: 0,
  immediateExit: 1,
  exitReason: 8,
  readyForInterruptInjection: 12,
  ifFlag: 13,
  /** KVM_RUN_X86_SMM (bit 0), KVM_RUN_X86_BUS_LOCK (bit 1), KVM_RUN_X86_GUEST_MODE (bit 2). */
  flags: 14,
  cr8: 16,
  apicBase: 24,
  union: U,
  unionSize: 256,
  /** kvm_valid_regs; kvm_dirty_regs follows at 296, struct kvm_sync_regs at 304. */
  validRegs: U + 256,
  dirtyRegs: U + 264,
  syncRegs: U + 272,
  hw: { hardwareExitReason: U },
  failEntry: { reason: U, cpu: U + 8 },
  ex: { exception: U, errorCode: U + 4 },
  io: { direction: U, size: U + 1, port: U + 2, count: U + 4, dataOffset: U + 8 },
  debug: { exception: U, pc: U + 8, dr6: U + 16, dr7: U + 24 },
  mmio: { physAddr: U, data: U + 8, len: U + 16, isWrite: U + 20 },
  /** args[6] follow nr; then ret; then the union of longmode (u32) and flags (u64). */
  hypercall: { nr: U, args: U + 8, ret: U + 56, flags: U + 64 },
  tprAccess: { rip: U, isWrite: U + 8 },
  internal: { suberror: U, ndata: U + 4, data: U + 8 },
  /** The emulation-failure view of `internal`: data[0] is flags, then insn_size and 15 bytes. */
  emulationFailure: { flags: U + 8, insnSize: U + 16, insnBytes: U + 17 },
  /** type, ndata, then the union of flags and data[16]. */
  systemEvent: { type: U, ndata: U + 4, data: U + 8 },
  eoi: { vector: U },
  hyperv: {
    type: U,
    synic: { msr: U + 8, control: U + 16, evtPage: U + 24, msgPage: U + 32 },
    hcall: { input: U + 8, result: U + 16, params: U + 24 },
    syndbg: { msr: U + 8, control: U + 16, status: U + 24, sendPage: U + 32, recvPage: U + 40, pendingPage: U + 48 },
  },
  /** error is user -> kernel; reason and index kernel -> user; data both ways. */
  msr: { error: U, reason: U + 8, index: U + 12, data: U + 16 },
  /** struct kvm_xen_exit: type, then (8-aligned) hcall { longmode, cpl, input, result, params[6] }. */
  xen: { type: U, longMode: U + 8, cpl: U + 12, input: U + 16, result: U + 24, params: U + 32 },
  notify: { flags: U },
  memoryFault: { flags: U, gpa: U + 8, size: U + 16 },
  /** flags, nr, then a union whose first u64 is always the return code. */
  tdx: { flags: U, nr: U + 8, words: U + 16 },
} as const;
