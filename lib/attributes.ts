/**
 * The VM's record of memory attributes (KVM_SET_MEMORY_ATTRIBUTES): which
 * guest-physical ranges are private. Kept as sorted, disjoint, merged ranges.
 */

/** A half-open guest-physical range [start, end). */
export interface GpaRange {
  /** First guest-physical address of the range. */
  start: bigint;
  /** Guest-physical address just past the range (exclusive). */
  end: bigint;
}

/** Private ranges of one VM. */
export class PrivateRanges {
  #ranges: GpaRange[] = [];

  /** Marks [start, end) private or shared. */
  set(start: bigint, end: bigint, isPrivate: boolean): void {
    const kept: GpaRange[] = [];
    for (const r of this.#ranges) {
      if (r.end <= start || r.start >= end) {
        kept.push(r);
        continue;
      }
      if (r.start < start) kept.push({ start: r.start, end: start });
      if (r.end > end) kept.push({ start: end, end: r.end });
    }
    if (isPrivate) kept.push({ start, end });
    kept.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const merged: GpaRange[] = [];
    for (const r of kept) {
      const last = merged[merged.length - 1];
      if (last && last.end >= r.start) last.end = last.end > r.end ? last.end : r.end;
      else merged.push({ ...r });
    }
    this.#ranges = merged;
  }

  /** 'private', 'shared' or 'mixed' for [start, end). */
  classify(start: bigint, end: bigint): 'private' | 'shared' | 'mixed' {
    let covered = 0n;
    for (const r of this.#ranges) {
      const s = r.start > start ? r.start : start;
      const e = r.end < end ? r.end : end;
      if (e > s) covered += e - s;
    }
    if (covered === 0n) return 'shared';
    return covered === end - start ? 'private' : 'mixed';
  }

  /** The end of the run starting at gpa with the same privateness (capped at limit). */
  runEnd(gpa: bigint, limit: bigint): bigint {
    for (const r of this.#ranges) {
      if (gpa < r.start) return r.start < limit ? r.start : limit;
      if (gpa < r.end) return r.end < limit ? r.end : limit;
    }
    return limit;
  }

  /** A copy of the private ranges. */
  list(): GpaRange[] {
    return this.#ranges.map((r) => ({ ...r }));
  }
}
