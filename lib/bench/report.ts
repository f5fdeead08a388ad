/**
 * The text report: a table of medians and what the run found (speed-ups,
 * auto's cost, Node/C). Results only: the acceptance goals and whether they
 * were met go into the JSON report, not onto the terminal.
 */
import type { Summary } from './stats.js';
import { formatSize } from './options.js';
import type { BenchReport, SideResult, VariantResult } from './run.js';
import { formatExitsReport } from './exits.js';
import { formatMemslotPerfReport } from './memslot-perf.js';

/** Column headers of the table, with what each means (docs/bench.md repeats these). */
export const COLUMNS = [
  ['variant', 'backing, method, populate threads (tN); "(tN)" for auto is the library default it used'],
  ['prep ms', 'allocation + populate/pre-fault (median)'],
  ['1st ms', 'first guest pass: KVM_RUN until the guest has touched every page once (median)'],
  ['2nd ms', 'second pass over the now-mapped region: the floor (median)'],
  ['total ns/pg', '(prep + first pass) / pages (median)'],
  ['min-max', 'range of total ns/pg over the repetitions'],
  ['1st ns/pg', 'first pass / pages (median): "first touch"'],
  ['exits', "vcpu stat 'exits' during the first pass"],
  ['pf', "vcpu stat 'pf_taken' during the first pass"],
  ['VM 4k/2m', 'VM stats pages_4k / pages_2m after the first pass (whole VM: the system region adds a page)'],
  ['pre-fault', "the pre-fault result: engine and leaves mapped by level (software engine's model)"],
  ['C ns/pg', 'the C reference, total ns/page (median)'],
  ['N/C tot', 'Node/C ratio of the median totals'],
  ['N/C prep', 'Node/C ratio of the median preparation times'],
  ['N/C 1st', 'Node/C ratio of the median first passes'],
] as const;

function fmtNs(ns: number | null | undefined, digits = 0): string {
  return ns === null || ns === undefined ? '-' : ns.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function fmtMs(ns: number | null | undefined): string {
  if (ns === null || ns === undefined) return '-';
  const ms = ns / 1e6;
  return ms < 0.1 ? ms.toFixed(3) : ms < 100 ? ms.toFixed(2) : ms.toFixed(0);
}

function fmtPerPage(x: number | null | undefined): string {
  if (x === null || x === undefined) return '-';
  return x < 100 ? x.toFixed(1) : fmtNs(x);
}

function fmtRatio(x: number | null | undefined): string {
  return x === null || x === undefined ? '-' : x.toFixed(2);
}

function med(s: Summary | null | undefined): number | null {
  return s ? s.median : null;
}

function preFaultCell(side: SideResult): string {
  if (side.status !== 'ok') return '';
  const first = side.reps.find((r) => r.prefault)?.prefault;
  if (!first) return '';
  const levels = (['1g', '2m', '4k'] as const).filter((l) => first.levels[l] > 0).map((l) => `${first.levels[l]}x${l}`);
  return `${first.engine} ${levels.join('+') || '-'}`;
}

/** One table row per variant, every column. */
export function tableRows(report: BenchReport): string[][] {
  return report.variants.map((v) => row(v));
}

/** The width the default table keeps within (`--wide` prints every column whatever the width). */
export const TABLE_WIDTH = 100;

/**
 * Columns of the default table, most important first: while the table is
 * wider than TABLE_WIDTH the last of these is dropped (longer labels, with
 * several sizes, cost columns).
 */
export const DEFAULT_COLUMNS: readonly string[] = ['variant', 'total ns/pg', '1st ns/pg', 'prep ms', '1st ms', 'N/C tot', 'C ns/pg', 'exits', '2nd ms'];

function row(v: VariantResult): string[] {
  const label = v.label;
  if (v.node.status !== 'ok') return [label, `unavailable: ${v.node.status === 'unavailable' ? v.node.reason : v.node.reason}`];
  const s = v.node.summary;
  const floor = v.kind === 'floor';
  const c = v.c.status === 'ok' ? v.c.summary : undefined;
  const vmLevels = s.pages_4k || s.pages_2m ? `${fmtNs(med(s.pages_4k))}/${fmtNs(med(s.pages_2m))}` : '-';
  const t = s.totalNsPerPage;
  return [
    label,
    fmtMs(med(s.prepNs)),
    fmtMs(med(s.firstPassNs)),
    fmtMs(med(s.secondPassNs)),
    fmtPerPage(med(t)),
    t ? `${fmtPerPage(t.min)}-${fmtPerPage(t.max)}` : '-',
    fmtPerPage(med(s.firstPassNsPerPage)),
    fmtNs(med(s.exitsFirstPass)),
    fmtNs(med(s.pfTaken)),
    floor ? '-' : vmLevels,
    preFaultCell(v.node),
    c ? fmtPerPage(med(c.totalNsPerPage)) : v.c.status === 'unavailable' ? 'n/a' : '-',
    fmtRatio(v.ratios?.total),
    fmtRatio(v.ratios?.prep),
    fmtRatio(v.ratios?.firstPass),
  ];
}

/** Aligns rows under the headers; a row with two cells spans the rest (unavailable variants). */
export function formatTable(headers: readonly string[], rows: readonly string[][]): string {
  const full = rows.filter((r) => r.length === headers.length);
  const widths = headers.map((h, i) => Math.max(h.length, ...full.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.length === headers.length
      ? cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()
      : `${cells[0]!.padEnd(widths[0]!)}  ${cells.slice(1).join('  ')}`;
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

/**
 * The table: every column with `wide`, otherwise the DEFAULT_COLUMNS that
 * fit in TABLE_WIDTH (in the order of COLUMNS), long unavailable reasons
 * clipped (the JSON has them whole).
 */
export function formatReportTable(report: BenchReport, wide = false): string {
  const all = COLUMNS.map(([h]) => h as string);
  const rows = tableRows(report);
  if (wide) return formatTable(all, rows);
  const keep = [...DEFAULT_COLUMNS];
  for (;;) {
    const idx = all.map((h, i) => (keep.includes(h) ? i : -1)).filter((i) => i >= 0);
    const headers = idx.map((i) => all[i]!);
    const picked = rows.map((r) => (r.length === all.length ? idx.map((i) => r[i]!) : r));
    const table = formatTable(headers, picked);
    const fits = table.split('\n').every((l, i) => i < 2 || picked[i - 2]!.length !== headers.length || l.length <= TABLE_WIDTH);
    if (fits || keep.length <= 2) {
      return table
        .split('\n')
        .map((l) => clip(l, TABLE_WIDTH))
        .join('\n');
    }
    keep.pop();
  }
}

function fmtSpeedup(x: number | null): string {
  return x === null ? '-' : `${x.toFixed(2)}x`;
}

/** What the run found, in words: speed-ups, auto's cost, Node/C. No goals. */
export function resultLines(report: BenchReport): string[] {
  const lines: string[] = [];
  const g = report.goals;
  const sized = report.options.sizes.length > 1 || report.options.access.length > 1;
  const groupName = (s: { backing: string; sizeBytes: number; access: string }): string =>
    (sized ? `${formatSize(s.sizeBytes)} ${s.access} ${s.backing}` : s.backing).padEnd(sized ? 16 : 4);
  if (g.autoVsDemand.length) {
    lines.push('auto (pre-fault) vs demand faulting, node-kvm medians:');
    for (const s of g.autoVsDemand) {
      lines.push(`  ${groupName(s)}  first pass ${fmtSpeedup(s.firstPassSpeedup)} cheaper, total incl. preparation ${fmtSpeedup(s.totalSpeedup)}`);
    }
  }
  const a = g.autoVsExplicit?.comparisons ?? [];
  if (a.length) {
    lines.push('auto vs the engine it picked, run explicitly with the same threads:');
    for (const s of a) {
      lines.push(`  ${s.auto} vs ${s.explicit}: preparation ${fmtRatio(s.prepRatio)}x (fastest vs fastest ${fmtRatio(s.prepRatioOfMin)}x), total ${fmtRatio(s.totalRatio)}x`);
    }
  }
  if (report.reference.status !== 'ok') {
    lines.push(`C reference: ${report.reference.status} (${report.reference.reason})`);
  } else {
    const totals = report.variants.map((v) => v.ratios?.total).filter((x): x is number => typeof x === 'number');
    if (totals.length) {
      const sorted = [...totals].sort((x, y) => x - y);
      const mid = sorted.length >> 1;
      const med = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
      lines.push(`Node/C total: median ${med.toFixed(2)}, ${sorted[0]!.toFixed(2)}-${sorted[sorted.length - 1]!.toFixed(2)} over ${totals.length} variants with a C reference`);
    }
  }
  return lines.map((l) => clip(l, TABLE_WIDTH));
}

/** The header lines: what ran, where. */
export function headLines(report: BenchReport): string[] {
  const m = report.machine;
  const o = report.options;
  return [
    `node-kvm bench: ${o.sizes.map(formatSize).join(', ')}, ${o.reps} repetition(s) after ${o.warmup} warm-up, medians`,
    `${m.kvmModule ?? 'kvm'} on ${m.uname.release}, ${m.cpuModel ?? 'unknown CPU'} (${m.cpus} CPUs), THP ${m.thp.enabled ?? '?'}, node ${m.node}, load ${m.loadAverage.start[0]} -> ${m.loadAverage.end?.[0] ?? '?'}`,
  ].map((l) => clip(l, TABLE_WIDTH));
}

/** The full text report. */
export function formatReport(report: BenchReport, wide = false): string {
  const note = wide ? [] : ['(--wide: every column)'];
  const firstTouch = report.variants.length ? ['', formatReportTable(report, wide), ...note, '', ...resultLines(report)] : [];
  const exits = report.exits ? ['', ...formatExitsReport(report.exits, wide)] : [];
  const memslotPerf = report.memslotPerf ? ['', ...formatMemslotPerfReport(report.memslotPerf)] : [];
  return [...headLines(report), ...firstTouch, ...exits, ...memslotPerf, `Duration: ${(report.durationMs / 1000).toFixed(1)} s`, ''].join('\n');
}
