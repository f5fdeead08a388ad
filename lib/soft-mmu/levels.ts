/**
 * Page levels of x86-64 4-level paging as KVM uses them for guest physical
 * mappings, and the rule KVM follows to pick the level of one mapping.
 *
 * Everything here is pure arithmetic on `bigint` addresses, so the software
 * pre-fault engine and its tests can ask "what would KVM map here?" without
 * a kernel.
 */

/** Size of a leaf mapping: a PT entry (4 KiB), a PD entry (2 MiB) or a PDPT entry (1 GiB). */
export type PageLevel = '4k' | '2m' | '1g';

/** Every level, smallest first; a level's position is its rank. */
export const PAGE_LEVELS: readonly PageLevel[] = Object.freeze(['4k', '2m', '1g'] as const);

/** The base page size (4 KiB): the granule of gpas, sizes and memslots. */
export const PAGE_SIZE = 4096n;

/** Bytes covered by one leaf of each level. */
export const LEVEL_SIZE: Readonly<Record<PageLevel, bigint>> = Object.freeze({
  '4k': 4096n,
  '2m': 2n * 1024n * 1024n,
  '1g': 1024n * 1024n * 1024n,
});

/** Base (4 KiB) pages covered by one leaf of each level, as plain numbers for hot loops. */
export const LEVEL_PAGES: Readonly<Record<PageLevel, number>> = Object.freeze({
  '4k': 1,
  '2m': 512,
  '1g': 512 * 512,
});

const RANK: Readonly<Record<PageLevel, number>> = Object.freeze({ '4k': 0, '2m': 1, '1g': 2 });

/** Bytes covered by one leaf of `level`. */
export function levelSize(level: PageLevel): bigint {
  return LEVEL_SIZE[level];
}

/** True when `value` names a page level; lets callers validate untyped input. */
export function isPageLevel(value: unknown): value is PageLevel {
  return value === '4k' || value === '2m' || value === '1g';
}

/** Order of levels: negative when `a` is smaller than `b`, 0 when equal, positive when larger. */
export function compareLevels(a: PageLevel, b: PageLevel): number {
  return RANK[a] - RANK[b];
}

/** The smaller of two levels: how a cap (host backing, guest_memfd folio) clamps a choice. */
export function minLevel(a: PageLevel, b: PageLevel): PageLevel {
  return RANK[a] <= RANK[b] ? a : b;
}

/** True when `addr` is a multiple of the leaf size of `level`. */
export function isLevelAligned(addr: bigint, level: PageLevel): boolean {
  return (addr & (LEVEL_SIZE[level] - 1n)) === 0n;
}

/** `addr` rounded down to the start of the `level` leaf containing it. */
export function alignDownToLevel(addr: bigint, level: PageLevel): bigint {
  return addr & ~(LEVEL_SIZE[level] - 1n);
}

/** The parts of a memslot that decide whether a huge mapping may be used inside it. */
export interface MappingSlot {
  /** First guest physical address of the slot. */
  guestPhysAddr: bigint;
  /** Slot length in bytes. */
  size: bigint;
  /**
   * Host virtual address backing `guestPhysAddr` (the memslot's userspace_addr).
   * When defined, a huge level needs gpa and host address congruent modulo the
   * level size, for every mapping of the slot, because KVM makes that decision
   * once per slot. Leave it undefined to skip the check; to mirror a guest_memfd
   * slot registered with userspace_addr 0 exactly, pass 0n (KVM then demands that
   * the slot's gpa itself be aligned).
   */
  hostAddress?: bigint;
  /**
   * Offset in the bound guest_memfd of `guestPhysAddr`. Used only for mappings
   * served by guest_memfd (`private: true`): the file offset must be congruent
   * with the gpa modulo the level size, or the huge folio would not line up.
   */
  guestMemfdOffset?: bigint;
}

/** Input of {@link chooseMappingLevel}. */
export interface ChooseMappingLevelParams {
  /** Guest physical address being faulted; must lie inside `slot`. */
  gpa: bigint;
  /** The memslot containing `gpa`. */
  slot: MappingSlot;
  /**
   * Largest leaf the backing allows: '4k' for plain anonymous memory, '2m' with
   * THP or 2 MiB hugetlb, '1g' with 1 GiB hugetlb; for guest_memfd, its folio size.
   */
  hostMaxLevel: PageLevel;
  /** false forbids every huge level (dirty logging does this in KVM). Default true. */
  allowHuge?: boolean;
  /**
   * The page is served by guest_memfd (private memory, or any page of a slot whose
   * guest_memfd is mmap-able): adds the guest_memfd offset congruence check.
   */
  private?: boolean;
  /**
   * Whether the whole block [blockGpa, blockGpa + blockSize) has one memory
   * attribute (all private or all shared). KVM refuses a huge mapping over a
   * block with mixed attributes, since one leaf cannot be both. Omitted: uniform.
   */
  isUniform?: (blockGpa: bigint, blockSize: bigint) => boolean;
}

/**
 * The level KVM would map `gpa` at: the largest level, at most `hostMaxLevel`,
 * whose aligned block around `gpa` lies wholly inside the slot, is congruent
 * with the host address (and with the guest_memfd offset for guest_memfd
 * pages), and has uniform memory attributes. '4k' is always possible.
 *
 * @throws RangeError when `gpa` is outside the slot.
 */
export function chooseMappingLevel(p: ChooseMappingLevelParams): PageLevel {
  const { gpa, slot } = p;
  const slotEnd = slot.guestPhysAddr + slot.size;
  if (gpa < slot.guestPhysAddr || gpa >= slotEnd) {
    throw new RangeError(`gpa 0x${gpa.toString(16)} is outside the slot`);
  }
  if (p.allowHuge === false) return '4k';
  for (let rank = RANK[p.hostMaxLevel]; rank > 0; rank--) {
    const level = PAGE_LEVELS[rank] as PageLevel;
    if (hugeBlockAllowed(p, level, slotEnd)) return level;
  }
  return '4k';
}

/** Whether the `level` block around p.gpa passes every huge-page condition. */
function hugeBlockAllowed(p: ChooseMappingLevelParams, level: PageLevel, slotEnd: bigint): boolean {
  const { slot } = p;
  const mask = LEVEL_SIZE[level] - 1n;
  const base = p.gpa & ~mask;
  // A leaf straddling the slot edge would map memory that belongs to nobody (or to another slot).
  if (base < slot.guestPhysAddr || base + LEVEL_SIZE[level] > slotEnd) return false;
  // The host huge page backing the leaf must start where the guest leaf starts.
  if (slot.hostAddress !== undefined && ((slot.guestPhysAddr ^ slot.hostAddress) & mask) !== 0n) {
    return false;
  }
  // Same for a guest_memfd folio: gpa and file offset must share their low bits.
  if (p.private === true && slot.guestMemfdOffset !== undefined
    && ((slot.guestPhysAddr ^ slot.guestMemfdOffset) & mask) !== 0n) {
    return false;
  }
  if (p.isUniform !== undefined && !p.isUniform(base, LEVEL_SIZE[level])) return false;
  return true;
}
