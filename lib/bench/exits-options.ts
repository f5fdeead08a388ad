/**
 * Options of the exits benchmark family (`--family`, `--exit-guest`,
 * `--exit-mode`, `--exit-vcpus`, `--exit-iterations`), parsed and checked
 * like the first-touch options (lib/bench/options.ts).
 */
import { BenchUsageError, parseInteger, parseNameList, splitList } from './options.js';
import type { ExitsGuest } from './exits-guest.js';

/** Which benchmark families a run measures. */
export type Family = 'first-touch' | 'exits' | 'memslot-perf';
/** How the Node side runs a vcpu: run() on the main thread, await runAsync(), or run() in a worker_thread. */
export type ExitsMode = 'sync' | 'async' | 'worker';

/** Every family, in run order. */
export const FAMILIES: readonly Family[] = ['first-touch', 'exits', 'memslot-perf'];
/** The families a run measures when --family is not given (memslot-perf is opt-in: it takes about 15 s). */
export const DEFAULT_FAMILIES: readonly Family[] = ['first-touch', 'exits'];
/** Every exits guest, in table order. */
export const EXIT_GUESTS: readonly ExitsGuest[] = ['out', 'mmio'];
/** Every exits mode, in table order. */
export const EXIT_MODES: readonly ExitsMode[] = ['sync', 'async', 'worker'];

/** Checked options of the exits family. */
export interface ExitsOptions {
  guests: ExitsGuest[];
  modes: ExitsMode[];
  /** Vcpu counts (1..8). */
  vcpus: number[];
  /** Timed round trips per vcpu per repetition. */
  iterations: number;
}

/** The command line's spelling. */
export interface RawExitsOptions {
  family?: string;
  exitGuest?: string;
  exitMode?: string;
  exitVcpus?: string;
  exitIterations?: string;
}

/** The defaults (`npm run bench`): first-touch and exits, every guest and mode, 1 and 2 vcpus, 5000 round trips. */
export const EXITS_DEFAULTS = {
  family: DEFAULT_FAMILIES.join(','),
  exitGuest: EXIT_GUESTS.join(','),
  exitMode: EXIT_MODES.join(','),
  exitVcpus: '1,2',
  exitIterations: '5000',
} as const;

/** The families to run, and the exits options when 'exits' is one of them. */
export function resolveExitsOptions(raw: RawExitsOptions): { families: Family[]; exits: ExitsOptions | null } {
  const families = parseNameList(raw.family ?? EXITS_DEFAULTS.family, FAMILIES, '--family');
  if (!families.includes('exits')) return { families, exits: null };
  const vcpus = splitList(raw.exitVcpus ?? EXITS_DEFAULTS.exitVcpus, '--exit-vcpus').map((v) => parseInteger(v, '--exit-vcpus', 1, 8));
  const exits: ExitsOptions = {
    guests: parseNameList(raw.exitGuest ?? EXITS_DEFAULTS.exitGuest, EXIT_GUESTS, '--exit-guest'),
    modes: parseNameList(raw.exitMode ?? EXITS_DEFAULTS.exitMode, EXIT_MODES, '--exit-mode'),
    vcpus: [...new Set(vcpus)].sort((a, b) => a - b),
    iterations: parseInteger(raw.exitIterations ?? EXITS_DEFAULTS.exitIterations, '--exit-iterations', 1, 10_000_000),
  };
  if (exits.vcpus.length === 0) throw new BenchUsageError('--exit-vcpus needs at least one count');
  return { families, exits };
}
