import { describe, it, expect } from 'vitest';
import {
  levelSize, SoftMmu, SOFT_MMU_GPA_LIMIT, type PageLevel, type SoftMmuLeaf,
} from '../../lib/soft-mmu/index.js';

const K4 = 4096n;
const M2 = 2n << 20n;
const G1 = 1n << 30n;
const BASE = 4n * G1;
const shared = (slot: number, hostAddress?: bigint) => ({
  slot, private: false, writable: true, ...(hostAddress === undefined ? {} : { hostAddress }),
});

describe('SoftMmu map/lookup', () => {
  it('maps a 4k leaf and translates any byte in it', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE + K4, '4k', shared(3, 0x7000_0000_1000n));
    expect(mmu.lookup(BASE + K4 + 0x123n)).toEqual({
      gpa: BASE + K4, level: '4k', slot: 3, private: false, writable: true, hostAddress: 0x7000_0000_1123n,
    });
    expect(mmu.lookup(Number(BASE + K4))?.gpa).toBe(BASE + K4);
    expect(mmu.lookup(BASE)).toBeUndefined();
    expect(mmu.lookup(BASE + 2n * K4)).toBeUndefined();
    expect(mmu.lookup(SOFT_MMU_GPA_LIMIT)).toBeUndefined();
    expect(() => mmu.lookup(-1)).toThrow(RangeError);
    expect(() => mmu.lookup(1.5)).toThrow(RangeError);
  });

  it('omits hostAddress when none was recorded; keeps private/writable', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE, '2m', { slot: 1, private: true, writable: false });
    const leaf = mmu.lookup(BASE + M2 - 1n);
    expect(leaf).toEqual({ gpa: BASE, level: '2m', slot: 1, private: true, writable: false });
    expect(leaf && 'hostAddress' in leaf).toBe(false);
  });

  it('rejects unaligned or out-of-range gpas', () => {
    const mmu = new SoftMmu();
    expect(() => mmu.map(BASE + K4, '2m', shared(1))).toThrow(RangeError);
    expect(() => mmu.map(BASE + M2, '1g', shared(1))).toThrow(RangeError);
    expect(() => mmu.map(BASE + 1n, '4k', shared(1))).toThrow(RangeError);
    expect(() => mmu.map(-K4, '4k', shared(1))).toThrow(RangeError);
    expect(() => mmu.map(SOFT_MMU_GPA_LIMIT, '4k', shared(1))).toThrow(RangeError);
    expect(() => mmu.map(0n, '8k' as PageLevel, shared(1))).toThrow(RangeError);
    expect(() => mmu.mapRange(0n, 0n, '4k', shared(1))).toThrow(RangeError);
    expect(() => mmu.mapRange(0n, K4, '2m', shared(1))).toThrow(RangeError);
    expect(() => mmu.mapRange(SOFT_MMU_GPA_LIMIT - K4, 2n * K4, '4k', shared(1))).toThrow(RangeError);
    expect(mmu.stats().tables).toBe(1);
  });

  it('covers the whole 52-bit space (root widened past 48 bits)', () => {
    const mmu = new SoftMmu();
    mmu.map(SOFT_MMU_GPA_LIMIT - G1, '1g', shared(1));
    mmu.map(SOFT_MMU_GPA_LIMIT - G1 - K4, '4k', shared(1));
    mmu.map(0n, '4k', shared(1));
    mmu.map(1n << 48n, '2m', shared(1));
    expect(mmu.lookup(SOFT_MMU_GPA_LIMIT - 1n)?.level).toBe('1g');
    expect([...mmu.entries()].map((e) => e.gpa))
      .toEqual([0n, 1n << 48n, SOFT_MMU_GPA_LIMIT - G1 - K4, SOFT_MMU_GPA_LIMIT - G1]);
  });
});

describe('SoftMmu huge/small interplay', () => {
  it('a huge leaf replaces smaller leaves and frees their tables', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE, '4k', shared(1));
    mmu.map(BASE + 5n * K4, '4k', shared(1));
    expect(mmu.stats()).toEqual({ leaves: { '4k': 2, '2m': 0, '1g': 0 }, tables: 4, bytesMapped: 2n * K4, zaps: 0 });
    mmu.map(BASE, '2m', shared(1));
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 1, '1g': 0 }, tables: 3, bytesMapped: M2, zaps: 2 });
    mmu.map(BASE, '1g', shared(1));
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 0, '1g': 1 }, tables: 2, bytesMapped: G1, zaps: 3 });
    expect(mmu.lookup(BASE + 7n * K4)?.level).toBe('1g');
  });

  it('a small leaf under a huge leaf of the same slot is a no-op', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE, '2m', shared(1, 0x7000_0000_0000n));
    const before = mmu.stats();
    mmu.map(BASE + K4, '4k', shared(1, 0x7000_0000_1000n));
    mmu.mapRange(BASE, M2, '4k', shared(1, 0x7000_0000_0000n));
    expect(mmu.stats()).toEqual(before);
    expect(mmu.lookup(BASE + K4)?.level).toBe('2m');
  });

  it('a small leaf under a huge leaf of another slot or privateness removes the stale huge leaf whole', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE, '2m', shared(1));
    mmu.map(BASE + K4, '4k', shared(2));
    expect(mmu.lookup(BASE)).toBeUndefined();
    expect(mmu.lookup(BASE + K4)).toMatchObject({ level: '4k', slot: 2 });
    expect(mmu.stats()).toEqual({ leaves: { '4k': 1, '2m': 0, '1g': 0 }, tables: 4, bytesMapped: K4, zaps: 1 });

    mmu.map(BASE + G1, '1g', shared(2));
    mmu.map(BASE + G1 + M2, '2m', { slot: 2, private: true, writable: true });
    expect(mmu.lookup(BASE + G1)).toBeUndefined();
    expect(mmu.lookup(BASE + G1 + M2)).toMatchObject({ level: '2m', private: true });
    expect(mmu.stats().zaps).toBe(2);
  });

  it('same position and level overwrites in place', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE, '4k', shared(1));
    mmu.map(BASE, '4k', { slot: 1, private: false, writable: false, hostAddress: 0x1000n });
    expect(mmu.lookup(BASE)).toEqual({ gpa: BASE, level: '4k', slot: 1, private: false, writable: false, hostAddress: 0x1000n });
    expect(mmu.stats()).toEqual({ leaves: { '4k': 1, '2m': 0, '1g': 0 }, tables: 4, bytesMapped: K4, zaps: 0 });
  });
});

describe('SoftMmu zaps', () => {
  it('zapRange removes a partly overlapped huge leaf whole', () => {
    const mmu = new SoftMmu();
    mmu.map(BASE, '2m', shared(1));
    mmu.map(BASE + M2, '2m', shared(1));
    expect(mmu.zapRange(BASE + M2 - K4, K4)).toBe(1);
    expect(mmu.lookup(BASE)).toBeUndefined();
    expect(mmu.lookup(BASE + M2)?.level).toBe('2m');
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 1, '1g': 0 }, tables: 3, bytesMapped: M2, zaps: 1 });
    // a one-byte overlap is enough
    expect(mmu.zapRange(BASE + 2n * M2 - 1n, 1n)).toBe(1);
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 0, '1g': 0 }, tables: 1, bytesMapped: 0n, zaps: 2 });
  });

  it('zapRange works at byte granularity on 4k leaves and frees empty tables', () => {
    const mmu = new SoftMmu();
    mmu.mapRange(BASE, 8n * K4, '4k', shared(1));
    mmu.map(0n, '4k', shared(1)); // same PDPT (one covers 512 GiB), a PD and PT of its own
    expect(mmu.stats().tables).toBe(6);
    expect(mmu.zapRange(BASE + K4 + 0x800n, K4)).toBe(2); // touches pages 1 and 2
    expect([...mmu.entries()].map((e) => (e.gpa - BASE) / K4)).toEqual([-(BASE / K4), 0n, 3n, 4n, 5n, 6n, 7n]);
    expect(mmu.zapRange(0n, K4)).toBe(1);
    expect(mmu.stats().tables).toBe(4);
    expect(mmu.zapRange(BASE, 8n * K4)).toBe(6);
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 0, '1g': 0 }, tables: 1, bytesMapped: 0n, zaps: 9 });
    expect(mmu.zapRange(BASE, 0n)).toBe(0);
    expect(mmu.zapRange(SOFT_MMU_GPA_LIMIT, G1)).toBe(0);
    expect(() => mmu.zapRange(-1n, K4)).toThrow(RangeError);
  });

  it('zapSlot removes only that slot', () => {
    const mmu = new SoftMmu();
    mmu.mapRange(BASE, M2, '4k', shared(1));
    mmu.map(BASE + M2, '2m', shared(2));
    mmu.map(BASE + G1, '1g', { slot: 1, private: true, writable: true });
    expect(mmu.zapSlot(9)).toBe(0);
    expect(mmu.zapSlot(1)).toBe(513);
    expect([...mmu.entries()]).toEqual([
      { gpa: BASE + M2, level: '2m', slot: 2, private: false, writable: true },
    ]);
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 1, '1g': 0 }, tables: 3, bytesMapped: M2, zaps: 513 });
  });

  it('zapAll clears everything but the root', () => {
    const mmu = new SoftMmu();
    mmu.mapRange(BASE, 4n * M2, '2m', shared(1));
    mmu.map(0n, '4k', shared(2));
    expect(mmu.zapAll()).toBe(5);
    expect(mmu.stats()).toEqual({ leaves: { '4k': 0, '2m': 0, '1g': 0 }, tables: 1, bytesMapped: 0n, zaps: 5 });
    expect([...mmu.entries()]).toEqual([]);
    mmu.map(0n, '4k', shared(3, 0x5000n));
    expect(mmu.lookup(0n)).toMatchObject({ slot: 3, hostAddress: 0x5000n });
  });
});

describe('SoftMmu mapRange', () => {
  it('records a contiguous host range', () => {
    const mmu = new SoftMmu();
    mmu.mapRange(BASE + 510n * K4, 4n * K4, '4k', shared(1, 0x7f00_0000_0000n));
    for (let i = 0n; i < 4n; i++) {
      expect(mmu.lookup(BASE + (510n + i) * K4 + 8n)?.hostAddress).toBe(0x7f00_0000_0000n + i * K4 + 8n);
    }
    expect(mmu.stats().tables).toBe(5); // root, PDPT, PD, two PTs
    mmu.mapRange(BASE + 2n * G1, 2n * G1, '1g', shared(1));
    expect(mmu.stats().leaves['1g']).toBe(2);
  });

  it('maps 1 GiB of 4k pages (262,144 leaves) and zaps it', () => {
    const mmu = new SoftMmu();
    const t0 = performance.now();
    mmu.mapRange(BASE, G1, '4k', shared(1, 0x7f00_0000_0000n));
    const t1 = performance.now();
    expect(mmu.stats()).toEqual({
      leaves: { '4k': 262144, '2m': 0, '1g': 0 }, tables: 3 + 512, bytesMapped: G1, zaps: 0,
    });
    expect(mmu.lookup(BASE + G1 - 1n)).toMatchObject({ gpa: BASE + G1 - K4, hostAddress: 0x7f00_0000_0000n + G1 - 1n });
    expect(mmu.zapRange(BASE, G1)).toBe(262144);
    expect(mmu.stats().tables).toBe(1);
    console.log(`mapRange of 262,144 4k pages: ${(t1 - t0).toFixed(1)} ms`);
  });

  it('maps 262,144 4k pages one map() at a time', () => {
    const mmu = new SoftMmu();
    const t0 = performance.now();
    for (let i = 0n; i < 262144n; i++) mmu.map(BASE + i * K4, '4k', shared(1, 0x7f00_0000_0000n + i * K4));
    const t1 = performance.now();
    expect(mmu.stats().leaves['4k']).toBe(262144);
    expect(mmu.zapSlot(1)).toBe(262144);
    expect(mmu.stats().tables).toBe(1);
    console.log(`map() x 262,144 4k pages: ${(t1 - t0).toFixed(1)} ms`);
  });
});

type NaiveLeaf = { gpa: bigint; level: PageLevel; slot: number; private: boolean };

/**
 * A deliberately naive model of the same rules (leaves keyed by base gpa, which
 * is unique since leaves never overlap), to check the radix tree against.
 */
class NaiveMmu {
  leaves = new Map<bigint, NaiveLeaf>();
  zaps = 0;

  map(gpa: bigint, level: PageLevel, slot: number, priv: boolean): void {
    const size = levelSize(level);
    for (const big of ['2m', '1g'] as const) {
      if (levelSize(big) <= size) continue;
      const cover = this.leaves.get(gpa & ~(levelSize(big) - 1n));
      if (cover === undefined || cover.level !== big) continue;
      if (cover.slot === slot && cover.private === priv) return;
      this.remove((l) => l === cover);
    }
    const same = this.leaves.get(gpa);
    if (same !== undefined && same.level === level) {
      same.slot = slot;
      same.private = priv;
      return;
    }
    if (level !== '4k') this.remove((l) => l.gpa >= gpa && l.gpa + levelSize(l.level) <= gpa + size);
    this.leaves.set(gpa, { gpa, level, slot, private: priv });
  }

  zapRange(gpa: bigint, size: bigint): number {
    if (size === 0n) return 0;
    return this.remove((l) => l.gpa < gpa + size && l.gpa + levelSize(l.level) > gpa);
  }

  zapSlot(slot: number): number {
    return this.remove((l) => l.slot === slot);
  }

  remove(pred: (l: NaiveLeaf) => boolean): number {
    let n = 0;
    for (const [k, l] of this.leaves) {
      if (pred(l)) {
        this.leaves.delete(k);
        n++;
      }
    }
    this.zaps += n;
    return n;
  }

  sorted(): NaiveLeaf[] {
    return [...this.leaves.values()].map((l) => ({ ...l })).sort((a, b) => (a.gpa < b.gpa ? -1 : 1));
  }

  all(): NaiveLeaf[] {
    return [...this.leaves.values()];
  }
}

describe('SoftMmu against a naive model', () => {
  it('agrees over random maps and zaps', () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const mmu = new SoftMmu();
    const naive = new NaiveMmu();
    const levels: PageLevel[] = ['4k', '4k', '4k', '2m', '2m', '1g'];
    // A window of 2 GiB + a bit, across a 512 GiB root boundary, so every table level churns.
    const window0 = (1n << 39n) - G1;
    for (let op = 0; op < 2000; op++) {
      const kind = rand(20);
      const gpa = window0 + BigInt(rand(2 * 262144 + 1024)) * K4;
      if (kind < 14) {
        const level = levels[rand(levels.length)]!;
        const aligned = gpa & ~(levelSize(level) - 1n);
        const slot = 1 + rand(3);
        const priv = rand(4) === 0;
        if (rand(3) === 0 && level === '4k') {
          const n = BigInt(1 + rand(400));
          mmu.mapRange(aligned, n * K4, '4k', { slot, private: priv, writable: true });
          for (let i = 0n; i < n; i++) naive.map(aligned + i * K4, '4k', slot, priv);
        } else {
          mmu.map(aligned, level, { slot, private: priv, writable: true });
          naive.map(aligned, level, slot, priv);
        }
      } else if (kind < 19) {
        const size = BigInt(rand(3 * 1024 * 1024));
        expect(mmu.zapRange(gpa, size)).toBe(naive.zapRange(gpa, size));
      } else {
        const slot = 1 + rand(3);
        expect(mmu.zapSlot(slot)).toBe(naive.zapSlot(slot));
      }
      if (op % 100 === 0 || op === 1999) {
        const got = [...mmu.entries()].map(({ gpa: g, level, slot, private: p }: SoftMmuLeaf) => ({
          gpa: g, level, slot, private: p,
        }));
        expect(got).toEqual(naive.sorted());
        const s = mmu.stats();
        const count = (lv: PageLevel) => naive.all().filter((l) => l.level === lv).length;
        expect(s.leaves).toEqual({ '4k': count('4k'), '2m': count('2m'), '1g': count('1g') });
        expect(s.bytesMapped).toBe(naive.all().reduce((a, l) => a + levelSize(l.level), 0n));
        expect(s.zaps).toBe(naive.zaps);
      }
    }
    mmu.zapAll();
    expect(mmu.stats().tables).toBe(1);
  });
});
