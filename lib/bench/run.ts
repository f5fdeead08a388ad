/**
 * Runs a benchmark: every variant through node-kvm (warm-up repetitions,
 * then the measured ones), each followed by its C reference run (shared by
 * variants doing the same C work), then the statistics, ratios and goals.
 */
import { Kvm } from '../kvm.js';
import { loadAverage, machineFacts, type MachineFacts } from './machine.js';
import { measureFloorOnce } from './measure-floor.js';
import { measureGuestOnce } from './measure.js';
import type { RepMetrics } from './metrics.js';
import type { BenchOptions } from './options.js';
import { buildReference, runReference } from './reference.js';
import { pairedRatios, ratios, ratiosOfMin, summarizeReps, type Ratios, type RepSummary } from './stats.js';
import { expandVariants, type ReferenceSpec, type Variant } from './variants.js';
import { exitsSteps, runExitsBench, type ExitsReport } from './exits.js';
import { memslotPerfSteps, runMemslotPerfBench, type MemslotPerfReport } from './memslot-perf.js';

/** One side's (Node or C) result for a variant. */
export type SideResult =
  | { status: 'ok'; reps: RepMetrics[]; warmup?: RepMetrics[]; summary: RepSummary; command?: string[] }
  | { status: 'unavailable'; reason: string; command?: string[] }
  | { status: 'skipped'; reason: string };

/** A variant with both sides and their ratios. */
export interface VariantResult extends Omit<Variant, 'reference'> {
  node: SideResult;
  c: SideResult;
  /** Node median / C median per part; null without both sides. */
  ratios: Ratios | null;
  /** Node min / C min per part (the least disturbed repetitions): a cross-check on noisy machines. */
  ratiosOfMin: Ratios | null;
  /** Median of the per-repetition ratios (Node rep i / C rep i, run back to back): another cross-check. */
  pairedRatios: Ratios | null;
}

/** "First touch after auto pre-fault is N x cheaper than demand" for one backing. */
export interface SpeedupGoal {
  backing: Variant['backing'];
  sizeBytes: number;
  access: Variant['access'];
  /** Required speed-up of the first pass; null when the issue sets none (gmem). */
  target: number | null;
  /** demand first-pass median / auto first-pass median. */
  firstPassSpeedup: number | null;
  /** The same for total ns/page (prep + first pass). */
  totalSpeedup: number | null;
  /** firstPassSpeedup >= target. */
  met: boolean | null;
  metByTotal: boolean | null;
}

/**
 * What `auto` costs against the engine it picked, run explicitly with the
 * same threads in the same run: the engine decision is remembered per host,
 * so a fresh VM should pay no trial.
 */
export interface AutoCostGoal {
  backing: Variant['backing'];
  sizeBytes: number;
  access: Variant['access'];
  /** The engine auto used (from its pre-fault result). */
  engine: string;
  /** Populate threads of both. */
  threads: number;
  /** The auto variant's label ('anon auto (t2)'). */
  auto: string;
  /** The explicit variant compared against ('anon software t2'). */
  explicit: string;
  /** auto median preparation / explicit median preparation. */
  prepRatio: number | null;
  /** The same for total ns/page. */
  totalRatio: number | null;
  /** Fastest auto preparation / fastest explicit one: a cross-check on a noisy machine. */
  prepRatioOfMin: number | null;
  /** prepRatio <= target. */
  met: boolean | null;
}

/** The whole report (what --json writes). */
export interface BenchReport {
  schema: 'node-kvm-bench/1';
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  options: BenchOptions;
  machine: MachineFacts;
  reference: { status: 'ok'; binary: string; buildMs: number } | { status: 'skipped' | 'unavailable'; reason: string };
  variants: VariantResult[];
  /** The exits family (lib/bench/exits.ts); absent when --family leaves it out. */
  exits?: ExitsReport;
  /** The memslot-perf family (lib/bench/memslot-perf.ts); absent unless --family names it. */
  memslotPerf?: MemslotPerfReport;
  goals: {
    autoVsDemand: SpeedupGoal[];
    /** Node/C total ratio per variant against the target 1.05. */
    nodeVsC: { target: number; met: string[]; notMet: { id: string; total: number; totalOfMin: number | null; totalPaired: number | null }[]; noReference: string[] };
    /** auto against the explicit engine it picked, against the target AUTO_COST_TARGET. */
    autoVsExplicit: { target: number; comparisons: AutoCostGoal[] };
  };
}

/** Progress callbacks (the CLI draws its bar from them). */
export interface BenchHooks {
  onPlan?(totalSteps: number): void;
  /** After each repetition (or each C run, counting its repetitions). */
  onStep?(stepsDone: number, label: string): void;
  /** After each variant, both sides measured (the CLI prints a line per variant without a terminal). */
  onVariant?(result: VariantResult, index: number, total: number, elapsedMs: number): void;
}

/** Speed-up targets of the issue, by backing. */
export const SPEEDUP_TARGETS: Record<Variant['backing'], number | null> = { anon: 4, thp: 30, gmem: null };
/** Node/C goal on total time. */
export const RATIO_TARGET = 1.05;
/** Goal of auto's preparation against the explicit engine it picked (same threads). */
export const AUTO_COST_TARGET = 1.02;

function strip(v: Variant): Omit<Variant, 'reference'> {
  const { reference: _reference, ...rest } = v;
  return rest;
}

/** Node's and C's repetitions of one variant so far. */
interface Sides {
  node: { warmup: RepMetrics[]; reps: RepMetrics[]; unavailable?: string };
  c: { warmup: RepMetrics[]; reps: RepMetrics[]; unavailable?: string; command?: string[] };
}

async function nodeOnce(kvm: Kvm, v: Variant, rep: number): Promise<RepMetrics | string> {
  if (v.kind === 'floor') return measureFloorOnce(v, rep);
  const out = await measureGuestOnce(kvm, v, rep);
  return out.ok ? out.metrics : out.unavailable;
}

async function cOnce(binary: string, v: Variant, spec: ReferenceSpec, rep: number): Promise<{ metrics: RepMetrics } | { unavailable: string }> {
  const out = await runReference(binary, spec, v.pages, 1, 0);
  if (!out.ok) return { unavailable: out.unavailable };
  return { metrics: { ...out.reps[0]!, rep } };
}

/**
 * Measures one variant on both sides, one repetition at a time, alternating
 * which side goes first (node, C, C, node, ...): the two see the same machine
 * conditions (other load, the balloon's warm memory), so their medians and
 * ratios compare like with like. Warm-up repetitions are kept apart.
 */
async function measureVariant(kvm: Kvm, v: Variant, options: BenchOptions, binary: string | undefined, step: (n: number, label: string) => void): Promise<Sides> {
  const sides: Sides = { node: { warmup: [], reps: [] }, c: { warmup: [], reps: [] } };
  const spec = binary !== undefined && 'key' in v.reference ? v.reference : undefined;
  if (spec) sides.c.command = [binary!, ...spec.args, '--reps', '1', '--warmup', '0'];
  const total = options.warmup + options.reps;
  for (let i = 0; i < total; i++) {
    const rep = i - options.warmup;
    const order = i % 2 === 0 ? (['node', 'c'] as const) : (['c', 'node'] as const);
    for (const side of order) {
      if (side === 'node') {
        if (sides.node.unavailable !== undefined) continue;
        const m = await nodeOnce(kvm, v, rep);
        if (typeof m === 'string') {
          sides.node.unavailable = m;
          step(total - i, `${v.label} (node-kvm)`);
          continue;
        }
        (rep < 0 ? sides.node.warmup : sides.node.reps).push(m);
        step(1, `${v.label} (node-kvm)`);
      } else {
        if (!spec || sides.c.unavailable !== undefined) continue;
        const out = await cOnce(binary!, v, spec, rep);
        if ('unavailable' in out) {
          sides.c.unavailable = out.unavailable;
          step(total - i, `${v.label} (C)`);
          continue;
        }
        (rep < 0 ? sides.c.warmup : sides.c.reps).push(out.metrics);
        step(1, `${v.label} (C)`);
      }
    }
  }
  return sides;
}

function nodeSide(s: Sides['node']): SideResult {
  if (s.unavailable !== undefined) return { status: 'unavailable', reason: s.unavailable };
  return { status: 'ok', reps: s.reps, warmup: s.warmup, summary: summarizeReps(s.reps) };
}

function cSide(s: Sides['c'], v: Variant, reference: BenchReport['reference']): SideResult {
  if (reference.status !== 'ok') return { status: 'skipped', reason: reference.reason };
  if ('unavailable' in v.reference) return { status: 'unavailable', reason: v.reference.unavailable };
  const command = s.command ?? [];
  if (s.unavailable !== undefined) return { status: 'unavailable', reason: s.unavailable, command };
  return { status: 'ok', reps: s.reps, warmup: s.warmup, summary: summarizeReps(s.reps), command };
}

/** Runs the benchmark described by `options`. */
export async function runBench(options: BenchOptions, hooks: BenchHooks = {}): Promise<BenchReport> {
  const started = new Date();
  const t0 = Date.now();
  using kvm = Kvm.open();
  const machine = machineFacts(kvm);
  const variants = options.families.includes('first-touch') ? expandVariants(options) : [];

  let reference: BenchReport['reference'];
  if (!options.reference) reference = { status: 'skipped', reason: '--no-reference' };
  else {
    const b = await buildReference();
    reference = b.ok ? { status: 'ok', binary: b.path, buildMs: b.buildMs } : { status: 'unavailable', reason: b.reason };
  }
  const binary = reference.status === 'ok' ? reference.binary : undefined;

  const perRun = options.warmup + options.reps;
  const withC = variants.filter((v) => binary !== undefined && 'key' in v.reference).length;
  hooks.onPlan?.((variants.length + withC) * perRun + (options.exits ? exitsSteps(options.exits, options.reps, options.warmup, binary !== undefined) : 0) + (options.memslotPerf ? memslotPerfSteps(options.memslotPerf, options.reference) : 0));
  let done = 0;
  const step = (n: number, label: string): void => {
    done += n;
    hooks.onStep?.(done, label);
  };

  const results: VariantResult[] = [];
  for (const v of variants) {
    const v0 = Date.now();
    hooks.onStep?.(done, v.label);
    const sides = await measureVariant(kvm, v, options, binary, step);
    const node = nodeSide(sides.node);
    const c = cSide(sides.c, v, reference);
    results.push({
      ...strip(v),
      node,
      c,
      ratios: node.status === 'ok' && c.status === 'ok' ? ratios(node.summary, c.summary) : null,
      ratiosOfMin: node.status === 'ok' && c.status === 'ok' ? ratiosOfMin(node.summary, c.summary) : null,
      pairedRatios: node.status === 'ok' && c.status === 'ok' ? pairedRatios(node.reps, c.reps) : null,
    });
    hooks.onVariant?.(results[results.length - 1]!, results.length, variants.length, Date.now() - v0);
  }

  const exits = options.exits
    ? await runExitsBench(kvm, options.exits, options.reps, options.warmup, binary !== undefined ? { path: binary } : { skipped: reference.status === 'ok' ? '' : reference.reason }, step)
    : undefined;

  const memslotPerf = options.memslotPerf ? await runMemslotPerfBench(kvm, options.memslotPerf, options.reference, step) : undefined;

  const finished = new Date();
  machine.loadAverage.end = loadAverage();
  return {
    schema: 'node-kvm-bench/1',
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationMs: Date.now() - t0,
    options,
    machine,
    reference,
    variants: results,
    ...(exits ? { exits } : {}),
    ...(memslotPerf ? { memslotPerf } : {}),
    goals: { autoVsDemand: speedupGoals(results), nodeVsC: ratioGoal(results), autoVsExplicit: { target: AUTO_COST_TARGET, comparisons: autoCostGoals(results) } },
  };
}

function medianOf(r: VariantResult | undefined, field: 'firstPassNs' | 'totalNsPerPage'): number | null {
  return r && r.node.status === 'ok' ? (r.node.summary[field]?.median ?? null) : null;
}

/** Auto vs demand per backing, size and access (Node medians). */
export function speedupGoals(results: readonly VariantResult[]): SpeedupGoal[] {
  const goals: SpeedupGoal[] = [];
  const guests = results.filter((r) => r.kind === 'guest');
  const groups = new Set(guests.map((r) => `${r.sizeBytes}|${r.access}|${r.backing}`));
  for (const g of groups) {
    const inGroup = guests.filter((r) => `${r.sizeBytes}|${r.access}|${r.backing}` === g);
    const demand = inGroup.find((r) => r.method === 'demand');
    const auto = inGroup.find((r) => r.method === 'auto');
    if (!demand || !auto) continue;
    const speedup = (f: 'firstPassNs' | 'totalNsPerPage'): number | null => {
      const d = medianOf(demand, f);
      const a = medianOf(auto, f);
      return d === null || a === null || a === 0 ? null : Math.round((d / a) * 100) / 100;
    };
    const target = SPEEDUP_TARGETS[auto.backing];
    const first = speedup('firstPassNs');
    const total = speedup('totalNsPerPage');
    goals.push({
      backing: auto.backing,
      sizeBytes: auto.sizeBytes,
      access: auto.access,
      target,
      firstPassSpeedup: first,
      totalSpeedup: total,
      met: target === null || first === null ? null : first >= target,
      metByTotal: target === null || total === null ? null : total >= target,
    });
  }
  return goals;
}

/** Which variants meet Node/C <= 1.05 on the total. */
export function ratioGoal(results: readonly VariantResult[]): BenchReport['goals']['nodeVsC'] {
  const met: string[] = [];
  const notMet: BenchReport['goals']['nodeVsC']['notMet'] = [];
  const noReference: string[] = [];
  for (const r of results) {
    const total = r.ratios?.total;
    if (total === null || total === undefined) noReference.push(r.id);
    else if (total <= RATIO_TARGET) met.push(r.id);
    else notMet.push({ id: r.id, total, totalOfMin: r.ratiosOfMin?.total ?? null, totalPaired: r.pairedRatios?.total ?? null });
  }
  return { target: RATIO_TARGET, met, notMet, noReference };
}

function medianField(r: VariantResult, field: 'prepNs' | 'totalNsPerPage', of: 'median' | 'min' = 'median'): number | null {
  return r.node.status === 'ok' ? (r.node.summary[field]?.[of] ?? null) : null;
}

/** auto against the explicit variant of the engine it used, with the same threads (kernel: any threads). */
export function autoCostGoals(results: readonly VariantResult[]): AutoCostGoal[] {
  const goals: AutoCostGoal[] = [];
  for (const auto of results) {
    if (auto.kind !== 'guest' || auto.method !== 'auto' || auto.node.status !== 'ok') continue;
    const engine = auto.node.reps.find((r) => r.prefault)?.prefault?.engine;
    if (engine !== 'software' && engine !== 'kernel') continue;
    const explicit = results.find(
      (r) => r.kind === 'guest' && r.method === engine && r.backing === auto.backing && r.sizeBytes === auto.sizeBytes && r.access === auto.access && (engine === 'kernel' || r.threads === auto.threads),
    );
    if (!explicit || explicit.node.status !== 'ok') continue;
    const ratioOf = (f: 'prepNs' | 'totalNsPerPage', of: 'median' | 'min' = 'median'): number | null => {
      const a = medianField(auto, f, of);
      const e = medianField(explicit, f, of);
      return a === null || e === null || e === 0 ? null : Math.round((a / e) * 1000) / 1000;
    };
    const prepRatio = ratioOf('prepNs');
    goals.push({
      backing: auto.backing,
      sizeBytes: auto.sizeBytes,
      access: auto.access,
      engine,
      threads: auto.threads,
      auto: auto.label,
      explicit: explicit.label,
      prepRatio,
      totalRatio: ratioOf('totalNsPerPage'),
      prepRatioOfMin: ratioOf('prepNs', 'min'),
      met: prepRatio === null ? null : prepRatio <= AUTO_COST_TARGET,
    });
  }
  return goals;
}
