/**
 * Runs selftest cases and reports each one as pass, fail or skip. Shared by
 * the CLI and the vitest wrapper so both see exactly the same outcomes.
 */
import { Kvm } from '../kvm.js';
import { needs } from './host.js';
import type { SelftestCase, SelftestContext, SelftestSuite } from './types.js';

/** Outcome of one case. */
export interface CaseResult {
  suite: string;
  name: string;
  status: 'pass' | 'fail' | 'skip';
  /** Why it was skipped. */
  reason?: string;
  /** What it threw. */
  error?: unknown;
  durationMs: number;
  /** What the case logged, in order. */
  logs: string[];
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
  const reason = skipReason(c);
  if (reason !== undefined) return { suite: suite.name, name: c.name, status: 'skip', reason, durationMs: 0, logs };
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
    };
    await c.run(ctx);
    return { suite: suite.name, name: c.name, status: 'pass', durationMs: performance.now() - start, logs };
  } catch (error) {
    return { suite: suite.name, name: c.name, status: 'fail', error, durationMs: performance.now() - start, logs };
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
