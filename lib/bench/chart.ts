/**
 * The chart: one row per variant, horizontal bars on a log scale of ns per
 * 4 KiB page: node-kvm's total (preparation + first pass), the C
 * reference's total, and node-kvm's first pass alone, so the first-touch
 * speed-up and what preparation costs are both visible. Whiskers show the
 * min-max range of the totals. Plain SVG written here: no charting
 * dependency, no browser, 960 px wide, no text under 11 px.
 */
import type { BenchReport } from './run.js';
import { formatSize } from './options.js';

/** Which measurement a bar shows. */
export type ChartSeries = 'node-kvm total' | 'C total' | 'node-kvm first pass';

/** One bar. */
export interface ChartDatum {
  variant: string;
  series: ChartSeries;
  /** Median ns per page. */
  nsPerPage: number;
  /** Range over the repetitions (equal to the median where not shown). */
  min: number;
  max: number;
}

/** The series in drawing order, with their colours. */
export const CHART_SERIES: readonly { series: ChartSeries; color: string }[] = [
  { series: 'node-kvm total', color: '#4c78a8' },
  { series: 'C total', color: '#f58518' },
  { series: 'node-kvm first pass', color: '#9ecae9' },
];

/** Outer width of the SVG in pixels (fits a README column). */
export const CHART_WIDTH = 960;
/** The smallest font size used, in pixels. */
export const CHART_MIN_FONT = 11;

/** The bars: medians of total ns/page on both sides, and node-kvm's first pass. */
export function chartData(report: BenchReport): ChartDatum[] {
  const out: ChartDatum[] = [];
  for (const v of report.variants) {
    if (v.node.status === 'ok') {
      const t = v.node.summary.totalNsPerPage;
      if (t) out.push({ variant: v.label, series: 'node-kvm total', nsPerPage: t.median, min: t.min, max: t.max });
    }
    if (v.c.status === 'ok') {
      const t = v.c.summary.totalNsPerPage;
      if (t) out.push({ variant: v.label, series: 'C total', nsPerPage: t.median, min: t.min, max: t.max });
    }
    if (v.node.status === 'ok') {
      const f = v.node.summary.firstPassNsPerPage;
      if (f) out.push({ variant: v.label, series: 'node-kvm first pass', nsPerPage: f.median, min: f.median, max: f.median });
    }
  }
  return out;
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function num(x: number): string {
  return String(Math.round(x * 10) / 10);
}

function label(ns: number): string {
  return ns < 100 ? ns.toFixed(1) : Math.round(ns).toLocaleString('en-US');
}

/** Log-scale tick values (1, 2, 5 per decade) covering [lo, hi]. */
export function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo && t <= hi) ticks.push(t);
    }
  }
  return ticks;
}

/** Renders the chart as SVG text. */
export function renderChartSvg(report: BenchReport): string {
  const data = chartData(report);
  const variants = report.variants.map((v) => v.label);
  const m = report.machine;
  const sizes = report.options.sizes.map(formatSize).join(', ');
  const W = CHART_WIDTH;
  const left = 190;
  const right = 130;
  const top = 92;
  const bar = 6;
  const rowGap = 8;
  const rowH = CHART_SERIES.length * bar + rowGap;
  const plotW = W - left - right;
  const plotH = Math.max(1, variants.length) * rowH;
  const H = top + plotH + 44;

  const values = data.flatMap((d) => [d.min, d.max, d.nsPerPage]).filter((x) => x > 0);
  const lo = values.length ? 10 ** Math.floor(Math.log10(Math.min(...values))) : 1;
  const hi = values.length ? 10 ** Math.ceil(Math.log10(Math.max(...values))) : 10;
  const x = (v: number): number => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotW;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">${esc(`Guest first touch: ns per 4 KiB page, ${sizes} (log scale, shorter is better)`)}</text>`,
    `<text x="12" y="40" font-size="11" fill="#444">${esc(`median of ${report.options.reps} after ${report.options.warmup} warm-up; whiskers: min-max of the totals; total = preparation + first pass`)}</text>`,
    `<text x="12" y="55" font-size="11" fill="#444">${esc(`${m.kvmModule ?? 'kvm'} ${m.uname.release}, ${m.cpus} CPUs, ${m.cpuModel ?? 'unknown CPU'}, node ${m.node}, load ${m.loadAverage.start[0]} -> ${m.loadAverage.end?.[0] ?? '?'}, ${m.date.slice(0, 10)}`)}</text>`,
  );
  // Legend.
  let lx = 12;
  for (const s of CHART_SERIES) {
    out.push(`<rect x="${lx}" y="66" width="14" height="10" fill="${s.color}"/>`, `<text x="${lx + 19}" y="75">${esc(s.series)}</text>`);
    lx += 19 + s.series.length * 7 + 24;
  }
  // Grid and axis.
  for (const t of logTicks(lo, hi)) {
    const tx = num(x(t));
    const major = Number.isInteger(Math.log10(t));
    out.push(`<line x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${top + plotH}" stroke="${major ? '#bbb' : '#e4e4e4'}"/>`);
    out.push(`<text x="${tx}" y="${top + plotH + 16}" text-anchor="middle" font-size="11" fill="#333">${esc(t >= 1 ? Math.round(t).toLocaleString('en-US') : String(t))}</text>`);
  }
  out.push(`<text x="${num(left + plotW / 2)}" y="${top + plotH + 36}" text-anchor="middle">ns per page</text>`);
  // Rows.
  variants.forEach((variant, i) => {
    const y0 = top + i * rowH;
    if (i % 2 === 1) out.push(`<rect x="0" y="${y0 - rowGap / 2}" width="${W}" height="${rowH}" fill="#000" fill-opacity="0.035"/>`);
    out.push(`<text x="${left - 8}" y="${num(y0 + (CHART_SERIES.length * bar) / 2 + 4)}" text-anchor="end">${esc(variant)}</text>`);
    const row = data.filter((d) => d.variant === variant);
    if (row.length === 0) {
      const v = report.variants[i]!;
      const why = v.node.status === 'ok' ? '' : v.node.reason;
      out.push(`<text x="${left + 4}" y="${num(y0 + (CHART_SERIES.length * bar) / 2 + 4)}" font-size="11" fill="#777">${esc(clip(`unavailable${why ? `: ${why}` : ''}`, 105))}</text>`);
      return;
    }
    CHART_SERIES.forEach((s, j) => {
      const d = row.find((r) => r.series === s.series);
      if (!d) return;
      const y = y0 + j * bar;
      const w = Math.max(1, x(d.nsPerPage) - left);
      out.push(`<rect x="${left}" y="${y}" width="${num(w)}" height="${bar - 1}" fill="${s.color}"><title>${esc(`${variant}, ${s.series}: ${label(d.nsPerPage)} ns/page`)}</title></rect>`);
      if (d.max > d.min) {
        const cy = y + (bar - 1) / 2;
        out.push(`<line x1="${num(x(d.min))}" y1="${num(cy)}" x2="${num(x(d.max))}" y2="${num(cy)}" stroke="#222" stroke-width="1"/>`);
      }
    });
    const total = row.find((r) => r.series === 'node-kvm total');
    const first = row.find((r) => r.series === 'node-kvm first pass');
    const end = Math.max(...row.map((r) => x(r.max)));
    const text = [total && `${label(total.nsPerPage)}`, first && `1st ${label(first.nsPerPage)}`].filter(Boolean).join(' / ');
    if (text) out.push(`<text x="${num(end + 5)}" y="${num(y0 + (CHART_SERIES.length * bar) / 2 + 4)}" font-size="11" fill="#333">${esc(text)}</text>`);
  });
  out.push('</svg>', '');
  return out.join('\n');
}
