/** Decoding of kvm_run after KVM_RUN returns: a typed exit. */

/** KVM_EXIT_* numbers by name, for the exits node-kvm decodes. */
export const EXIT_REASONS: Readonly<Record<number, string>> = {
  0: 'unknown', 1: 'exception', 2: 'io', 3: 'hypercall', 4: 'debug', 5: 'hlt', 6: 'mmio',
  7: 'irq-window-open', 8: 'shutdown', 9: 'fail-entry', 10: 'intr', 11: 'set-tpr', 12: 'tpr-access',
  16: 'nmi', 17: 'internal-error', 24: 'system-event', 26: 'ioapic-eoi', 27: 'hyperv',
  29: 'x86-rdmsr', 30: 'x86-wrmsr', 31: 'dirty-ring-full', 32: 'ap-reset-hold', 33: 'x86-bus-lock',
  37: 'notify', 39: 'memory-fault', 40: 'tdx',
};

/** Port I/O exit. `data` is a live view into kvm_run (for 'in', fill it before the next run). */
export interface IoExit {
  /** KVM_EXIT_IO. */
  reason: 'io';
  /** Whether the guest executed IN or OUT. */
  direction: 'in' | 'out';
  /** Bytes per access: 1, 2 or 4. */
  size: number;
  /** The I/O port. */
  port: number;
  /** Number of accesses (more than 1 for a REP string instruction). */
  count: number;
  /** The bytes written (out) or to be read (in): count * size bytes inside kvm_run. */
  data: Uint8Array;
}

/** MMIO exit (also what a guest access to memory the host cannot back gives on shadow paging). */
export interface MmioExit {
  /** KVM_EXIT_MMIO. */
  reason: 'mmio';
  /** Guest-physical address of the access. */
  physAddr: bigint;
  /** Whether the guest wrote (true) or read. */
  isWrite: boolean;
  /** Bytes accessed (1 to 8). */
  len: number;
  /** Live view of the 8 data bytes (for reads, fill before the next run). */
  data: Uint8Array;
}

/** KVM_EXIT_MEMORY_FAULT: KVM could not resolve a guest access. */
export interface MemoryFaultExit {
  /** KVM_EXIT_MEMORY_FAULT. */
  reason: 'memory-fault';
  /** Raw KVM_MEMORY_EXIT_FLAG_* bits. */
  flags: bigint;
  /** Guest-physical address of the faulting range. */
  gpa: bigint;
  /** Size of the faulting range in bytes. */
  size: bigint;
  /** KVM_MEMORY_EXIT_FLAG_PRIVATE: the access was to private memory. */
  private: boolean;
}

/** Entry failed (invalid guest state). */
export interface FailEntryExit {
  /** KVM_EXIT_FAIL_ENTRY. */
  reason: 'fail-entry';
  /** The hardware's VM-entry failure reason (VMX exit qualification or SVM exit code). */
  hardwareEntryFailureReason: bigint;
  /** The host CPU the entry was attempted on. */
  cpu: number;
}

/** KVM's internal error (often emulation failure). */
export interface InternalErrorExit {
  /** KVM_EXIT_INTERNAL_ERROR. */
  reason: 'internal-error';
  /** KVM_INTERNAL_ERROR_* (1 = emulation failure). */
  suberror: number;
  /** Extra words KVM attached (up to 16). */
  data: bigint[];
}

/** Guest-initiated system event (shutdown, reset, crash). */
export interface SystemEventExit {
  /** KVM_EXIT_SYSTEM_EVENT. */
  reason: 'system-event';
  /** KVM_SYSTEM_EVENT_* (1 shutdown, 2 reset, 3 crash, ...). */
  type: number;
  /** Event-specific data words. */
  data: bigint[];
}

/** KVM_RUN returned EINTR: a signal or immediate_exit, the vcpu can be run again. */
export interface IntrExit {
  /** KVM_RUN was interrupted (EINTR). */
  reason: 'intr';
}

/** Any other exit, by name (or 'unknown-<n>'). */
export interface OtherExit {
  /** The exit's name from EXIT_REASONS, or 'unknown-<n>'. */
  reason: 'hlt' | 'shutdown' | 'exception' | 'debug' | 'hypercall' | 'nmi' | 'irq-window-open' | 'unknown' | string;
  /** The raw KVM_EXIT_* number. */
  code: number;
}

/** What KVM_RUN stopped for. */
export type VcpuExit = IoExit | MmioExit | MemoryFaultExit | FailEntryExit | InternalErrorExit | SystemEventExit | IntrExit | OtherExit;

/** Decodes the exit from a kvm_run mapping. */
export function decodeExit(run: Uint8Array): VcpuExit {
  const v = new DataView(run.buffer, run.byteOffset, run.byteLength);
  const code = v.getUint32(8, true);
  switch (code) {
    case 2: {
      const size = v.getUint8(33);
      const count = v.getUint32(36, true);
      const dataOffset = Number(v.getBigUint64(40, true));
      const len = size * count;
      const data = dataOffset + len <= run.byteLength ? run.subarray(dataOffset, dataOffset + len) : new Uint8Array(0);
      return { reason: 'io', direction: v.getUint8(32) === 1 ? 'out' : 'in', size, port: v.getUint16(34, true), count, data };
    }
    case 6:
      return {
        reason: 'mmio',
        physAddr: v.getBigUint64(32, true),
        data: run.subarray(40, 48),
        len: v.getUint32(48, true),
        isWrite: v.getUint8(52) !== 0,
      };
    case 9:
      return { reason: 'fail-entry', hardwareEntryFailureReason: v.getBigUint64(32, true), cpu: v.getUint32(40, true) };
    case 10:
      return { reason: 'intr' };
    case 17: {
      const ndata = Math.min(v.getUint32(36, true), 16);
      return { reason: 'internal-error', suberror: v.getUint32(32, true), data: Array.from({ length: ndata }, (_, i) => v.getBigUint64(40 + i * 8, true)) };
    }
    case 24: {
      const ndata = Math.min(v.getUint32(36, true), 16);
      return { reason: 'system-event', type: v.getUint32(32, true), data: Array.from({ length: ndata }, (_, i) => v.getBigUint64(40 + i * 8, true)) };
    }
    case 39: {
      const flags = v.getBigUint64(32, true);
      return { reason: 'memory-fault', flags, gpa: v.getBigUint64(40, true), size: v.getBigUint64(48, true), private: (flags & (1n << 3n)) !== 0n };
    }
    default:
      return { reason: EXIT_REASONS[code] ?? `unknown-${code}`, code };
  }
}
