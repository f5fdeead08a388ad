/**
 * The run loop: each vcpu runs on its own (runAsync) and every exit is
 * dispatched to a device or turned into the machine's end. Port I/O goes to
 * the IoBus; MMIO to nothing (reads give all ones: there are no MMIO devices
 * besides the in-kernel LAPIC and IOAPIC); a triple fault, a system event, a
 * halted vcpu with no irqchip to wake it, or an error ends the machine with
 * a reason. stop() ends it from outside (a signal, the i8042 reset line).
 */
import type { Vcpu, VcpuExit } from '../index.js';
import { dispatchIo, type IoBus } from './io-bus.js';

/** Why the machine stopped. */
export type StopReason =
  | { kind: 'reboot'; source: 'i8042' | 'triple-fault' | 'system-event' | 'console' }
  | { kind: 'poweroff'; source: 'system-event' | 'console' }
  | { kind: 'panic'; detail: string }
  | { kind: 'halted'; detail: string }
  | { kind: 'signal'; signal: string }
  | { kind: 'error'; detail: string; error?: unknown };

/** Exit counts by reason, per vcpu. */
export type ExitCounts = Record<string, number>;

/** The exit shapes this loop reads (works with a narrowing VcpuExit union or without). */
type IoLike = { reason: 'io'; direction: 'in' | 'out'; size: number; port: number; count: number; data: Uint8Array };
type MmioLike = { reason: 'mmio'; isWrite: boolean; len: number; data: Uint8Array; physAddr: bigint };
type SystemEventLike = { reason: 'system-event'; type: number };
type ErrorLike = { reason: 'internal-error' | 'fail-entry' };
type InternalErrorLike = { reason: 'internal-error'; suberror: number; data: readonly bigint[] };

/** KVM_INTERNAL_ERROR_DELIVERY_EV, its data[1] for an SVM nested page fault, the LAPIC's page. */
const DELIVERY_EV = 3;
const SVM_EXIT_NPF = 0x400n;
const LAPIC_PAGE = 0xfee0_0000n;
/** Back-to-back retries of that exit on one vcpu before the loop gives up. */
const MAX_VECTORING_RETRIES = 64;

/**
 * KVM refuses to emulate an MMIO access while it believes an event is being
 * delivered (KVM_INTERNAL_ERROR_DELIVERY_EV). In the lab (kvm_amd nested in
 * QEMU TCG) it reports that for the guest's ordinary EOI write to its LAPIC
 * (`mov %eax, APIC_EOI`, not part of any event delivery): the emulated
 * CPU's EXITINTINFO is still valid on that exit. KVM has re-queued the event,
 * so running the vcpu again delivers it and then retries the write.
 */
function isLapicVectoringError(exit: VcpuExit): boolean {
  if (exit.reason !== 'internal-error') return false;
  const e = exit as VcpuExit & InternalErrorLike;
  return e.suberror === DELIVERY_EV && e.data.length >= 4 && e.data[1] === SVM_EXIT_NPF && (e.data[3]! & ~0xfffn) === LAPIC_PAGE;
}

const isIo = (e: VcpuExit): e is VcpuExit & IoLike => e.reason === 'io';
const isMmio = (e: VcpuExit): e is VcpuExit & MmioLike => e.reason === 'mmio';
const isSystemEvent = (e: VcpuExit): e is VcpuExit & SystemEventLike => e.reason === 'system-event';

/** KVM_SYSTEM_EVENT_* types. */
const SYSTEM_EVENT_SHUTDOWN = 1;
const SYSTEM_EVENT_RESET = 2;
const SYSTEM_EVENT_CRASH = 3;

/** Options of {@link RunLoop}. */
export interface RunLoopOptions {
  vcpus: readonly Vcpu[];
  bus: IoBus;
  /** Called after every exit's dispatch (the UART flushes its output here). */
  afterExit?: () => void;
  /** Whether an in-kernel irqchip can wake a halted vcpu (then HLT does not exit). */
  irqchip: boolean;
}

/** Runs vcpus until the machine stops. */
export class RunLoop {
  readonly #options: RunLoopOptions;
  #stop: StopReason | undefined;
  readonly #done: Promise<StopReason>;
  #resolve!: (r: StopReason) => void;
  /** Exit counts by reason, per vcpu id. */
  readonly exits = new Map<number, ExitCounts>();
  /** MMIO accesses no device answered. */
  mmioUnclaimed = 0;
  /** KVM_INTERNAL_ERROR_DELIVERY_EV exits on the LAPIC page run again (see isLapicVectoringError). */
  vectoringRetries = 0;
  readonly #retriesInARow = new Map<number, number>();

  constructor(options: RunLoopOptions) {
    this.#options = options;
    this.#done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Why it stopped, once it has. */
  get stopReason(): StopReason | undefined {
    return this.#stop;
  }

  /** Starts every vcpu; resolves with the reason once all have stopped. */
  async run(): Promise<StopReason> {
    const loops = this.#options.vcpus.map((v) => this.#runVcpu(v));
    const reason = await this.#done;
    await Promise.allSettled(loops);
    return reason;
  }

  /** Ends the machine: the first reason given wins; every vcpu is kicked out of KVM_RUN. */
  stop(reason: StopReason): void {
    if (this.#stop) return;
    this.#stop = reason;
    for (const v of this.#options.vcpus) {
      if (!v.closed) v.kick();
    }
    this.#resolve(reason);
  }

  async #runVcpu(vcpu: Vcpu): Promise<void> {
    const counts: ExitCounts = {};
    this.exits.set(vcpu.id, counts);
    while (!this.#stop) {
      let exit: VcpuExit;
      try {
        exit = await vcpu.runAsync();
      } catch (e) {
        this.stop({ kind: 'error', detail: `vcpu ${vcpu.id}: ${e instanceof Error ? e.message : String(e)}`, error: e });
        return;
      }
      counts[exit.reason] = (counts[exit.reason] ?? 0) + 1;
      try {
        this.#dispatch(vcpu, exit);
      } catch (e) {
        this.stop({ kind: 'error', detail: `vcpu ${vcpu.id}: device failed on ${exit.reason} exit: ${e instanceof Error ? e.message : String(e)}`, error: e });
      }
      this.#options.afterExit?.();
    }
  }

  #dispatch(vcpu: Vcpu, exit: VcpuExit): void {
    if (isIo(exit)) {
      dispatchIo(this.#options.bus, exit);
      return;
    }
    if (isMmio(exit)) {
      this.mmioUnclaimed++;
      if (!exit.isWrite) exit.data.fill(0xff);
      return;
    }
    if (isLapicVectoringError(exit)) {
      const inARow = (this.#retriesInARow.get(vcpu.id) ?? 0) + 1;
      this.#retriesInARow.set(vcpu.id, inARow);
      if (inARow <= MAX_VECTORING_RETRIES) {
        this.vectoringRetries++;
        return;
      }
    } else {
      this.#retriesInARow.set(vcpu.id, 0);
    }
    if (isSystemEvent(exit)) {
      if (exit.type === SYSTEM_EVENT_SHUTDOWN) this.stop({ kind: 'poweroff', source: 'system-event' });
      else if (exit.type === SYSTEM_EVENT_RESET) this.stop({ kind: 'reboot', source: 'system-event' });
      else if (exit.type === SYSTEM_EVENT_CRASH) this.stop({ kind: 'panic', detail: 'KVM_SYSTEM_EVENT_CRASH' });
      else this.stop({ kind: 'error', detail: `unknown system event ${exit.type}` });
      return;
    }
    switch (exit.reason) {
      case 'intr':
        return; // a kick: the loop condition decides
      case 'shutdown':
        // A triple fault: Linux's last way to reboot, and what a crash before the IDT looks like.
        this.stop({ kind: 'reboot', source: 'triple-fault' });
        return;
      case 'hlt':
        // Only without an in-kernel irqchip: nothing can wake this vcpu.
        this.stop({ kind: 'halted', detail: `vcpu ${vcpu.id} halted with no interrupt controller to wake it (rip 0x${vcpu.getRegs().rip.toString(16)})` });
        return;
      case 'internal-error':
      case 'fail-entry': {
        const e = exit as VcpuExit & ErrorLike;
        this.stop({ kind: 'error', detail: `vcpu ${vcpu.id}: ${e.reason} ${JSON.stringify(exit, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x))} at rip 0x${safeRip(vcpu)}` });
        return;
      }
      default:
        this.stop({ kind: 'error', detail: `vcpu ${vcpu.id}: unexpected exit ${exit.reason} at rip 0x${safeRip(vcpu)}` });
    }
  }
}

function safeRip(vcpu: Vcpu): string {
  try {
    return vcpu.getRegs().rip.toString(16);
  } catch {
    return '?';
  }
}
