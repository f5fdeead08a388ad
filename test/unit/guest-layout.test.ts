import { describe, it, expect } from 'vitest';
import {
  CPL3_RFLAGS,
  DEFAULT_GUEST_LAYOUT,
  initialRegs,
  longModeCpl3Sregs,
  type LongModeSregs,
} from '../../lib/guest/layout.js';

describe('longModeCpl3Sregs', () => {
  it('returns the host-facts set-up for a 64-bit CPL3 guest', () => {
    const s = longModeCpl3Sregs({ cr3: 0x1000n });
    expect(s.cr0).toBe(0x8000_0011n);
    expect(s.cr3).toBe(0x1000n);
    expect(s.cr4).toBe(0x20n);
    expect(s.efer).toBe(0x500n);
    expect(s.cs).toEqual({
      base: 0n, limit: 0xffff_ffff, selector: 0x33, type: 0xb, present: 1, dpl: 3,
      db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0,
    });
    for (const seg of ['ss', 'ds', 'es', 'fs', 'gs'] as const) {
      expect(s[seg], seg).toEqual({
        base: 0n, limit: 0xffff_ffff, selector: 0x2b, type: 3, present: 1, dpl: 3,
        db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
      });
    }
    // A busy 64-bit TSS (type 11), system descriptor, present; no LDT.
    expect(s.tr).toMatchObject({ type: 11, present: 1, s: 0, limit: 0x67, unusable: 0 });
    expect(s.tr.selector & 4).toBe(0); // TR must reference the GDT
    expect(s.ldt).toMatchObject({ unusable: 1, present: 0 });
    expect(Object.keys(s).sort()).toEqual(
      ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt', 'cr0', 'cr3', 'cr4', 'efer'].sort(),
    );
  });

  it('selectors carry RPL 3 matching the DPL, so CPL is 3', () => {
    const s: LongModeSregs = longModeCpl3Sregs({ cr3: 0 });
    expect(s.cs.selector & 3).toBe(3);
    expect(s.ss.selector & 3).toBe(3);
  });

  it('returns independent segment objects', () => {
    const s = longModeCpl3Sregs({ cr3: 0x2000 });
    s.ds.base = 5n;
    expect(s.es.base).toBe(0n);
    expect(longModeCpl3Sregs({ cr3: 0x2000 }).ds.base).toBe(0n);
  });

  it('accepts high CR3 values and rejects misaligned or invalid ones', () => {
    expect(longModeCpl3Sregs({ cr3: 1n << 40n }).cr3).toBe(1n << 40n);
    expect(() => longModeCpl3Sregs({ cr3: 0x1008n })).toThrow(RangeError);
    expect(() => longModeCpl3Sregs({ cr3: -4096 })).toThrow(TypeError);
    expect(() => longModeCpl3Sregs({ cr3: 1n << 64n })).toThrow(RangeError);
  });
});

describe('initialRegs', () => {
  it('sets rip, rsp and RFLAGS 0x3002 (IOPL 3)', () => {
    expect(initialRegs({ rip: 0x10000, rsp: 0x30000n })).toEqual({ rip: 0x10000n, rsp: 0x30000n, rflags: 0x3002n });
    expect(CPL3_RFLAGS).toBe(0x3002n);
    expect(() => initialRegs({ rip: 1.5, rsp: 0 })).toThrow(TypeError);
  });
});

describe('DEFAULT_GUEST_LAYOUT', () => {
  it('keeps tables, code, stack and data apart and inside the memory size', () => {
    const l = DEFAULT_GUEST_LAYOUT;
    expect(l.tablesGpa + 0x6000n).toBeLessThanOrEqual(l.codeGpa);
    expect(l.codeGpa).toBeLessThan(l.stackTop - 0x10000n);
    expect(l.stackTop).toBeLessThanOrEqual(l.dataGpa);
    expect(l.dataGpa).toBeLessThan(l.memorySize);
    expect(l.stackTop % 16n).toBe(0n);
  });
});
