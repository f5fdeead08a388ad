/**
 * The pre-fault loop: one loop, one contract; the engines differ only in a
 * step. Written as a generator that yields the work to do (a step, or a
 * back-off pause) so the asynchronous and synchronous drivers share every
 * rule: progress must be made on success, EINTR is retried unless aborted,
 * EAGAIN is retried with a bounded back-off, anything else stops with the
 * progress so far.
 */
import { errnoCode } from '../errors.js';
import type { PageLevel } from '../soft-mmu/index.js';
import { PreFaultAbortError, PreFaultError, type PreFaultEngineName, type PreFaultResult } from './contract.js';
import { settleTrial, unsupportedKernelMessage, type EngineDecision } from './engine-choice.js';
import type { StepOutcome } from './step.js';
import type { Vm } from '../vm.js';

const EINTR = 4;
const EAGAIN = 11;
const ENOTTY = 25;
const EOPNOTSUPP = 95;
const PAGE = 4096n;

/** Most consecutive EAGAINs before giving up (the slot keeps changing). */
export const EAGAIN_RETRY_LIMIT = 100;
/** Most consecutive EINTRs before giving up (a signal storm). */
export const EINTR_RETRY_LIMIT = 10_000;

/** Work the driver must do for the loop. */
export type LoopRequest =
  | { kind: 'step'; engine: PreFaultEngineName; gpa: bigint; size: bigint }
  | { kind: 'sleep'; ms: number };

/** Inputs of the loop. */
export interface LoopParams {
  vm: Vm;
  gpa: bigint;
  size: bigint;
  decision: EngineDecision;
  maxStep: (engine: PreFaultEngineName) => bigint;
  aborted: () => unknown | undefined;
  onProgress: ((done: bigint, total: bigint) => void) | undefined;
  /** Reads the VM's page counters for the kernel engine's level report. */
  kernelLevels: () => Record<PageLevel, number> | undefined;
}

/** The loop. Yields requests, receives StepOutcome for steps (undefined for sleeps). */
export function* preFaultLoop(p: LoopParams): Generator<LoopRequest, PreFaultResult, StepOutcome | undefined> {
  const started = process.hrtime.bigint();
  let { engine, reason, trial } = p.decision;
  let gpa = p.gpa;
  let size = p.size;
  const result: PreFaultResult = {
    engine,
    reason,
    bytesMapped: 0n,
    remaining: { gpa, size },
    calls: 0,
    retries: { eintr: 0, eagain: 0 },
    levels: { '4k': 0, '2m': 0, '1g': 0 },
    durationNs: 0n,
  };
  let before = engine === 'kernel' ? p.kernelLevels() : undefined;
  let eagainRun = 0;
  let eintrRun = 0;

  const finish = (): PreFaultResult => {
    result.engine = engine;
    result.reason = reason;
    result.remaining = { gpa, size };
    result.bytesMapped = p.size - size;
    result.durationNs = process.hrtime.bigint() - started;
    if (engine === 'kernel' && before) {
      const after = p.kernelLevels();
      if (after) for (const l of ['4k', '2m', '1g'] as const) result.levels[l] = Math.max(0, after[l] - before[l]);
    }
    return result;
  };

  while (size > 0n) {
    const abortReason = p.aborted();
    if (abortReason !== undefined) throw new PreFaultAbortError(finish(), abortReason);
    const stepSize = trial ? PAGE : size < p.maxStep(engine) ? size : p.maxStep(engine);
    const out = yield { kind: 'step', engine, gpa, size: stepSize };
    if (!out) throw new Error('pre-fault loop: the driver gave no step outcome');
    result.calls++;

    if (trial) {
      trial = false;
      const fallback = out.errno === EOPNOTSUPP || out.errno === ENOTTY ? settleTrial(p.vm, errnoCode(out.errno)) : settleTrial(p.vm, undefined);
      if (fallback) {
        ({ engine, reason } = fallback);
        before = undefined;
        continue;
      }
    }

    if (out.errno === 0) {
      const consumed = stepSize - out.size;
      // Success must make progress and move gpa by exactly what it consumed;
      // anything else would loop forever or skip memory.
      if (consumed <= 0n || out.gpa !== gpa + consumed) {
        throw new PreFaultError(`pre-fault step reported success without consistent progress (gpa 0x${out.gpa.toString(16)}, size 0x${out.size.toString(16)})`, 'EIO', 5, finish());
      }
      gpa += consumed;
      size -= consumed;
      eagainRun = 0;
      eintrRun = 0;
      if (out.leaves) result.levels[out.leaves.level] += out.leaves.count;
      p.onProgress?.(p.size - size, p.size);
      continue;
    }
    // Failure leaves the range unchanged (the kernel's contract; asserted).
    if (out.gpa !== gpa || out.size !== stepSize) {
      throw new PreFaultError('pre-fault step failed but changed the range', 'EIO', 5, finish());
    }
    if (out.errno === EINTR) {
      result.retries.eintr++;
      if (++eintrRun > EINTR_RETRY_LIMIT) throw new PreFaultError(`pre-fault interrupted ${eintrRun} times in a row`, 'EINTR', EINTR, finish());
      continue;
    }
    if (out.errno === EAGAIN) {
      result.retries.eagain++;
      if (++eagainRun > EAGAIN_RETRY_LIMIT) {
        throw new PreFaultError(`pre-fault got EAGAIN ${eagainRun} times in a row (memslots keep changing)`, 'EAGAIN', EAGAIN, finish());
      }
      // Back off a little longer each time, up to 10 ms: the concurrent memslot
      // change that caused it needs a moment to finish.
      yield { kind: 'sleep', ms: Math.min(10, 2 ** Math.min(eagainRun, 4) / 2) };
      continue;
    }
    const code = errnoCode(out.errno);
    const message =
      (out.errno === EOPNOTSUPP || out.errno === ENOTTY) && engine === 'kernel'
        ? unsupportedKernelMessage(code)
        : `pre-fault stopped with ${code} at gpa 0x${gpa.toString(16)} after ${p.size - size} bytes`;
    throw new PreFaultError(message, code, out.errno, finish());
  }
  return finish();
}
