/**
 * The data-movement family of {@link Asm}: mov in all its forms, loads and
 * stores, zero extension, lea, and the stack (push/pop).
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import { encodeOpReg, regToReg } from './encoding.js';
import type { Reg, Reg64, Reg32, Reg16, Reg8, Imm, Bits, Mem, MovOperands } from './operands.js';
import { AsmProgram } from './program.js';
import { fitsS32, fitsS8, fitWidth, isImm, isMem, isReg, le, needsRexFor8, regInfo } from './values.js';

/** {@link AsmProgram} plus the data-movement instructions. Use {@link Asm}. */
export class AsmMoves extends AsmProgram {
  // -- moves ------------------------------------------------------------------

  /**
   * mov. Forms: reg, reg; reg, imm; reg, [mem] (load); [mem], reg (store).
   * For reg, imm the shortest correct encoding is chosen: a 64-bit register
   * takes `mov r32, imm32` (zero-extends) for 0..2^32-1, `mov r/m64, simm32`
   * for other values that sign-extend from 32 bits, else `movabs r64, imm64`.
   * Immediates may be given signed or unsigned for the register width.
   * Unlike xor-zeroing, every form leaves the flags alone.
   */
  mov(...[dst, src]: MovOperands): this {
    if (isMem(dst)) return this.store(dst, src as Reg);
    if (isMem(src)) return this.load(dst, src);
    const d = regInfo(dst);
    if (isReg(src)) return this.inst(regToReg(0x88, 0x89, 'mov', d, src));
    if (!isImm(src)) throw guestArgumentError(`mov: bad source operand ${String(src)}`);
    const { u, s } = fitWidth(src, d.bits, 'mov immediate');
    switch (d.bits) {
      case 8:
        return this.emit(encodeOpReg(8, 0xb0, d, le(u, 1)));
      case 16:
        return this.emit(encodeOpReg(16, 0xb8, d, le(u, 2)));
      case 32:
        return this.emit(encodeOpReg(32, 0xb8, d, le(u, 4)));
      case 64:
        if (u < 1n << 32n) return this.emit(encodeOpReg(32, 0xb8, d, le(u, 4)));
        if (fitsS32(s)) return this.inst({ opcode: [0xc7], reg: 0, rm: { reg: d.num }, bits: 64, imm: le(s, 4) });
        return this.emit(encodeOpReg(64, 0xb8, d, le(u, 8)));
    }
  }

  /** Load: `mov dst, [src]`, width taken from the register (8/16/32/64 bits). */
  load(dst: Reg, src: Mem): this {
    const d = regInfo(dst);
    return this.inst({ opcode: [d.bits === 8 ? 0x8a : 0x8b], reg: d.num, rm: src, bits: d.bits, forceRex: needsRexFor8(d) });
  }

  /** Store: `mov [dst], src`, width taken from the register (8/16/32/64 bits). */
  store(dst: Mem, src: Reg): this {
    const s = regInfo(src);
    return this.inst({ opcode: [s.bits === 8 ? 0x88 : 0x89], reg: s.num, rm: dst, bits: s.bits, forceRex: needsRexFor8(s) });
  }

  /**
   * Store an immediate: `mov byte/word/dword/qword [dst], imm`. A 64-bit store
   * takes a sign-extended 32-bit immediate (the only form x86-64 has), so the
   * value must be in -2^31..2^31-1 (or its 64-bit unsigned spelling).
   */
  storeImm(dst: Mem, imm: Imm, bits: Bits): this {
    const { u, s } = fitWidth(imm, bits, 'store immediate');
    switch (bits) {
      case 8:
        return this.inst({ opcode: [0xc6], reg: 0, rm: dst, bits, imm: le(u, 1) });
      case 16:
        return this.inst({ opcode: [0xc7], reg: 0, rm: dst, bits, imm: le(u, 2) });
      case 32:
        return this.inst({ opcode: [0xc7], reg: 0, rm: dst, bits, imm: le(u, 4) });
      case 64:
        if (!fitsS32(s)) throw guestArgumentError(`store immediate ${s} is not a sign-extended 32-bit value`);
        return this.inst({ opcode: [0xc7], reg: 0, rm: dst, bits, imm: le(s, 4) });
      default:
        throw guestArgumentError(`bits must be 8, 16, 32 or 64, got ${String(bits)}`);
    }
  }

  /**
   * movzx: zero-extend an 8- or 16-bit register into a wider one. Writing a
   * 32-bit destination also clears bits 63:32.
   */
  movzx(dst: Reg16 | Reg32 | Reg64, src: Reg8 | Reg16): this {
    const d = regInfo(dst);
    const s = regInfo(src);
    if (d.bits <= s.bits || d.bits === 8 || s.bits > 16) throw guestArgumentError(`movzx ${dst}, ${src}: invalid widths`);
    return this.inst({ opcode: [0x0f, s.bits === 8 ? 0xb6 : 0xb7], reg: d.num, rm: { reg: s.num }, bits: d.bits, forceRex: needsRexFor8(s) });
  }

  /** Zero-extending load of 8 or 16 bits from memory: `movzx dst, byte/word [src]`. */
  loadZx(dst: Reg16 | Reg32 | Reg64, src: Mem, bits: 8 | 16): this {
    const d = regInfo(dst);
    if (bits !== 8 && bits !== 16) throw guestArgumentError(`loadZx bits must be 8 or 16, got ${String(bits)}`);
    if (d.bits <= bits) throw guestArgumentError(`loadZx ${dst}: destination must be wider than ${bits} bits`);
    return this.inst({ opcode: [0x0f, bits === 8 ? 0xb6 : 0xb7], reg: d.num, rm: src, bits: d.bits });
  }

  /** lea: load the effective address of `src` (e.g. a label, RIP-relative). */
  lea(dst: Reg16 | Reg32 | Reg64, src: Mem): this {
    const d = regInfo(dst);
    if (d.bits === 8) throw guestArgumentError('lea needs a 16, 32 or 64-bit destination');
    return this.inst({ opcode: [0x8d], reg: d.num, rm: src, bits: d.bits });
  }

  // -- stack ------------------------------------------------------------------

  /** push a 64-bit register, or a sign-extended imm8/imm32. */
  push(src: Reg64 | Imm): this {
    if (isImm(src)) {
      const { s } = fitWidth(src, 64, 'push immediate');
      if (fitsS8(s)) return this.emit([0x6a, ...le(s, 1)]);
      if (!fitsS32(s)) throw guestArgumentError(`push immediate ${s} is not a sign-extended 32-bit value`);
      return this.emit([0x68, ...le(s, 4)]);
    }
    const r = regInfo(src);
    if (r.bits !== 64) throw guestArgumentError(`push needs a 64-bit register, got ${src}`);
    // push/pop default to 64-bit operands in long mode: no REX.W.
    return this.emit(encodeOpReg(64, 0x50, r, [], true));
  }

  /** pop into a 64-bit register. */
  pop(dst: Reg64): this {
    const r = regInfo(dst);
    if (r.bits !== 64) throw guestArgumentError(`pop needs a 64-bit register, got ${dst}`);
    return this.emit(encodeOpReg(64, 0x58, r, [], true));
  }
}
