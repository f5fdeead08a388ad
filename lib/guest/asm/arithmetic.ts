/**
 * The integer arithmetic family of {@link Asm}: the ALU group
 * (add/or/adc/sbb/and/sub/xor/cmp), test, the unary operations, imul and shifts.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import { encodeAccImm, regToReg } from './encoding.js';
import type { Reg, Reg64, Reg32, Reg16, Imm, Mem, AluOperands } from './operands.js';
import { AsmMoves } from './moves.js';
import { fitsS32, fitsS8, fitWidth, isMem, isReg, le, needsRexFor8, regInfo, sameWidth } from './values.js';

/** {@link AsmMoves} plus the integer arithmetic instructions. Use {@link Asm}. */
export class AsmArithmetic extends AsmMoves {
  // -- ALU --------------------------------------------------------------------

  /**
   * The classic ALU group (add/or/adc/sbb/and/sub/xor/cmp share one layout,
   * `op` is both the /digit and the row of the opcode map). Immediate forms use
   * imm8 when the value sign-extends from a byte, the one-byte-shorter
   * accumulator form for al/ax/eax/rax otherwise, and imm32 (sign-extended for
   * 64-bit registers) else, which is what GNU as picks too.
   */
  private alu(op: number, name: string, dst: Reg | Mem, src: Reg | Mem | Imm): this {
    if (isMem(dst)) {
      if (!isReg(src)) throw guestArgumentError(`${name} [mem], src: source must be a register`);
      const s = regInfo(src);
      return this.inst({ opcode: [op * 8 + (s.bits === 8 ? 0 : 1)], reg: s.num, rm: dst, bits: s.bits, forceRex: needsRexFor8(s) });
    }
    const d = regInfo(dst);
    if (isReg(src)) return this.inst(regToReg(op * 8, op * 8 + 1, name, d, src));
    if (isMem(src)) {
      return this.inst({ opcode: [op * 8 + (d.bits === 8 ? 2 : 3)], reg: d.num, rm: src, bits: d.bits, forceRex: needsRexFor8(d) });
    }
    const { u, s } = fitWidth(src, d.bits, `${name} immediate`);
    if (d.bits === 8) {
      if (d.num === 0) return this.emit([op * 8 + 4, ...le(u, 1)]);
      return this.inst({ opcode: [0x80], reg: op, rm: { reg: d.num }, bits: 8, forceRex: needsRexFor8(d), imm: le(u, 1) });
    }
    if (d.bits === 64 && !fitsS32(s)) {
      throw guestArgumentError(`${name} immediate ${s} is not a sign-extended 32-bit value (load it into a register first)`);
    }
    if (fitsS8(s)) return this.inst({ opcode: [0x83], reg: op, rm: { reg: d.num }, bits: d.bits, imm: le(s, 1) });
    const size = d.bits === 16 ? 2 : 4;
    if (d.num === 0) return this.emit(encodeAccImm(d.bits, op * 8 + 5, le(s, size)));
    return this.inst({ opcode: [0x81], reg: op, rm: { reg: d.num }, bits: d.bits, imm: le(s, size) });
  }

  /** add dst, src (reg/mem/imm forms, see {@link AluOperands}). */
  add(...[dst, src]: AluOperands): this {
    return this.alu(0, 'add', dst, src);
  }

  /** or dst, src. */
  or(...[dst, src]: AluOperands): this {
    return this.alu(1, 'or', dst, src);
  }

  /** adc dst, src (add with carry). */
  adc(...[dst, src]: AluOperands): this {
    return this.alu(2, 'adc', dst, src);
  }

  /** sbb dst, src (subtract with borrow). */
  sbb(...[dst, src]: AluOperands): this {
    return this.alu(3, 'sbb', dst, src);
  }

  /** and dst, src. */
  and(...[dst, src]: AluOperands): this {
    return this.alu(4, 'and', dst, src);
  }

  /** sub dst, src. */
  sub(...[dst, src]: AluOperands): this {
    return this.alu(5, 'sub', dst, src);
  }

  /** xor dst, src. `xor eax, eax` is the usual way to zero a register (clobbers flags). */
  xor(...[dst, src]: AluOperands): this {
    return this.alu(6, 'xor', dst, src);
  }

  /** cmp dst, src: sets flags from dst - src. */
  cmp(...[dst, src]: AluOperands): this {
    return this.alu(7, 'cmp', dst, src);
  }

  /**
   * test dst, src: sets flags from dst & src. There is no imm8 form of test, so
   * an immediate always takes the operand width (imm32 for 64-bit registers,
   * sign-extended).
   */
  test(dst: Reg, src: Reg | Imm): this {
    const d = regInfo(dst);
    if (isReg(src)) return this.inst(regToReg(0x84, 0x85, 'test', d, src));
    const { u, s } = fitWidth(src, d.bits, 'test immediate');
    if (d.bits === 64 && !fitsS32(s)) throw guestArgumentError(`test immediate ${s} is not a sign-extended 32-bit value`);
    const size = d.bits === 8 ? 1 : d.bits === 16 ? 2 : 4;
    const imm = le(d.bits === 64 ? s : u, size);
    if (d.num === 0) {
      return this.emit(encodeAccImm(d.bits, d.bits === 8 ? 0xa8 : 0xa9, imm));
    }
    return this.inst({ opcode: [d.bits === 8 ? 0xf6 : 0xf7], reg: 0, rm: { reg: d.num }, bits: d.bits, forceRex: needsRexFor8(d), imm });
  }

  private unary(digit: number, opcode8: number, opcode: number, r: Reg): this {
    const d = regInfo(r);
    return this.inst({ opcode: [d.bits === 8 ? opcode8 : opcode], reg: digit, rm: { reg: d.num }, bits: d.bits, forceRex: needsRexFor8(d) });
  }

  /** inc reg (does not touch CF). */
  inc(r: Reg): this {
    return this.unary(0, 0xfe, 0xff, r);
  }

  /** dec reg (does not touch CF; sets ZF, so `dec; jnz` makes a counted loop). */
  dec(r: Reg): this {
    return this.unary(1, 0xfe, 0xff, r);
  }

  /** not reg (one's complement, flags unchanged). */
  not(r: Reg): this {
    return this.unary(2, 0xf6, 0xf7, r);
  }

  /** neg reg (two's complement negation). */
  neg(r: Reg): this {
    return this.unary(3, 0xf6, 0xf7, r);
  }

  /** imul dst, src: signed multiply, low half kept (16/32/64-bit registers). */
  imul(dst: Reg16 | Reg32 | Reg64, src: Reg16 | Reg32 | Reg64 | Mem): this {
    const d = regInfo(dst);
    if (d.bits === 8) throw guestArgumentError('imul needs a 16, 32 or 64-bit destination');
    if (isReg(src)) {
      const s = regInfo(src);
      sameWidth(d, s, 'imul');
      return this.inst({ opcode: [0x0f, 0xaf], reg: d.num, rm: { reg: s.num }, bits: d.bits });
    }
    return this.inst({ opcode: [0x0f, 0xaf], reg: d.num, rm: src, bits: d.bits });
  }

  private shift(digit: number, name: string, r: Reg, count: number | 'cl'): this {
    const d = regInfo(r);
    const forceRex = needsRexFor8(d);
    const w8 = d.bits === 8;
    if (count === 'cl') return this.inst({ opcode: [w8 ? 0xd2 : 0xd3], reg: digit, rm: { reg: d.num }, bits: d.bits, forceRex });
    const max = d.bits === 64 ? 63 : 31;
    if (!Number.isInteger(count) || count < 0 || count > max) throw guestArgumentError(`${name} count must be 0..${max}, got ${count}`);
    // The by-one form is a byte shorter; GNU as picks it as well.
    if (count === 1) return this.inst({ opcode: [w8 ? 0xd0 : 0xd1], reg: digit, rm: { reg: d.num }, bits: d.bits, forceRex });
    return this.inst({ opcode: [w8 ? 0xc0 : 0xc1], reg: digit, rm: { reg: d.num }, bits: d.bits, forceRex, imm: [count] });
  }

  /** shl reg, count (count an immediate or 'cl'). */
  shl(r: Reg, count: number | 'cl'): this {
    return this.shift(4, 'shl', r, count);
  }

  /** shr reg, count: logical right shift. */
  shr(r: Reg, count: number | 'cl'): this {
    return this.shift(5, 'shr', r, count);
  }

  /** sar reg, count: arithmetic right shift. */
  sar(r: Reg, count: number | 'cl'): this {
    return this.shift(7, 'sar', r, count);
  }
}
