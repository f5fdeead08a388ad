/**
 * Memory attributes (private or shared) as the pre-fault planner sees them.
 *
 * The planner asks a question about a range, not about a page, because KVM's
 * decisions are about ranges too: a huge leaf is refused over a block with
 * mixed attributes, and a step stops where the attribute changes. A query lets
 * the Vm answer from whatever structure it keeps; privateRangesQuery() builds
 * one from a plain list for tests and simple callers.
 */

/** The attribute of every page in a range: all private, all shared, or both. */
export type RangeAttribute = 'private' | 'shared' | 'mixed';

/**
 * Attribute of [gpa, gpa + size) (size > 0). It must be consistent: a range is
 * 'private' (or 'shared') exactly when each of its pages is.
 */
export type PrivateAttributeQuery = (gpa: bigint, size: bigint) => RangeAttribute;

/** A gpa range in bytes. */
export interface GpaRange {
  /** First byte. */
  gpa: bigint;
  /** Length in bytes. */
  size: bigint;
}

/**
 * A query over a list of private ranges; every other gpa is shared (KVM's
 * default when no attribute was set). Overlapping or touching ranges are merged.
 * Each answer costs O(log n).
 */
export function privateRangesQuery(ranges: readonly GpaRange[]): PrivateAttributeQuery {
  const sorted = ranges
    .filter((r) => r.size > 0n)
    .map((r) => ({ start: r.gpa, end: r.gpa + r.size }))
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const merged: { start: bigint; end: bigint }[] = [];
  for (const r of sorted) {
    const top = merged[merged.length - 1];
    if (top !== undefined && r.start <= top.end) {
      if (r.end > top.end) top.end = r.end;
    } else {
      merged.push({ ...r });
    }
  }
  return (gpa, size) => {
    const end = gpa + size;
    // First merged range ending after gpa: the only one that can touch gpa itself.
    let lo = 0;
    let hi = merged.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (merged[mid]!.end <= gpa) lo = mid + 1;
      else hi = mid;
    }
    const r = merged[lo];
    if (r === undefined || r.start >= end) return 'shared';
    return r.start <= gpa && r.end >= end ? 'private' : 'mixed';
  };
}
