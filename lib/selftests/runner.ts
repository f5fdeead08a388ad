/**
 * Runs selftest cases and reports each one as pass, fail or skip. Shared by
 * the CLI and the vitest wrapper so both see exactly the same outcomes.
 */
import { release } from 'node:os';
import { Kvm } from '../kvm.js';
import { needs } from './host.js';
import type { SelftestCase, SelftestContext, SelftestSuite } from './types.js';

/** Outcome of one case. */
export interface CaseResult {
  suite: string;
  name: string;
  /** 'todo': the case passed except for known kernel bugs it recorded with ctx.todo(). */
  status: 'pass' | 'fail' | 'skip' | 'todo';
  /** Why it was skipped. */
  reason?: string;
  /** The known kernel bugs the case recorded (status 'todo', or 'fail' when it also failed). */
  todos: KernelTodo[];
  /** Short facts for the TAP line (ctx.note()). */
  notes: string[];
  /** What it threw. */
  error?: unknown;
  durationMs: number;
  /** What the case logged, in order. */
  logs: string[];
}

/** A known kernel bug a case saw (ctx.todo()). */
export interface KernelTodo {
  what: string;
  /** Kernels known to have it, then this host's release. */
  kernels: string[];
}

/** `<what> (kernels: a, b; here: <release>)`: the text of a TAP TODO directive. */
export function todoText(t: KernelTodo): string {
  return `${t.what} (kernels: ${t.kernels.join(', ')})`;
}

/** Options of runCase()/runSuites(). */
export interface RunOptions {
  /** `--set key=value` settings for the cases. */
  settings?: ReadonlyMap<string, string>;
  /** Called for each log line as it happens (besides being collected). */
  onLog?: (message: string, suite: string, name: string) => void;
}

/**
 * Why a case will not run here: the host has no usable /dev/kvm, or the case's
 * own check says so. Undefined when it runs. A check that throws is treated as
 * a skip carrying the error, so one bad check cannot stop a whole run.
 */
export function skipReason(c: SelftestCase): string | undefined {
  try {
    return needs.kvm() ?? c.skip?.();
  } catch (e) {
    return `skip check failed: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** Runs one case (or skips it) and never throws: failures are in the result. */
export async function runCase(suite: SelftestSuite, c: SelftestCase, options: RunOptions = {}): Promise<CaseResult> {
  const logs: string[] = [];
  const todos: KernelTodo[] = [];
  const notes: string[] = [];
  const reason = skipReason(c);
  if (reason !== undefined) return { suite: suite.name, name: c.name, status: 'skip', reason, durationMs: 0, logs, todos, notes };
  const start = performance.now();
  let kvm: Kvm | undefined;
  try {
    kvm = Kvm.open();
    const ctx: SelftestContext = {
      kvm,
      settings: options.settings ?? new Map(),
      log: (message) => {
        logs.push(message);
        options.onLog?.(message, suite.name, c.name);
      },
      todo: (what, kernels) => {
        const here = `here: ${release()}`;
        todos.push({ what: String(what), kernels: [...kernels.map(String), here] });
      },
      note: (text) => {
        if (!notes.includes(text)) notes.push(String(text));
      },
    };
    await c.run(ctx);
    return { suite: suite.name, name: c.name, status: todos.length ? 'todo' : 'pass', durationMs: performance.now() - start, logs, todos, notes };
  } catch (error) {
    return { suite: suite.name, name: c.name, status: 'fail', error, durationMs: performance.now() - start, logs, todos, notes };
  } finally {
    kvm?.close();
  }
}

/** Runs the cases of several suites in order, yielding each result when it is known. */
export async function* runSuites(
  suites: readonly SelftestSuite[],
  options: RunOptions & { filter?: (suite: SelftestSuite, c: SelftestCase) => boolean } = {},
): AsyncGenerator<CaseResult> {
  for (const suite of suites) {
    for (const c of suite.cases) {
      if (options.filter && !options.filter(suite, c)) continue;
      yield await runCase(suite, c, options);
    }
  }
}
