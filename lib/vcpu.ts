/**
 * Vcpu: one virtual CPU. Registers, CPUID, KVM_RUN (sync and on a worker
 * thread), kick, binary stats. Pre-faulting lives in prefault/ and is
 * attached here as preFaultMemory()/preFaultMemorySync().
 */
import { encodeCpuid, type CpuidEntry } from './cpuid.js';
import { callNative, errnoError, invalidArgument, KvmError } from './errors.js';
import { decodeExit, type VcpuExit } from './exit.js';
import { Mm } from './constants.js';
import { native, type NativeMapping } from './native.js';
import { decodeRegs, decodeSregs, encodeRegs, encodeSregs, REG_NAMES, type Regs, type Segment, type Sregs } from './regs.js';
import { Resource } from './resource.js';
import { StatsReader, type StatDescriptor, type Stats } from './stats.js';
import type { Vm } from './vm.js';
import { preFaultMemory, preFaultMemorySync } from './prefault/run.js';
import type { PreFaultOptions, PreFaultRange, PreFaultResult } from './prefault/contract.js';

const EINTR = 4;
const EAGAIN = 11;
const EFAULT = 14;
const EHWPOISON = 133;
/** KVM_EXIT_MEMORY_FAULT. */
const KVM_EXIT_MEMORY_FAULT = 39;

/** Partial special registers for setSregs(): segments may be partial too. */
export type SregsUpdate = Partial<Omit<Sregs, 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt'>> &
  Partial<Record<'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt', Partial<Segment>>>;

/** Register values as callers may give them. */
export type RegsUpdate = Partial<Record<keyof Regs, bigint | number>>;

/** One vcpu of a Vm. */
export class Vcpu extends Resource {
  /** The vcpu id given to KVM_CREATE_VCPU. */
  readonly id: number;
  /** The VM it belongs to. */
  readonly vm: Vm;
  readonly #fd: number;
  readonly #runBytes: Uint8Array;
  readonly #owned: { statsFd: number };
  #stats: StatsReader | undefined;
  #running = false;

  /** @internal Use Vm.createVcpu(); takes ownership of fd and the kvm_run mapping. */
  constructor(vm: Vm, id: number, fd: number, run: NativeMapping) {
    const owned = { statsFd: -1 };
    super(`Vcpu ${id}`, () => {
      run.unmap();
      if (owned.statsFd >= 0) native.close(owned.statsFd);
      native.close(fd);
    });
    this.vm = vm;
    this.id = id;
    this.#fd = fd;
    this.#runBytes = new Uint8Array(run.buffer());
    this.#owned = owned;
  }

  /** Maps kvm_run for a new vcpu fd and wraps both; closes the fd on failure. */
  static wrap(vm: Vm, id: number, fd: number, mmapSize: number): Vcpu {
    try {
      const run = callNative('mmap', { what: 'kvm_run', vcpu: id }, () =>
        new native.Mapping(fd, BigInt(mmapSize), Mm.PROT_READ | Mm.PROT_WRITE, Mm.MAP_SHARED, 0n, 4096n),
      );
      return new Vcpu(vm, id, fd, run);
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  /** The vcpu fd; throws ECLOSED after close(). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /** The raw kvm_run page (zero-copy; valid until close). */
  get runState(): Uint8Array {
    this.assertOpen('kvm_run');
    return this.#runBytes;
  }

  /** Whether a run() or runAsync() is in progress. */
  get running(): boolean {
    return this.#running;
  }

  /** KVM_SET_CPUID2. Usually given kvm.supportedCpuid(). */
  setCpuid(entries: readonly CpuidEntry[]): void {
    this.assertOpen('KVM_SET_CPUID2');
    if (!Array.isArray(entries)) throw invalidArgument('KVM_SET_CPUID2', 'entries must be an array of CpuidEntry');
    callNative('KVM_SET_CPUID2', { entries: entries.length }, () => native.setCpuid2(this.#fd, encodeCpuid(entries)));
  }

  /** KVM_GET_REGS. */
  getRegs(): Regs {
    this.assertOpen('KVM_GET_REGS');
    return decodeRegs(callNative('KVM_GET_REGS', {}, () => native.getRegs(this.#fd)));
  }

  /** KVM_SET_REGS; fields not given keep their current values. */
  setRegs(update: RegsUpdate): void {
    this.assertOpen('KVM_SET_REGS');
    if (typeof update !== 'object' || update === null) throw invalidArgument('KVM_SET_REGS', 'update must be an object of register values');
    const regs = this.getRegs();
    for (const [name, value] of Object.entries(update)) {
      if (!(REG_NAMES as readonly string[]).includes(name)) throw invalidArgument('KVM_SET_REGS', `unknown register ${JSON.stringify(name)}`);
      if (typeof value !== 'bigint' && typeof value !== 'number') throw invalidArgument('KVM_SET_REGS', `${name} must be a number or bigint`);
      if (typeof value === 'number' && !Number.isSafeInteger(value)) throw invalidArgument('KVM_SET_REGS', `${name} must be an integer`);
      regs[name as keyof Regs] = BigInt.asUintN(64, BigInt(value));
    }
    callNative('KVM_SET_REGS', {}, () => native.setRegs(this.#fd, encodeRegs(regs)));
  }

  /** KVM_GET_SREGS. */
  getSregs(): Sregs {
    this.assertOpen('KVM_GET_SREGS');
    return decodeSregs(callNative('KVM_GET_SREGS', {}, () => native.getSregs(this.#fd)));
  }

  /** KVM_SET_SREGS; fields (and segment fields) not given keep their current values. */
  setSregs(update: SregsUpdate): void {
    this.assertOpen('KVM_SET_SREGS');
    if (typeof update !== 'object' || update === null) throw invalidArgument('KVM_SET_SREGS', 'update must be an object of special register values');
    const sregs = this.getSregs() as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(update)) {
      if (!(name in sregs)) throw invalidArgument('KVM_SET_SREGS', `unknown special register ${JSON.stringify(name)}`);
      const current = sregs[name];
      if (typeof current === 'bigint') {
        if (typeof value !== 'bigint' && typeof value !== 'number') throw invalidArgument('KVM_SET_SREGS', `${name} must be a number or bigint`);
        if (typeof value === 'number' && !Number.isSafeInteger(value)) throw invalidArgument('KVM_SET_SREGS', `${name} must be an integer`);
        sregs[name] = BigInt(value);
      } else if (typeof current === 'object' && current !== null && typeof value === 'object' && value !== null) {
        sregs[name] = Array.isArray(current) ? value : { ...current, ...value };
      } else {
        throw invalidArgument('KVM_SET_SREGS', `${name} has the wrong type`);
      }
    }
    callNative('KVM_SET_SREGS', {}, () => native.setSregs(this.#fd, encodeSregs(sregs as unknown as Sregs)));
  }

  /**
   * KVM_RUN on the calling thread (blocks it until the guest exits). A signal
   * or kick() gives `{ reason: 'intr' }`; other failures throw KvmError.
   */
  run(): VcpuExit {
    this.#beginRun();
    try {
      return this.#finishRun(native.run(this.#fd));
    } finally {
      this.#running = false;
    }
  }

  /** KVM_RUN on a worker thread: the event loop keeps running. */
  runAsync(): Promise<VcpuExit> {
    try {
      this.#beginRun();
    } catch (e) {
      // ECLOSED / EBUSY: a promise-returning call reports failure as a rejection.
      return Promise.reject(e);
    }
    return this.track('KVM_RUN', async () => {
      try {
        return this.#finishRun(await native.runAsync(this.#fd));
      } finally {
        this.#running = false;
      }
    });
  }

  /**
   * Makes the current (or next) KVM_RUN return as soon as possible with
   * `{ reason: 'intr' }`: sets kvm_run.immediate_exit and signals the thread
   * blocked in KVM_RUN, if any. Safe from any callback on the event loop.
   */
  kick(): void {
    this.assertOpen('kick');
    this.#runBytes[1] = 1;
    native.interrupt(this.#fd);
  }

  /** @internal Signals the thread blocked in a vcpu ioctl (pre-fault abort). */
  interruptIoctl(): boolean {
    return this.closed ? false : native.interrupt(this.#fd);
  }

  /**
   * Pre-faults guest memory [gpa, gpa+size) so the guest's first touch does
   * not fault: KVM_PRE_FAULT_MEMORY where the kernel supports it, else the
   * software engine (same contract). Runs off the event loop, reports
   * progress, and stops on `signal`. Rejects with PreFaultError (carrying the
   * progress) on failure, PreFaultAbortError when aborted.
   */
  preFaultMemory(range: PreFaultRange, options: PreFaultOptions = {}): Promise<PreFaultResult> {
    try {
      return preFaultMemory(this, range, options);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** preFaultMemory() on the calling thread (blocks it). */
  preFaultMemorySync(range: PreFaultRange, options: PreFaultOptions = {}): PreFaultResult {
    return preFaultMemorySync(this, range, options);
  }

  /** @internal Keeps the fd open while an asynchronous step runs. */
  trackStep<T>(step: () => Promise<T>): Promise<T> {
    return this.track('KVM_PRE_FAULT_MEMORY', step);
  }

  /** Binary statistics of this vcpu, by name (e.g. 'exits', 'pf_taken'). */
  stats(): Stats {
    return this.#statsReader().read();
  }

  /** Descriptors of the statistics stats() returns. */
  statsDescriptors(): readonly StatDescriptor[] {
    return this.#statsReader().descriptors;
  }

  protected override onClose(): void {
    if (this.#running) {
      this.#runBytes[1] = 1;
      native.interrupt(this.#fd);
    }
  }

  #statsReader(): StatsReader {
    this.assertOpen('KVM_GET_STATS_FD');
    if (!this.#stats) {
      this.#owned.statsFd = callNative('KVM_GET_STATS_FD', { vcpu: this.id }, () => native.getStatsFd(this.#fd));
      this.#stats = new StatsReader(this.#owned.statsFd);
    }
    return this.#stats;
  }

  #beginRun(): void {
    this.assertOpen('KVM_RUN');
    if (this.#running) throw new KvmError(`Vcpu ${this.id} is already running`, { code: 'EBUSY', ioctl: 'KVM_RUN', args: { vcpu: this.id } });
    this.#running = true;
    new DataView(this.#runBytes.buffer, this.#runBytes.byteOffset, 12).setUint32(8, 0, true);
  }

  #finishRun(errno: number): VcpuExit {
    if (errno === 0) return decodeExit(this.#runBytes);
    // KVM_EXIT_MEMORY_FAULT comes with KVM_RUN failing (EFAULT, EHWPOISON): the
    // exit is the answer, not an error. (Minimal decoding by helper "lab" until
    // the exits branch lands; #beginRun clears exit_reason so it is never stale.)
    if ((errno === EFAULT || errno === EHWPOISON) && new DataView(this.#runBytes.buffer, this.#runBytes.byteOffset, 12).getUint32(8, true) === KVM_EXIT_MEMORY_FAULT) {
      return decodeExit(this.#runBytes);
    }
    if (errno === EINTR || errno === EAGAIN) {
      this.#runBytes[1] = 0;
      return { reason: 'intr' };
    }
    throw errnoError(errno, 'KVM_RUN', { vcpu: this.id });
  }
}
