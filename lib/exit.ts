/**
 * Decoding of kvm_run after KVM_RUN returns into a typed exit (the types are
 * in exit-types.ts and re-exported here): a union discriminated by `reason`,
 * so `if (exit.reason === 'io')` narrows to IoExit.
 *
 * Liveness (docs/exits.md): numbers and bigints are copied out of kvm_run
 * when the exit is decoded. The `data` byte views of 'io' and 'mmio' are live
 * views into kvm_run, valid until the next run of the vcpu: that is how an
 * IN or an MMIO read gets its result (write the bytes, then run again). The
 * reply methods (MSR, hypercall, Hyper-V, Xen, TDX) write into kvm_run too
 * and throw ESTALE once the vcpu has run again.
 */
import { KvmError } from './errors.js';
import { KVM_RUN_LAYOUT as L } from './exit-layout.js';
import {
  ExitCode, SYSTEM_EVENT_TYPES,
  type HypervExit, type InternalErrorExit, type MemoryFaultExit, type MsrExitCause, type SimpleExit, type VcpuExit,
} from './exit-types.js';

export { KVM_RUN_LAYOUT } from './exit-layout.js';
export * from './exit-types.js';

const EFAULT = 14;
const EHWPOISON = 133;

const SIMPLE: Readonly<Record<number, SimpleExit['reason']>> = {
  5: 'hlt', 8: 'shutdown', 16: 'nmi', 11: 'set-tpr', 31: 'dirty-ring-full', 32: 'ap-reset-hold', 33: 'x86-bus-lock',
};

const MSR_CAUSES: Readonly<Record<number, MsrExitCause>> = { 1: 'invalid', 2: 'unknown', 4: 'filter' };

function u64Arg(value: bigint | number, what: string): bigint {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === 'bigint' && value >= 0n && value < 1n << 64n) return value;
  throw new KvmError(`${what} must be an unsigned 64-bit integer`, { code: 'EINVAL', args: { value: String(value) } });
}

/**
 * Decodes the exits of one vcpu's kvm_run. Holds one DataView over it and
 * the io/mmio data views (an io or mmio exit allocates only its object) and
 * a run generation: `begin()` before each KVM_RUN makes earlier exits'
 * reply methods throw ESTALE instead of writing into the next exit.
 */
export class ExitDecoder {
  readonly #run: Uint8Array;
  readonly #view: DataView;
  /** The mmio data bytes: one view, reused by every mmio exit (it is live anyway). */
  readonly #mmioData: Uint8Array;
  /** The last io data view and where it was: KVM keeps data_offset fixed, so it is reused. */
  #ioData: Uint8Array = new Uint8Array(0);
  #ioOffset = -1;
  #generation = 0;

  constructor(run: Uint8Array) {
    this.#run = run;
    this.#view = new DataView(run.buffer, run.byteOffset, run.byteLength);
    this.#mmioData = run.subarray(L.mmio.data, L.mmio.data + 8);
  }

  #ioView(offset: number, len: number): Uint8Array {
    if (offset === this.#ioOffset && this.#ioData.length === len) return this.#ioData;
    const run = this.#run;
    if (offset < L.syncRegs || offset + len > run.byteLength) return new Uint8Array(0);
    this.#ioOffset = offset;
    this.#ioData = run.subarray(offset, offset + len);
    return this.#ioData;
  }

  /** Marks the start of a KVM_RUN: replies to earlier exits become stale, exit_reason is reset. */
  begin(): void {
    this.#generation++;
    // KVM writes exit_reason only on exits: clear it so a stale KVM_EXIT_MEMORY_FAULT
    // cannot be taken for the reason of an unrelated EFAULT.
    this.#view.setUint32(L.exitReason, ExitCode.UNKNOWN, true);
  }

  /** The KVM_EXIT_* number KVM left in kvm_run. */
  exitCode(): number {
    return this.#view.getUint32(L.exitReason, true);
  }

  /**
   * The memory-fault exit when KVM_RUN failed with `errno` because of
   * KVM_EXIT_MEMORY_FAULT (EFAULT or EHWPOISON, exit_reason 39), else
   * undefined: then the failure is an error.
   */
  memoryFault(errno: number): MemoryFaultExit | undefined {
    if ((errno !== EFAULT && errno !== EHWPOISON) || this.exitCode() !== ExitCode.MEMORY_FAULT) return undefined;
    return this.#decodeRare(ExitCode.MEMORY_FAULT) as MemoryFaultExit;
  }

  /** Decodes the exit KVM left in kvm_run. */
  decode(): VcpuExit {
    const v = this.#view;
    const code = v.getUint32(L.exitReason, true);
    // The common exits first, inline.
    if (code === 2) {
      const size = v.getUint8(L.io.size);
      const count = v.getUint32(L.io.count, true);
      // Two 32-bit reads: no BigInt on the hot path.
      const offset = v.getUint32(L.io.dataOffset, true) + v.getUint32(L.io.dataOffset + 4, true) * 0x1_0000_0000;
      const data = this.#ioView(offset, size * count);
      return { reason: 'io', direction: v.getUint8(L.io.direction) === 1 ? 'out' : 'in', size, port: v.getUint16(L.io.port, true), count, data };
    }
    if (code === 6) {
      return {
        reason: 'mmio',
        physAddr: v.getBigUint64(L.mmio.physAddr, true),
        data: this.#mmioData,
        len: v.getUint32(L.mmio.len, true),
        isWrite: v.getUint8(L.mmio.isWrite) !== 0,
      };
    }
    return this.#decodeRare(code);
  }

  #u64(off: number): bigint {
    return this.#view.getBigUint64(off, true);
  }

  #words(off: number, n: number): bigint[] {
    const out: bigint[] = [];
    for (let i = 0; i < n; i++) out.push(this.#u64(off + i * 8));
    return out;
  }

  /** A function that writes into kvm_run while the exit is current, else throws ESTALE. */
  #writer<T extends unknown[]>(what: string, write: (v: DataView, ...args: T) => void): (...args: T) => void {
    const generation = this.#generation;
    const view = this.#view;
    return (...args: T) => {
      if (this.#generation !== generation) {
        throw new KvmError(`${what}: the vcpu has run since this exit; a reply must be given before the next run`, { code: 'ESTALE', args: { reply: what } });
      }
      write(view, ...args);
    };
  }

  #decodeRare(code: number): VcpuExit {
    const v = this.#view;
    const simple = SIMPLE[code];
    if (simple) return { reason: simple, code };
    switch (code) {
      case ExitCode.FAIL_ENTRY:
        return { reason: 'fail-entry', hardwareEntryFailureReason: this.#u64(L.failEntry.reason), cpu: v.getUint32(L.failEntry.cpu, true) };
      case ExitCode.INTR:
        return { reason: 'intr' };
      case ExitCode.EXCEPTION:
        return { reason: 'exception', exception: v.getUint32(L.ex.exception, true), errorCode: v.getUint32(L.ex.errorCode, true) };
      case ExitCode.HYPERCALL: {
        const flags = this.#u64(L.hypercall.flags);
        return {
          reason: 'hypercall',
          nr: this.#u64(L.hypercall.nr),
          args: this.#words(L.hypercall.args, 6),
          flags,
          longMode: (flags & 1n) !== 0n,
          setReturn: this.#writer('hypercall.setReturn', (w, ret: bigint | number) => w.setBigUint64(L.hypercall.ret, u64Arg(ret, 'ret'), true)),
        };
      }
      case ExitCode.DEBUG:
        return { reason: 'debug', exception: v.getUint32(L.debug.exception, true), pc: this.#u64(L.debug.pc), dr6: this.#u64(L.debug.dr6), dr7: this.#u64(L.debug.dr7) };
      case ExitCode.IRQ_WINDOW_OPEN:
        return { reason: 'irq-window-open', code, readyForInterruptInjection: v.getUint8(L.readyForInterruptInjection) !== 0, ifFlag: v.getUint8(L.ifFlag) !== 0 };
      case ExitCode.TPR_ACCESS:
        return { reason: 'tpr-access', rip: this.#u64(L.tprAccess.rip), isWrite: v.getUint32(L.tprAccess.isWrite, true) !== 0 };
      case ExitCode.INTERNAL_ERROR: {
        const suberror = v.getUint32(L.internal.suberror, true);
        const ndata = Math.min(v.getUint32(L.internal.ndata, true), 16);
        const exit: InternalErrorExit = { reason: 'internal-error', suberror, data: this.#words(L.internal.data, ndata) };
        // KVM_INTERNAL_ERROR_EMULATION with KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES: data[0] is
        // flags, then insn_size and up to 15 instruction bytes.
        if (suberror === 1 && ndata >= 1 && (this.#u64(L.internal.data) & 1n) !== 0n) {
          const size = Math.min(v.getUint8(L.emulationFailure.insnSize), 15);
          exit.instructionBytes = this.#run.slice(L.emulationFailure.insnBytes, L.emulationFailure.insnBytes + size);
        }
        return exit;
      }
      case ExitCode.SYSTEM_EVENT: {
        const type = v.getUint32(L.systemEvent.type, true);
        const ndata = Math.min(v.getUint32(L.systemEvent.ndata, true), 16);
        const data = this.#words(L.systemEvent.data, Math.max(ndata, 1));
        return { reason: 'system-event', type, typeName: SYSTEM_EVENT_TYPES[type] ?? 'unknown', flags: data[0]!, data: ndata === 0 ? [data[0]!] : data };
      }
      case ExitCode.IOAPIC_EOI:
        return { reason: 'ioapic-eoi', vector: v.getUint8(L.eoi.vector) };
      case ExitCode.HYPERV:
        return this.#hyperv();
      case ExitCode.X86_RDMSR:
      case ExitCode.X86_WRMSR: {
        const causeCode = v.getUint32(L.msr.reason, true);
        const base = {
          index: v.getUint32(L.msr.index, true),
          cause: MSR_CAUSES[causeCode] ?? ('other' as const),
          causeCode,
          fail: this.#writer('msr.fail', (w) => w.setUint8(L.msr.error, 1)),
        };
        if (code === ExitCode.X86_WRMSR) return { reason: 'x86-wrmsr', ...base, data: this.#u64(L.msr.data) };
        return {
          reason: 'x86-rdmsr',
          ...base,
          reply: this.#writer('msr.reply', (w, value: bigint | number) => {
            w.setBigUint64(L.msr.data, u64Arg(value, 'value'), true);
            w.setUint8(L.msr.error, 0);
          }),
        };
      }
      case ExitCode.XEN: {
        const typeCode = v.getUint32(L.xen.type, true);
        if (typeCode !== 1) return { reason: 'xen', type: 'unknown', typeCode };
        return {
          reason: 'xen',
          type: 'hcall',
          longMode: v.getUint32(L.xen.longMode, true) !== 0,
          cpl: v.getUint32(L.xen.cpl, true),
          input: this.#u64(L.xen.input),
          params: this.#words(L.xen.params, 6),
          setResult: this.#writer('xen.setResult', (w, r: bigint | number) => w.setBigUint64(L.xen.result, u64Arg(r, 'result'), true)),
        };
      }
      case ExitCode.NOTIFY: {
        const flags = v.getUint32(L.notify.flags, true);
        return { reason: 'notify', flags, contextInvalid: (flags & 1) !== 0 };
      }
      case ExitCode.MEMORY_FAULT: {
        const flags = this.#u64(L.memoryFault.flags);
        return { reason: 'memory-fault', flags, gpa: this.#u64(L.memoryFault.gpa), size: this.#u64(L.memoryFault.size), private: (flags & (1n << 3n)) !== 0n };
      }
      case ExitCode.TDX:
        return {
          reason: 'tdx',
          flags: this.#u64(L.tdx.flags),
          nr: this.#u64(L.tdx.nr),
          words: this.#words(L.tdx.words, 6),
          setReturn: this.#writer('tdx.setReturn', (w, ret: bigint | number) => w.setBigUint64(L.tdx.words, u64Arg(ret, 'ret'), true)),
        };
      default:
        return { reason: 'unknown', code, hardwareExitReason: this.#u64(L.hw.hardwareExitReason) };
    }
  }

  #hyperv(): HypervExit {
    const v = this.#view;
    const H = L.hyperv;
    const typeCode = v.getUint32(H.type, true);
    switch (typeCode) {
      case 1:
        return { reason: 'hyperv', type: 'synic', msr: v.getUint32(H.synic.msr, true), control: this.#u64(H.synic.control), evtPage: this.#u64(H.synic.evtPage), msgPage: this.#u64(H.synic.msgPage) };
      case 2:
        return {
          reason: 'hyperv',
          type: 'hcall',
          input: this.#u64(H.hcall.input),
          params: [this.#u64(H.hcall.params), this.#u64(H.hcall.params + 8)],
          setResult: this.#writer('hyperv.setResult', (w, r: bigint | number) => w.setBigUint64(H.hcall.result, u64Arg(r, 'result'), true)),
        };
      case 3:
        return {
          reason: 'hyperv',
          type: 'syndbg',
          msr: v.getUint32(H.syndbg.msr, true),
          control: this.#u64(H.syndbg.control),
          status: this.#u64(H.syndbg.status),
          sendPage: this.#u64(H.syndbg.sendPage),
          recvPage: this.#u64(H.syndbg.recvPage),
          pendingPage: this.#u64(H.syndbg.pendingPage),
        };
      default:
        return { reason: 'hyperv', type: 'unknown', typeCode };
    }
  }
}

/** Decodes the exit from a kvm_run mapping (one-off; a Vcpu keeps an ExitDecoder). */
export function decodeExit(run: Uint8Array): VcpuExit {
  return new ExitDecoder(run).decode();
}
