/** Statistics over repetitions: median, min, max per field, and Node/C ratios of medians. */
import { SUMMARY_FIELDS, type RepMetrics, type SummaryField } from './metrics.js';

/** Median, min and max of one field over the repetitions. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** The median (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Summary of the non-null values, or null when there are none. */
export function summarize(values: readonly (number | null | undefined)[]): Summary | null {
  const xs = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (xs.length === 0) return null;
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

/** Per-field summaries of a variant's repetitions. */
export type RepSummary = Record<SummaryField, Summary | null>;

/** Summarises every field of the repetitions. */
export function summarizeReps(reps: readonly RepMetrics[]): RepSummary {
  const out = {} as RepSummary;
  for (const f of SUMMARY_FIELDS) out[f] = summarize(reps.map((r) => r[f]));
  return out;
}

/** Node/C ratios of the medians (total = prep + first pass). */
export interface Ratios {
  total: number | null;
  prep: number | null;
  firstPass: number | null;
  secondPass: number | null;
}

function ratio(a: Summary | null, b: Summary | null, of: 'median' | 'min'): number | null {
  if (!a || !b || b[of] === 0) return null;
  return Math.round((a[of] / b[of]) * 1000) / 1000;
}

function ratiosBy(node: RepSummary, c: RepSummary, of: 'median' | 'min'): Ratios {
  return {
    total: ratio(node.totalNsPerPage, c.totalNsPerPage, of),
    prep: ratio(node.prepNs, c.prepNs, of),
    firstPass: ratio(node.firstPassNs, c.firstPassNs, of),
    secondPass: ratio(node.secondPassNs, c.secondPassNs, of),
  };
}

/** Node median divided by C median, per part. */
export function ratios(node: RepSummary, c: RepSummary): Ratios {
  return ratiosBy(node, c, 'median');
}

/**
 * Median over repetitions of Node rep i / C rep i. The two of a pair ran
 * back to back, so slow drifts of the machine cancel out of each ratio.
 */
export function pairedRatios(node: readonly RepMetrics[], c: readonly RepMetrics[]): Ratios {
  const by = (field: 'totalNsPerPage' | 'prepNs' | 'firstPassNs' | 'secondPassNs'): number | null => {
    const rs: number[] = [];
    for (const n of node) {
      const m = c.find((x) => x.rep === n.rep);
      const a = n[field];
      const b = m?.[field];
      if (typeof a === 'number' && typeof b === 'number' && b > 0) rs.push(a / b);
    }
    return rs.length ? Math.round(median(rs) * 1000) / 1000 : null;
  };
  return { total: by('totalNsPerPage'), prep: by('prepNs'), firstPass: by('firstPassNs'), secondPass: by('secondPassNs') };
}

/** Node min divided by C min, per part. */
export function ratiosOfMin(node: RepSummary, c: RepSummary): Ratios {
  return ratiosBy(node, c, 'min');
}
