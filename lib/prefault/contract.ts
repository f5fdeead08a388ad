/**
 * The pre-fault contract, shared by both engines: the request, the options,
 * the result, and the errors. Semantics are KVM_PRE_FAULT_MEMORY's (see
 * Documentation/virt/kvm/api.rst): a call maps what it can from `gpa`
 * upwards and reports how far it got; failures leave the rest unmapped and
 * say how much was done.
 */
import { KvmError } from '../errors.js';
import type { U64Like } from '../int.js';

/** Which engine does the work. */
export type PreFaultEngineName = 'kernel' | 'software';

/** What the caller asks for; 'auto' picks the kernel when it works. */
export type PreFaultEngineChoice = 'auto' | PreFaultEngineName;

/** The guest-physical range to pre-fault. */
export interface PreFaultRange {
  /** First byte; 4 KiB aligned. */
  gpa: U64Like;
  /** Length; a non-zero multiple of 4 KiB. */
  size: U64Like;
  /** Must be 0 (KVM defines no flags). */
  flags?: U64Like;
}

/** Options of Vcpu.preFaultMemory(). */
export interface PreFaultOptions {
  /** Default 'auto': the kernel's KVM_PRE_FAULT_MEMORY when it works, else the software engine. */
  engine?: PreFaultEngineChoice;
  /** Stops between steps (and interrupts a running kernel step); rejects with PreFaultAbortError. */
  signal?: AbortSignal;
  /** Called between steps with the bytes done so far and the total. */
  onProgress?: (bytesDone: bigint, bytesTotal: bigint) => void;
  /**
   * Software engine: how many worker threads populate host memory in
   * parallel. Default: min(4, available cores); steps under 4 MiB use one.
   * Populating is mostly page zeroing, which scales with cores.
   */
  threads?: number;
  /**
   * Kernel engine: populate the host pages of writable slots for write
   * (MADV_POPULATE_WRITE) before each KVM_PRE_FAULT_MEMORY step. Default true.
   * The ioctl faults as a read: on never-touched anonymous memory it maps the
   * shared zero page read-only, and the guest's first write then faults again
   * (measured on a 6.18 TDP kernel: 16,426 exits for 8,192 written pages after
   * a plain pre-fault, 8,227 on demand, 2 with this populate first).
   */
  populateHost?: boolean;
  /**
   * Largest range handed to one step (default 32 MiB for the kernel engine,
   * 64 MiB per thread for the software engine): smaller means more
   * responsive progress and abort, larger means fewer calls.
   */
  maxStepBytes?: U64Like;
}

/** Leaves mapped, by level. */
export interface PreFaultLevels {
  /** Leaves mapped with 4 KiB pages. */
  '4k': number;
  /** Leaves mapped with 2 MiB pages. */
  '2m': number;
  /** Leaves mapped with 1 GiB pages. */
  '1g': number;
}

/** What a pre-fault did. */
export interface PreFaultResult {
  /** The engine that did the work ('kernel' or 'software'). */
  engine: PreFaultEngineName;
  /** Why this engine was used. */
  reason: string;
  /** Bytes the request advanced by (KVM's progress measure). */
  bytesMapped: bigint;
  /** What is left: size 0 when everything was done. */
  remaining: { gpa: bigint; size: bigint };
  /** Steps issued (kernel: ioctls). */
  calls: number;
  /** Steps retried after EINTR (a signal) and EAGAIN (a memslot change). */
  retries: { eintr: number; eagain: number };
  /**
   * New leaves by level: from the software MMU, or from the VM's pages_4k /
   * pages_2m / pages_1g statistics for the kernel engine.
   */
  levels: PreFaultLevels;
  /** Wall-clock duration of the whole pre-fault, in nanoseconds. */
  durationNs: bigint;
}

/** A pre-fault that stopped on an error: carries the progress made. */
export class PreFaultError extends KvmError {
  /** Progress before the failure. */
  readonly result: PreFaultResult;

  constructor(message: string, code: string, errno: number, result: PreFaultResult, cause?: unknown) {
    super(message, {
      code,
      errno,
      ioctl: result.engine === 'kernel' ? 'KVM_PRE_FAULT_MEMORY' : undefined,
      syscall: result.engine === 'kernel' ? 'ioctl' : 'prefault',
      args: { bytesMapped: result.bytesMapped, remainingGpa: result.remaining.gpa, remainingSize: result.remaining.size, engine: result.engine },
      cause,
    });
    this.name = 'PreFaultError';
    this.result = result;
  }

  /** Bytes mapped before the failure. */
  get bytesMapped(): bigint {
    return this.result.bytesMapped;
  }

  /** The range left undone. */
  get remaining(): { gpa: bigint; size: bigint } {
    return this.result.remaining;
  }
}

/** The signal aborted the pre-fault; `result` says how far it got. */
export class PreFaultAbortError extends PreFaultError {
  constructor(result: PreFaultResult, reason: unknown) {
    super(`pre-fault aborted after ${result.bytesMapped} bytes`, 'ABORT_ERR', 0, result, reason);
    this.name = 'AbortError';
  }
}
