/**
 * The boot benchmark's table (text, for the terminal and the README) and
 * its chart (SVG: time to the marker and exits per row, QEMU's rows first).
 */
import type { BootBenchReport, BootBenchRow, Summary } from './boot-bench.js';

const s1 = (ms: number): string => (Number.isNaN(ms) ? '-' : (ms / 1000).toFixed(1));
const n0 = (x: number): string => (Number.isNaN(x) ? '-' : Math.round(x).toLocaleString('en-US'));
const ratio = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(2)}x`);
const range = (s: Summary, f: (x: number) => string): string => (Number.isNaN(s.median) ? '-' : `${f(s.median)} (${f(s.min)}-${f(s.max)})`);

/** The columns of one row. */
export function rowCells(r: BootBenchRow): string[] {
  return [
    r.label,
    `${r.ok}/${r.reps}`,
    range(r.totalMs, s1),
    range(r.markerMs, s1),
    s1(r.prefaultMs.median),
    Number.isNaN(r.guestUptime.median) ? '-' : r.guestUptime.median.toFixed(2),
    range(r.exits, n0),
    n0(r.pfTaken.median),
    n0(r.pages['4k'].median),
    n0(r.pages['2m'].median),
    n0(r.pages['1g'].median),
    ratio(r.vsQemu?.exits),
    ratio(r.vsQemu?.totalMs),
  ];
}

const HEADER = ['variant', 'ok', 'to marker s', 'KVM_RUN→marker s', 'prefault s', 'guest up s', 'exits', 'pf_taken', '4k', '2m', '1g', 'exits/QEMU', 'time/QEMU'];

/** A markdown table of the report, the goals and the failures under it. */
export function formatBootReport(report: BootBenchReport): string {
  const rows = report.rows.map(rowCells);
  const widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const out = [
    `boot benchmark: ${report.kernel}, ${report.memory / 2 ** 20} MiB, 1 vcpu, ${report.reps} repetitions, figures at the marker (median (min-max))`,
    line(HEADER),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
  ];
  if (report.qemuMissing) out.push(`QEMU reference: ${report.qemuMissing}`);
  for (const r of report.rows) {
    if (r.vmm !== 'node-kvm' || r.ok === 0) continue;
    const goals: string[] = [];
    const demand = report.rows.find((d) => d.vmm === 'node-kvm' && d.prefault === 'none' && d.backing === r.backing && d.ok > 0);
    if (demand && r.prefault !== 'none') {
      const cut = demand.pfTaken.median / Math.max(1, r.pfTaken.median);
      goals.push(`faults cut ${cut.toFixed(1)}x vs demand (goal >= 10x: ${cut >= 10 ? 'met' : 'not met'})`);
    }
    if (r.vsQemu) {
      goals.push(`exits ${ratio(r.vsQemu.exits)} QEMU's (goal <= 1: ${r.vsQemu.exits <= 1 ? 'met' : 'not met'})`);
      goals.push(`time ${ratio(r.vsQemu.totalMs)} (goal <= 1.2: ${r.vsQemu.totalMs <= 1.2 ? 'met' : 'not met'})`);
    }
    if (goals.length) out.push(`  ${r.label}: ${goals.join('; ')}`);
  }
  for (const r of report.rows) if (r.failures.length) out.push(`  ${r.label}: ${r.failures.length} failed: ${[...new Set(r.failures)].join(' | ').replace(/\s*\n\s*/g, ' / ').slice(0, 300)}`);
  return `${out.join('\n')}\n`;
}

const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** Two horizontal bar panels (time to the marker, exits), one bar per row with a min-max whisker. */
export function renderBootChartSvg(report: BootBenchReport): string {
  const rows = report.rows.filter((r) => r.ok > 0);
  const W = 960;
  const labelW = 260;
  const panelW = (W - labelW - 40) / 2;
  const barH = 18;
  const top = 50;
  const H = top + rows.length * (barH + 6) + 30;
  const panels: { title: string; pick: (r: BootBenchRow) => Summary; fmt: (x: number) => string; x0: number }[] = [
    { title: 'time to the marker, s (from the start)', pick: (r) => r.totalMs, fmt: (x) => (x / 1000).toFixed(1), x0: labelW },
    { title: 'vcpu exits to the marker', pick: (r) => r.exits, fmt: (x) => Math.round(x).toLocaleString('en-US'), x0: labelW + panelW + 30 },
  ];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="20" font-size="14">${esc(`Boot to the marker: ${report.kernel.split('/').slice(-2).join('/')}, ${report.memory / 2 ** 20} MiB, ${report.reps} reps (bar median, line min-max)`)}</text>`,
  ];
  for (const p of panels) {
    const max = Math.max(1, ...rows.map((r) => p.pick(r).max).filter(Number.isFinite));
    parts.push(`<text x="${p.x0}" y="${top - 10}">${esc(p.title)}</text>`);
    rows.forEach((r, i) => {
      const y = top + i * (barH + 6);
      const s = p.pick(r);
      if (Number.isNaN(s.median)) return;
      const w = (s.median / max) * (panelW - 60);
      const color = r.vmm === 'qemu' ? '#888888' : r.prefault === 'none' ? '#d62728' : '#1f77b4';
      parts.push(`<rect x="${p.x0}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color}"/>`);
      parts.push(`<line x1="${(p.x0 + (s.min / max) * (panelW - 60)).toFixed(1)}" x2="${(p.x0 + (s.max / max) * (panelW - 60)).toFixed(1)}" y1="${y + barH / 2}" y2="${y + barH / 2}" stroke="black"/>`);
      parts.push(`<text x="${(p.x0 + w + 4).toFixed(1)}" y="${y + 13}">${esc(p.fmt(s.median))}</text>`);
    });
  }
  rows.forEach((r, i) => parts.push(`<text x="10" y="${top + i * (barH + 6) + 13}">${esc(r.label)}</text>`));
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
