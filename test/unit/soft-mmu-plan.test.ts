import { describe, it, expect } from 'vitest';
import {
  alignDownToLevel, chooseMappingLevel, levelSize, planPreFaultStep, privateRangesQuery, simulatePreFaultMemory,
  SoftMmu, validatePreFaultRange,
  type MappingSlot, type PrivateAttributeQuery, type SoftMmuLeaf, type SoftSlotView,
} from '../../lib/soft-mmu/index.js';

const K4 = 4096n;
const M1 = 1n << 20n;
const M2 = 2n << 20n;
const G1 = 1n << 30n;
const BASE = 0x1_0000_0000n;
const HOST = 0x7f00_0000_0000n;

function slotView(over: Partial<SoftSlotView> & { guestPhysAddr: bigint; size: bigint }): SoftSlotView {
  return { slot: 10, readonly: false, hostMaxLevel: '2m', hostAddress: HOST, ...over };
}

describe('validatePreFaultRange', () => {
  it('accepts an aligned, non-empty, non-wrapping range with flags 0', () => {
    expect(validatePreFaultRange({ gpa: BASE, size: K4, flags: 0 })).toBeNull();
    expect(validatePreFaultRange({ gpa: 0n, size: G1, flags: 0n })).toBeNull();
    expect(validatePreFaultRange({ gpa: (1n << 64n) - 2n * K4, size: K4, flags: 0 })).toBeNull();
  });

  it('refuses what the kernel refuses with EINVAL', () => {
    expect(validatePreFaultRange({ gpa: BASE + 1n, size: K4, flags: 0 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: BASE + 0x800n, size: K4, flags: 0 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: BASE, size: K4 + 1n, flags: 0 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: BASE, size: 0n, flags: 0 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: BASE, size: K4, flags: 1 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: BASE, size: K4, flags: 1n << 63n })).toBe('EINVAL');
    // end past 2^64, and an end of exactly 2^64 (wraps to 0 in u64)
    expect(validatePreFaultRange({ gpa: (1n << 64n) - K4, size: 2n * K4, flags: 0 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: (1n << 64n) - K4, size: K4, flags: 0 })).toBe('EINVAL');
    // values a u64 cannot hold
    expect(validatePreFaultRange({ gpa: -K4, size: K4, flags: 0 })).toBe('EINVAL');
    expect(validatePreFaultRange({ gpa: 0n, size: 1n << 64n, flags: 0 })).toBe('EINVAL');
  });
});

/** The upstream selftest's loop: retry while the call succeeds with size left; report what is left. */
function selftestPreFault(
  mmu: SoftMmu, slots: SoftSlotView[], isPrivate: PrivateAttributeQuery | undefined, gpa: bigint, size: bigint,
): { left: bigint; error: string | null } {
  let range = { gpa, size };
  let error: string | null;
  do {
    const prev = range.size;
    const r = simulatePreFaultMemory(mmu, { slots, range, ...(isPrivate ? { isPrivate } : {}) });
    error = r.error;
    // exactly one holds: the size went down, or the call failed
    expect(r.size < prev !== (r.error !== null)).toBe(true);
    range = { gpa: r.gpa, size: r.size };
  } while (error === null && range.size > 0n);
  return { left: range.size, error };
}

describe('the three calls of pre_fault_memory_test', () => {
  const configs: { name: string; gmem: boolean; priv: boolean }[] = [
    { name: 'default VM, shared', gmem: false, priv: false },
    { name: 'guest_memfd slot, shared', gmem: true, priv: false },
    { name: 'guest_memfd slot, private', gmem: true, priv: true },
  ];
  for (const base of [BASE, (1n << 48n) - G1]) {
    for (const c of configs) {
      it(`${c.name} at 0x${base.toString(16)}`, () => {
        const size = M2 + K4; // 513 pages
        const slots = [slotView({
          guestPhysAddr: base, size, hostAddress: HOST,
          ...(c.gmem ? { guestMemfd: { offset: 0n, flags: [] } } : {}),
        })];
        const isPrivate = c.priv ? privateRangesQuery([{ gpa: base, size }]) : undefined;
        const mmu = new SoftMmu();

        expect(selftestPreFault(mmu, slots, isPrivate, base, M2)).toEqual({ left: 0n, error: null });
        expect(selftestPreFault(mmu, slots, isPrivate, base + M2, 2n * K4)).toEqual({ left: K4, error: 'ENOENT' });
        expect(selftestPreFault(mmu, slots, isPrivate, base + 513n * K4, K4)).toEqual({ left: K4, error: 'ENOENT' });

        // the guest then touches all 513 pages: each must be mapped, with the right attribute
        for (let i = 0n; i < 513n; i++) {
          expect(mmu.lookup(base + i * K4)).toMatchObject({ slot: 10, private: c.priv });
        }
        expect(mmu.lookup(base + 513n * K4)).toBeUndefined();
        expect(mmu.stats().leaves).toEqual({ '4k': 1, '2m': 1, '1g': 0 });
      });
    }
  }

  it('call 2 step by step: one page mapped, then ENOENT', () => {
    const slots = [slotView({ guestPhysAddr: BASE, size: M2 + K4 })];
    const s1 = planPreFaultStep({ slots, range: { gpa: BASE + M2, size: 2n * K4 }, maxChunk: G1 });
    expect(s1).toEqual({
      kind: 'map', slot: 10, gpa: BASE + M2, size: K4, level: '4k', private: false, writable: true,
      backing: 'host', hostAddress: HOST + M2, progress: K4,
    });
    const s2 = planPreFaultStep({ slots, range: { gpa: BASE + M2 + K4, size: K4 }, maxChunk: G1 });
    expect(s2).toEqual({ kind: 'enoent', gpa: BASE + M2 + K4 });
    // call 3 fails at once, and a failing call leaves the range as it was
    const mmu = new SoftMmu();
    expect(simulatePreFaultMemory(mmu, { slots, range: { gpa: BASE + 513n * K4, size: K4 } }))
      .toEqual({ error: 'ENOENT', gpa: BASE + 513n * K4, size: K4 });
    expect(mmu.stats().leaves).toEqual({ '4k': 0, '2m': 0, '1g': 0 });
  });

  it('call 1 on a 4k-only host maps 512 small leaves in one step', () => {
    const slots = [slotView({ guestPhysAddr: BASE, size: M2 + K4, hostMaxLevel: '4k' })];
    const s = planPreFaultStep({ slots, range: { gpa: BASE, size: M2 }, maxChunk: G1 });
    expect(s).toMatchObject({ kind: 'map', gpa: BASE, size: M2, level: '4k', progress: M2 });
  });
});

describe('planPreFaultStep progress rule', () => {
  const slots = [slotView({ guestPhysAddr: BASE, size: 8n * M2 })];

  it('a one-page request inside a 2m-mappable area maps the whole leaf, progresses one page', () => {
    const s = planPreFaultStep({ slots, range: { gpa: BASE + M2 + 5n * K4, size: K4 }, maxChunk: G1 });
    expect(s).toMatchObject({ kind: 'map', gpa: BASE + M2, size: M2, level: '2m', progress: K4, hostAddress: HOST + M2 });
  });

  it('an unaligned request joins every leaf it touches, progress clipped to the request', () => {
    const s = planPreFaultStep({ slots, range: { gpa: BASE + 5n * K4, size: M2 }, maxChunk: G1 });
    expect(s).toMatchObject({ gpa: BASE, size: 2n * M2, level: '2m', progress: M2 });
  });

  it('maxChunk bounds a step but always allows one leaf', () => {
    const small = [slotView({ guestPhysAddr: BASE, size: G1, hostMaxLevel: '4k' })];
    const range = { gpa: BASE, size: G1 };
    expect(planPreFaultStep({ slots: small, range, maxChunk: 64n * M1 })).toMatchObject({ size: 64n * M1, progress: 64n * M1 });
    expect(planPreFaultStep({ slots: small, range, maxChunk: 5000n })).toMatchObject({ size: K4, progress: K4 });
    expect(planPreFaultStep({ slots: small, range, maxChunk: 1n })).toMatchObject({ size: K4, progress: K4 });
    expect(planPreFaultStep({ slots, range: { gpa: BASE, size: 8n * M2 }, maxChunk: 3n * M1 }))
      .toMatchObject({ size: M2, level: '2m', progress: M2 });
    expect(planPreFaultStep({ slots, range: { gpa: BASE, size: 8n * M2 }, maxChunk: K4 }))
      .toMatchObject({ size: M2, level: '2m', progress: M2 });
  });

  it('an unaligned slot: a 4k head, 2m body, 4k tail', () => {
    const s = [slotView({ guestPhysAddr: BASE + K4, size: 4n * M2, hostAddress: HOST + K4 })];
    const range = { gpa: BASE + K4, size: 4n * M2 };
    const a = planPreFaultStep({ slots: s, range, maxChunk: G1 });
    expect(a).toMatchObject({ gpa: BASE + K4, size: M2 - K4, level: '4k', progress: M2 - K4 });
    const b = planPreFaultStep({ slots: s, range: { gpa: BASE + M2, size: 3n * M2 + K4 }, maxChunk: G1 });
    expect(b).toMatchObject({ gpa: BASE + M2, size: 3n * M2, level: '2m', progress: 3n * M2 });
    const c = planPreFaultStep({ slots: s, range: { gpa: BASE + 4n * M2, size: K4 }, maxChunk: G1 });
    expect(c).toMatchObject({ gpa: BASE + 4n * M2, size: K4, level: '4k', progress: K4 });
  });

  it('a range crossing the slot end stops there; the next call is ENOENT', () => {
    const one = [slotView({ guestPhysAddr: BASE, size: 2n * M2, hostMaxLevel: '4k' })];
    const mmu = new SoftMmu();
    const r = simulatePreFaultMemory(mmu, { slots: one, range: { gpa: BASE + M2, size: 4n * M2 } });
    expect(r).toEqual({ error: null, gpa: BASE + 2n * M2, size: 3n * M2 });
    expect(simulatePreFaultMemory(mmu, { slots: one, range: r })).toEqual({ ...r, error: 'ENOENT' });
    expect(mmu.stats().bytesMapped).toBe(M2);
  });

  it('a range crossing into an adjacent slot continues there', () => {
    const two = [
      slotView({ slot: 1, guestPhysAddr: BASE, size: M2 + K4 }),
      slotView({ slot: 2, guestPhysAddr: BASE + M2 + K4, size: 4n * M2, hostAddress: HOST + G1, hostMaxLevel: '4k' }),
    ];
    const s1 = planPreFaultStep({ slots: two, range: { gpa: BASE + M2, size: M2 }, maxChunk: G1 });
    expect(s1).toMatchObject({ slot: 1, gpa: BASE + M2, size: K4, progress: K4 });
    const s2 = planPreFaultStep({ slots: two, range: { gpa: BASE + M2 + K4, size: M2 - K4 }, maxChunk: G1 });
    expect(s2).toMatchObject({ slot: 2, gpa: BASE + M2 + K4, size: M2 - K4, hostAddress: HOST + G1, progress: M2 - K4 });
    const mmu = new SoftMmu();
    expect(simulatePreFaultMemory(mmu, { slots: two, range: { gpa: BASE, size: 4n * M2 } }))
      .toEqual({ error: null, gpa: BASE + 4n * M2, size: 0n });
    expect(mmu.lookup(BASE + M2)).toMatchObject({ slot: 1, level: '4k' });
    expect(mmu.lookup(BASE + M2 + K4)).toMatchObject({ slot: 2, level: '4k', hostAddress: HOST + G1 });
  });

  it('a read-only slot plans read-only mappings', () => {
    const ro = [slotView({ guestPhysAddr: BASE, size: M2, readonly: true })];
    expect(planPreFaultStep({ slots: ro, range: { gpa: BASE, size: K4 }, maxChunk: G1 })).toMatchObject({ writable: false });
  });

  it('rejects malformed input', () => {
    expect(() => planPreFaultStep({ slots, range: { gpa: BASE + 1n, size: K4 }, maxChunk: G1 })).toThrow(RangeError);
    expect(() => planPreFaultStep({ slots, range: { gpa: BASE, size: 0n }, maxChunk: G1 })).toThrow(RangeError);
    expect(() => planPreFaultStep({ slots, range: { gpa: BASE, size: K4 }, maxChunk: 0n })).toThrow(RangeError);
    expect(() => planPreFaultStep({ slots, range: { gpa: BASE, size: K4 }, maxChunk: G1, isPrivate: () => 'mixed' }))
      .toThrow(RangeError);
  });
});

describe('planPreFaultStep and memory attributes', () => {
  const gmemSlot = slotView({ guestPhysAddr: BASE, size: 4n * M2, guestMemfd: { offset: 16n * M2, flags: [] } });

  it('steps stop where the attribute changes; a mixed 2m block maps at 4k', () => {
    const isPrivate = privateRangesQuery([{ gpa: BASE + 3n * M1, size: 2n * K4 }]);
    const step = (gpa: bigint) =>
      planPreFaultStep({ slots: [gmemSlot], isPrivate, range: { gpa, size: BASE + 4n * M2 - gpa }, maxChunk: G1 });
    expect(step(BASE)).toMatchObject({ gpa: BASE, size: M2, level: '2m', private: false, backing: 'host' });
    expect(step(BASE + M2)).toMatchObject({ gpa: BASE + M2, size: M1, level: '4k', private: false, progress: M1 });
    expect(step(BASE + 3n * M1)).toEqual({
      kind: 'map', slot: 10, gpa: BASE + 3n * M1, size: 2n * K4, level: '4k', private: true, writable: true,
      backing: 'guest_memfd', hostAddress: HOST + 3n * M1, guestMemfdOffset: 16n * M2 + 3n * M1, progress: 2n * K4,
    });
    expect(step(BASE + 3n * M1 + 2n * K4)).toMatchObject({ size: M1 - 2n * K4, level: '4k', private: false });
    expect(step(BASE + 2n * M2)).toMatchObject({ size: 2n * M2, level: '2m', private: false });
  });

  it('private memory without guest_memfd is EFAULT', () => {
    const plain = [slotView({ guestPhysAddr: BASE, size: 4n * M2 })];
    const isPrivate = privateRangesQuery([{ gpa: BASE + M2, size: M2 }]);
    expect(planPreFaultStep({ slots: plain, isPrivate, range: { gpa: BASE + M2, size: K4 }, maxChunk: G1 }))
      .toEqual({ kind: 'efault', gpa: BASE + M2, reason: 'private-without-guest-memfd' });
    const mmu = new SoftMmu();
    expect(simulatePreFaultMemory(mmu, { slots: plain, isPrivate, range: { gpa: BASE + M2, size: K4 } }))
      .toEqual({ error: 'EFAULT', gpa: BASE + M2, size: K4 });
    // after some progress the call succeeds and leaves the private part
    expect(simulatePreFaultMemory(mmu, { slots: plain, isPrivate, range: { gpa: BASE, size: 2n * M2 } }))
      .toEqual({ error: null, gpa: BASE + M2, size: M2 });
  });

  it('an mmap-able guest_memfd serves shared pages too, at its own folio size', () => {
    for (const flag of ['mmap', 'MMAP', 'GUEST_MEMFD_FLAG_MMAP']) {
      const s = slotView({ guestPhysAddr: BASE, size: 4n * M2, guestMemfd: { offset: 0n, flags: [flag], maxLevel: '4k' } });
      expect(planPreFaultStep({ slots: [s], range: { gpa: BASE, size: K4 }, maxChunk: G1 }))
        .toMatchObject({ backing: 'guest_memfd', level: '4k', guestMemfdOffset: 0n, private: false });
    }
    // without MMAP shared pages come from the host mapping (2m here), private ones from the file (4k)
    const s = slotView({ guestPhysAddr: BASE, size: 4n * M2, guestMemfd: { offset: 0n, flags: [], maxLevel: '4k' } });
    expect(planPreFaultStep({ slots: [s], range: { gpa: BASE, size: K4 }, maxChunk: G1 }))
      .toMatchObject({ backing: 'host', level: '2m' });
    const allPrivate = privateRangesQuery([{ gpa: BASE, size: 4n * M2 }]);
    expect(planPreFaultStep({ slots: [s], isPrivate: allPrivate, range: { gpa: BASE, size: K4 }, maxChunk: G1 }))
      .toMatchObject({ backing: 'guest_memfd', level: '4k', private: true });
  });
});

/**
 * What the kernel does, one fault at a time: the page at gpa is mapped at the
 * level KVM picks, and gpa moves to the end of that leaf (clipped). Used to
 * check that the planner's batching changes nothing.
 */
function kernelOneFaultAtATime(
  mmu: SoftMmu, slots: SoftSlotView[], isPrivate: PrivateAttributeQuery, gpa: bigint, size: bigint,
): { error: string | null; gpa: bigint; size: bigint } {
  const end = gpa + size;
  let progressed = false;
  while (gpa < end) {
    const s = slots.find((x) => gpa >= x.guestPhysAddr && gpa < x.guestPhysAddr + x.size);
    if (s === undefined) return { error: progressed ? null : 'ENOENT', gpa, size: end - gpa };
    const priv = isPrivate(gpa, K4) === 'private';
    if (priv && s.guestMemfd === undefined) return { error: progressed ? null : 'EFAULT', gpa, size: end - gpa };
    const fromGmem = priv || (s.guestMemfd?.flags.includes('mmap') ?? false);
    const mslot: MappingSlot = { guestPhysAddr: s.guestPhysAddr, size: s.size };
    if (s.hostAddress !== undefined) mslot.hostAddress = s.hostAddress;
    if (s.guestMemfd !== undefined) mslot.guestMemfdOffset = s.guestMemfd.offset;
    const level = chooseMappingLevel({
      gpa, slot: mslot, private: fromGmem,
      hostMaxLevel: fromGmem ? (s.guestMemfd?.maxLevel ?? s.hostMaxLevel) : s.hostMaxLevel,
      isUniform: (b, n) => isPrivate(b, n) !== 'mixed',
    });
    const base = alignDownToLevel(gpa, level);
    const info = { slot: s.slot, private: priv, writable: !s.readonly };
    mmu.map(base, level, s.hostAddress === undefined ? info : { ...info, hostAddress: s.hostAddress + base - s.guestPhysAddr });
    const leafEnd = base + levelSize(level);
    gpa = leafEnd < end ? leafEnd : end;
    progressed = true;
  }
  return { error: null, gpa, size: 0n };
}

describe('planner batching matches one-fault-at-a-time', () => {
  it('gives the same leaves and results for every maxChunk', () => {
    const b = 8n * G1;
    const slots: SoftSlotView[] = [
      // unaligned, THP: 4k head and tail around 2m leaves
      slotView({ slot: 1, guestPhysAddr: b + 3n * K4, size: 5n * M2, hostAddress: HOST + 3n * K4 }),
      // 1g-capable, guest_memfd-backed, partly private, at a gap after slot 1
      slotView({
        slot: 2, guestPhysAddr: b + G1, size: 2n * G1 + 3n * M2, hostAddress: HOST + 4n * G1, hostMaxLevel: '1g',
        guestMemfd: { offset: 0n, flags: [], maxLevel: '2m' },
      }),
      // adjacent 4k-only slot, host address not congruent
      slotView({ slot: 3, guestPhysAddr: b + 3n * G1 + 3n * M2, size: 3n * M2, hostAddress: HOST + K4, hostMaxLevel: '1g' }),
    ];
    const isPrivate = privateRangesQuery([
      { gpa: b + G1 + 5n * M2 + 7n * K4, size: 3n * K4 },
      { gpa: b + 3n * G1, size: M2 },
      { gpa: b + 3n * G1 + M2, size: M2 + 5n * K4 },
    ]);
    const requests = [
      { gpa: b, size: 4n * G1 }, // starts in a hole
      { gpa: b + 3n * K4, size: 4n * G1 }, // crosses the gap after slot 1
      { gpa: b + G1 + K4, size: 2n * G1 + 6n * M2 }, // through slots 2 and 3 and beyond
      { gpa: b + 2n * G1 + 5n * M2 + 3n * K4, size: 5n * K4 },
    ];
    const dump = (m: SoftMmu) => [...m.entries()];
    for (const req of requests) {
      const ref = new SoftMmu();
      const want = kernelOneFaultAtATime(ref, slots, isPrivate, req.gpa, req.size);
      const wantLeaves: SoftMmuLeaf[] = dump(ref);
      for (const maxChunk of [K4, 64n * 1024n, M2 + K4, 64n * M2, 4n * G1]) {
        const mmu = new SoftMmu();
        const got = simulatePreFaultMemory(mmu, { slots, isPrivate, range: req, maxChunk });
        expect(got).toEqual(want);
        expect(dump(mmu)).toEqual(wantLeaves);
      }
    }
    // sanity: the layout really exercised every level and both attributes
    const all = new SoftMmu();
    for (const x of slots) {
      expect(simulatePreFaultMemory(all, { slots, isPrivate, range: { gpa: x.guestPhysAddr, size: x.size } }))
        .toMatchObject({ error: null, size: 0n });
    }
    const s = all.stats();
    expect(s.leaves['1g']).toBeGreaterThan(0);
    expect(s.leaves['2m']).toBeGreaterThan(0);
    expect(s.leaves['4k']).toBeGreaterThan(0);
    expect(dump(all).some((l) => l.private)).toBe(true);
  });
});
