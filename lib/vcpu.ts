/**
 * Vcpu: one virtual CPU. Registers, CPUID, KVM_RUN (sync, or on the vcpu's
 * own native thread), kick, binary stats, and a handle to run it in a
 * worker_thread. Pre-faulting lives in prefault/ and is attached here as
 * preFaultMemory()/preFaultMemorySync().
 */
import { encodeCpuid, readCpuidEntries, type CpuidEntry } from './cpuid.js';
import { callNative, KvmError, type ErrorArgs } from './errors.js';
import type { CapName } from './constants.js';
import * as state from './vcpu/index.js';
import { ExitDecoder, type VcpuExit } from './exit.js';
import { native, type NativeMapping } from './native.js';
import { applySregsUpdate, decodeRegs, decodeSregs, encodeRegs, encodeSregs, regsUpdate, sregsUpdate, type Regs, type Segment, type Sregs } from './regs.js';
import { Resource } from './resource.js';
import { StatsReader, type StatDescriptor, type VcpuStats } from './stats.js';
import type { Vm } from './vm.js';
import { preFaultMemory, preFaultMemorySync } from './prefault/run.js';
import type { PreFaultOptions, PreFaultRange, PreFaultResult } from './prefault/contract.js';
import { busyError, LONG_IOCTLS, mapRun, runResult, toVcpuError } from './vcpu/run.js';
import { adoptWorkerHandle, makeWorkerHandle, type VcpuWorkerHandle } from './vcpu/worker-handle.js';

export type { VcpuWorkerHandle } from './vcpu/worker-handle.js';

/** Resources a Vcpu owns, outside the object so its release never captures it. */
interface Owned {
  statsFd: number;
  thread: object | undefined;
}

/** Partial special registers for setSregs(): segments may be partial too. */
export type SregsUpdate = Partial<Omit<Sregs, 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt'>> &
  Partial<Record<'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt', Partial<Segment>>>;

/** Register values as callers may give them. */
export type RegsUpdate = Partial<Record<keyof Regs, bigint | number>>;

/** One vcpu of a Vm. */
export class Vcpu extends Resource {
  /** The vcpu id given to KVM_CREATE_VCPU. */
  readonly id: number;
  readonly #vm: Vm | undefined;
  readonly #fd: number;
  readonly #key: number;
  readonly #mmapSize: number;
  readonly #run: NativeMapping;
  /** The library's own view of kvm_run: never handed out, so never transferred away. */
  readonly #runBytes: Uint8Array;
  /** The view given to users (runState, exit data); replaced if they transfer its buffer. */
  #userRunBytes: Uint8Array;
  /** Decodes exits from the user view (replaced with it). */
  #exits: ExitDecoder;
  readonly #owned: Owned;
  #stats: StatsReader | undefined;
  #running = false;

  /**
   * Private, and so in the published types too: a Vcpu comes from
   * Vm.createVcpu() or Vcpu.fromWorkerHandle(). Takes ownership of fd, the
   * kvm_run mapping and one reference to the key.
   */
  private constructor(vm: Vm | undefined, id: number, fd: number, run: NativeMapping, key: number, owner: boolean, mmapSize: number) {
    const owned: Owned = { statsFd: -1, thread: undefined };
    super(`Vcpu ${id}`, () => {
      if (owned.thread) native.endThread(owned.thread);
      run.unmap();
      if (owned.statsFd >= 0) native.close(owned.statsFd);
      native.close(fd);
      native.vcpuRelease(key, owner);
    });
    this.#vm = vm;
    this.id = id;
    this.#fd = fd;
    this.#key = key;
    this.#mmapSize = mmapSize;
    this.#run = run;
    this.#runBytes = new Uint8Array(run.buffer(0n, run.length));
    this.#userRunBytes = new Uint8Array(run.buffer());
    this.#exits = new ExitDecoder(this.#userRunBytes);
    this.#owned = owned;
  }

  /** Maps kvm_run for a new vcpu fd and wraps both; closes the fd on failure. */
  static wrap(vm: Vm, id: number, fd: number, mmapSize: number): Vcpu {
    let key = 0;
    try {
      key = native.vcpuKey();
      const run = mapRun(fd, id, mmapSize);
      return new Vcpu(vm, id, fd, run, key, true, mmapSize);
    } catch (e) {
      native.close(fd);
      if (key) native.vcpuRelease(key, true);
      throw e;
    }
  }

  /**
   * A token for running this vcpu in a worker_thread: post it (postMessage or
   * workerData) and call {@link Vcpu.fromWorkerHandle} in the worker, which
   * then has a full Vcpu (run, runAsync, registers, kick, stats). This Vcpu
   * stays the owner: its kick() stops a guest running in the worker, and its
   * close() (or the Vm's) kicks it and makes every later call on the
   * worker's Vcpu fail with ECLOSED. Only one thread runs the vcpu at a time
   * (EBUSY otherwise), and an ioctl while another thread runs it is EBUSY.
   * Each handle is adopted at most once.
   */
  workerHandle(): VcpuWorkerHandle {
    this.assertOpen('workerHandle');
    return makeWorkerHandle(this.id, this.#key, this.#fd, this.#mmapSize);
  }

  /**
   * The Vcpu a {@link Vcpu.workerHandle} names, in this thread (normally a
   * worker). It owns the handle's fd and its own kvm_run mapping; close it
   * when done. It has no `vm` (the Vm lives on the owner's thread), so
   * pre-faulting is not available on it.
   */
  static fromWorkerHandle(handle: VcpuWorkerHandle): Vcpu {
    const { id, key, fd, mmapSize } = adoptWorkerHandle(handle);
    try {
      return new Vcpu(undefined, id, fd, mapRun(fd, id, mmapSize), key, false, mmapSize);
    } catch (e) {
      native.close(fd);
      native.vcpuRelease(key, false);
      throw e;
    }
  }

  /** The VM it belongs to (not available on a Vcpu adopted from a worker handle). */
  get vm(): Vm {
    if (!this.#vm) {
      throw new KvmError(`Vcpu ${this.id} was adopted from a worker handle: its Vm lives on the owner's thread`, {
        code: 'EOPNOTSUPP',
        args: { vcpu: this.id },
      });
    }
    return this.#vm;
  }

  /**
   * @internal Issues one vcpu ioctl: asserts open, answers KvmError 'EBUSY'
   * at once while this vcpu is in KVM_RUN (here or on any thread) instead of
   * waiting on the kernel's vcpu mutex, and converts failures to KvmError.
   */
  ioctl<T>(op: string, args: ErrorArgs, fn: (fd: number) => T): T {
    this.assertOpen(op);
    if (this.#running) throw busyError(op, this.id);
    const fd = this.#fd;
    const call = LONG_IOCTLS.has(op) ? () => fn(fd) : () => native.vcpuExclusive(this.#key, () => fn(fd), fd);
    try {
      return call();
    } catch (e) {
      throw toVcpuError(e, op, args, this.id);
    }
  }

  /** Whether `value` is a real Vcpu (a brand check on its private fd: a Proxy of one, or a look-alike object, is not). */
  static isVcpu(value: unknown): value is Vcpu {
    return typeof value === 'object' && value !== null && #fd in value;
  }

  /** @internal The process-wide key of this vcpu, for the addon's long ioctls. */
  get key(): number {
    return this.#key;
  }

  /** The vcpu fd; throws ECLOSED after close(). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /**
   * The raw kvm_run page (zero-copy; valid until close). Moving its buffer
   * away (ArrayBuffer.prototype.transfer()) does not disturb runs or kicks:
   * the library keeps a view of its own, and the next runState is a new view.
   */
  get runState(): Uint8Array {
    this.assertOpen('kvm_run');
    return this.#userRun();
  }

  /** Whether a run() or runAsync() is in progress. */
  get running(): boolean {
    return this.#running;
  }

  /** KVM_SET_CPUID2. Usually given kvm.supportedCpuid(). */
  setCpuid(entries: readonly CpuidEntry[]): void {
    const table = encodeCpuid(readCpuidEntries(entries, 'KVM_SET_CPUID2')); // read and range-checked before the open check
    this.assertOpen('KVM_SET_CPUID2');
    this.ioctl('KVM_SET_CPUID2', { entries: table.length / 40 }, (fd) => native.setCpuid2(fd, table));
  }

  /** KVM_GET_REGS. */
  getRegs(): Regs {
    return decodeRegs(this.ioctl('KVM_GET_REGS', {}, (fd) => native.getRegs(fd)));
  }

  /** KVM_SET_REGS; fields not given keep their current values. */
  setRegs(update: RegsUpdate): void {
    const patch = regsUpdate(update); // validated and copied before the open check
    this.assertOpen('KVM_SET_REGS');
    const regs = { ...this.getRegs(), ...patch };
    const bytes = callNative('KVM_SET_REGS', {}, () => encodeRegs(regs));
    this.ioctl('KVM_SET_REGS', {}, (fd) => native.setRegs(fd, bytes));
  }

  /** KVM_GET_SREGS. */
  getSregs(): Sregs {
    return decodeSregs(this.ioctl('KVM_GET_SREGS', {}, (fd) => native.getSregs(fd)));
  }

  /** KVM_SET_SREGS; fields (and segment fields) not given keep their current values. */
  setSregs(update: SregsUpdate): void {
    const patch = sregsUpdate(update); // validated and copied before the open check
    this.assertOpen('KVM_SET_SREGS');
    const sregs = applySregsUpdate(this.getSregs(), patch);
    const bytes = callNative('KVM_SET_SREGS', {}, () => encodeSregs(sregs));
    this.ioctl('KVM_SET_SREGS', {}, (fd) => native.setSregs(fd, bytes));
  }

  /**
   * KVM_RUN on the calling thread (blocks it until the guest exits). A signal
   * or kick() gives `{ reason: 'intr' }`; KVM_EXIT_MEMORY_FAULT (KVM_RUN
   * failing with EFAULT/EHWPOISON) gives `{ reason: 'memory-fault' }`; other
   * failures throw KvmError (EBUSY while another thread runs this vcpu). The
   * exit's `data` views and reply methods write into kvm_run and are valid
   * until the next run (docs/exits.md). In a worker_thread the run still ends
   * when the worker is terminated or the process exits.
   */
  run(): VcpuExit {
    this.#beginRun();
    try {
      return this.#finishRun(native.run(this.#fd, this.#key));
    } finally {
      this.#running = false;
    }
  }

  /**
   * KVM_RUN on this vcpu's own native thread (created on first use, ended by
   * close()): the event loop keeps running and libuv's thread pool is never
   * used, so any number of vcpus can run at once.
   */
  runAsync(): Promise<VcpuExit> {
    try {
      this.#beginRun();
    } catch (e) {
      // ECLOSED / EBUSY: a promise-returning call reports failure as a rejection.
      return Promise.reject(e);
    }
    let thread: object;
    try {
      thread = this.#owned.thread ??= callNative('KVM_RUN', { vcpu: this.id }, () => native.runThread());
    } catch (e) {
      this.#running = false;
      return Promise.reject(e);
    }
    return this.track('KVM_RUN', async () => {
      try {
        return this.#finishRun(await native.runOn(thread, this.#fd, this.#key));
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
    native.interrupt(this.#fd, this.#key);
  }

  /** @internal Signals the thread blocked in a vcpu ioctl (pre-fault abort). */
  interruptIoctl(): boolean {
    return this.closed ? false : native.interrupt(this.#fd, this.#key);
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

  // ---- VMM state (bodies in lib/vcpu/*) ----
  /** KVM_GET_MSRS; throws naming the first MSR the kernel could not read. */
  getMsrs(indices: readonly number[]): state.MsrEntry[] { return state.getMsrs(this, indices); }
  /** KVM_SET_MSRS; a partial set throws KvmError naming the first MSR that failed. */
  setMsrs(entries: readonly state.MsrEntry[]): void { state.setMsrs(this, entries); }
  /** KVM_GET_FPU. */
  getFpu(): state.Fpu { return state.getFpu(this); }
  /** KVM_SET_FPU (fields not given keep their values). */
  setFpu(update: Partial<state.Fpu>): void { state.setFpu(this, update); }
  /** KVM_GET_LAPIC (in-kernel irqchip). */
  getLapic(): state.LapicState { return state.getLapic(this); }
  /** KVM_SET_LAPIC (registers not given keep their values). */
  setLapic(update: Partial<state.LapicState>): void { state.setLapic(this, update); }
  /** KVM_GET_XSAVE, or KVM_GET_XSAVE2 where the area is larger than 4 KiB. */
  getXsave(): state.Xsave { return state.getXsave(this); }
  /** KVM_SET_XSAVE (fields not given keep their values). */
  setXsave(update: Partial<state.Xsave>): void { state.setXsave(this, update); }
  /** KVM_GET_XCRS. */
  getXcrs(): state.Xcr[] { return state.getXcrs(this); }
  /** KVM_SET_XCRS. */
  setXcrs(xcrs: readonly state.Xcr[]): void { state.setXcrs(this, xcrs); }
  /** KVM_GET_VCPU_EVENTS. */
  getVcpuEvents(): state.VcpuEvents { return state.getVcpuEvents(this); }
  /** KVM_SET_VCPU_EVENTS (fields not given keep their values). */
  setVcpuEvents(update: Parameters<typeof state.setVcpuEvents>[1]): void { state.setVcpuEvents(this, update); }
  /** KVM_GET_DEBUGREGS. */
  getDebugRegs(): state.DebugRegs { return state.getDebugRegs(this); }
  /** KVM_SET_DEBUGREGS (fields not given keep their values). */
  setDebugRegs(update: Partial<state.DebugRegs>): void { state.setDebugRegs(this, update); }
  /** KVM_GET_MP_STATE. */
  getMpState(): state.MpState | number { return state.getMpState(this); }
  /** KVM_SET_MP_STATE. */
  setMpState(mpState: state.MpState): void { state.setMpState(this, mpState); }
  /** KVM_SET_GUEST_DEBUG. */
  setGuestDebug(options: state.GuestDebugOptions): void { state.setGuestDebug(this, options); }
  /** KVM_TRANSLATE: guest-virtual to guest-physical through the guest's page tables. */
  translate(gva: bigint | number): state.Translation { return state.translate(this, gva); }
  /** KVM_INTERRUPT: queue an external interrupt (VMs without the in-kernel irqchip). */
  interrupt(vector: number): void { state.interrupt(this, vector); }
  /** KVM_NMI. */
  nmi(): void { state.nmi(this); }
  /** KVM_SMI. */
  smi(): void { state.smi(this); }
  /** KVM_GET_CPUID2. */
  getCpuid(): CpuidEntry[] { return state.getCpuid(this); }
  /** KVM_GET_TSC_KHZ. */
  getTscKhz(): number { return state.getTscKhz(this); }
  /** KVM_SET_TSC_KHZ. */
  setTscKhz(khz: number): void { state.setTscKhz(this, khz); }
  /** KVM_KVMCLOCK_CTRL. */
  kvmclockCtrl(): void { state.kvmclockCtrl(this); }
  /** KVM_GET_NESTED_STATE (EOPNOTSUPP where KVM_CAP_NESTED_STATE is 0). */
  getNestedState(): state.NestedState { return state.getNestedState(this); }
  /** KVM_SET_NESTED_STATE. */
  setNestedState(nested: state.NestedState): void { state.setNestedState(this, nested); }
  /** KVM_ENABLE_CAP on this vcpu. */
  enableCap(cap: number | CapName, args: readonly (bigint | number)[] = []): void { state.enableVcpuCap(this, cap, args); }
  /** Sets a bit of kvm_run.kvm_valid_regs (KVM_CAP_SYNC_REGS): KVM fills that part on each exit. */
  setSyncValidReg(kind: state.SyncRegsKind): void { state.setSyncValidReg(this, this.#runBytes, kind); }
  /** Clears a bit of kvm_valid_regs. */
  clearSyncValidReg(kind: state.SyncRegsKind): void { state.clearSyncValidReg(this, this.#runBytes, kind); }
  /** Sets a bit of kvm_dirty_regs: KVM loads that part from kvm_run on the next run. */
  setSyncDirtyReg(kind: state.SyncRegsKind): void { state.setSyncDirtyReg(this, this.#runBytes, kind); }
  /** Clears a bit of kvm_dirty_regs. */
  clearSyncDirtyReg(kind: state.SyncRegsKind): void { state.clearSyncDirtyReg(this, this.#runBytes, kind); }
  /** The synchronized registers in kvm_run (as of the last exit). */
  syncRegs(): state.SyncRegs { return state.syncRegs(this, this.#runBytes); }
  /** Writes synchronized registers into kvm_run and marks them dirty for the next run. */
  setSyncRegs(parts: Partial<state.SyncRegs>): void { state.setSyncRegs(this, this.#runBytes, parts); }
  /** Drains the coalesced MMIO ring (writes to Vm.registerCoalescedMmio zones), oldest first. */
  coalescedMmioRead(): state.CoalescedWrite[] { this.assertOpen('coalescedMmioRead'); return state.readCoalescedMmio(this, this.#runBytes); }

  /** Binary statistics of this vcpu, by name (e.g. 'exits', 'pf_taken'). */
  stats(): VcpuStats {
    return this.#statsReader().read<VcpuStats>();
  }

  /** Descriptors of the statistics stats() returns. */
  statsDescriptors(): readonly StatDescriptor[] {
    return this.#statsReader().descriptors;
  }

  protected override onClose(): void {
    // Also reaches a thread running this vcpu through a worker handle.
    if (this.#running || this.#vm) {
      this.#runBytes[1] = 1;
      native.interrupt(this.#fd, this.#key);
    }
  }

  #userRun(): Uint8Array {
    // A transferred buffer leaves this view detached (length 0): give a new one.
    if (this.#userRunBytes.byteLength === 0) {
      this.#userRunBytes = new Uint8Array(this.#run.buffer(0n, this.#run.length));
      this.#exits = new ExitDecoder(this.#userRunBytes);
    }
    return this.#userRunBytes;
  }

  #exitDecoder(): ExitDecoder {
    this.#userRun();
    return this.#exits;
  }

  #statsReader(): StatsReader {
    this.assertOpen('KVM_GET_STATS_FD');
    if (!this.#stats) {
      this.#owned.statsFd = this.ioctl('KVM_GET_STATS_FD', { vcpu: this.id }, (fd) => native.getStatsFd(fd));
      this.#stats = new StatsReader(this.#owned.statsFd);
    }
    return this.#stats;
  }

  #beginRun(): void {
    this.assertOpen('KVM_RUN');
    if (this.#running) throw new KvmError(`Vcpu ${this.id} is already running`, { code: 'EBUSY', ioctl: 'KVM_RUN', args: { vcpu: this.id } });
    this.#running = true;
    this.#exitDecoder().begin();
  }

  #finishRun(errno: number): VcpuExit {
    return runResult(errno, this.#exitDecoder(), this.#runBytes, this.id);
  }
}
