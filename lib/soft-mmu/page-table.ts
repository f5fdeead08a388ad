/**
 * SoftMmu: a software copy of the guest physical page tables KVM would build,
 * for hosts where the kernel cannot pre-fault (shadow paging, no
 * KVM_PRE_FAULT_MEMORY). The software pre-fault engine records here what it
 * mapped, so tests and statistics can ask the same questions they would ask a
 * TDP MMU: which leaf covers this gpa, at what level, for which slot.
 *
 * Shape: x86-64 4-level paging (PML4 -> PDPT -> PD -> PT, 512 entries per
 * table), leaves at PDPT (1 GiB), PD (2 MiB) or PT (4 KiB). Guest physical
 * addresses up to 2^52 (the architectural MAXPHYADDR) are accepted: the root is
 * widened to 8192 entries instead of adding a fifth level, because no leaf can
 * live above the PDPT, so a fifth level would add cost and no behaviour.
 */

import { isPageLevel, LEVEL_SIZE, PAGE_SIZE, type PageLevel } from './levels.js';

/** Exclusive upper bound (2^52) of the guest physical addresses the model accepts. */
export const SOFT_MMU_GPA_LIMIT = 1n << 52n;

/** What a leaf records besides its position and level. */
export interface SoftMappingInfo {
  /** Memslot id the leaf maps. */
  slot: number;
  /** Private (guest_memfd) memory rather than shared memory. */
  private: boolean;
  /** The guest may write through the leaf. */
  writable: boolean;
  /**
   * Host virtual address backing the first byte mapped (the gpa passed to
   * map/mapRange). Later pages are assumed to follow contiguously, as they do
   * inside a memslot.
   */
  hostAddress?: bigint;
}

/** One leaf as reported by {@link SoftMmu.lookup} and {@link SoftMmu.entries}. */
export interface SoftMmuLeaf {
  /** Base gpa of the leaf (aligned to its level). */
  gpa: bigint;
  /** Leaf level. */
  level: PageLevel;
  /** Memslot id. */
  slot: number;
  /** Private (guest_memfd) mapping. */
  private: boolean;
  /** Writable mapping. */
  writable: boolean;
  /**
   * Host address: from lookup(), that of the queried gpa itself; from
   * entries(), that of the leaf base. Absent when none was recorded.
   */
  hostAddress?: bigint;
}

/** Counters of {@link SoftMmu.stats}, maintained incrementally. */
export interface SoftMmuStats {
  /** Present leaves per level. */
  leaves: { '4k': number; '2m': number; '1g': number };
  /** Allocated tables, the root included (so never below 1). */
  tables: number;
  /** Sum of the sizes of present leaves. */
  bytesMapped: bigint;
  /**
   * Leaves removed over the model's life, by zapRange/zapSlot/zapAll and by a
   * mapping that replaced them (a huge leaf over smaller ones, or a small leaf
   * over an incompatible huge one). Overwriting a leaf in place is not a zap.
   */
  zaps: number;
}

const ENTRIES = 512;
/** Base pages covered by one entry of a table at depth 0 (root), 1 (PDPT), 2 (PD), 3 (PT). */
const SPAN = [2 ** 27, 2 ** 18, 2 ** 9, 1] as const;
/** Right shift of a gfn giving a table index at each depth (masked with 511 below the root). */
const SHIFT = [27, 18, 9, 0] as const;
type Depth = 1 | 2 | 3;
/** Depths below the root, top down. */
const DEPTHS: readonly Depth[] = [1, 2, 3];
const DEPTH_OF: Readonly<Record<PageLevel, Depth>> = { '1g': 1, '2m': 2, '4k': 3 };
const LEVEL_AT: readonly PageLevel[] = ['4k', '1g', '2m', '4k']; // index 0 unused: the root holds no leaf
const GFN_LIMIT = 2 ** 40;

/**
 * Index of `gfn` in a table at `depth` (1..3). gfn < 2^40 so `>>>` (which works
 * on the low 32 bits) still sees every bit an index below the root needs.
 */
function indexAt(gfn: number, depth: Depth): number {
  return (gfn >>> SHIFT[depth]) & (ENTRIES - 1);
}

/**
 * One page table. Leaves are descriptor ids in a typed array (0 = none), so a
 * PT full of 4 KiB leaves costs 2 KiB and no per-leaf objects.
 */
class Table {
  /** Descriptor id (1-based) of the leaf in each entry; 0 when the entry holds no leaf. */
  readonly leaves = new Uint32Array(ENTRIES);
  /** Next-level tables; absent in a PT, which can only hold leaves. */
  readonly children: (Table | undefined)[] | undefined;
  /** Entries holding a leaf or a table: a table is freed when this reaches 0. */
  used = 0;

  constructor(hasChildren: boolean) {
    this.children = hasChildren ? new Array<Table | undefined>(ENTRIES) : undefined;
  }
}

/**
 * Leaf attributes, interned: every leaf of one slot with the same privateness
 * and permission shares one descriptor, since a slot maps gpa to host address
 * by a constant offset (`hostDelta`).
 */
interface Descriptor {
  readonly slot: number;
  readonly private: boolean;
  readonly writable: boolean;
  /** hostAddress - gpa for every byte of the leaf, or undefined when unknown. */
  readonly hostDelta: bigint | undefined;
}

/**
 * A sparse model of KVM's x86 guest physical page tables.
 *
 * Mapping rules (mirroring what a KVM MMU ends up holding):
 * - A huge leaf replaces any smaller leaves and tables under it (they count as zaps).
 * - A smaller leaf requested under a huge leaf of the same slot and privateness
 *   is a no-op: the huge leaf already translates that gpa.
 * - A smaller leaf under a huge leaf of another slot or privateness means the
 *   huge leaf is stale: it is removed whole, then the smaller leaf is mapped.
 * - A leaf at the same position and level is overwritten in place.
 *
 * Do not mutate the model while iterating {@link SoftMmu.entries}.
 */
export class SoftMmu {
  private readonly root = new Map<number, Table>();
  private descriptors: Descriptor[] = [];
  private descriptorIds = new Map<string, number>();
  private lastDescriptor: Descriptor | undefined;
  private lastDescriptorId = 0;
  /** Leaves per depth: [unused, 1g, 2m, 4k]. */
  private readonly leafCount = [0, 0, 0, 0];
  /** Mapped bytes / 4096, kept as a number because it stays below 2^40. */
  private mappedPages = 0;
  private tableCount = 1;
  private zapCount = 0;

  /**
   * Record a leaf of `level` at `gpa`.
   * @throws RangeError when gpa is not aligned to the level, negative, or >= 2^52.
   */
  map(gpa: bigint, level: PageLevel, info: SoftMappingInfo): void {
    checkRange(gpa, levelBytes(level), level);
    const id = this.descriptorId(info, gpa);
    const gfn = Number(gpa >> 12n);
    const depth = DEPTH_OF[level];
    const table = this.descend(gfn, depth, id);
    if (table !== undefined) this.setLeaf(table, indexAt(gfn, depth), depth, id);
  }

  /**
   * Record consecutive leaves of `level` covering [gpa, gpa + size): the same
   * result as calling map() for each leaf (with hostAddress advancing), but it
   * walks each table once, which keeps 262,144 4 KiB leaves in the tens of ms.
   * @throws RangeError when gpa or size is not aligned to the level, size is 0,
   *   or the range passes 2^52.
   */
  mapRange(gpa: bigint, size: bigint, level: PageLevel, info: SoftMappingInfo): void {
    checkRange(gpa, size, level);
    const id = this.descriptorId(info, gpa);
    const depth = DEPTH_OF[level];
    const span = SPAN[depth];
    let gfn = Number(gpa >> 12n);
    const endGfn = gfn + Number(size >> 12n);
    while (gfn < endGfn) {
      const first = indexAt(gfn, depth);
      const count = Math.min(ENTRIES - first, (endGfn - gfn) / span);
      const table = this.descend(gfn, depth, id);
      if (table !== undefined) {
        if (depth === 3) this.fillPt(table, first, count, id);
        else for (let i = first; i < first + count; i++) this.setLeaf(table, i, depth, id);
      }
      gfn += count * span;
    }
  }

  /**
   * The leaf translating `gpa`, or undefined when nothing maps it (including
   * any gpa >= 2^52). hostAddress is that of `gpa` itself.
   * @throws RangeError for a negative or non-integer gpa.
   */
  lookup(gpa: bigint | number): SoftMmuLeaf | undefined {
    let addr: bigint;
    if (typeof gpa === 'number') {
      if (!Number.isSafeInteger(gpa) || gpa < 0) throw new RangeError(`invalid gpa ${gpa}`);
      addr = BigInt(gpa);
    } else {
      if (gpa < 0n) throw new RangeError(`invalid gpa ${gpa}`);
      addr = gpa;
    }
    if (addr >= SOFT_MMU_GPA_LIMIT) return undefined;
    const gfn = Number(addr >> 12n);
    let table = this.root.get(Math.floor(gfn / SPAN[0]));
    for (const depth of DEPTHS) {
      if (table === undefined) return undefined;
      const idx = indexAt(gfn, depth);
      const id = table.leaves[idx] ?? 0;
      if (id !== 0) {
        const baseGfn = gfn - (gfn % SPAN[depth]);
        return this.leaf(baseGfn, depth, id, addr);
      }
      table = table.children?.[idx];
    }
    return undefined;
  }

  /**
   * Remove every leaf overlapping [gpa, gpa + size), at byte granularity. A huge
   * leaf only partly inside the range is removed whole, as KVM zaps whole SPTEs.
   * Tables left empty are freed.
   * @returns the number of leaves removed.
   * @throws RangeError for a negative gpa or size.
   */
  zapRange(gpa: bigint, size: bigint): number {
    if (gpa < 0n || size < 0n) throw new RangeError('gpa and size must not be negative');
    if (size === 0n || gpa >= SOFT_MMU_GPA_LIMIT) return 0;
    const end = gpa + size > SOFT_MMU_GPA_LIMIT ? SOFT_MMU_GPA_LIMIT : gpa + size;
    return this.zapGfns(Number(gpa >> 12n), Number((end + PAGE_SIZE - 1n) >> 12n), undefined);
  }

  /**
   * Remove every leaf of memslot `slot` (what KVM does when a slot is deleted or moved).
   * @returns the number of leaves removed.
   */
  zapSlot(slot: number): number {
    const victims = new Uint8Array(this.descriptors.length + 1);
    let any = false;
    this.descriptors.forEach((d, i) => {
      if (d.slot === slot) {
        victims[i + 1] = 1;
        any = true;
      }
    });
    if (!any) return 0;
    return this.zapGfns(0, GFN_LIMIT, (id) => victims[id] === 1);
  }

  /**
   * Remove every leaf and table but the root.
   * @returns the number of leaves removed.
   */
  zapAll(): number {
    const removed = this.leafCount[1]! + this.leafCount[2]! + this.leafCount[3]!;
    this.root.clear();
    this.leafCount.fill(0);
    this.mappedPages = 0;
    this.tableCount = 1;
    this.zapCount += removed;
    // No leaf refers to a descriptor any more: start afresh so churn cannot grow the table.
    this.descriptors = [];
    this.descriptorIds = new Map();
    this.lastDescriptor = undefined;
    this.lastDescriptorId = 0;
    return removed;
  }

  /** Current counters; O(1), nothing is walked. */
  stats(): SoftMmuStats {
    return {
      leaves: { '4k': this.leafCount[3]!, '2m': this.leafCount[2]!, '1g': this.leafCount[1]! },
      tables: this.tableCount,
      bytesMapped: BigInt(this.mappedPages) * PAGE_SIZE,
      zaps: this.zapCount,
    };
  }

  /** Every leaf in ascending gpa order; hostAddress is that of each leaf's base. */
  *entries(): IterableIterator<SoftMmuLeaf> {
    const keys = [...this.root.keys()].sort((a, b) => a - b);
    for (const key of keys) {
      const table = this.root.get(key);
      if (table !== undefined) yield* this.walk(table, 1, key * SPAN[0]);
    }
  }

  private *walk(table: Table, depth: Depth, baseGfn: number): Generator<SoftMmuLeaf> {
    const span = SPAN[depth];
    for (let idx = 0; idx < ENTRIES; idx++) {
      const id = table.leaves[idx] ?? 0;
      const gfn = baseGfn + idx * span;
      if (id !== 0) {
        yield this.leaf(gfn, depth, id, BigInt(gfn) << 12n);
        continue;
      }
      const child = table.children?.[idx];
      if (child !== undefined) yield* this.walk(child, (depth + 1) as Depth, gfn);
    }
  }

  private leaf(baseGfn: number, depth: Depth, id: number, hostOf: bigint): SoftMmuLeaf {
    const d = this.descriptors[id - 1]!;
    const out: SoftMmuLeaf = {
      gpa: BigInt(baseGfn) << 12n,
      level: LEVEL_AT[depth]!,
      slot: d.slot,
      private: d.private,
      writable: d.writable,
    };
    if (d.hostDelta !== undefined) out.hostAddress = hostOf + d.hostDelta;
    return out;
  }

  /** The interned descriptor of `info` for a leaf starting at `gpa`. */
  private descriptorId(info: SoftMappingInfo, gpa: bigint): number {
    if (!Number.isInteger(info.slot)) throw new RangeError(`invalid slot ${info.slot}`);
    const hostDelta = info.hostAddress === undefined ? undefined : info.hostAddress - gpa;
    const last = this.lastDescriptor;
    // Callers map page after page of one slot: skip building a key string for each.
    if (last !== undefined && last.slot === info.slot && last.private === info.private
      && last.writable === info.writable && last.hostDelta === hostDelta) {
      return this.lastDescriptorId;
    }
    const key = `${info.slot}|${info.private ? 1 : 0}|${info.writable ? 1 : 0}|${hostDelta ?? ''}`;
    let id = this.descriptorIds.get(key);
    if (id === undefined) {
      this.descriptors.push({ slot: info.slot, private: info.private, writable: info.writable, hostDelta });
      id = this.descriptors.length;
      this.descriptorIds.set(key, id);
    }
    this.lastDescriptor = this.descriptors[id - 1];
    this.lastDescriptorId = id;
    return id;
  }

  /** Whether an existing huge leaf already stands for a smaller mapping described by `id`. */
  private covers(existingId: number, id: number): boolean {
    const a = this.descriptors[existingId - 1]!;
    const b = this.descriptors[id - 1]!;
    return a.slot === b.slot && a.private === b.private;
  }

  /**
   * The table at `depth` holding gfn's entry, creating tables on the way. Returns
   * undefined when a covering huge leaf above already maps gfn; removes a
   * covering huge leaf that is incompatible.
   */
  private descend(gfn: number, depth: Depth, id: number): Table | undefined {
    const rootIndex = Math.floor(gfn / SPAN[0]);
    let table = this.root.get(rootIndex);
    if (table === undefined) {
      table = new Table(true);
      this.root.set(rootIndex, table);
      this.tableCount++;
    }
    for (const d of DEPTHS) {
      if (d >= depth) break;
      const idx = indexAt(gfn, d);
      const existing = table.leaves[idx] ?? 0;
      if (existing !== 0) {
        if (this.covers(existing, id)) return undefined;
        this.removeLeaf(table, idx, d);
        this.zapCount++;
      }
      const children: (Table | undefined)[] = table.children!;
      let child: Table | undefined = children[idx];
      if (child === undefined) {
        child = new Table(d + 1 < 3);
        children[idx] = child;
        table.used++;
        this.tableCount++;
      }
      table = child;
    }
    return table;
  }

  /** Put leaf `id` in entry `idx` of a table at `depth`, dropping any subtree there. */
  private setLeaf(table: Table, idx: number, depth: Depth, id: number): void {
    if ((table.leaves[idx] ?? 0) !== 0) {
      table.leaves[idx] = id;
      return;
    }
    const child = table.children?.[idx];
    if (child !== undefined) {
      this.zapCount += this.dropSubtree(child, (depth + 1) as Depth);
      table.children![idx] = undefined;
      table.used--;
    }
    table.leaves[idx] = id;
    table.used++;
    this.leafCount[depth]!++;
    this.mappedPages += SPAN[depth];
  }

  /** Fill `count` PT entries from `first` with leaf `id`; the mapRange hot loop. */
  private fillPt(table: Table, first: number, count: number, id: number): void {
    const leaves = table.leaves;
    let added = 0;
    for (let i = first; i < first + count; i++) {
      if (leaves[i] === 0) added++;
      leaves[i] = id;
    }
    table.used += added;
    this.leafCount[3]! += added;
    this.mappedPages += added;
  }

  private removeLeaf(table: Table, idx: number, depth: Depth): void {
    table.leaves[idx] = 0;
    table.used--;
    this.leafCount[depth]!--;
    this.mappedPages -= SPAN[depth];
  }

  /** Forget a whole table and everything under it; returns the leaves it held. */
  private dropSubtree(table: Table, depth: Depth): number {
    this.tableCount--;
    if (depth === 3) {
      // A PT holds only leaves, so its `used` is its leaf count: no need to scan it.
      this.leafCount[3]! -= table.used;
      this.mappedPages -= table.used;
      return table.used;
    }
    let removed = 0;
    for (let idx = 0, seen = 0; idx < ENTRIES && seen < table.used; idx++) {
      if ((table.leaves[idx] ?? 0) !== 0) {
        seen++;
        removed++;
        this.leafCount[depth]!--;
        this.mappedPages -= SPAN[depth];
        continue;
      }
      const child = table.children?.[idx];
      if (child !== undefined) {
        seen++;
        removed += this.dropSubtree(child, (depth + 1) as Depth);
      }
    }
    return removed;
  }

  /** Remove leaves overlapping gfns [startGfn, endGfn) that `victim` accepts (all when undefined). */
  private zapGfns(startGfn: number, endGfn: number, victim: ((id: number) => boolean) | undefined): number {
    let removed = 0;
    for (const [rootIndex, table] of this.root) {
      const base = rootIndex * SPAN[0];
      if (base >= endGfn || base + SPAN[0] <= startGfn) continue;
      removed += this.zapTable(table, 1, base, startGfn, endGfn, victim);
      if (table.used === 0) {
        this.root.delete(rootIndex); // deleting the current key is safe while iterating a Map
        this.tableCount--;
      }
    }
    this.zapCount += removed;
    return removed;
  }

  private zapTable(
    table: Table, depth: Depth, baseGfn: number, startGfn: number, endGfn: number,
    victim: ((id: number) => boolean) | undefined,
  ): number {
    const span = SPAN[depth];
    const first = startGfn <= baseGfn ? 0 : Math.floor((startGfn - baseGfn) / span);
    const last = Math.min(ENTRIES - 1, Math.floor((endGfn - 1 - baseGfn) / span));
    let removed = 0;
    for (let idx = first; idx <= last && table.used > 0; idx++) {
      const id = table.leaves[idx] ?? 0;
      if (id !== 0) {
        if (victim === undefined || victim(id)) {
          this.removeLeaf(table, idx, depth);
          removed++;
        }
        continue;
      }
      const child = table.children?.[idx];
      if (child === undefined) continue;
      const childBase = baseGfn + idx * span;
      const next = (depth + 1) as Depth;
      if (victim === undefined && startGfn <= childBase && childBase + span <= endGfn) {
        // Wholly inside the range: drop the subtree without visiting each entry's range.
        removed += this.dropSubtree(child, next);
      } else {
        removed += this.zapTable(child, next, childBase, startGfn, endGfn, victim);
        if (child.used !== 0) continue;
        this.tableCount--;
      }
      table.children![idx] = undefined;
      table.used--;
    }
    return removed;
  }
}

function levelBytes(level: PageLevel): bigint {
  if (!isPageLevel(level)) throw new RangeError(`invalid page level ${String(level)}`);
  return LEVEL_SIZE[level];
}

/** Validate a mapping request: aligned to the level, non-empty, below 2^52. */
function checkRange(gpa: bigint, size: bigint, level: PageLevel): void {
  const bytes = levelBytes(level);
  const mask = bytes - 1n;
  if (gpa < 0n || (gpa & mask) !== 0n) {
    throw new RangeError(`gpa 0x${gpa.toString(16)} is not aligned to ${level}`);
  }
  if (size <= 0n || (size & mask) !== 0n) {
    throw new RangeError(`size 0x${size.toString(16)} is not a positive multiple of ${level}`);
  }
  if (gpa + size > SOFT_MMU_GPA_LIMIT) {
    throw new RangeError(`range ending at 0x${(gpa + size).toString(16)} passes the 2^52 gpa limit`);
  }
}
