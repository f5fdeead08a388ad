import { describe, expect, it } from 'vitest';
import { PrivateRanges } from '../../lib/attributes.js';
import { decodeCpuid, encodeCpuid } from '../../lib/cpuid.js';
import { decodeExit } from '../../lib/exit.js';
import { decodeRegs, decodeSregs, encodeRegs, encodeSregs, REGS_SIZE, SREGS_SIZE } from '../../lib/regs.js';

describe('register codecs', () => {
  it('round-trips kvm_regs in field order', () => {
    const bytes = new Uint8Array(REGS_SIZE);
    const v = new DataView(bytes.buffer);
    for (let i = 0; i < 18; i++) v.setBigUint64(i * 8, BigInt(i + 1) * 0x1111n, true);
    const regs = decodeRegs(bytes);
    expect(regs.rax).toBe(0x1111n);
    expect(regs.rip).toBe(17n * 0x1111n);
    expect(regs.rflags).toBe(18n * 0x1111n);
    expect(encodeRegs(regs)).toEqual(bytes);
  });

  it('round-trips kvm_sregs with segments at 24-byte strides and CRs at 224', () => {
    const bytes = new Uint8Array(SREGS_SIZE);
    const v = new DataView(bytes.buffer);
    v.setUint16(12, 0x33, true); // cs.selector
    v.setUint8(19, 1); // cs.l
    v.setUint16(5 * 24 + 12, 0x2b, true); // ss.selector
    v.setBigUint64(224, 0x80000011n, true);
    v.setBigUint64(264, 0x500n, true);
    const s = decodeSregs(bytes);
    expect(s.cs).toMatchObject({ selector: 0x33, l: 1 });
    expect(s.ss.selector).toBe(0x2b);
    expect(s.cr0).toBe(0x80000011n);
    expect(s.efer).toBe(0x500n);
    expect(encodeSregs(s)).toEqual(bytes);
  });

  it('round-trips cpuid entries', () => {
    const entries = [{ function: 0x80000001, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 0xffffffff }];
    expect(decodeCpuid(encodeCpuid(entries))).toEqual(entries);
  });
});

describe('exit decoding', () => {
  function run(reason: number, fill: (v: DataView) => void): Uint8Array {
    const b = new Uint8Array(4096);
    const v = new DataView(b.buffer);
    v.setUint32(8, reason, true);
    fill(v);
    return b;
  }

  it('decodes an OUT with its data', () => {
    const b = run(2, (v) => {
      v.setUint8(32, 1);
      v.setUint8(33, 4);
      v.setUint16(34, 0x1000, true);
      v.setUint32(36, 1, true);
      v.setBigUint64(40, 4096n - 8n, true);
      v.setUint32(4096 - 8, 0xdeadbeef, true);
    });
    const e = decodeExit(b);
    expect(e).toMatchObject({ reason: 'io', direction: 'out', size: 4, port: 0x1000, count: 1 });
    expect(new DataView((e as { data: Uint8Array }).data.slice().buffer).getUint32(0, true)).toBe(0xdeadbeef);
  });

  it('decodes mmio, memory-fault, internal-error and named exits', () => {
    expect(decodeExit(run(6, (v) => { v.setBigUint64(32, 0xfee00000n, true); v.setUint32(48, 4, true); v.setUint8(52, 1); }))).toMatchObject({ reason: 'mmio', physAddr: 0xfee00000n, len: 4, isWrite: true });
    expect(decodeExit(run(39, (v) => { v.setBigUint64(32, 8n, true); v.setBigUint64(40, 0x1000n, true); v.setBigUint64(48, 4096n, true); }))).toMatchObject({ reason: 'memory-fault', private: true, gpa: 0x1000n, size: 4096n });
    expect(decodeExit(run(17, (v) => { v.setUint32(32, 1, true); v.setUint32(36, 1, true); v.setBigUint64(40, 5n, true); }))).toMatchObject({ reason: 'internal-error', suberror: 1, data: [5n] });
    expect(decodeExit(run(8, () => {}))).toMatchObject({ reason: 'shutdown', code: 8 });
    expect(decodeExit(run(5, () => {}))).toMatchObject({ reason: 'hlt' });
    expect(decodeExit(run(9999, () => {}))).toMatchObject({ reason: 'unknown', code: 9999 });
  });
});

describe('private ranges', () => {
  it('merges, splits and classifies', () => {
    const r = new PrivateRanges();
    r.set(0x1000n, 0x5000n, true);
    r.set(0x5000n, 0x6000n, true);
    expect(r.list()).toEqual([{ start: 0x1000n, end: 0x6000n }]);
    r.set(0x2000n, 0x3000n, false);
    expect(r.list()).toEqual([{ start: 0x1000n, end: 0x2000n }, { start: 0x3000n, end: 0x6000n }]);
    expect(r.classify(0x1000n, 0x2000n)).toBe('private');
    expect(r.classify(0x2000n, 0x3000n)).toBe('shared');
    expect(r.classify(0x1000n, 0x4000n)).toBe('mixed');
    expect(r.runEnd(0x1000n, 0x10000n)).toBe(0x2000n);
    expect(r.runEnd(0x2000n, 0x10000n)).toBe(0x3000n);
    expect(r.runEnd(0x7000n, 0x10000n)).toBe(0x10000n);
  });
});
