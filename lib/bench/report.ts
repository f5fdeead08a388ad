/** The text report: a table of medians, the goals, and the Node/C ratios. */
import type { Summary } from './stats.js';
import { formatSize } from './options.js';
import type { BenchReport, SideResult, VariantResult } from './run.js';
import { formatExitsReport } from './exits.js';

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

/** One table row per variant. */
export function tableRows(report: BenchReport): string[][] {
  return report.variants.map((v) => row(v));
}

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

/** The goals in words. */
export function goalLines(report: BenchReport): string[] {
  const lines: string[] = [];
  const g = report.goals;
  if (g.autoVsDemand.length) {
    lines.push('First touch after node-kvm\'s automatic pre-fault (method auto) vs demand faulting (Node medians):');
    for (const s of g.autoVsDemand) {
      const target = s.target === null ? 'no target' : `target ${s.target}x: ${s.met ? 'met' : 'NOT met'}`;
      lines.push(
        `  ${s.backing.padEnd(4)} ${formatSize(s.sizeBytes)} ${s.access}: first pass ${fmtRatio(s.firstPassSpeedup)}x cheaper (${target}); ` +
          `total incl. prep ${fmtRatio(s.totalSpeedup)}x${s.target === null ? '' : s.metByTotal ? ' (meets the target too)' : ''}`,
      );
    }
  }
  if (report.reference.status !== 'ok') {
    lines.push(`C reference: ${report.reference.status} (${report.reference.reason})`);
  } else {
    const n = g.nodeVsC;
    const compared = n.met.length + n.notMet.length;
    lines.push(`Node/C total <= ${n.target}: ${n.met.length} of ${compared} variants with a C reference`);
    for (const x of n.notMet) {
      lines.push(`  not met: ${x.id}: ${x.total.toFixed(2)} (median of paired ratios ${fmtRatio(x.totalPaired)}, fastest Node / fastest C ${fmtRatio(x.totalOfMin)})`);
    }
  }
  return lines;
}

/** The full text report. */
export function formatReport(report: BenchReport): string {
  const headers = COLUMNS.map(([h]) => h);
  const m = report.machine;
  const head = [
    `node-kvm bench: ${report.options.reps} repetition(s) after ${report.options.warmup} warm-up, medians; ${m.kvmModule ?? 'kvm'} on ${m.uname.release}, ${m.cpuModel ?? 'unknown CPU'} (${m.cpus} CPUs), THP ${m.thp.enabled ?? '?'}, node ${m.node}, load ${m.loadAverage.start[0]} -> ${m.loadAverage.end?.[0] ?? '?'}`,
    '',
  ];
  const exits = report.exits ? ['', ...formatExitsReport(report.exits)] : [];
  const firstTouch = report.variants.length ? [formatTable(headers, tableRows(report)), '', ...goalLines(report)] : [];
  return [...head, ...firstTouch, ...exits, `Duration: ${(report.durationMs / 1000).toFixed(1)} s`, ''].join('\n');
}
