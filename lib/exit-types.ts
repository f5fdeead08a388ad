/**
 * The typed exits of KVM_RUN: one interface per KVM_EXIT_* reason, a union
 * discriminated by `reason` (see lib/exit.ts for the decoding and
 * docs/exits.md for what is live and how replies go back).
 */

/** KVM_EXIT_* numbers (x86-64 and the common ones), from the kernel's uapi. */
export const ExitCode = {
  UNKNOWN: 0, EXCEPTION: 1, IO: 2, HYPERCALL: 3, DEBUG: 4, HLT: 5, MMIO: 6, IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8, FAIL_ENTRY: 9, INTR: 10, SET_TPR: 11, TPR_ACCESS: 12, NMI: 16, INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24, IOAPIC_EOI: 26, HYPERV: 27, X86_RDMSR: 29, X86_WRMSR: 30, DIRTY_RING_FULL: 31,
  AP_RESET_HOLD: 32, X86_BUS_LOCK: 33, XEN: 34, NOTIFY: 37, MEMORY_FAULT: 39, TDX: 40,
} as const;

/** KVM_EXIT_* numbers by the `reason` node-kvm gives them. */
export const EXIT_REASONS: Readonly<Record<number, string>> = {
  0: 'unknown', 1: 'exception', 2: 'io', 3: 'hypercall', 4: 'debug', 5: 'hlt', 6: 'mmio',
  7: 'irq-window-open', 8: 'shutdown', 9: 'fail-entry', 10: 'intr', 11: 'set-tpr', 12: 'tpr-access',
  16: 'nmi', 17: 'internal-error', 24: 'system-event', 26: 'ioapic-eoi', 27: 'hyperv',
  29: 'x86-rdmsr', 30: 'x86-wrmsr', 31: 'dirty-ring-full', 32: 'ap-reset-hold', 33: 'x86-bus-lock',
  34: 'xen', 37: 'notify', 39: 'memory-fault', 40: 'tdx',
};

/** Port I/O exit (KVM_EXIT_IO). */
export interface IoExit {
  reason: 'io';
  direction: 'in' | 'out';
  /** Bytes per access: 1, 2 or 4. */
  size: number;
  port: number;
  /** Number of accesses (more than 1 for REP INS/OUTS). */
  count: number;
  /**
   * Live view of the size*count data bytes inside kvm_run (valid until the
   * next run). For 'out' it holds what the guest wrote; for 'in' write the
   * value the guest reads into it before running again.
   */
  data: Uint8Array;
}

/** MMIO exit (also what a guest access to memory the host cannot back gives on shadow paging). */
export interface MmioExit {
  reason: 'mmio';
  physAddr: bigint;
  isWrite: boolean;
  /** Access width in bytes (1..8). */
  len: number;
  /**
   * Live view of kvm_run's 8 data bytes (valid until the next run): for a
   * write the first `len` bytes are what the guest stored; for a read write
   * the value the guest loads into them before running again.
   */
  data: Uint8Array;
}

/** KVM_EXIT_MEMORY_FAULT (KVM_RUN failed with EFAULT or EHWPOISON): KVM could not resolve a guest access. */
export interface MemoryFaultExit {
  reason: 'memory-fault';
  flags: bigint;
  gpa: bigint;
  size: bigint;
  /** KVM_MEMORY_EXIT_FLAG_PRIVATE: the access was to private memory. */
  private: boolean;
}

/** Entry failed (invalid guest state); KVM_EXIT_FAIL_ENTRY. */
export interface FailEntryExit {
  reason: 'fail-entry';
  hardwareEntryFailureReason: bigint;
  /** The host CPU the entry was tried on. */
  cpu: number;
}

/** KVM's internal error (often emulation failure); KVM_EXIT_INTERNAL_ERROR. */
export interface InternalErrorExit {
  reason: 'internal-error';
  /** KVM_INTERNAL_ERROR_*: 1 emulation, 2 simultaneous exceptions, 3 delivery event, 4 unexpected exit reason. */
  suberror: number;
  /** The ndata words (at most 16). */
  data: bigint[];
  /** For an emulation failure that carries them: the bytes of the instruction KVM could not emulate (a copy). */
  instructionBytes?: Uint8Array;
}

/** Names of the KVM_SYSTEM_EVENT_* types. */
export const SYSTEM_EVENT_TYPES: Readonly<Record<number, SystemEventType>> = {
  1: 'shutdown', 2: 'reset', 3: 'crash', 4: 'wakeup', 5: 'suspend', 6: 'sev-term', 7: 'tdx-fatal',
};
/** A KVM_SYSTEM_EVENT_* type by name. */
export type SystemEventType = 'shutdown' | 'reset' | 'crash' | 'wakeup' | 'suspend' | 'sev-term' | 'tdx-fatal' | 'unknown';

/** Guest-initiated system event (shutdown, reset, crash, ...); KVM_EXIT_SYSTEM_EVENT. */
export interface SystemEventExit {
  reason: 'system-event';
  /** The KVM_SYSTEM_EVENT_* number. */
  type: number;
  typeName: SystemEventType;
  /** data[0], which older kernels call `flags`. */
  flags: bigint;
  /** The ndata words (kernels without KVM_CAP_SYSTEM_EVENT_DATA: just flags). */
  data: bigint[];
}

/** KVM_RUN returned EINTR (a signal or immediate_exit), or KVM_EXIT_INTR: the vcpu can be run again. */
export interface IntrExit {
  reason: 'intr';
}

/**
 * KVM_EXIT_HYPERCALL (KVM_CAP_EXIT_HYPERCALL, e.g. KVM_HC_MAP_GPA_RANGE).
 * Reply with setReturn() before running again.
 */
export interface HypercallExit {
  reason: 'hypercall';
  nr: bigint;
  args: bigint[];
  /** Bit 0 (KVM_EXIT_HYPERCALL_LONG_MODE): the guest was in 64-bit mode. */
  flags: bigint;
  longMode: boolean;
  /** Writes the value the guest's hypercall returns (kvm_run.hypercall.ret). */
  setReturn(ret: bigint | number): void;
}

/** KVM_EXIT_DEBUG (single step, breakpoints, with KVM_SET_GUEST_DEBUG). */
export interface DebugExit {
  reason: 'debug';
  /** The exception vector: 1 (#DB) or 3 (#BP). */
  exception: number;
  pc: bigint;
  dr6: bigint;
  dr7: bigint;
}

/** KVM_EXIT_EXCEPTION (unused on x86 today). */
export interface ExceptionExit {
  reason: 'exception';
  exception: number;
  errorCode: number;
}

/** KVM_EXIT_TPR_ACCESS (KVM_TPR_ACCESS_REPORTING). */
export interface TprAccessExit {
  reason: 'tpr-access';
  rip: bigint;
  isWrite: boolean;
}

/** KVM_EXIT_IOAPIC_EOI (split irqchip): the vector of a level-triggered interrupt's EOI. */
export interface IoapicEoiExit {
  reason: 'ioapic-eoi';
  vector: number;
}

/** KVM_EXIT_IRQ_WINDOW_OPEN: the guest can take an interrupt now (after request_interrupt_window). */
export interface IrqWindowOpenExit {
  reason: 'irq-window-open';
  code: number;
  /** kvm_run.ready_for_interrupt_injection. */
  readyForInterruptInjection: boolean;
  /** kvm_run.if_flag (without an in-kernel LAPIC). */
  ifFlag: boolean;
}

/** Why KVM sent an MSR access to userspace: the KVM_MSR_EXIT_REASON_* bit, by name. */
export type MsrExitCause = 'invalid' | 'unknown' | 'filter';

interface MsrExitBase {
  /** The MSR number (ecx). */
  index: number;
  /** Why it came to userspace (enabled with KVM_CAP_X86_USER_SPACE_MSR). */
  cause: MsrExitCause | 'other';
  /** The raw KVM_MSR_EXIT_REASON_* value. */
  causeCode: number;
  /** Makes the guest's access fail: KVM injects #GP when the vcpu runs again (kvm_run.msr.error = 1). */
  fail(): void;
}

/** KVM_EXIT_X86_RDMSR: the guest reads an MSR; give the value with reply() before running again. */
export interface RdmsrExit extends MsrExitBase {
  reason: 'x86-rdmsr';
  /** Completes the read: the guest's edx:eax get `value` (kvm_run.msr.data; 0 if never replied). */
  reply(value: bigint | number): void;
}

/** KVM_EXIT_X86_WRMSR: the guest writes `data` to an MSR; success unless fail() is called. */
export interface WrmsrExit extends MsrExitBase {
  reason: 'x86-wrmsr';
  data: bigint;
}

/** KVM_EXIT_HYPERV: Hyper-V emulation needs userspace (SynIC, hypercall, synthetic debugger). */
export type HypervExit =
  | { reason: 'hyperv'; type: 'synic'; msr: number; control: bigint; evtPage: bigint; msgPage: bigint }
  | { reason: 'hyperv'; type: 'hcall'; input: bigint; params: [bigint, bigint]; setResult(result: bigint | number): void }
  | { reason: 'hyperv'; type: 'syndbg'; msr: number; control: bigint; status: bigint; sendPage: bigint; recvPage: bigint; pendingPage: bigint }
  | { reason: 'hyperv'; type: 'unknown'; typeCode: number };

/** KVM_EXIT_XEN (KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL): a Xen hypercall; give the result with setResult(). */
export type XenExit =
  | { reason: 'xen'; type: 'hcall'; longMode: boolean; cpl: number; input: bigint; params: bigint[]; setResult(result: bigint | number): void }
  | { reason: 'xen'; type: 'unknown'; typeCode: number };

/** KVM_EXIT_NOTIFY (KVM_CAP_X86_NOTIFY_VMEXIT): the guest stayed too long in a no-event window. */
export interface NotifyExit {
  reason: 'notify';
  flags: number;
  /** KVM_NOTIFY_CONTEXT_INVALID: the vcpu's state is corrupt; the VM should be stopped. */
  contextInvalid: boolean;
}

/**
 * KVM_EXIT_TDX (a TDX guest's TDVMCALL that needs userspace). `nr` says which
 * (0x10002 GetQuote, 0x10000 GetTdVmCallInfo, 0x10004
 * SetupEventNotifyInterrupt); `words` are the six u64 after nr, the first
 * being the return code setReturn() writes. Decoded from api.rst only: no
 * TDX host was available to check it.
 */
export interface TdxExit {
  reason: 'tdx';
  flags: bigint;
  nr: bigint;
  words: bigint[];
  setReturn(ret: bigint | number): void;
}

/** Exits without data of their own. */
export interface SimpleExit {
  reason: 'hlt' | 'shutdown' | 'nmi' | 'set-tpr' | 'dirty-ring-full' | 'ap-reset-hold' | 'x86-bus-lock';
  /** The raw KVM_EXIT_* number. */
  code: number;
}

/** KVM_EXIT_UNKNOWN, or an exit number node-kvm does not know (its `code`). */
export interface UnknownExit {
  reason: 'unknown';
  /** The raw KVM_EXIT_* number (0 for KVM_EXIT_UNKNOWN). */
  code: number;
  /** kvm_run.hw.hardware_exit_reason (meaningful for KVM_EXIT_UNKNOWN). */
  hardwareExitReason: bigint;
}

/** Former catch-all of exits without data; kept as a name for them. */
export type OtherExit = SimpleExit | UnknownExit;

/** What KVM_RUN stopped for: narrow on `reason`. */
export type VcpuExit =
  | IoExit | MmioExit | MemoryFaultExit | FailEntryExit | InternalErrorExit | SystemEventExit | IntrExit
  | HypercallExit | DebugExit | ExceptionExit | TprAccessExit | IoapicEoiExit | IrqWindowOpenExit
  | RdmsrExit | WrmsrExit | HypervExit | XenExit | NotifyExit | TdxExit | SimpleExit | UnknownExit;

/** Every `reason` a VcpuExit can have. */
export type VcpuExitReason = VcpuExit['reason'];
