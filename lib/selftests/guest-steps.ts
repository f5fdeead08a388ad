/**
 * Steps of a selftest guest with a bound on each: the next event of a
 * running guest, within a time limit that holds even when KVM never returns
 * from KVM_RUN.
 *
 * A deadline checked only when guest.run() returns cannot end a step whose
 * vcpu KVM keeps in the kernel (a fault KVM retries forever, an event it
 * re-injects forever: Linux 7.3's SVM does that for an NPF on an MMIO SPTE
 * while vectoring). So the limit is a kick: once it passes, the vcpu is
 * kicked out of KVM_RUN and the step fails with a {@link GuestStall} that
 * says what the vcpu was doing (RIP, the exception KVM was injecting, how
 * many exits KVM handled in the kernel meanwhile) instead of a test timeout.
 */
import type { MmioExit } from '../exit.js';
import type { Guest, GuestEvent } from '../guest/guest.js';
import { SpinReadReason } from '../guest/programs.js';
import { scaledTimeout } from '../time-scale.js';
import { SelftestFailure, show } from './assert.js';

/** Default limit of one step; scaled by NODE_KVM_TIMEOUT_SCALE on a slow (emulated, busy) machine. */
export const STEP_LIMIT_MS = scaledTimeout(10_000);

/** One line for a guest event: a ucall with its values, an MMIO access, or the exit reason. */
export function describeEvent(e: GuestEvent): string {
  if (e.kind === 'sync') return `sync ${e.args.map(show).join(' ')}`;
  if (e.kind !== 'exit') return e.kind;
  const x = e.exit;
  return x.reason === 'mmio' ? `mmio ${(x as MmioExit).isWrite ? 'write' : 'read'} at ${show((x as MmioExit).physAddr)}` : `exit ${x.reason}`;
}

/** What the vcpu was doing when a step's limit passed with it still inside KVM_RUN. */
export interface StallState {
  /** How long the vcpu had been in KVM_RUN when it was kicked, in ms. */
  ms: number;
  /** Guest RIP after the kick. */
  rip: bigint;
  /** The exception KVM was injecting (or had pending) then, from KVM_GET_VCPU_EVENTS, if any. */
  exception?: { nr: number; injected: boolean; pending: boolean };
  /** VM exits KVM handled in the kernel during the run (the vcpu's `exits` statistic), if readable. */
  exits?: bigint;
}

/**
 * The step's limit passed and the vcpu was still inside KVM_RUN: KVM kept it
 * in the kernel (or the guest ran without one exit to userspace) for the
 * whole limit. It was kicked out; `stall` says in what state.
 */
export class GuestStall extends SelftestFailure {
  constructor(
    what: string,
    /** The vcpu's state after the kick. */
    readonly stall: StallState,
  ) {
    const exc = stall.exception ? `, KVM ${stall.exception.injected ? 'injecting' : 'holding pending'} exception ${stall.exception.nr}` : '';
    const exits = stall.exits === undefined ? '' : `, ${stall.exits} exits handled in the kernel meanwhile`;
    super(`${what}: the vcpu stayed in KVM_RUN for ${Math.round(stall.ms)} ms without an exit to userspace (kicked out: RIP ${show(stall.rip)}${exc}${exits})`, {
      rip: show(stall.rip),
      exception: stall.exception ?? null,
      exits: stall.exits === undefined ? null : String(stall.exits),
    });
    this.name = 'GuestStall';
  }
}

function exitCount(guest: Guest): bigint | undefined {
  try {
    const v = guest.vcpu.stats().exits;
    return typeof v === 'bigint' ? v : undefined;
  } catch {
    return undefined; // no binary stats on this kernel: the count is only a diagnostic
  }
}

function stallState(guest: Guest, ms: number, exitsBefore: bigint | undefined): StallState {
  const state: StallState = { ms, rip: guest.vcpu.getRegs().rip };
  const e = guest.vcpu.getVcpuEvents().exception;
  if (e.injected || e.pending) state.exception = { nr: e.nr, injected: e.injected !== 0, pending: e.pending !== 0 };
  const after = exitCount(guest);
  if (after !== undefined && exitsBefore !== undefined) state.exits = after - exitsBefore;
  return state;
}

/**
 * One guest.run(), kicked out of KVM_RUN if it has not returned within
 * `limitMs`; a run that only the kick ended throws {@link GuestStall}.
 */
export async function runWithin(guest: Guest, limitMs: number, what = 'guest run'): Promise<GuestEvent> {
  const exitsBefore = exitCount(guest);
  const start = performance.now();
  let kicked = false;
  const timer = setTimeout(() => {
    kicked = true;
    guest.vcpu.kick();
  }, Math.max(0, limitMs));
  let e: GuestEvent;
  try {
    e = await guest.run();
  } finally {
    clearTimeout(timer);
  }
  if (kicked && e.kind === 'exit' && e.exit.reason === 'intr') throw new GuestStall(what, stallState(guest, performance.now() - start, exitsBefore));
  return e;
}

/** Options of {@link nextEvent}. */
export interface NextEventOptions {
  /** The step's limit in ms; default {@link STEP_LIMIT_MS}. */
  limitMs?: number;
  /** Return spin-read heartbeats (SYNC reason HEARTBEAT) too; default: skip them. */
  keepHeartbeats?: boolean;
  /** Names the step in a failure. */
  what?: string;
  /** Ends the step (rejecting with the signal's reason) at the next return from KVM_RUN; kick the vcpu to make that prompt. */
  signal?: AbortSignal;
}

/**
 * The next event other than signal interruptions (and spin-read heartbeats
 * unless kept), within the step's limit: a guest that keeps reporting only
 * heartbeats fails once the limit has passed, and a single KVM_RUN that lasts
 * the whole limit is kicked and fails with {@link GuestStall} (so a step ends
 * within twice the limit at most, and a run cut short by the step's deadline
 * is never mistaken for a stall).
 */
export async function nextEvent(guest: Guest, options: NextEventOptions = {}): Promise<GuestEvent> {
  const limit = options.limitMs ?? STEP_LIMIT_MS;
  const what = options.what ?? 'waiting for the guest';
  const deadline = performance.now() + limit;
  for (;;) {
    const e = await runWithin(guest, limit, what);
    options.signal?.throwIfAborted();
    const heartbeat = e.kind === 'sync' && e.args[1] === SpinReadReason.HEARTBEAT;
    if (!(e.kind === 'exit' && e.exit.reason === 'intr') && (options.keepHeartbeats === true || !heartbeat)) return e;
    if (performance.now() > deadline) throw new SelftestFailure(`${what}: the guest reported nothing new within ${limit} ms`);
  }
}

/**
 * Starts the guest, does `action` once its vcpu is (very likely) inside
 * KVM_RUN, so the change really races the guest, and returns the next event.
 */
export async function whileRunning(guest: Guest, action: () => void, options: NextEventOptions = {}): Promise<GuestEvent> {
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const next = nextEvent(guest, { ...options, signal });
  await new Promise((resolve) => setTimeout(resolve, 5));
  try {
    action();
  } catch (e) {
    // Do not leave the vcpu running with nobody waiting for it: end the step now.
    stop.abort(e);
    guest.vcpu.kick();
    await next.catch(() => undefined);
    throw e;
  }
  return next;
}
