/**
 * Entry points: argument checks, engine choice, and the two drivers
 * (worker-thread steps, or blocking steps) of the shared loop.
 */
import { invalidArgument } from '../errors.js';
import { isAbortSignal, opt, readOptions } from '../options.js';
import { describe } from '../int.js';
import { validatePreFaultRange, type PageLevel } from '../soft-mmu/index.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';
import { PreFaultError, type PreFaultEngineChoice, type PreFaultEngineName, type PreFaultOptions, type PreFaultRange, type PreFaultResult } from './contract.js';
import { decideEngine } from './engine-choice.js';
import { preFaultLoop, type LoopParams } from './loop.js';
import { defaultThreads, kernelStepAsync, kernelStepSync, populateHostForKernelStep, populateHostForKernelStepSync, softwareStepAsync, softwareStepSync, type StepOutcome } from './step.js';

const OP = 'KVM_PRE_FAULT_MEMORY';
const MiB = 1n << 20n;

interface Prepared {
  params: LoopParams;
  signal: AbortSignal | undefined;
  threads: number;
  populateHost: boolean;
}

const RANGE_OPTIONS = { gpa: opt.u64, size: opt.u64, flags: opt.u64 } as const;
const PREFAULT_OPTIONS = {
  engine: opt.oneOf<PreFaultEngineChoice>('auto', 'kernel', 'software'),
  signal: opt.brand(isAbortSignal, 'AbortSignal'),
  onProgress: opt.function,
  threads: opt.any,
  populateHost: opt.boolean,
  maxStepBytes: opt.u64,
} as const;

function prepare(vcpu: Vcpu, range: PreFaultRange, options: PreFaultOptions): Prepared {
  // Both arguments are read once, before the open check: no getter of the
  // caller's can run between the check and the work.
  const r = readOptions(range, OP, RANGE_OPTIONS, { name: 'range', required: true });
  const o = readOptions(options, OP, PREFAULT_OPTIONS);
  if (r.gpa === undefined || r.size === undefined) throw invalidArgument(OP, 'range must be an object { gpa, size }');
  const gpa = r.gpa;
  const size = r.size;
  const flags = r.flags ?? 0n;
  const args = { gpa, size, flags };
  if (validatePreFaultRange({ gpa, size, flags }) !== null) {
    throw invalidArgument(OP, 'gpa and size must be 4 KiB aligned, size non-zero, gpa + size below 2^64, flags 0', args);
  }
  const choice: PreFaultEngineChoice = o.engine ?? 'auto';
  const threads = o.threads ?? defaultThreads();
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > 64) throw invalidArgument(OP, 'threads must be an integer in 1..64', { threads: describe(threads) });
  const maxStepOverride = o.maxStepBytes;
  if (maxStepOverride !== undefined && (maxStepOverride === 0n || maxStepOverride % 4096n !== 0n)) {
    throw invalidArgument(OP, 'maxStepBytes must be a non-zero multiple of 4096', { maxStepBytes: maxStepOverride });
  }
  const onProgress = o.onProgress as ((done: bigint, total: bigint) => void) | undefined;
  const vm: Vm = vcpu.vm;
  vcpu.fd; // throws ECLOSED on a closed vcpu before any work
  const signal = o.signal;
  return {
    threads,
    signal,
    populateHost: o.populateHost ?? true,
    params: {
      vm,
      gpa,
      size,
      decision: decideEngine(vm, choice),
      // Software steps grow with the threads: each step ends with a barrier
      // (every thread's chunk must finish before it is recorded), so fewer,
      // larger steps keep all threads busy; 64 MiB per thread still reports
      // progress every few tens of milliseconds.
      maxStep: (engine: PreFaultEngineName) => maxStepOverride ?? (engine === 'kernel' ? 32n * MiB : 64n * MiB * BigInt(threads)),
      aborted: () => (signal?.aborted ? (signal.reason ?? new Error('aborted')) : undefined),
      onProgress,
      kernelLevels: () => pageCounters(vm),
    },
  };
}

/** The VM's TDP/shadow page counters, when it exposes them. */
function pageCounters(vm: Vm): Record<PageLevel, number> | undefined {
  try {
    const s = vm.stats();
    if (typeof s.pages_4k !== 'bigint') return undefined;
    return { '4k': Number(s.pages_4k), '2m': Number(s.pages_2m ?? 0n), '1g': Number(s.pages_1g ?? 0n) };
  } catch {
    return undefined;
  }
}

/** Pre-faults on worker threads; see Vcpu.preFaultMemory(). */
export async function preFaultMemory(vcpu: Vcpu, range: PreFaultRange, options: PreFaultOptions = {}): Promise<PreFaultResult> {
  const { params, threads, populateHost, signal } = prepare(vcpu, range, options);
  // An abort during a long kernel step interrupts the ioctl (it returns with
  // partial progress or EINTR), so cancellation does not wait for the step.
  const onAbort = (): void => {
    vcpu.interruptIoctl();
  };
  signal?.addEventListener('abort', onAbort);
  try {
    const loop = preFaultLoop(params);
    let input: StepOutcome | undefined;
    for (;;) {
      const next = loop.next(input);
      if (next.done) return next.value;
      const req = next.value;
      if (req.kind === 'sleep') {
        await new Promise((r) => setTimeout(r, req.ms));
        input = undefined;
      } else if (req.engine === 'kernel') {
        if (populateHost) await populateHostForKernelStep(params.vm, req.gpa, req.size, threads);
        input = await vcpu.trackStep(() => kernelStepAsync(vcpu, req.gpa, req.size));
      } else {
        input = await vcpu.trackStep(() => softwareStepAsync(params.vm, req.gpa, req.size, params.maxStep('software'), threads));
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Pre-faults on the calling thread; same contract, blocking. */
export function preFaultMemorySync(vcpu: Vcpu, range: PreFaultRange, options: PreFaultOptions = {}): PreFaultResult {
  const { params, populateHost } = prepare(vcpu, range, options);
  const loop = preFaultLoop(params);
  let input: StepOutcome | undefined;
  for (;;) {
    const next = loop.next(input);
    if (next.done) return next.value;
    const req = next.value;
    if (req.kind === 'sleep') {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, req.ms);
      input = undefined;
    } else {
      vcpu.fd;
      if (req.engine === 'kernel') {
        if (populateHost) populateHostForKernelStepSync(params.vm, req.gpa, req.size);
        input = kernelStepSync(vcpu, req.gpa, req.size);
      } else {
        input = softwareStepSync(params.vm, req.gpa, req.size, params.maxStep('software'));
      }
    }
  }
}


export { PreFaultError };
