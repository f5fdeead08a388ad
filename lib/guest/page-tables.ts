/**
 * Builds 4-level x86-64 identity page tables (guest virtual = guest physical)
 * into a host buffer that mirrors guest memory, for 64-bit guests running at
 * CPL3. The user bit is set at every level, because a CPL3 access needs U=1 in
 * every entry of the walk; see the host facts on which guests run natively under
 * kvm_pvm.
 *
 * Pure data manipulation: no KVM calls, so it can be unit-tested anywhere.
 *
 * @module
 */
import { guestArgumentError } from './guest-error.js';

/** Page size of one mapped range. */
export type PageSize = '4k' | '2m';

/** One guest-physical range to identity-map. */
export interface IdentityRange {
  /** First guest-physical (= guest-virtual) address; aligned to the page size. */
  gpa: number | bigint;
  /** Length in bytes; a non-zero multiple of the page size. */
  size: number | bigint;
  /** Leaf page size. 4k ranges need only 4 KiB alignment. */
  pageSize: PageSize;
  /** Leave false to map the range read-only (R/W = 0 in the leaves). Default true. */
  writable?: boolean;
}

/** Input of {@link buildIdentityPageTables}. */
export interface BuildIdentityPageTablesOptions {
  /** Host view of guest memory starting at `memoryGpa`; the tables are written here. */
  memory: Uint8Array;
  /** Guest-physical address of `memory[0]`. */
  memoryGpa: number | bigint;
  /** Where the tables go: 4 KiB aligned, inside `memory`. The PML4 comes first. */
  tablesGpa: number | bigint;
  /**
   * Bytes reserved for the tables from `tablesGpa`; default: up to the end of
   * `memory`. Exceeding it throws a RangeError, so the tables never overwrite
   * whatever the caller put after them.
   */
  tablesSize?: number | bigint;
  /**
   * Ranges to map. Ranges may overlap only if they agree on page size; where
   * they overlap, the later range's leaf entries (e.g. its writable flag) win.
   */
  ranges: readonly IdentityRange[];
}

/** Output of {@link buildIdentityPageTables}. */
export interface PageTablesResult {
  /** Value for CR3: the PML4's guest-physical address (no PCID, no PWT/PCD). */
  cr3: bigint;
  /** Bytes of `memory` written from `tablesGpa` (a multiple of 4096). */
  bytesUsed: number;
}

/** Page-table entry bit: present. */
export const PTE_PRESENT = 1n << 0n;
/** Page-table entry bit: writable. */
export const PTE_WRITABLE = 1n << 1n;
/** Page-table entry bit: user-accessible (needed at every level for CPL3). */
export const PTE_USER = 1n << 2n;
/** Page-table entry bit: accessed (set by the CPU). */
export const PTE_ACCESSED = 1n << 5n;
/** Page-table entry bit: dirty (set by the CPU on writes to a leaf). */
export const PTE_DIRTY = 1n << 6n;
/** Page-directory entry bit: this entry maps a 2 MiB page (PS). */
export const PTE_LARGE = 1n << 7n;
/** Mask of the physical address bits 51:12 in an entry. */
export const PTE_ADDR_MASK = 0x000f_ffff_ffff_f000n;

/** Size of one page-table page. */
export const PAGE_TABLE_BYTES = 4096;

/**
 * Highest address + 1 that 4-level paging can identity-map: virtual addresses
 * must be canonical, and the upper half (bit 47 set) would need physical
 * addresses above 2^64 - 2^47, so identity maps stop at 2^47 (128 TiB).
 */
export const IDENTITY_MAP_LIMIT = 1n << 47n;

/** Bytes of page tables {@link defaultIdentityMap4G} writes: PML4 + PDPT + 4 PDs. */
export const IDENTITY_MAP_4G_TABLES_BYTES = 6 * PAGE_TABLE_BYTES;

const SIZE_4K = 1n << 12n;
const SIZE_2M = 1n << 21n;
const SIZE_1G = 1n << 30n;
const SIZE_512G = 1n << 39n;
/** Present + writable + user: what every non-leaf entry gets, so leaves decide. */
const TABLE_FLAGS = PTE_PRESENT | PTE_WRITABLE | PTE_USER;

function big(v: number | bigint, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw guestArgumentError(`${what} must be an integer (safe number or bigint), got ${String(v)}`);
  }
  return BigInt(v);
}

interface NormRange {
  gpa: bigint;
  end: bigint;
  step: bigint;
  leafFlags: bigint;
}

/**
 * Identity-map `ranges` with 4-level page tables written into `memory` at
 * `tablesGpa`, and return CR3.
 *
 * Entry formats: PML4 and PDPT entries and PDEs pointing at page tables are
 * `addr | 7` (present, writable, user); 2 MiB PDEs are `addr | 0x87`; 4 KiB PTEs
 * are `addr | 7` (without the writable bit for read-only ranges). Table pages are
 * zeroed before use, and allocated in the order PML4, then as first needed.
 *
 * Throws RangeError when the tables do not fit (the message says how much is
 * needed), for misaligned or out-of-range input, and Error when two ranges map
 * the same 2 MiB region with different page sizes.
 */
export function buildIdentityPageTables(opts: BuildIdentityPageTablesOptions): PageTablesResult {
  const { memory } = opts;
  if (!(memory instanceof Uint8Array)) throw guestArgumentError('memory must be a Uint8Array');
  const memGpa = big(opts.memoryGpa, 'memoryGpa');
  const tablesGpa = big(opts.tablesGpa, 'tablesGpa');
  const memEnd = memGpa + BigInt(memory.byteLength);
  if (memGpa < 0n) throw guestArgumentError(`memoryGpa must be >= 0, got ${memGpa}`);
  if (tablesGpa % SIZE_4K !== 0n) throw guestArgumentError(`tablesGpa 0x${tablesGpa.toString(16)} is not 4 KiB aligned`);
  if (tablesGpa < memGpa || tablesGpa >= memEnd) {
    throw guestArgumentError(
      `tablesGpa 0x${tablesGpa.toString(16)} is outside memory [0x${memGpa.toString(16)}, 0x${memEnd.toString(16)})`,
    );
  }
  const available = opts.tablesSize === undefined ? memEnd - tablesGpa : big(opts.tablesSize, 'tablesSize');
  if (available < 0n || tablesGpa + available > memEnd) {
    throw guestArgumentError(`tablesSize ${available} reaches past the end of memory`);
  }

  const ranges: NormRange[] = opts.ranges.map((r, i) => {
    const gpa = big(r.gpa, `ranges[${i}].gpa`);
    const size = big(r.size, `ranges[${i}].size`);
    if (r.pageSize !== '4k' && r.pageSize !== '2m') {
      throw guestArgumentError(`ranges[${i}].pageSize must be '4k' or '2m', got ${JSON.stringify(r.pageSize)}`);
    }
    const step = r.pageSize === '2m' ? SIZE_2M : SIZE_4K;
    if (size <= 0n) throw guestArgumentError(`ranges[${i}].size must be > 0, got ${size}`);
    if (gpa < 0n || gpa % step !== 0n || size % step !== 0n) {
      throw guestArgumentError(
        `ranges[${i}] (gpa 0x${gpa.toString(16)}, size 0x${size.toString(16)}) is not ${r.pageSize} aligned`,
      );
    }
    if (gpa + size > IDENTITY_MAP_LIMIT) {
      throw guestArgumentError(
        `ranges[${i}] ends at 0x${(gpa + size).toString(16)}, above the 4-level identity-map limit 2^47`,
      );
    }
    const leafFlags =
      (r.writable === false ? PTE_PRESENT | PTE_USER : TABLE_FLAGS) | (step === SIZE_2M ? PTE_LARGE : 0n);
    return { gpa, end: gpa + size, step, leafFlags };
  });

  // Pass 1: find which tables are needed, so an overflow is reported with the
  // full requirement before anything is written. Keys are the address bits above
  // what one table of that level covers.
  const pdpts = new Set<bigint>(); // va >> 39
  const pds = new Set<bigint>(); // va >> 30
  const pts = new Set<bigint>(); // va >> 21, 2 MiB regions mapped with 4 KiB pages
  const large = new Set<bigint>(); // va >> 21, 2 MiB regions mapped by one PDE
  for (const r of ranges) {
    for (let va = r.gpa; va < r.end; va = (va | (SIZE_2M - 1n)) + 1n) {
      pdpts.add(va / SIZE_512G);
      pds.add(va / SIZE_1G);
      const region = va / SIZE_2M;
      if (r.step === SIZE_4K) pts.add(region);
      else large.add(region);
      if (pts.has(region) && large.has(region)) {
        throw guestArgumentError(
          `the 2 MiB region at 0x${(region * SIZE_2M).toString(16)} is mapped with both 4k and 2m pages`,
        );
      }
    }
  }
  const tablesNeeded = 1 + pdpts.size + pds.size + pts.size;
  const bytesNeeded = BigInt(tablesNeeded) * BigInt(PAGE_TABLE_BYTES);
  if (bytesNeeded > available) {
    throw guestArgumentError(
      `page tables need ${bytesNeeded} bytes (${tablesNeeded} tables of 4 KiB) at 0x${tablesGpa.toString(16)}, ` +
        `but only ${available} bytes are available`,
    );
  }

  // Pass 2: allocate and fill.
  const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  const offsetOf = (gpa: bigint): number => Number(gpa - memGpa);
  let next = tablesGpa;
  const alloc = (): bigint => {
    const gpa = next;
    next += BigInt(PAGE_TABLE_BYTES);
    const off = offsetOf(gpa);
    memory.fill(0, off, off + PAGE_TABLE_BYTES);
    return gpa;
  };
  const read = (table: bigint, index: bigint): bigint => view.getBigUint64(offsetOf(table) + Number(index) * 8, true);
  const write = (table: bigint, index: bigint, value: bigint): void =>
    view.setBigUint64(offsetOf(table) + Number(index) * 8, value, true);
  /** The table an entry points to, allocating and linking a fresh one if absent. */
  const child = (table: bigint, index: bigint): bigint => {
    const e = read(table, index);
    if (e & PTE_PRESENT) return e & PTE_ADDR_MASK;
    const t = alloc();
    write(table, index, t | TABLE_FLAGS);
    return t;
  };

  const pml4 = alloc();
  for (const r of ranges) {
    for (let va = r.gpa; va < r.end; ) {
      const pdpt = child(pml4, (va >> 39n) & 511n);
      const pd = child(pdpt, (va >> 30n) & 511n);
      const pdIndex = (va >> 21n) & 511n;
      if (r.step === SIZE_2M) {
        write(pd, pdIndex, va | r.leafFlags);
        va += SIZE_2M;
        continue;
      }
      // Fill this range's part of one page table in a tight loop rather than
      // walking from the PML4 for every 4 KiB page.
      const pt = child(pd, pdIndex);
      const regionEnd = (va | (SIZE_2M - 1n)) + 1n;
      const stop = r.end < regionEnd ? r.end : regionEnd;
      for (; va < stop; va += SIZE_4K) write(pt, (va >> 12n) & 511n, va | r.leafFlags);
    }
  }

  return { cr3: pml4, bytesUsed: Number(next - tablesGpa) };
}

/** Input of {@link defaultIdentityMap4G}. */
export interface DefaultIdentityMapOptions {
  /** Host view of guest memory starting at `memoryGpa`. */
  memory: Uint8Array;
  /** Guest-physical address of `memory[0]`. Default 0. */
  memoryGpa?: number | bigint;
  /** Where the 24 KiB of tables go (4 KiB aligned, inside memory). */
  tablesGpa: number | bigint;
}

/**
 * The set-up known to run natively under kvm_pvm: guest addresses 0-4 GiB
 * identity-mapped with 2 MiB pages, user bit everywhere. Writes
 * {@link IDENTITY_MAP_4G_TABLES_BYTES} bytes at `tablesGpa`. Memory that is not
 * backed by a memslot may still be mapped; touching it exits to the host.
 */
export function defaultIdentityMap4G(opts: DefaultIdentityMapOptions): PageTablesResult {
  return buildIdentityPageTables({
    memory: opts.memory,
    memoryGpa: opts.memoryGpa ?? 0n,
    tablesGpa: opts.tablesGpa,
    ranges: [{ gpa: 0n, size: 4n * SIZE_1G, pageSize: '2m' }],
  });
}
