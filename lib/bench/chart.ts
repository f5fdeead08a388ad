/**
 * The chart: total ns per page per variant, node-kvm and C side by side, on
 * a log scale, with the min-max range of the repetitions. A vega-lite spec,
 * rendered to SVG by vega (headless, no canvas).
 */
import type { BenchReport } from './run.js';
import { formatSize } from './options.js';

/** One bar. */
export interface ChartDatum {
  variant: string;
  implementation: 'node-kvm' | 'C';
  nsPerPage: number;
  min: number;
  max: number;
}

/** The bars: medians of total ns/page, both sides where measured. */
export function chartData(report: BenchReport): ChartDatum[] {
  const out: ChartDatum[] = [];
  for (const v of report.variants) {
    for (const [implementation, side] of [['node-kvm', v.node], ['C', v.c]] as const) {
      if (side.status !== 'ok') continue;
      const t = side.summary.totalNsPerPage;
      if (t) out.push({ variant: v.label, implementation, nsPerPage: t.median, min: t.min, max: t.max });
    }
  }
  return out;
}

/** The vega-lite specification (plain JSON). */
export function chartSpec(report: BenchReport): Record<string, unknown> {
  const data = chartData(report);
  const order = [...new Set(data.map((d) => d.variant))];
  const m = report.machine;
  const sizes = report.options.sizes.map(formatSize).join(', ');
  const x = { field: 'variant', type: 'nominal', sort: order, title: null, axis: { labelAngle: -40, labelLimit: 220 } };
  const xOffset = { field: 'implementation', sort: ['node-kvm', 'C'] };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `Guest first touch: total ns per 4 KiB page (prep + first pass), ${sizes}`,
      subtitle: `median of ${report.options.reps} after ${report.options.warmup} warm-up; min-max whiskers; ${m.kvmModule ?? 'kvm'} ${m.uname.release}, ${m.cpus} CPUs, ${m.cpuModel ?? ''}`.trim(),
    },
    width: { step: 36 },
    height: 320,
    data: { values: data },
    encoding: { x, xOffset },
    layer: [
      {
        mark: { type: 'bar', tooltip: true },
        encoding: {
          // No stacking: a stacked bar starts at 0, which a log scale cannot show.
          y: { field: 'nsPerPage', type: 'quantitative', scale: { type: 'log' }, stack: null, title: 'ns per page (log scale)' },
          color: { field: 'implementation', type: 'nominal', sort: ['node-kvm', 'C'], title: null, scale: { range: ['#4c78a8', '#f58518'] } },
        },
      },
      {
        // Whiskers as thin bars: a rule mark does not take xOffset (vega-lite 6 places it at NaN).
        mark: { type: 'bar', width: 1.5, color: '#222' },
        encoding: { y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } },
      },
    ],
    config: { font: 'sans-serif', legend: { orient: 'top' } },
  };
}

/** Renders the chart as SVG text. vega and vega-lite are loaded only here. */
export async function renderChartSvg(report: BenchReport): Promise<string> {
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const compiled = vl.compile(chartSpec(report) as unknown as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
