import { describe, it, expect } from 'vitest';
import { spinReadProgram, SpinReadReason, touchPagesProgram } from '../../lib/guest/programs.js';

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** Count non-overlapping occurrences of a byte pattern (as hex text). */
function count(code: Uint8Array, pattern: string): number {
  return hex(code).split(pattern).length - 1;
}

describe('touchPagesProgram', () => {
  it('assembles the write loop (bytes checked against objdump during development)', () => {
    const { code, labels } = touchPagesProgram({ startGva: 0x10_0000, pages: 256, write: true, ucall: true }).link(0x1_0000n);
    expect(hex(code)).toBe(
      [
        'bb 00 00 10 00', //           mov ebx, 0x100000
        'b9 00 01 00 00', //           mov ecx, 256
        '48 85 c9', //                 test rcx, rcx
        '74 0f', //                    je done
        '48 89 1b', //           loop: mov [rbx], rbx
        '48 81 c3 00 10 00 00', //     add rbx, 0x1000
        '48 ff c9', //                 dec rcx
        '75 f1', //                    jne loop
        'ba 00 10 00 00', //     done: mov edx, 0x1000
        'b8 01 00 00 00', //           mov eax, 1 (DONE)
        'ef', //                       out dx, eax
        'eb d5', //                    jmp start
      ].join(' '),
    );
    expect(labels.get('start')).toBe(0x1_0000n);
    expect(labels.get('loop')).toBe(0x1_000fn);
    expect(labels.get('done')).toBe(0x1_001en);
  });

  it('loads instead of storing when write is false', () => {
    const code = touchPagesProgram({ startGva: 0x10_0000, pages: 4, write: false }).assemble(0n);
    expect(count(code, '4c 8b 2b')).toBe(1); // mov r13, [rbx]
    expect(count(code, '48 89 1b')).toBe(0);
  });

  it('has a size independent of origin and of counts that fit in 32 bits', () => {
    const size = (pages: number, start: bigint, origin: bigint) =>
      touchPagesProgram({ startGva: start, pages, write: true }).assemble(origin).length;
    const s = size(1, 0x1000n, 0n);
    expect(s).toBe(43);
    expect(size(0xffff_ffff, 0xffff_f000n, 0x40_0000n)).toBe(s);
    expect(size(0, 0n, 1n << 40n)).toBe(s);
  });

  it('handles addresses above 4 GiB and strides wider than 32 bits', () => {
    const a = touchPagesProgram({ startGva: 1n << 40n, pages: 10n, stride: 1n << 32n, write: true });
    const { code, labels } = a.link(0n);
    expect(hex(code.subarray(0, 10))).toBe('48 bb 00 00 00 00 00 01 00 00'); // movabs rbx, 2^40
    expect(count(code, '49 bc 00 00 00 00 01 00 00 00')).toBe(1); // movabs r12, 2^32
    expect(count(code, '4c 01 e3')).toBe(1); // add rbx, r12
    for (const l of ['start', 'loop', 'done']) expect(labels.has(l)).toBe(true);
  });

  it('supports a 2 MiB stride (one access per huge page) and negative strides', () => {
    expect(count(touchPagesProgram({ startGva: 0, pages: 8, stride: 0x20_0000, write: true }).assemble(0n), '48 81 c3 00 00 20 00')).toBe(1);
    expect(count(touchPagesProgram({ startGva: 0x10_0000, pages: 8, stride: -4096, write: true }).assemble(0n), '48 81 c3 00 f0 ff ff')).toBe(1);
  });

  it('rejects bad options', () => {
    expect(() => touchPagesProgram({ startGva: 0, pages: -1, write: true })).toThrow(RangeError);
    expect(() => touchPagesProgram({ startGva: 0, pages: 1.5, write: true })).toThrow(TypeError);
    expect(() => touchPagesProgram({ startGva: 0, pages: 1, write: true, ucall: false as unknown as true })).toThrow(TypeError);
  });
});

describe('spinReadProgram', () => {
  it('reads, compares, pauses and reports changes with SYNC(value, reason)', () => {
    const { code, labels } = spinReadProgram({ gva: 0x20_0000 }).link(0x1_0000n);
    for (const l of ['start', 'loop', 'idle', 'changed']) expect(labels.has(l), l).toBe(true);
    expect(labels.has('heartbeat')).toBe(false);
    expect(code.length).toBe(63);
    expect(hex(code.subarray(0, 8))).toBe('bb 00 00 20 00 4c 8b 23'); // mov ebx, gva ; mov r12, [rbx]
    const loop = Number(labels.get('loop')! - 0x1_0000n);
    // mov r13, [rbx] ; cmp r13, r12 ; jne changed ; pause ; jmp loop
    expect(hex(code.subarray(loop, loop + 12))).toBe('4c 8b 2b 4d 39 e5 75 04 f3 90 eb f4');
    expect(count(code, 'b8 02 02 00 00 ef')).toBe(2); // two SYNC sites with 2 args
    expect(count(code, 'be 00 00 00 00')).toBe(1); // reason INITIAL
    expect(count(code, 'be 01 00 00 00')).toBe(1); // reason CHANGED
    expect(SpinReadReason).toEqual({ INITIAL: 0n, CHANGED: 1n, HEARTBEAT: 2n });
  });

  it('adds a heartbeat report when asked', () => {
    const { code, labels } = spinReadProgram({ gva: 1n << 40n, heartbeatIterations: 1_000_000 }).link(0n);
    expect(labels.has('heartbeat')).toBe(true);
    expect(count(code, 'b8 02 02 00 00 ef')).toBe(3);
    expect(count(code, 'be 02 00 00 00')).toBe(1); // reason HEARTBEAT
    expect(count(code, '41 be 40 42 0f 00')).toBe(3); // mov r14d, 1000000: start, change, heartbeat
    expect(() => spinReadProgram({ gva: 0, heartbeatIterations: 0 })).toThrow(RangeError);
  });
});
