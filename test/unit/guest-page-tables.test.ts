import { KvmError } from '../../lib/errors.js';
import { describe, it, expect } from 'vitest';
import {
  buildIdentityPageTables,
  defaultIdentityMap4G,
  IDENTITY_MAP_4G_TABLES_BYTES,
  type IdentityRange,
} from '../../lib/guest/page-tables.js';

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;

interface Walk {
  pa: bigint;
  pageSize: '4k' | '2m' | '1g';
  /** Raw entries met on the way, PML4E first. */
  entries: bigint[];
}

/**
 * A small 4-level walker, written from the architecture manual independently of
 * the builder: returns where `va` maps, or undefined if some level is not
 * present or the table lies outside `memory`.
 */
function walk(memory: Uint8Array, memoryGpa: bigint, cr3: bigint, va: bigint): Walk | undefined {
  const dv = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  const entries: bigint[] = [];
  let table = cr3 & ~0xfffn;
  for (const shift of [39n, 30n, 21n, 12n]) {
    const off = table - memoryGpa + ((va >> shift) & 0x1ffn) * 8n;
    if (off < 0n || off + 8n > BigInt(memory.byteLength)) return undefined;
    const e = dv.getBigUint64(Number(off), true);
    entries.push(e);
    if ((e & 1n) === 0n) return undefined;
    const addr = e & 0x000f_ffff_ffff_f000n;
    const large = (e & 0x80n) !== 0n;
    if (shift === 12n) return { pa: addr | (va & 0xfffn), pageSize: '4k', entries };
    if (shift === 21n && large) return { pa: (addr & ~(M2 - 1n)) | (va & (M2 - 1n)), pageSize: '2m', entries };
    if (shift === 30n && large) return { pa: (addr & ~(G1 - 1n)) | (va & (G1 - 1n)), pageSize: '1g', entries };
    table = addr;
  }
  return undefined;
}

function entryAt(memory: Uint8Array, memoryGpa: bigint, gpa: bigint): bigint {
  return new DataView(memory.buffer, memory.byteOffset).getBigUint64(Number(gpa - memoryGpa), true);
}

/** Assert `va` is identity mapped with the expected leaf, U at every level. */
function expectIdentity(
  memory: Uint8Array,
  memoryGpa: bigint,
  cr3: bigint,
  va: bigint,
  pageSize: '4k' | '2m',
  writable = true,
): void {
  const w = walk(memory, memoryGpa, cr3, va);
  expect(w, `0x${va.toString(16)} should be mapped`).toBeDefined();
  expect(w!.pa).toBe(va);
  expect(w!.pageSize).toBe(pageSize);
  const leaf = w!.entries[w!.entries.length - 1]!;
  for (const e of w!.entries.slice(0, -1)) expect(e & 0xfffn).toBe(0x7n);
  expect(leaf & 0xfffn).toBe(pageSize === '2m' ? (writable ? 0x87n : 0x85n) : writable ? 0x7n : 0x5n);
  // No stray high bits (NX, protection keys, ...).
  for (const e of w!.entries) expect(e >> 52n).toBe(0n);
}

describe('defaultIdentityMap4G', () => {
  it('maps 0-4 GiB with 2 MiB pages in 6 tables', () => {
    const memory = new Uint8Array(0x20_0000).fill(0xcc); // garbage must be cleared
    const r = defaultIdentityMap4G({ memory, tablesGpa: 0x1000n });
    expect(r).toEqual({ cr3: 0x1000n, bytesUsed: IDENTITY_MAP_4G_TABLES_BYTES });
    expect(IDENTITY_MAP_4G_TABLES_BYTES).toBe(0x6000);
    // Exact entries: PML4[0] -> PDPT at 0x2000, PDPT[i] -> PD i at 0x3000 + i*0x1000.
    expect(entryAt(memory, 0n, 0x1000n)).toBe(0x2007n);
    expect(entryAt(memory, 0n, 0x1008n)).toBe(0n);
    for (let i = 0n; i < 4n; i++) expect(entryAt(memory, 0n, 0x2000n + i * 8n)).toBe(0x3000n + i * 0x1000n + 7n);
    expect(entryAt(memory, 0n, 0x2020n)).toBe(0n);
    expect(entryAt(memory, 0n, 0x3000n)).toBe(0x87n);
    expect(entryAt(memory, 0n, 0x3008n)).toBe(0x20_0087n);
    expect(entryAt(memory, 0n, 0x6ff8n)).toBe(0xffe0_0087n);
    for (const va of [0n, 0x1234n, 0x1f_ffffn, 0x20_0000n, 0x8000_0000n, 0xdead_beefn, 0xffff_ffffn]) {
      expectIdentity(memory, 0n, r.cr3, va, '2m');
    }
    expect(walk(memory, 0n, r.cr3, 0x1_0000_0000n)).toBeUndefined();
    // Bytes after the tables are untouched.
    expect(memory[0x7000]).toBe(0xcc);
    expect(memory[0xfff]).toBe(0xcc);
  });

  it('works with memory at a non-zero gpa and reports lack of space', () => {
    const memory = new Uint8Array(0x10000);
    const r = defaultIdentityMap4G({ memory, memoryGpa: 0x10_0000n, tablesGpa: 0x10_4000n });
    expect(r.cr3).toBe(0x10_4000n);
    expectIdentity(memory, 0x10_0000n, r.cr3, 0xc000_0000n, '2m');
    expect(() => defaultIdentityMap4G({ memory, memoryGpa: 0x10_0000n, tablesGpa: 0x10_b000n })).toThrow(
      /page tables need 24576 bytes \(6 tables/,
    );
  });
});

describe('buildIdentityPageTables', () => {
  it('maps a 4k range that is not 2 MiB aligned and crosses a 2 MiB boundary', () => {
    const memory = new Uint8Array(0x10000).fill(0xff);
    const range: IdentityRange = { gpa: 0x1f_d000n, size: 0x5000n, pageSize: '4k' };
    const r = buildIdentityPageTables({ memory, memoryGpa: 0n, tablesGpa: 0x2000n, ranges: [range] });
    expect(r.cr3).toBe(0x2000n);
    // PML4, PDPT, PD, and one page table per 2 MiB region touched.
    expect(r.bytesUsed).toBe(5 * 0x1000);
    for (let va = 0x1f_d000n; va < 0x20_2000n; va += K4) {
      expectIdentity(memory, 0n, r.cr3, va, '4k');
      expectIdentity(memory, 0n, r.cr3, va + 0xabcn, '4k');
    }
    expect(walk(memory, 0n, r.cr3, 0x1f_c000n)).toBeUndefined();
    expect(walk(memory, 0n, r.cr3, 0x20_2000n)).toBeUndefined();
    expect(walk(memory, 0n, r.cr3, 0n)).toBeUndefined();
    // The page tables point at each other with |7.
    expect(entryAt(memory, 0n, 0x2000n)).toBe(0x3007n);
    expect(entryAt(memory, 0n, 0x3000n)).toBe(0x4007n);
    expect(entryAt(memory, 0n, 0x4000n + 0n * 8n)).toBe(0x5007n);
    expect(entryAt(memory, 0n, 0x4000n + 1n * 8n)).toBe(0x6007n);
    expect(entryAt(memory, 0n, 0x5000n + 0x1fdn * 8n)).toBe(0x1f_d007n);
    expect(entryAt(memory, 0n, 0x6000n + 1n * 8n)).toBe(0x20_1007n);
    // Unused entries were zeroed despite the 0xff fill.
    expect(entryAt(memory, 0n, 0x5000n)).toBe(0n);
    expect(memory[0x7000]).toBe(0xff);
  });

  it('maps ranges near and above 2^40 with both page sizes, tables in high memory', () => {
    const memoryGpa = (1n << 40n) + 0x100_0000n;
    const memory = new Uint8Array(0x20000);
    const ranges: IdentityRange[] = [
      // Straddles 2^40, i.e. PML4 entries 1 and 2.
      { gpa: (1n << 40n) - M2, size: 2n * M2, pageSize: '2m' },
      // Unaligned 4k range just above 4 GiB.
      { gpa: 0x1_0000_3000n, size: 0x2000n, pageSize: '4k' },
      // Last page below the 2^47 identity-map limit.
      { gpa: (1n << 47n) - K4, size: K4, pageSize: '4k' },
    ];
    const r = buildIdentityPageTables({ memory, memoryGpa, tablesGpa: memoryGpa + 0x3000n, ranges });
    expect(r.cr3).toBe(memoryGpa + 0x3000n);
    // PML4; PDPTs for PML4 indices 1 (2^40 - 2 MiB), 2 (2^40), 0 (4 GiB) and
    // 255 (2^47 - 4 KiB); one PD under each; page tables for the two 4k ranges.
    expect(r.bytesUsed).toBe((1 + 4 + 4 + 2) * 0x1000);
    expectIdentity(memory, memoryGpa, r.cr3, (1n << 40n) - M2, '2m');
    expectIdentity(memory, memoryGpa, r.cr3, (1n << 40n) - 1n, '2m');
    expectIdentity(memory, memoryGpa, r.cr3, 1n << 40n, '2m');
    expectIdentity(memory, memoryGpa, r.cr3, (1n << 40n) + M2 - 8n, '2m');
    expect(walk(memory, memoryGpa, r.cr3, (1n << 40n) + M2)).toBeUndefined();
    expect(walk(memory, memoryGpa, r.cr3, (1n << 40n) - M2 - 1n)).toBeUndefined();
    expectIdentity(memory, memoryGpa, r.cr3, 0x1_0000_3000n, '4k');
    expectIdentity(memory, memoryGpa, r.cr3, 0x1_0000_4fffn, '4k');
    expect(walk(memory, memoryGpa, r.cr3, 0x1_0000_5000n)).toBeUndefined();
    expect(walk(memory, memoryGpa, r.cr3, 0x1_0000_2000n)).toBeUndefined();
    expectIdentity(memory, memoryGpa, r.cr3, (1n << 47n) - 1n, '4k');
    // The 2 MiB leaf holds the full 41-bit address.
    const w = walk(memory, memoryGpa, r.cr3, 1n << 40n)!;
    expect(w.entries[2]).toBe((1n << 40n) | 0x87n);
  });

  it('maps large 2m ranges (64 GiB)', () => {
    const memory = new Uint8Array(0x50000);
    const r = buildIdentityPageTables({
      memory, memoryGpa: 0n, tablesGpa: 0n, ranges: [{ gpa: 0n, size: 64n * G1, pageSize: '2m' }],
    });
    expect(r.bytesUsed).toBe((1 + 1 + 64) * 0x1000);
    for (const va of [0n, 5n * G1 + 0x12345n, 64n * G1 - 1n]) expectIdentity(memory, 0n, r.cr3, va, '2m');
    expect(walk(memory, 0n, r.cr3, 64n * G1)).toBeUndefined();
  });

  it('shares tables between ranges, mixes page sizes per 2 MiB region, and honours writable: false', () => {
    const memory = new Uint8Array(0x10000);
    const r = buildIdentityPageTables({
      memory, memoryGpa: 0n, tablesGpa: 0x8000n,
      ranges: [
        { gpa: 0n, size: M2, pageSize: '4k' },
        { gpa: M2, size: M2, pageSize: '2m', writable: false },
        { gpa: 2n * M2, size: K4, pageSize: '4k', writable: false },
        { gpa: 0x1000n, size: 0x1000n, pageSize: '4k' }, // overlap with the same page size: harmless
      ],
    });
    expect(r.bytesUsed).toBe((1 + 1 + 1 + 2) * 0x1000);
    expectIdentity(memory, 0n, r.cr3, 0x1000n, '4k');
    expectIdentity(memory, 0n, r.cr3, 0x1f_f000n, '4k');
    expectIdentity(memory, 0n, r.cr3, M2 + 0x1234n, '2m', false);
    expectIdentity(memory, 0n, r.cr3, 2n * M2, '4k', false);
    expect(walk(memory, 0n, r.cr3, 2n * M2 + K4)).toBeUndefined();
  });

  it('throws KvmError (EINVAL) with the requirement when the tables do not fit', () => {
    const memory = new Uint8Array(0x4000);
    const ranges: IdentityRange[] = [{ gpa: 0n, size: K4, pageSize: '4k' }];
    // Needs PML4 + PDPT + PD + PT = 4 pages; only 3 available after 0x1000.
    expect(() => buildIdentityPageTables({ memory, memoryGpa: 0n, tablesGpa: 0x1000n, ranges })).toThrow(
      /page tables need 16384 bytes \(4 tables of 4 KiB\) at 0x1000, but only 12288 bytes are available/,
    );
    expect(() =>
      buildIdentityPageTables({ memory, memoryGpa: 0n, tablesGpa: 0n, tablesSize: 0x2000, ranges }),
    ).toThrow(KvmError);
    // Nothing is written when the check fails.
    expect(memory.every((b) => b === 0)).toBe(true);
    // Exactly enough space is fine.
    expect(buildIdentityPageTables({ memory, memoryGpa: 0n, tablesGpa: 0n, ranges }).bytesUsed).toBe(0x4000);
  });

  it('rejects bad input', () => {
    const memory = new Uint8Array(0x10000);
    const base = { memory, memoryGpa: 0n, tablesGpa: 0x1000n };
    const bad = (ranges: IdentityRange[], extra: object = {}) => () =>
      buildIdentityPageTables({ ...base, ...extra, ranges });
    expect(bad([], { tablesGpa: 0x1008n })).toThrow(/not 4 KiB aligned/);
    expect(bad([], { tablesGpa: 0x10000n })).toThrow(/outside memory/);
    expect(bad([], { tablesSize: 0x10000 })).toThrow(/past the end of memory/);
    expect(bad([{ gpa: 0x1000n, size: M2, pageSize: '2m' }])).toThrow(/not 2m aligned/);
    expect(bad([{ gpa: 0n, size: 0x1000n, pageSize: '2m' }])).toThrow(/not 2m aligned/);
    expect(bad([{ gpa: 0x800n, size: K4, pageSize: '4k' }])).toThrow(/not 4k aligned/);
    expect(bad([{ gpa: 0n, size: 0n, pageSize: '4k' }])).toThrow(/must be > 0/);
    expect(bad([{ gpa: (1n << 47n) - M2, size: 2n * M2, pageSize: '2m' }])).toThrow(/2\^47/);
    expect(bad([{ gpa: 0n, size: K4, pageSize: '1g' as '2m' }])).toThrow(KvmError);
    expect(
      bad([
        { gpa: 0n, size: K4, pageSize: '4k' },
        { gpa: 0n, size: M2, pageSize: '2m' },
      ]),
    ).toThrow(/both 4k and 2m/);
    expect(bad([{ gpa: 0.5, size: K4, pageSize: '4k' }])).toThrow(KvmError);
  });

  it('accepts numbers as well as bigints', () => {
    const memory = new Uint8Array(0x8000);
    const r = buildIdentityPageTables({
      memory, memoryGpa: 0, tablesGpa: 0x1000, ranges: [{ gpa: 0x40_0000, size: 0x40_0000, pageSize: '2m' }],
    });
    expect(r).toEqual({ cr3: 0x1000n, bytesUsed: 0x3000 });
    expectIdentity(memory, 0n, r.cr3, 0x7f_ffffn, '2m');
  });

  it('works on a Uint8Array view with a byteOffset', () => {
    const backing = new Uint8Array(0x9000).fill(0xee);
    const memory = backing.subarray(0x1000);
    const r = defaultIdentityMap4G({ memory, memoryGpa: 0x40_0000n, tablesGpa: 0x40_0000n });
    expectIdentity(memory, 0x40_0000n, r.cr3, 0x1234_5678n, '2m');
    expect(backing[0xfff]).toBe(0xee);
    expect(backing[0x1000 + 0x6000]).toBe(0xee);
  });
});
