/**
 * Options of the first-touch benchmark: what the command line gives, parsed
 * and checked into a BenchOptions, with messages that say what was wrong and
 * what is accepted.
 */

import { resolveExitsOptions, type ExitsOptions, type Family, type RawExitsOptions } from './exits-options.js';
import { resolveMemslotPerfOptions, type MemslotPerfOptions, type RawMemslotPerfOptions } from './memslot-perf-options.js';

/** How the measured region is backed. */
export type Backing = 'anon' | 'thp' | 'gmem';
/** How the region is prepared before the guest's first pass. */
export type Method = 'demand' | 'kernel' | 'software' | 'auto' | 'populate' | 'userfault';
/** What the guest does once per 4 KiB page. */
export type Access = 'write' | 'read';

/** Every backing, in table order. */
export const BACKINGS: readonly Backing[] = ['anon', 'thp', 'gmem'];
/** Every method, in table order. */
export const METHODS: readonly Method[] = ['demand', 'kernel', 'software', 'auto', 'populate', 'userfault'];
/** Every access. */
export const ACCESSES: readonly Access[] = ['write', 'read'];

/** The measured region is mapped by the guest with 2 MiB pages, so sizes are multiples of 2 MiB. */
export const SIZE_ALIGN = 2 * 1024 * 1024;
/**
 * Largest region: the Node floor fills a fresh HostMemory through one
 * Uint8Array (at most 4 GiB), and the guest's page tables (one page
 * directory per GiB) must fit below its code.
 */
export const MAX_SIZE = 4 * 1024 * 1024 * 1024;

/** Checked options of a benchmark run. */
export interface BenchOptions {
  /** Region sizes in bytes (multiples of 2 MiB). */
  sizes: number[];
  backings: Backing[];
  methods: Method[];
  /** Populate threads for 'populate' and 'software' ('auto' uses the library's default). */
  threads: number[];
  access: Access[];
  /** Measured repetitions per variant. */
  reps: number;
  /** Unrecorded repetitions before them (warm memory, see docs/bench.md). */
  warmup: number;
  /** Also run the C reference (scripts/bench/reference.c). */
  reference: boolean;
  /** Write the JSON report here. */
  json?: string;
  /** Write the SVG chart here. */
  chart?: string;
  /** Print every column of the table (the default table fits 100 columns). */
  wide: boolean;
  /** Benchmark families to run (--family): first-touch (the variants above), exits. */
  families: Family[];
  /** The exits family's options (lib/bench/exits-options.ts); null when it does not run. */
  exits: ExitsOptions | null;
  /** The memslot-perf family's options (lib/bench/memslot-perf-options.ts); absent when it does not run. */
  memslotPerf?: MemslotPerfOptions;
}

/** The command line's spelling of the options (strings, as commander gives them). */
export interface RawBenchOptions extends RawExitsOptions, RawMemslotPerfOptions {
  sizes?: string;
  backing?: string;
  method?: string;
  threads?: string;
  access?: string;
  reps?: string;
  warmup?: string;
  reference?: boolean;
  json?: string;
  chart?: string;
  wide?: boolean;
}

/**
 * The defaults (`npm run bench`): one size, every backing and method, 1 and
 * 2 populate threads, writes, 5 repetitions after 1 warm-up. About 40 s
 * on the 2-core kvm_pvm machine (see docs/bench.md).
 */
export const DEFAULTS = {
  sizes: '256M',
  backing: BACKINGS.join(','),
  method: 'demand,kernel,software,auto,populate',
  threads: '1,2',
  access: 'write',
  reps: '5',
  warmup: '1',
} as const;

/** A bad option value: the message names the option and what it accepts. */
export class BenchUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchUsageError';
  }
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A size: a whole number of bytes with an optional binary unit, e.g. 4096,
 * 64M, 64MiB, 512k, 1G, 1GB (K/M/G/T are all powers of 1024).
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$/i.exec(text);
  if (!m) throw new BenchUsageError(`bad size ${JSON.stringify(text)}: expected a whole number with an optional unit K, M, G or T (e.g. 64M, 1G)`);
  const value = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value)) throw new BenchUsageError(`size ${JSON.stringify(text)} is too large`);
  return value;
}

/** Formats a byte count the way --sizes spells it (64M, 1G, 6M, 4096). */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}

/** A comma-separated list, trimmed, without empty items or duplicates; at least one item. */
export function splitList(text: string, option: string): string[] {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw new BenchUsageError(`${option} needs at least one value`);
  return [...new Set(items)];
}

/** A list of names, each one of `allowed`. */
export function parseNameList<T extends string>(text: string, allowed: readonly T[], option: string): T[] {
  const items = splitList(text, option);
  const bad = items.filter((s) => !(allowed as readonly string[]).includes(s));
  if (bad.length) {
    throw new BenchUsageError(`${option}: unknown value${bad.length > 1 ? 's' : ''} ${bad.map((b) => JSON.stringify(b)).join(', ')}; expected one or more of ${allowed.join(', ')}`);
  }
  // Keep the canonical order so tables and charts read the same whatever the order given.
  return allowed.filter((a) => items.includes(a));
}

/** An integer in [min, max]. */
export function parseInteger(text: string, option: string, min: number, max: number): number {
  if (!/^\s*\d+\s*$/.test(text)) throw new BenchUsageError(`${option}: ${JSON.stringify(text)} is not a whole number (expected ${min}..${max})`);
  const n = Number(text);
  if (n < min || n > max) throw new BenchUsageError(`${option}: ${n} is out of range (expected ${min}..${max})`);
  return n;
}

/** Sizes for --sizes: each a multiple of 2 MiB, at most 4 GiB. */
export function parseSizes(text: string): number[] {
  const sizes = splitList(text, '--sizes').map(parseSize);
  for (const s of sizes) {
    if (s === 0 || s % SIZE_ALIGN !== 0) {
      throw new BenchUsageError(`--sizes: ${formatSize(s)} is not a non-zero multiple of 2M (the guest maps the region with 2 MiB pages)`);
    }
    if (s > MAX_SIZE) throw new BenchUsageError(`--sizes: ${formatSize(s)} is larger than the maximum ${formatSize(MAX_SIZE)}`);
  }
  return [...new Set(sizes)].sort((a, b) => a - b);
}

/** Checks the command line's options and fills in the defaults. */
export function resolveOptions(raw: RawBenchOptions): BenchOptions {
  const threads = splitList(raw.threads ?? DEFAULTS.threads, '--threads').map((t) => parseInteger(t, '--threads', 1, 64));
  const options: BenchOptions = {
    sizes: parseSizes(raw.sizes ?? DEFAULTS.sizes),
    backings: parseNameList(raw.backing ?? DEFAULTS.backing, BACKINGS, '--backing'),
    methods: parseNameList(raw.method ?? DEFAULTS.method, METHODS, '--method'),
    threads: [...new Set(threads)].sort((a, b) => a - b),
    access: parseNameList(raw.access ?? DEFAULTS.access, ACCESSES, '--access'),
    reps: parseInteger(raw.reps ?? DEFAULTS.reps, '--reps', 1, 1000),
    warmup: parseInteger(raw.warmup ?? DEFAULTS.warmup, '--warmup', 0, 100),
    reference: raw.reference !== false,
    wide: raw.wide === true,
    ...resolveExitsOptions(raw),
  };
  if (options.families.includes('memslot-perf')) options.memslotPerf = resolveMemslotPerfOptions(raw);
  if (raw.json !== undefined) {
    if (raw.json === '') throw new BenchUsageError('--json needs a file name');
    options.json = raw.json;
  }
  if (raw.chart !== undefined) {
    if (!raw.chart.endsWith('.svg')) throw new BenchUsageError(`--chart: ${JSON.stringify(raw.chart)} must name an .svg file`);
    options.chart = raw.chart;
  }
  return options;
}
