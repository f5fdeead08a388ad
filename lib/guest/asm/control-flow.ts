/**
 * The control-flow family of {@link Asm}: jmp and the jcc conditions to
 * labels (width chosen at link time), call, indirect jumps and calls, ret.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import { CONDITIONS, type Reg, type Reg64, type Condition, type BranchWidth } from './operands.js';
import { AsmArithmetic } from './arithmetic.js';
import { regInfo } from './values.js';

/** {@link AsmArithmetic} plus the control-flow instructions. Use {@link Asm}. */
export class AsmControlFlow extends AsmArithmetic {
  /** jmp to a label (rel8 or rel32, see {@link BranchWidth}). */
  jmp(label: string, width?: BranchWidth): this {
    return this.branch([0xeb], [0xe9], label, width);
  }

  /** Conditional jump to a label: jcc with any of the 16 conditions. */
  jcc(cond: Condition, label: string, width?: BranchWidth): this {
    const cc = (CONDITIONS as Record<string, number>)[cond];
    if (cc === undefined) throw guestArgumentError(`unknown condition ${JSON.stringify(cond)}`);
    return this.branch([0x70 + cc], [0x0f, 0x80 + cc], label, width);
  }

  /** je / jz: jump if equal (ZF = 1). */
  je(label: string, width?: BranchWidth): this {
    return this.jcc('e', label, width);
  }

  /** jne / jnz: jump if not equal (ZF = 0). */
  jne(label: string, width?: BranchWidth): this {
    return this.jcc('ne', label, width);
  }

  /** jz: same as je. */
  jz(label: string, width?: BranchWidth): this {
    return this.jcc('z', label, width);
  }

  /** jnz: same as jne. */
  jnz(label: string, width?: BranchWidth): this {
    return this.jcc('nz', label, width);
  }

  /** jb: jump if below (unsigned <, CF = 1). */
  jb(label: string, width?: BranchWidth): this {
    return this.jcc('b', label, width);
  }

  /** jae: jump if above or equal (unsigned >=). */
  jae(label: string, width?: BranchWidth): this {
    return this.jcc('ae', label, width);
  }

  /** ja: jump if above (unsigned >). */
  ja(label: string, width?: BranchWidth): this {
    return this.jcc('a', label, width);
  }

  /** jbe: jump if below or equal (unsigned <=). */
  jbe(label: string, width?: BranchWidth): this {
    return this.jcc('be', label, width);
  }

  /** jl: jump if less (signed <). */
  jl(label: string, width?: BranchWidth): this {
    return this.jcc('l', label, width);
  }

  /** jge: jump if greater or equal (signed >=). */
  jge(label: string, width?: BranchWidth): this {
    return this.jcc('ge', label, width);
  }

  /** jg: jump if greater (signed >). */
  jg(label: string, width?: BranchWidth): this {
    return this.jcc('g', label, width);
  }

  /** jle: jump if less or equal (signed <=). */
  jle(label: string, width?: BranchWidth): this {
    return this.jcc('le', label, width);
  }

  /** call a label (always rel32: call has no rel8 form). */
  call(label: string): this {
    return this.branch(null, [0xe8], label, 'near');
  }

  /** Indirect jmp through a 64-bit register. */
  jmpReg(target: Reg64): this {
    const r = regInfo(target);
    if (r.bits !== 64) throw guestArgumentError(`jmpReg needs a 64-bit register, got ${target}`);
    // Near indirect jumps are 64-bit by default: no REX.W.
    return this.inst({ opcode: [0xff], reg: 4, rm: { reg: r.num }, bits: 64, noRexW: true });
  }

  /** Indirect call through a 64-bit register. */
  callReg(target: Reg64): this {
    const r = regInfo(target);
    if (r.bits !== 64) throw guestArgumentError(`callReg needs a 64-bit register, got ${target}`);
    return this.inst({ opcode: [0xff], reg: 2, rm: { reg: r.num }, bits: 64, noRexW: true });
  }

  /** Counted-loop helper: `dec counter; jnz label`. */
  decJnz(counter: Reg, label: string, width?: BranchWidth): this {
    return this.dec(counter).jnz(label, width);
  }

  /** ret. */
  ret(): this {
    return this.emit([0xc3]);
  }
}
