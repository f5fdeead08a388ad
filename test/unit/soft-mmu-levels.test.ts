import { describe, it, expect } from 'vitest';
import {
  alignDownToLevel, chooseMappingLevel, compareLevels, isLevelAligned, isPageLevel, levelSize, minLevel,
  privateRangesQuery, LEVEL_PAGES, PAGE_LEVELS, type MappingSlot, type PageLevel,
} from '../../lib/soft-mmu/index.js';

const K4 = 4096n;
const M2 = 2n << 20n;
const G1 = 1n << 30n;
const BASE = 4n * G1; // 4 GiB: 1 GiB aligned
const HOST = 0x7f00_0000_0000n; // 1 GiB aligned host address

function level(gpa: bigint, slot: MappingSlot, hostMaxLevel: PageLevel = '1g', extra: object = {}): PageLevel {
  return chooseMappingLevel({ gpa, slot, hostMaxLevel, ...extra });
}

describe('level helpers', () => {
  it('sizes, ranks and alignment', () => {
    expect(PAGE_LEVELS).toEqual(['4k', '2m', '1g']);
    expect(levelSize('4k')).toBe(4096n);
    expect(levelSize('2m')).toBe(2n * 1024n * 1024n);
    expect(levelSize('1g')).toBe(1024n * 1024n * 1024n);
    expect(LEVEL_PAGES['1g']).toBe(262144);
    expect(compareLevels('4k', '2m')).toBeLessThan(0);
    expect(compareLevels('1g', '2m')).toBeGreaterThan(0);
    expect(compareLevels('2m', '2m')).toBe(0);
    expect(minLevel('1g', '2m')).toBe('2m');
    expect(minLevel('4k', '1g')).toBe('4k');
    expect(isLevelAligned(M2 * 3n, '2m')).toBe(true);
    expect(isLevelAligned(M2 * 3n, '1g')).toBe(false);
    expect(alignDownToLevel(G1 + M2 + 0x1234n, '2m')).toBe(G1 + M2);
    expect(alignDownToLevel(G1 + M2 + 0x1234n, '1g')).toBe(G1);
    expect(isPageLevel('2m')).toBe(true);
    expect(isPageLevel('512g')).toBe(false);
  });
});

describe('chooseMappingLevel', () => {
  const big: MappingSlot = { guestPhysAddr: BASE, size: 4n * G1, hostAddress: HOST };

  it('aligned, congruent slot gets the host maximum', () => {
    expect(level(BASE, big)).toBe('1g');
    expect(level(BASE + G1 + 5n * K4, big)).toBe('1g');
    expect(level(BASE + 4n * G1 - K4, big)).toBe('1g');
  });

  it('hostMaxLevel clamps the choice', () => {
    expect(level(BASE + 5n * K4, big, '2m')).toBe('2m');
    expect(level(BASE + 5n * K4, big, '4k')).toBe('4k');
  });

  it('allowHuge false forces 4k', () => {
    expect(level(BASE, big, '1g', { allowHuge: false })).toBe('4k');
  });

  it('unaligned slot start: blocks crossing either slot edge get 4k', () => {
    const slot: MappingSlot = { guestPhysAddr: BASE + K4, size: 2n * M2, hostAddress: HOST + K4 };
    expect(level(BASE + K4, slot)).toBe('4k'); // 2 MiB block starts before the slot
    expect(level(BASE + M2 - K4, slot)).toBe('4k');
    expect(level(BASE + M2, slot)).toBe('2m'); // [BASE+2M, BASE+4M) lies inside
    expect(level(BASE + 2n * M2, slot)).toBe('4k'); // last page: its block passes the end
  });

  it('a 2 MiB block crossing the slot end gets 4k (slot of 2 MiB + 1 page)', () => {
    const slot: MappingSlot = { guestPhysAddr: BASE, size: M2 + K4, hostAddress: HOST };
    expect(level(BASE, slot)).toBe('2m');
    expect(level(BASE + M2 - K4, slot)).toBe('2m');
    expect(level(BASE + M2, slot)).toBe('4k');
  });

  it('host address not congruent with gpa: no huge page at that size', () => {
    expect(level(BASE, { ...big, hostAddress: HOST + K4 })).toBe('4k');
    // congruent modulo 2 MiB but not 1 GiB: 2m at most
    expect(level(BASE, { ...big, hostAddress: HOST + M2 })).toBe('2m');
    // no host address: no congruence constraint at all
    expect(level(BASE, { guestPhysAddr: BASE, size: G1 })).toBe('1g');
  });

  it('guest_memfd offset congruence applies to guest_memfd pages only', () => {
    const gmemSlot: MappingSlot = { guestPhysAddr: BASE, size: G1, guestMemfdOffset: K4 };
    expect(level(BASE, gmemSlot, '1g', { private: true })).toBe('4k');
    expect(level(BASE, gmemSlot, '1g', { private: false })).toBe('1g');
    expect(level(BASE, { ...gmemSlot, guestMemfdOffset: M2 }, '1g', { private: true })).toBe('2m');
    expect(level(BASE, { ...gmemSlot, guestMemfdOffset: 3n * G1 }, '1g', { private: true })).toBe('1g');
    // the host-address rule is per slot, so it binds private pages too
    expect(level(BASE, { ...gmemSlot, guestMemfdOffset: 0n, hostAddress: HOST + K4 }, '1g', { private: true }))
      .toBe('4k');
  });

  it('mixed attributes refuse the huge level', () => {
    // one private page at BASE + 3 MiB: its 2 MiB block and its 1 GiB block are mixed
    const q = privateRangesQuery([{ gpa: BASE + M2 + M2 / 2n, size: K4 }]);
    const isUniform = (b: bigint, s: bigint) => q(b, s) !== 'mixed';
    expect(level(BASE, big, '1g', { isUniform })).toBe('2m');
    expect(level(BASE + M2, big, '1g', { isUniform })).toBe('4k');
    expect(level(BASE + 2n * M2, big, '1g', { isUniform })).toBe('2m');
    expect(level(BASE + G1, big, '1g', { isUniform })).toBe('1g');
    // a wholly private 1 GiB block is uniform
    const all = privateRangesQuery([{ gpa: BASE, size: G1 }]);
    expect(level(BASE, big, '1g', { isUniform: (b: bigint, s: bigint) => all(b, s) !== 'mixed' })).toBe('1g');
  });

  it('rejects a gpa outside the slot', () => {
    expect(() => level(BASE - K4, big)).toThrow(RangeError);
    expect(() => level(BASE + 4n * G1, big)).toThrow(RangeError);
  });
});

describe('privateRangesQuery', () => {
  it('answers private, shared and mixed; merges touching ranges', () => {
    const q = privateRangesQuery([
      { gpa: 0x5000n, size: 0x1000n },
      { gpa: 0x1000n, size: 0x2000n },
      { gpa: 0x3000n, size: 0x1000n }, // touches the previous one: [0x1000, 0x4000)
      { gpa: 0x9000n, size: 0n }, // empty: ignored
    ]);
    expect(q(0x1000n, 0x3000n)).toBe('private');
    expect(q(0x0n, 0x1000n)).toBe('shared');
    expect(q(0x0n, 0x2000n)).toBe('mixed');
    expect(q(0x3000n, 0x2000n)).toBe('mixed');
    expect(q(0x4000n, 0x1000n)).toBe('shared');
    expect(q(0x5000n, 0x1000n)).toBe('private');
    expect(q(0x6000n, 0x10000n)).toBe('shared');
    expect(q(0x9000n, 0x1000n)).toBe('shared');
    expect(privateRangesQuery([])(0n, 1n << 40n)).toBe('shared');
  });
});
