import { KvmError } from '../../lib/errors.js';
import { describe, it, expect } from 'vitest';
import {
  CPL3_RFLAGS,
  DEFAULT_GUEST_LAYOUT,
  DEFAULT_TSS_GPA,
  IO_PERMISSIVE_TSS_SIZE,
  ioPermissiveTss,
  TSS_SELECTOR,
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
    expect(() => longModeCpl3Sregs({ cr3: 0x1008n })).toThrow(KvmError);
    expect(() => longModeCpl3Sregs({ cr3: -4096 })).toThrow(KvmError);
    expect(() => longModeCpl3Sregs({ cr3: 1n << 64n })).toThrow(KvmError);
  });
});

describe('initialRegs', () => {
  it('sets rip, rsp and RFLAGS 0x3002 (IOPL 3)', () => {
    expect(initialRegs({ rip: 0x10000, rsp: 0x30000n })).toEqual({ rip: 0x10000n, rsp: 0x30000n, rflags: 0x3002n });
    expect(CPL3_RFLAGS).toBe(0x3002n);
    expect(() => initialRegs({ rip: 1.5, rsp: 0 })).toThrow(KvmError);
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

describe('ioPermissiveTss', () => {
  it('writes a TSS whose I/O bitmap allows every port and returns the task register', () => {
    const memory = new Uint8Array(0x40000).fill(0xaa);
    const tr = ioPermissiveTss(memory);
    expect(tr).toMatchObject({ base: DEFAULT_TSS_GPA, limit: IO_PERMISSIVE_TSS_SIZE - 1, selector: TSS_SELECTOR, type: 11, present: 1, s: 0 });
    const base = Number(DEFAULT_TSS_GPA);
    expect(new DataView(memory.buffer).getUint16(base + 0x66, true)).toBe(0x68);
    expect(memory.subarray(base + 0x68, base + IO_PERMISSIVE_TSS_SIZE - 1).every((b) => b === 0)).toBe(true);
    expect(memory[base + IO_PERMISSIVE_TSS_SIZE - 1]).toBe(0xff);
    expect(memory[base - 1]).toBe(0xaa);
    expect(memory[base + IO_PERMISSIVE_TSS_SIZE]).toBe(0xaa);
  });

  it('places it relative to memoryGpa, and refuses a TSS outside the memory with a KvmError', () => {
    const memory = new Uint8Array(0x4000);
    expect(ioPermissiveTss(memory, { tssGpa: 0x101000n, memoryGpa: 0x100000n }).base).toBe(0x101000n);
    for (const options of [{ tssGpa: 0x3000n }, { tssGpa: 0n, memoryGpa: 0x1000n }]) {
      const e = (() => { try { ioPermissiveTss(memory, options); } catch (err) { return err; } })();
      expect(e).toBeInstanceOf(KvmError);
      expect((e as KvmError).code).toBe('EINVAL');
    }
  });
});
