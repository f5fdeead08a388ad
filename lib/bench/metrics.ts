/**
 * One repetition's figures, the same for the Node measurement and the C
 * reference, so both can be summarised and compared field by field.
 * Times are nanoseconds (CLOCK_MONOTONIC in C, process.hrtime.bigint() in
 * Node), taken around the same boundaries:
 *
 *   allocNs       allocation of the region: mmap + madvise (anon/thp), or
 *                 KVM_CREATE_GUEST_MEMFD + mmap (gmem); for a floor, the whole
 *                 memset run
 *   fillNs        populate / pre-fault (0 for demand)
 *   prepNs        allocNs + fillNs
 *   firstPassNs   KVM_RUN until the guest's OUT after touching every page once
 *   secondPassNs  KVM_RUN resuming the guest for a second pass (all mapped)
 *   totalNsPerPage = (prepNs + firstPassNs) / pages
 */

/** What a pre-fault reported (Node software/auto/kernel methods). */
export interface PreFaultFigures {
  engine: string;
  reason: string;
  calls: number;
  bytesMapped: number;
  /** New leaves by level, as the pre-fault result reports them. */
  levels: { '4k': number; '2m': number; '1g': number };
  /** The library's own duration of the call (its loop, not including the await). */
  durationNs: number;
  retries: { eintr: number; eagain: number };
}

/** One measured repetition. Counters are null when the kernel lacks the stat; pass figures are null for floors. */
export interface RepMetrics {
  rep: number;
  allocNs: number;
  fillNs: number;
  prepNs: number;
  firstPassNs: number | null;
  secondPassNs: number | null;
  totalNsPerPage: number;
  prepNsPerPage: number;
  firstPassNsPerPage: number | null;
  secondPassNsPerPage: number | null;
  /** vcpu stat 'exits' during the first / second pass. */
  exitsFirstPass: number | null;
  exitsSecondPass: number | null;
  /** vcpu stat 'pf_taken' during the first pass. */
  pfTaken: number | null;
  /** VM stats after the first pass. */
  pages_4k: number | null;
  pages_2m: number | null;
  pages_1g: number | null;
  /** Fixed costs outside prepNs: VM + system region + vcpu, and the region's memslot. */
  setupNs: number | null;
  slotNs: number | null;
  /** Node's pre-fault result, when the method pre-faults. */
  prefault?: PreFaultFigures;
}

/** The numeric fields summarised per variant (median/min/max). */
export const SUMMARY_FIELDS = [
  'allocNs', 'fillNs', 'prepNs', 'firstPassNs', 'secondPassNs',
  'totalNsPerPage', 'prepNsPerPage', 'firstPassNsPerPage', 'secondPassNsPerPage',
  'exitsFirstPass', 'exitsSecondPass', 'pfTaken', 'pages_4k', 'pages_2m', 'pages_1g', 'setupNs', 'slotNs',
] as const satisfies readonly (keyof RepMetrics)[];

/** A summarised field name. */
export type SummaryField = (typeof SUMMARY_FIELDS)[number];

/** Raw times and counters of a repetition; the per-page figures are derived from them. */
export type RawRep = Omit<RepMetrics, 'prepNs' | 'totalNsPerPage' | 'prepNsPerPage' | 'firstPassNsPerPage' | 'secondPassNsPerPage'>;

/** Fills in prepNs and the per-page figures. */
export function completeRep(raw: RawRep, pages: number): RepMetrics {
  const prepNs = raw.allocNs + raw.fillNs;
  const per = (ns: number | null): number | null => (ns === null ? null : round1(ns / pages));
  return {
    ...raw,
    prepNs,
    totalNsPerPage: round1((prepNs + (raw.firstPassNs ?? 0)) / pages),
    prepNsPerPage: round1(prepNs / pages),
    firstPassNsPerPage: per(raw.firstPassNs),
    secondPassNsPerPage: per(raw.secondPassNs),
  };
}

/** Rounds to 0.1 (the C reference prints per-page figures so). */
export function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
