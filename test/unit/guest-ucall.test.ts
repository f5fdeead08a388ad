import { describe, it, expect } from 'vitest';
import { Asm, REGS64, type Reg64 } from '../../lib/guest/asm.js';
import {
  UCALL_PORT,
  UcallCommand,
  UcallDecodeError,
  decodeUcall,
  emitUcallAbort,
  emitUcallDone,
  emitUcallPrint,
  emitUcallSync,
  readGuestCString,
  type UcallArg,
  type UcallRegs,
} from '../../lib/guest/ucall.js';

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

function regs(partial: Partial<UcallRegs> = {}): UcallRegs {
  return { rax: 0n, rdi: 0n, rsi: 0n, r8: 0n, r9: 0n, ...partial };
}

function outIo(eax: number) {
  const data = new Uint8Array(4);
  new DataView(data.buffer).setUint32(0, eax, true);
  return { port: UCALL_PORT, direction: 'out' as const, size: 4, data };
}

/**
 * Executes the handful of instruction forms the ucall emitters produce (mov
 * r64,r64; mov r32,imm32; mov r64,simm32; movabs; lea r64,[rip+disp32]) up to
 * the `out dx, eax`, which is where the vcpu would exit. Anything else fails the
 * test, so the emitters cannot grow unnoticed instructions.
 */
function runToOut(code: Uint8Array, origin: bigint, init: Map<number, bigint>): { regs: Map<number, bigint>; rip: bigint } {
  const r = new Map(init);
  const dv = new DataView(code.buffer, code.byteOffset, code.byteLength);
  let pc = 0;
  for (let steps = 0; steps < 100; steps++) {
    let rex = 0;
    if ((code[pc]! & 0xf0) === 0x40) rex = code[pc++]!;
    const w = (rex & 8) !== 0;
    const rexR = (rex & 4) << 1;
    const rexB = (rex & 1) << 3;
    const op = code[pc++]!;
    if (op === 0xef && rex === 0) return { regs: r, rip: origin + BigInt(pc) };
    if (op === 0x89 && w) {
      const m = code[pc++]!;
      expect(m >> 6).toBe(3);
      r.set((m & 7) | rexB, r.get(((m >> 3) & 7) | rexR)!);
    } else if (op >= 0xb8 && op <= 0xbf && !w) {
      r.set((op - 0xb8) | rexB, BigInt(dv.getUint32(pc, true)));
      pc += 4;
    } else if (op >= 0xb8 && op <= 0xbf && w) {
      r.set((op - 0xb8) | rexB, dv.getBigUint64(pc, true));
      pc += 8;
    } else if (op === 0xc7 && w) {
      const m = code[pc++]!;
      expect(m & 0xf8).toBe(0xc0);
      r.set((m & 7) | rexB, BigInt.asUintN(64, BigInt(dv.getInt32(pc, true))));
      pc += 4;
    } else if (op === 0x8d && w) {
      const m = code[pc++]!;
      expect(m & 0xc7).toBe(0x05);
      const disp = BigInt(dv.getInt32(pc, true));
      pc += 4;
      r.set(((m >> 3) & 7) | rexR, origin + BigInt(pc) + disp);
    } else {
      throw new Error(`unexpected opcode ${op.toString(16)} at ${pc - 1}`);
    }
  }
  throw new Error('no out instruction reached');
}

const num = (r: Reg64): number => REGS64.indexOf(r);
const initialValue = (n: number): bigint => 0x1111_0000_0000_0000n + BigInt(n) * 0x101n;

function runUcall(build: (a: Asm) => unknown, origin = 0x40_0000n) {
  const a = new Asm();
  build(a);
  const code = a.assemble(origin);
  const init = new Map(REGS64.map((_, i) => [i, initialValue(i)] as const));
  const { regs: out } = runToOut(code, origin, init);
  const get = (r: Reg64) => out.get(num(r))!;
  const eax = Number(get('rax') & 0xffff_ffffn);
  expect(get('rdx') & 0xffffn).toBe(BigInt(UCALL_PORT));
  return {
    code,
    get,
    decoded: decodeUcall(
      outIo(eax),
      { rax: get('rax'), rdi: get('rdi'), rsi: get('rsi'), r8: get('r8'), r9: get('r9') },
      (gva) => readGuestCString(code, origin, gva),
    ),
  };
}

describe('guest-side emitters: exact bytes', () => {
  it('DONE', () => {
    const a = new Asm();
    expect(emitUcallDone(a)).toBe(a);
    // mov edx, 0x1000 ; mov eax, 1 ; out dx, eax
    expect(hex(a.assemble(0n))).toBe('ba 00 10 00 00 b8 01 00 00 00 ef');
  });

  it('SYNC with constants and registers', () => {
    const a = new Asm();
    emitUcallSync(a, 5, 'rbx');
    // mov rsi, rbx ; mov edi, 5 ; mov edx, 0x1000 ; mov eax, 0x202 ; out dx, eax
    expect(hex(a.assemble(0n))).toBe('48 89 de bf 05 00 00 00 ba 00 10 00 00 b8 02 02 00 00 ef');
  });

  it('SYNC with no arguments and with an argument already in place', () => {
    expect(hex(emitUcallSync(new Asm()).assemble(0n))).toBe('ba 00 10 00 00 b8 02 00 00 00 ef');
    expect(hex(emitUcallSync(new Asm(), 'rdi').assemble(0n))).toBe('ba 00 10 00 00 b8 02 01 00 00 ef');
  });

  it('ABORT with a label message', () => {
    const a = new Asm();
    emitUcallAbort(a, 'msg', 42);
    a.label('msg').asciz('x');
    // mov esi, 42 ; lea rdi, [rip+0xb] ; mov edx, 0x1000 ; mov eax, 3 ; out dx, eax ; "x\0"
    expect(hex(a.assemble(0n))).toBe('be 2a 00 00 00 48 8d 3d 0b 00 00 00 ba 00 10 00 00 b8 03 00 00 00 ef 78 00');
  });

  it('PRINT with an absolute message address', () => {
    const a = new Asm();
    emitUcallPrint(a, 0x5000, 'rax');
    // mov rsi, rax ; mov edi, 0x5000 ; mov edx, 0x1000 ; mov eax, 0x104 ; out dx, eax
    expect(hex(a.assemble(0n))).toBe('48 89 c6 bf 00 50 00 00 ba 00 10 00 00 b8 04 01 00 00 ef');
  });

  it('rejects too many or bad arguments', () => {
    expect(() => emitUcallSync(new Asm(), 1, 2, 3, 4, 5)).toThrow(RangeError);
    expect(() => emitUcallPrint(new Asm(), 0, 1, 2, 3, 4)).toThrow(RangeError);
    expect(() => emitUcallSync(new Asm(), 'eax' as Reg64)).toThrow(TypeError);
    expect(() => emitUcallAbort(new Asm(), null as unknown as string)).toThrow(TypeError);
  });
});

describe('guest to host round trips', () => {
  it('DONE', () => {
    expect(runUcall((a) => emitUcallDone(a)).decoded).toEqual({ kind: 'done' });
  });

  it('SYNC passes register and immediate arguments, including negative and 64-bit ones', () => {
    const { decoded } = runUcall((a) => emitUcallSync(a, 'rbx', -1, 1n << 40n, 'r15'));
    expect(decoded).toEqual({
      kind: 'sync',
      args: [initialValue(num('rbx')), 0xffff_ffff_ffff_ffffn, 1n << 40n, initialValue(num('r15'))],
    });
  });

  it('SYNC argument moves behave as one parallel assignment for every register combination', () => {
    // Sources include the destination registers themselves (swaps, rotations,
    // duplicates) and rax/rdx, which the call overwrites afterwards.
    const sources: Reg64[] = ['rdi', 'rsi', 'r8', 'r9', 'rax', 'rdx', 'rbx'];
    let checked = 0;
    for (const a0 of sources)
      for (const a1 of sources)
        for (const a2 of sources)
          for (const a3 of sources) {
            const args = [a0, a1, a2, a3];
            const { decoded } = runUcall((a) => emitUcallSync(a, ...args));
            expect(decoded).toEqual({ kind: 'sync', args: args.map((r) => initialValue(num(r))) });
            checked++;
          }
    expect(checked).toBe(7 ** 4);
  });

  it('SYNC with fewer arguments reports only those', () => {
    const args: UcallArg[] = ['rsi', 'rdi'];
    expect(runUcall((a) => emitUcallSync(a, ...args)).decoded).toEqual({
      kind: 'sync',
      args: [initialValue(num('rsi')), initialValue(num('rdi'))],
    });
  });

  it('ABORT with embedded text, a value taken from rdi, and code after it', () => {
    const { decoded, get } = runUcall((a) => {
      emitUcallAbort(a, { text: 'assertion failed: x == 1' }, 'rdi');
      emitUcallAbort(a, { text: 'second' }, 7);
    });
    expect(decoded).toEqual({
      kind: 'abort',
      message: 'assertion failed: x == 1',
      messageGva: get('rdi'),
      value: initialValue(num('rdi')),
    });
  });

  it('ABORT text is jumped over if the host resumes the guest', () => {
    const a = new Asm();
    emitUcallAbort(a, { text: 'ab' }, 0);
    a.label('after').nop();
    const { code, labels } = a.link(0n);
    // ... out dx, eax ; jmp +3 ; "ab\0" ; nop
    expect(hex(code.subarray(code.length - 6))).toBe('eb 03 61 62 00 90');
    expect(labels.get('after')).toBe(BigInt(code.length - 1));
  });

  it('PRINT with a label message and three values', () => {
    const { decoded, get } = runUcall((a) => {
      emitUcallPrint(a, 'fmt', 'r9', 'rdi', 3);
      a.label('fmt').asciz('pages=%d');
    });
    expect(decoded).toEqual({
      kind: 'print',
      message: 'pages=%d',
      messageGva: get('rdi'),
      args: [initialValue(num('r9')), initialValue(num('rdi')), 3n],
    });
  });
});

describe('decodeUcall (host side)', () => {
  it('decodes each command from the exit data', () => {
    const r = regs({ rdi: 1n, rsi: 2n, r8: 3n, r9: 4n });
    expect(decodeUcall(outIo(UcallCommand.DONE), r)).toEqual({ kind: 'done' });
    expect(decodeUcall(outIo(0x002), r)).toEqual({ kind: 'sync', args: [] });
    expect(decodeUcall(outIo(0x102), r)).toEqual({ kind: 'sync', args: [1n] });
    expect(decodeUcall(outIo(0x402), r)).toEqual({ kind: 'sync', args: [1n, 2n, 3n, 4n] });
    expect(decodeUcall(outIo(0x004), r, () => 'hello')).toEqual({
      kind: 'print', message: 'hello', messageGva: 1n, args: [],
    });
    expect(decodeUcall(outIo(0x304), r, () => 'hello')).toEqual({
      kind: 'print', message: 'hello', messageGva: 1n, args: [2n, 3n, 4n],
    });
    expect(decodeUcall(outIo(UcallCommand.ABORT), regs({ rdi: 0x2000n, rsi: 77n }), (g) => `at ${g}`)).toEqual({
      kind: 'abort', message: 'at 8192', messageGva: 0x2000n, value: 77n,
    });
  });

  it('takes eax from rax when the exit data is not given, ignoring the upper half', () => {
    const io = { port: UCALL_PORT, direction: 'out' as const, size: 4 };
    expect(decodeUcall(io, regs({ rax: 0xdead_beef_0000_0102n, rdi: 9n }))).toEqual({ kind: 'sync', args: [9n] });
  });

  it('normalizes register values to unsigned 64-bit', () => {
    expect(decodeUcall(outIo(0x102), regs({ rdi: -1n }))).toEqual({ kind: 'sync', args: [0xffff_ffff_ffff_ffffn] });
  });

  it('returns undefined for other ports', () => {
    expect(decodeUcall({ port: 0x3f8, direction: 'out', size: 1, data: new Uint8Array([65]) }, regs())).toBeUndefined();
    expect(decodeUcall({ port: 0x1001, direction: 'out', size: 4 }, regs({ rax: 1n }))).toBeUndefined();
  });

  it('throws UcallDecodeError for protocol violations on the ucall port', () => {
    expect(() => decodeUcall({ port: UCALL_PORT, direction: 'in', size: 4 }, regs())).toThrow(UcallDecodeError);
    expect(() => decodeUcall({ port: UCALL_PORT, direction: 'out', size: 1 }, regs())).toThrow(/4-byte/);
    expect(() => decodeUcall({ ...outIo(1), data: new Uint8Array(2) }, regs())).toThrow(/need 4/);
    expect(() => decodeUcall(outIo(0), regs())).toThrow(/unknown ucall command 0/);
    expect(() => decodeUcall(outIo(9), regs())).toThrow(/unknown ucall command 9/);
    expect(() => decodeUcall(outIo(0x502), regs())).toThrow(/5 arguments/);
    expect(() => decodeUcall(outIo(0x404), regs())).toThrow(/4 values/);
    expect(() => decodeUcall(outIo(0x1_0001), regs())).toThrow(/reserved bits/);
    expect(() => decodeUcall(outIo(0x201), regs())).toThrow(/no argument count/);
    expect(() => decodeUcall(outIo(0x103), regs())).toThrow(/no argument count/);
    const e = (() => {
      try {
        decodeUcall(outIo(0), regs());
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(e).toBeInstanceOf(Error);
    expect((e as Error).name).toBe('UcallDecodeError');
  });

  it('keeps ABORT reports when the message cannot be read', () => {
    const io = outIo(UcallCommand.ABORT);
    expect(decodeUcall(io, regs({ rdi: 0x1234n, rsi: 5n }))).toEqual({
      kind: 'abort', message: '<message at gva 0x1234>', messageGva: 0x1234n, value: 5n,
    });
    const failing = () => {
      throw new Error('not mapped');
    };
    expect(decodeUcall(io, regs({ rdi: 0x1234n }), failing)).toMatchObject({
      kind: 'abort', message: '<unreadable message at gva 0x1234: not mapped>',
    });
  });
});

describe('readGuestCString', () => {
  const mem = new Uint8Array([0x41, 0x42, 0, 0x68, 0xc3, 0xa9, 0, 0x7a, 0x7a]);
  it('reads up to the NUL, decoding UTF-8, relative to the memory gpa', () => {
    expect(readGuestCString(mem, 0x1000n, 0x1000n)).toBe('AB');
    expect(readGuestCString(mem, 0x1000, 0x1003n)).toBe('hé');
    expect(readGuestCString(mem, 0x1000n, 0x1002n)).toBe('');
  });
  it('stops at maxBytes or the end of memory', () => {
    expect(readGuestCString(mem, 0x1000n, 0x1000n, 1)).toBe('A');
    expect(readGuestCString(mem, 0x1000n, 0x1007n)).toBe('zz');
  });
  it('throws RangeError outside memory', () => {
    expect(() => readGuestCString(mem, 0x1000n, 0xfffn)).toThrow(RangeError);
    expect(() => readGuestCString(mem, 0x1000n, 0x1009n)).toThrow(RangeError);
  });
});
