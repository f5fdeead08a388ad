/**
 * The exits benchmark family: what an exit round trip costs through
 * node-kvm against plain C doing the same (scripts/bench/reference.c
 * --exits). Guests: OUT in a loop, or an MMIO read the host answers
 * (lib/bench/exits-guest.ts). Node modes: vcpu.run() on the main thread
 * (several vcpus in turn), await vcpu.runAsync() (several vcpus
 * concurrently), vcpu.run() in a worker_thread per vcpu. The C counterpart
 * of sync is one thread running the vcpus in turn; of async and worker, a
 * thread per vcpu. Node and C repetitions alternate, as in run.ts.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Kvm } from '../kvm.js';
import { createExitsVm, EXITS_WARM, latencyPercentiles, roundTripAsync, roundTripSync, type ExitsGuest } from './exits-guest.js';
import type { ExitsMode, ExitsOptions } from './exits-options.js';
import type { ExitsWorkerData, ExitsWorkerMessage } from './exits-worker.js';
import { median, summarize, type Summary } from './stats.js';

/** Node/C goals of the issue: sync run() within 5%, runAsync() and worker within 30%. */
export const EXITS_TARGETS: Record<ExitsMode, number> = { sync: 1.05, async: 1.3, worker: 1.3 };

/** One repetition of one side. */
export interface ExitsRep {
  rep: number;
  elapsedNs: number;
  exits: number;
  /** elapsedNs / exits: wall time per exit over all vcpus. */
  nsPerExit: number;
  /** Percentiles of the round trips timed one by one (all vcpus): the low ones are the least disturbed by other work. */
  p10Ns: number;
  p25Ns: number;
  p50Ns: number;
}

/** One side's result. */
export type ExitsSide =
  | { status: 'ok'; reps: ExitsRep[]; warmup: ExitsRep[]; summary: Summary; p25Summary: Summary; command?: string[] }
  | { status: 'unavailable'; reason: string; command?: string[] }
  | { status: 'skipped'; reason: string };

/** One measured combination. */
export interface ExitsVariant {
  id: string;
  guest: ExitsGuest;
  mode: ExitsMode;
  vcpus: number;
  /** Threads of the C counterpart: 1 (vcpus in turn) for sync, one per vcpu otherwise. */
  cThreads: number;
  iterations: number;
}

/** A variant with both sides, ratios (on ns per exit) and its goal. */
export interface ExitsVariantResult extends ExitsVariant {
  node: ExitsSide;
  c: ExitsSide;
  /** Node median / C median. */
  ratio: number | null;
  /** Median of Node rep i / C rep i (run back to back). */
  pairedRatio: number | null;
  /** Fastest Node / fastest C. */
  ratioOfMin: number | null;
  /** Node / C of the median p25 of single round trips: the library's cost with the machine's noise mostly left out. */
  ratioP25: number | null;
  target: number;
  met: boolean | null;
}

/** The family's part of the report (BenchReport.exits). */
export interface ExitsReport {
  options: ExitsOptions;
  variants: ExitsVariantResult[];
}

/** The variants, in table order. */
export function expandExitsVariants(o: ExitsOptions): ExitsVariant[] {
  const out: ExitsVariant[] = [];
  for (const guest of o.guests) {
    for (const vcpus of o.vcpus) {
      for (const mode of o.modes) {
        out.push({ id: `exits ${guest} ${mode} ${vcpus}vcpu`, guest, mode, vcpus, cThreads: mode === 'sync' ? 1 : vcpus, iterations: o.iterations });
      }
    }
  }
  return out;
}

const now = (): bigint => process.hrtime.bigint();

/** Wall time of the timed round trips, and each one's time. */
interface Timed {
  elapsedNs: number;
  latencies: Float64Array;
}

async function nodeSync(kvm: Kvm, v: ExitsVariant): Promise<Timed> {
  using ev = createExitsVm(kvm, v.guest, v.vcpus);
  const vcpus = ev.vcpus;
  for (const vcpu of vcpus) for (let i = 0; i < EXITS_WARM; i++) roundTripSync(vcpu, v.guest);
  const latencies = new Float64Array(v.iterations * vcpus.length);
  let k = 0;
  const t0 = now();
  for (let i = 0; i < v.iterations; i++) {
    for (let c = 0; c < vcpus.length; c++) {
      const t = now();
      roundTripSync(vcpus[c]!, v.guest);
      latencies[k++] = Number(now() - t);
    }
  }
  return { elapsedNs: Number(now() - t0), latencies };
}

async function nodeAsync(kvm: Kvm, v: ExitsVariant): Promise<Timed> {
  using ev = createExitsVm(kvm, v.guest, v.vcpus);
  for (const vcpu of ev.vcpus) for (let i = 0; i < EXITS_WARM; i++) await roundTripAsync(vcpu, v.guest);
  const latencies = new Float64Array(v.iterations * ev.vcpus.length);
  const t0 = now();
  await Promise.all(
    ev.vcpus.map(async (vcpu, c) => {
      for (let i = 0; i < v.iterations; i++) {
        const t = now();
        await roundTripAsync(vcpu, v.guest);
        latencies[c * v.iterations + i] = Number(now() - t);
      }
    }),
  );
  return { elapsedNs: Number(now() - t0), latencies };
}

/** The compiled worker script next to this module, or (running from lib/ sources) the one in dist/. */
export function exitsWorkerPath(): string | undefined {
  for (const rel of ['./exits-worker.js', '../../dist/bench/exits-worker.js']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  return undefined;
}

async function nodeWorker(v: ExitsVariant): Promise<Timed> {
  const script = exitsWorkerPath();
  if (!script) throw new Error('exits worker script not built (npm run build:ts)');
  const workers: Worker[] = [];
  try {
    const messages = (w: Worker): ((kind: 'ready' | 'done') => Promise<ExitsWorkerMessage>) => {
      return (kind) =>
        new Promise((resolve, reject) => {
          const onMessage = (m: ExitsWorkerMessage): void => {
            cleanup();
            if (m.kind === 'error') reject(new Error(`exits worker: ${m.message}`));
            else if (m.kind !== kind) reject(new Error(`exits worker said ${m.kind}, expected ${kind}`));
            else resolve(m);
          };
          const onError = (e: Error): void => {
            cleanup();
            reject(e);
          };
          const onExit = (code: number): void => {
            cleanup();
            reject(new Error(`exits worker exited (${code}) before '${kind}'`));
          };
          const cleanup = (): void => {
            w.off('message', onMessage);
            w.off('error', onError);
            w.off('exit', onExit);
          };
          w.on('message', onMessage);
          w.on('error', onError);
          w.on('exit', onExit);
        });
    };
    const data: ExitsWorkerData = { guest: v.guest, iterations: v.iterations };
    for (let i = 0; i < v.vcpus; i++) workers.push(new Worker(script, { workerData: data }));
    // Each worker closes its VM and ends by itself after 'done'; terminate() is for failures only.
    const exited = workers.map((w) => new Promise<void>((resolve) => w.once('exit', () => resolve())));
    const next = workers.map(messages);
    await Promise.all(next.map((n) => n('ready')));
    const done = next.map((n) => n('done'));
    const t0 = now();
    for (const w of workers) w.postMessage('go');
    const results = await Promise.all(done);
    const elapsedNs = Number(now() - t0);
    const latencies = new Float64Array(v.iterations * v.vcpus);
    results.forEach((m, i) => {
      if (m.kind === 'done') latencies.set(m.latencies, i * v.iterations);
    });
    await Promise.all(exited);
    return { elapsedNs, latencies };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

async function nodeOnce(kvm: Kvm, v: ExitsVariant, rep: number): Promise<ExitsRep> {
  const { elapsedNs, latencies } = v.mode === 'sync' ? await nodeSync(kvm, v) : v.mode === 'async' ? await nodeAsync(kvm, v) : await nodeWorker(v);
  const exits = v.iterations * v.vcpus;
  return { rep, elapsedNs, exits, nsPerExit: elapsedNs / exits, ...latencyPercentiles(latencies) };
}

/** reference.c's arguments for a variant (besides --reps/--warmup). */
export function exitsReferenceArgs(v: ExitsVariant): string[] {
  return ['--exits', v.guest, '--vcpus', String(v.vcpus), '--threads', String(v.cThreads), '--iterations', String(v.iterations)];
}

function cOnce(binary: string, v: ExitsVariant, rep: number): Promise<ExitsRep> {
  const args = [...exitsReferenceArgs(v), '--reps', '1', '--warmup', '0'];
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: 30 * 60_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`C reference failed (${[binary, ...args].join(' ')}): ${stderr.trim() || error.message}`));
      const line = stdout.split('\n').find((l) => l.trim() !== '');
      const parsed = line ? (JSON.parse(line) as Partial<Record<'elapsedNs' | 'exits' | 'p10Ns' | 'p25Ns' | 'p50Ns', number>>) : {};
      const { elapsedNs, exits, p10Ns, p25Ns, p50Ns } = parsed;
      if (typeof elapsedNs !== 'number' || typeof exits !== 'number' || typeof p10Ns !== 'number' || typeof p25Ns !== 'number' || typeof p50Ns !== 'number') {
        return reject(new Error(`C reference printed no exits result: ${stdout.trim()}`));
      }
      resolve({ rep, elapsedNs, exits, nsPerExit: elapsedNs / exits, p10Ns, p25Ns, p50Ns });
    });
  });
}

function side(reps: ExitsRep[], warmup: ExitsRep[], unavailable: string | undefined, command?: string[]): ExitsSide {
  if (unavailable !== undefined) return { status: 'unavailable', reason: unavailable, ...(command ? { command } : {}) };
  return { status: 'ok', reps, warmup, summary: summarize(reps.map((r) => r.nsPerExit))!, p25Summary: summarize(reps.map((r) => r.p25Ns))!, ...(command ? { command } : {}) };
}

const round2 = (x: number): number => Math.round(x * 100) / 100;

/** Progress: called after each repetition of either side. */
export type ExitsStep = (n: number, label: string) => void;

/**
 * Measures every variant: warm-up then measured repetitions, Node and C
 * alternating (node, C, C, node, ...). `binary` is the built reference, or
 * the reason there is none.
 */
export async function runExitsBench(
  kvm: Kvm,
  options: ExitsOptions,
  reps: number,
  warmup: number,
  binary: { path: string } | { skipped: string },
  step: ExitsStep = () => {},
): Promise<ExitsReport> {
  const variants: ExitsVariantResult[] = [];
  for (const v of expandExitsVariants(options)) {
    const node = { reps: [] as ExitsRep[], warmup: [] as ExitsRep[], unavailable: undefined as string | undefined };
    const c = { reps: [] as ExitsRep[], warmup: [] as ExitsRep[], unavailable: undefined as string | undefined };
    const hasC = 'path' in binary;
    for (let i = 0; i < warmup + reps; i++) {
      const rep = i - warmup;
      for (const which of i % 2 === 0 ? (['node', 'c'] as const) : (['c', 'node'] as const)) {
        const s = which === 'node' ? node : c;
        if (s.unavailable !== undefined || (which === 'c' && !hasC)) continue;
        try {
          const r = which === 'node' ? await nodeOnce(kvm, v, rep) : await cOnce((binary as { path: string }).path, v, rep);
          (rep < 0 ? s.warmup : s.reps).push(r);
        } catch (e) {
          s.unavailable = e instanceof Error ? e.message : String(e);
        }
        step(1, `${v.id} (${which === 'node' ? 'node-kvm' : 'C'})`);
      }
    }
    const nodeSide = side(node.reps, node.warmup, node.unavailable);
    const command = hasC ? [binary.path, ...exitsReferenceArgs(v), '--reps', '1', '--warmup', '0'] : undefined;
    const cSide: ExitsSide = hasC ? side(c.reps, c.warmup, c.unavailable, command) : { status: 'skipped', reason: binary.skipped };
    const both = nodeSide.status === 'ok' && cSide.status === 'ok';
    const ratio = both ? round2(nodeSide.summary.median / cSide.summary.median) : null;
    const n = Math.min(node.reps.length, c.reps.length);
    const pairedRatio = both && n > 0 ? round2(median(Array.from({ length: n }, (_, i) => node.reps[i]!.nsPerExit / c.reps[i]!.nsPerExit))) : null;
    const ratioOfMin = both ? round2(nodeSide.summary.min / cSide.summary.min) : null;
    const ratioP25 = both ? round2(nodeSide.p25Summary.median / cSide.p25Summary.median) : null;
    const target = EXITS_TARGETS[v.mode];
    variants.push({ ...v, node: nodeSide, c: cSide, ratio, pairedRatio, ratioOfMin, ratioP25, target, met: ratio === null ? null : ratio <= target });
  }
  return { options, variants };
}

/** How many progress steps runExitsBench takes. */
export function exitsSteps(options: ExitsOptions, reps: number, warmup: number, withC: boolean): number {
  return expandExitsVariants(options).length * (reps + warmup) * (withC ? 2 : 1);
}

function fmt(ns: number | undefined): string {
  return ns === undefined ? '-' : Math.round(ns).toLocaleString('en-US');
}

/** The text lines of the family: a table of ns per exit and the goals. */
export function formatExitsReport(r: ExitsReport, wide = false): string[] {
  // Results only: the goals and whether they were met are in the JSON (variants[].target/met).
  const columns: [string, (v: ExitsVariantResult, c: ExitsSummaryPair | undefined) => string, boolean][] = [
    ['Node ns/exit', (v) => fmt(okSummary(v)!.median), true],
    ['min-max', (v) => `${fmt(okSummary(v)!.min)}-${fmt(okSummary(v)!.max)}`, false],
    ['C ns/exit', (v, c) => (c ? fmt(c.summary.median) : v.c.status === 'skipped' ? '-' : 'n/a'), true],
    ['C min-max', (_v, c) => (c ? `${fmt(c.summary.min)}-${fmt(c.summary.max)}` : '-'), false],
    ['N/C', (v) => v.ratio?.toFixed(2) ?? '-', true],
    ['paired', (v) => v.pairedRatio?.toFixed(2) ?? '-', true],
    ['fastest', (v) => v.ratioOfMin?.toFixed(2) ?? '-', false],
    ['Node p25', (v) => fmt(v.node.status === 'ok' ? v.node.p25Summary.median : NaN), true],
    ['C p25', (_v, c) => (c ? fmt(c.p25) : '-'), true],
    ['N/C p25', (v) => v.ratioP25?.toFixed(2) ?? '-', true],
  ];
  const shown = columns.filter(([, , always]) => wide || always);
  const headers = ['variant', ...shown.map(([h]) => h)];
  const rows = r.variants.map((v) => {
    const label = `${v.guest} ${v.mode} ${v.vcpus}vcpu`;
    if (v.node.status !== 'ok') return [label, `unavailable: ${v.node.reason}`];
    const c = v.c.status === 'ok' ? { summary: v.c.summary, p25: v.c.p25Summary.median } : undefined;
    return [label, ...shown.map(([, cell]) => cell(v, c))];
  });
  const full = rows.filter((row) => row.length === headers.length);
  const widths = headers.map((h, i) => Math.max(h.length, ...full.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells.length === headers.length
      ? cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd()
      : `${cells[0]!.padEnd(widths[0]!)}  ${cells.slice(1).join('  ')}`.slice(0, 100);
  return [
    `Exit round trips (${r.options.iterations} per vcpu per repetition, re-entered at once; MMIO reads`,
    'answered by the host): wall ns per exit over all vcpus, medians; p25: the 25th percentile',
    'of round trips timed one by one, which leaves most of a busy machine\'s noise out',
    '',
    line(headers),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
    ...(wide ? [] : ['(--wide: min-max and fastest-vs-fastest columns)']),
  ];
}

/** The C side of an exits variant, when it ran: its summary and its p25 median. */
interface ExitsSummaryPair {
  summary: { median: number; min: number; max: number };
  p25: number;
}

function okSummary(v: ExitsVariantResult): { median: number; min: number; max: number } | undefined {
  return v.node.status === 'ok' ? v.node.summary : undefined;
}
