/**
 * The step planner of the software pre-fault engine: given the Vm's memslots,
 * its memory attributes and what is left of a pre-fault request, say what to
 * map next and how far the request advances. Pure: no I/O, no state.
 *
 * The progress rule is KVM_PRE_FAULT_MEMORY's: the kernel faults the page at
 * the request's gpa at the level it would pick for a guest fault, then moves the
 * gpa to the end of that leaf, clipped to the request's end. So a one-page
 * request inside a 2 MiB-mappable area maps a whole 2 MiB leaf but reports one
 * page of progress, and a request running past the end of a slot progresses up
 * to the slot's end, after which the next gpa, outside every slot, is ENOENT.
 * A step batches many such faults (same slot, level and attribute) into one
 * contiguous run so the engine can populate host memory in large calls.
 */

import type { GpaRange, PrivateAttributeQuery } from './attributes.js';
import {
  alignDownToLevel, chooseMappingLevel, LEVEL_SIZE, PAGE_SIZE,
  type MappingSlot, type PageLevel,
} from './levels.js';

/** A memslot as the planner needs to see it. */
export interface SoftSlotView {
  /** Memslot id. */
  slot: number;
  /** First guest physical address. */
  guestPhysAddr: bigint;
  /** Length in bytes. */
  size: bigint;
  /** Host virtual address of the first byte (userspace_addr), if the slot has one. */
  hostAddress?: bigint;
  /**
   * The bound guest_memfd. Private pages are served from it. With the MMAP flag
   * (spelled 'mmap', 'MMAP' or 'GUEST_MEMFD_FLAG_MMAP') shared pages are served
   * from it too, as KVM does for a guest_memfd-only slot.
   */
  guestMemfd?: {
    /** File offset bound at `guestPhysAddr`. */
    offset: bigint;
    /** guest_memfd creation flags. */
    flags: readonly string[];
    /** Largest folio the file hands out; defaults to the slot's hostMaxLevel. */
    maxLevel?: PageLevel;
  };
  /** KVM_MEM_READONLY: mappings are not writable. */
  readonly: boolean;
  /** Largest leaf the host backing allows (4k plain, 2m THP/hugetlb, 1g hugetlb). */
  hostMaxLevel: PageLevel;
}

/** Input of {@link planPreFaultStep}. */
export interface PlanPreFaultStepParams {
  /** Every memslot of the address space; looked up linearly. */
  slots: readonly SoftSlotView[];
  /** Memory attributes; omitted means every gpa is shared (a VM without attributes). */
  isPrivate?: PrivateAttributeQuery;
  /** What is left of the request: gpa and size page aligned, size > 0. */
  range: GpaRange;
  /**
   * Most bytes of leaves one step maps. At least one leaf is always planned,
   * even when a leaf is larger, so the request always moves.
   */
  maxChunk: bigint;
}

/** Map a run of leaves, then advance the request by `progress`. */
export interface PreFaultMapStep {
  kind: 'map';
  /** Memslot id. */
  slot: number;
  /** First gpa to map: the base of the first leaf, so possibly below range.gpa. */
  gpa: bigint;
  /** Bytes to map: a whole number of `level` leaves, all inside the slot. */
  size: bigint;
  /** Level of every leaf of the run. */
  level: PageLevel;
  /** The run is private memory. */
  private: boolean;
  /** The slot is not read-only (the engine may still map read-only). */
  writable: boolean;
  /** Where the pages come from: the slot's host mapping or its guest_memfd. */
  backing: 'host' | 'guest_memfd';
  /** Host address of `gpa`, when the slot has a host mapping. */
  hostAddress?: bigint;
  /** guest_memfd offset of `gpa`, when the slot has a guest_memfd. */
  guestMemfdOffset?: bigint;
  /** Bytes by which the request advances: min(end of run, end of request) - range.gpa. */
  progress: bigint;
}

/** range.gpa is in no memslot: the kernel answers ENOENT (when no progress was made in the call). */
export interface PreFaultEnoentStep {
  kind: 'enoent';
  /** The gpa that no slot contains. */
  gpa: bigint;
}

/**
 * range.gpa is private but its slot has no guest_memfd: KVM cannot back it and
 * fails the fault with EFAULT (a memory-fault exit for a running vcpu).
 */
export interface PreFaultEfaultStep {
  kind: 'efault';
  /** The gpa that cannot be mapped. */
  gpa: bigint;
  /** Why. */
  reason: 'private-without-guest-memfd';
}

/** The planner's answer. */
export type PreFaultStep = PreFaultMapStep | PreFaultEnoentStep | PreFaultEfaultStep;

/** A pre-fault request as userspace passes it (struct kvm_pre_fault_memory). */
export interface PreFaultRequest {
  /** Guest physical address. */
  gpa: bigint;
  /** Length in bytes. */
  size: bigint;
  /** Must be 0 (no flag is defined). */
  flags: number | bigint;
}

const PAGE_MASK = PAGE_SIZE - 1n;
const U64_LIMIT = 1n << 64n;

/**
 * The kernel's argument check for KVM_PRE_FAULT_MEMORY, done before any work:
 * 'EINVAL' for flags other than 0, a gpa or size not 4 KiB aligned, size 0, or
 * an end that does not fit in u64 (an end of exactly 2^64 wraps to 0 in the
 * kernel's arithmetic, so it is refused too); values outside u64 likewise.
 * @returns 'EINVAL' or null when the request is acceptable.
 */
export function validatePreFaultRange(r: PreFaultRequest): 'EINVAL' | null {
  if (r.flags !== 0 && r.flags !== 0n) return 'EINVAL';
  if (r.gpa < 0n || r.size < 0n || r.gpa >= U64_LIMIT || r.size >= U64_LIMIT) return 'EINVAL';
  if ((r.gpa & PAGE_MASK) !== 0n || (r.size & PAGE_MASK) !== 0n) return 'EINVAL';
  // In u64 the kernel requires end > start: that excludes size 0 and any wrap.
  if (r.size === 0n || r.gpa + r.size >= U64_LIMIT) return 'EINVAL';
  return null;
}

/**
 * The next step of a software pre-fault of `range`.
 * @throws RangeError when range is not page aligned, size <= 0 or maxChunk <= 0
 *   (check requests with validatePreFaultRange first), or when the attribute
 *   query calls a single page 'mixed'.
 */
export function planPreFaultStep(p: PlanPreFaultStepParams): PreFaultStep {
  const { gpa: start, size } = p.range;
  if (start < 0n || size <= 0n || ((start | size) & PAGE_MASK) !== 0n) {
    throw new RangeError('range must be page aligned with a positive size');
  }
  if (p.maxChunk <= 0n) throw new RangeError('maxChunk must be positive');
  const end = start + size;

  const slot = p.slots.find((s) => start >= s.guestPhysAddr && start < s.guestPhysAddr + s.size);
  if (slot === undefined) return { kind: 'enoent', gpa: start };

  const query = p.isPrivate;
  const attributeOf = (gpa: bigint, len: bigint) => (query === undefined ? 'shared' : query(gpa, len));
  const attribute = attributeOf(start, PAGE_SIZE);
  if (attribute === 'mixed') throw new RangeError('the attribute query called one page mixed');
  const isPrivate = attribute === 'private';
  const gmem = slot.guestMemfd;
  if (isPrivate && gmem === undefined) {
    return { kind: 'efault', gpa: start, reason: 'private-without-guest-memfd' };
  }
  const backing = isPrivate || (gmem !== undefined && hasMmapFlag(gmem.flags)) ? 'guest_memfd' : 'host';

  const mappingSlot: MappingSlot = { guestPhysAddr: slot.guestPhysAddr, size: slot.size };
  if (slot.hostAddress !== undefined) mappingSlot.hostAddress = slot.hostAddress;
  if (gmem !== undefined) mappingSlot.guestMemfdOffset = gmem.offset;
  const hostMaxLevel = backing === 'guest_memfd' ? (gmem?.maxLevel ?? slot.hostMaxLevel) : slot.hostMaxLevel;
  const levelAt = (gpa: bigint): PageLevel => chooseMappingLevel({
    gpa,
    slot: mappingSlot,
    hostMaxLevel,
    private: backing === 'guest_memfd',
    ...(query === undefined ? {} : { isUniform: (b: bigint, s: bigint) => query(b, s) !== 'mixed' }),
  });

  const level = levelAt(start);
  const leaf = LEVEL_SIZE[level];
  const mapStart = alignDownToLevel(start, level);
  const slotEnd = slot.guestPhysAddr + slot.size;
  const chunk = p.maxChunk < leaf ? leaf : p.maxChunk - (p.maxChunk % leaf);
  const limit = mapStart + chunk < slotEnd ? mapStart + chunk : slotEnd;

  let mapEnd = mapStart + leaf;
  if (level === '4k') {
    mapEnd = extendSmallRun(mapEnd, end, limit, attribute, levelAt, attributeOf);
  } else {
    // Each further leaf is one more kernel fault; it joins the run only if the
    // kernel would fault it at the same level and it starts before the request ends.
    while (mapEnd < end && mapEnd + leaf <= limit
      && levelAt(mapEnd) === level && attributeOf(mapEnd, leaf) === attribute) {
      mapEnd += leaf;
    }
  }

  const step: PreFaultMapStep = {
    kind: 'map',
    slot: slot.slot,
    gpa: mapStart,
    size: mapEnd - mapStart,
    level,
    private: isPrivate,
    writable: !slot.readonly,
    backing,
    progress: (mapEnd < end ? mapEnd : end) - start,
  };
  if (slot.hostAddress !== undefined) step.hostAddress = slot.hostAddress + (mapStart - slot.guestPhysAddr);
  if (gmem !== undefined) step.guestMemfdOffset = gmem.offset + (mapStart - slot.guestPhysAddr);
  return step;
}

/**
 * Grow a run of 4 KiB leaves from `mapEnd` up to `end`/`limit`, 2 MiB block by
 * block: huge eligibility is decided per 2 MiB block, so if the first page of a
 * block maps at 4 KiB every page of the block does, and only the attribute can
 * still cut the block short (found by bisection, a handful of queries).
 */
function extendSmallRun(
  mapEnd: bigint, end: bigint, limit: bigint, attribute: 'private' | 'shared',
  levelAt: (gpa: bigint) => PageLevel, attributeOf: PrivateAttributeQuery,
): bigint {
  const block = LEVEL_SIZE['2m'];
  while (mapEnd < end && mapEnd < limit) {
    if (levelAt(mapEnd) !== '4k') break;
    let segEnd = alignDownToLevel(mapEnd, '2m') + block;
    if (segEnd > end) segEnd = end;
    if (segEnd > limit) segEnd = limit;
    if (attributeOf(mapEnd, segEnd - mapEnd) === attribute) {
      mapEnd = segEnd;
      continue;
    }
    // Largest prefix with the run's attribute: `lo` pages are known good, `hi` pages are not.
    let lo = 0n;
    let hi = (segEnd - mapEnd) / PAGE_SIZE;
    while (hi - lo > 1n) {
      const mid = (lo + hi) / 2n;
      if (attributeOf(mapEnd, mid * PAGE_SIZE) === attribute) lo = mid;
      else hi = mid;
    }
    return mapEnd + lo * PAGE_SIZE;
  }
  return mapEnd;
}

/** Whether guest_memfd flags include MMAP, however the caller spells it. */
function hasMmapFlag(flags: readonly string[]): boolean {
  return flags.some((f) => f.toLowerCase().replace(/^(kvm_)?guest_memfd_flag_/, '') === 'mmap');
}
