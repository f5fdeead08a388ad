/**
 * The x86-64 instruction encoder behind {@link Asm}: legacy prefix, REX,
 * opcode, ModRM, SIB, displacement and immediate for one instruction, as bytes
 * plus the label references the linker fills in. Pure functions: the
 * instruction families decide opcodes and operand forms, this file only lays
 * out the fields.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import type { Bits, Mem, Reg } from './operands.js';
import { checkLabelName, fitsS32, fitsS8, le, needsRexFor8, regInfo, sameWidth, toBigInt, type RegInfo } from './values.js';

/** How a fixup field is filled at link time. */
export type FixupKind = 'rel32' | 'abs64';

/** A field that refers to a label, filled in at link time. */
export interface Fixup {
  /** Byte offset of the field inside the chunk. */
  at: number;
  /** For rel32: chunk offset the displacement is relative to (end of instruction). */
  end: number;
  /** rel32: signed distance from `end`; abs64: the label's absolute address. */
  kind: FixupKind;
  /** The label referred to. */
  label: string;
  /** Added to the label's address (or distance). */
  addend: bigint;
}

/** One encoded instruction: its bytes and the label fields in them. */
export interface Encoded {
  /** The machine code, label fields zero. */
  bytes: number[];
  /** The label fields, offsets relative to `bytes`. */
  fixups: Fixup[];
}

/** An r/m operand: a register number (mod = 11) or a memory operand. */
export type Rm = { reg: number } | Mem;

/** What {@link encodeInst} lays out. */
export interface EncodeArgs {
  /** The opcode bytes (after the prefixes, before ModRM). */
  opcode: number[];
  /** The ModRM reg field: a register number or an opcode extension (/digit). */
  reg: number;
  /** The ModRM r/m operand: a register or memory. */
  rm: Rm;
  /** Operand width; 16 adds 0x66 and 64 sets REX.W. 8 and 32 add nothing. */
  bits: Bits;
  /** Set when an 8-bit operand is spl/bpl/sil/dil, which only exist with REX. */
  forceRex?: boolean;
  /** Set when `bits` must not produce REX.W (e.g. push/pop default to 64-bit). */
  noRexW?: boolean;
  /** Immediate bytes, after any displacement. */
  imm?: number[];
}

/**
 * The register-to-register form `op dst, src` (ModRM.rm = dst, ModRM.reg =
 * src) for two registers of one width: `opcode8` for 8-bit ones, `opcode`
 * for the others (mov, the ALU group and test share this layout).
 */
export function regToReg(opcode8: number, opcode: number, what: string, d: RegInfo, src: Reg): EncodeArgs {
  const s = regInfo(src);
  sameWidth(d, s, what);
  return { opcode: [d.bits === 8 ? opcode8 : opcode], reg: s.num, rm: { reg: d.num }, bits: d.bits, forceRex: needsRexFor8(d) || needsRexFor8(s) };
}

/**
 * Encode prefix, REX, opcode, ModRM, SIB, displacement and immediate for one
 * instruction. The RIP-relative displacement fixup is measured from the end of
 * the whole instruction, immediate included, as the CPU does.
 */
export function encodeInst(a: EncodeArgs): Encoded {
  const out: number[] = [];
  if (a.bits === 16) out.push(0x66);
  const rexW = a.bits === 64 && !a.noRexW ? 1 : 0;
  const rexR = a.reg >= 8 ? 1 : 0;
  let rexX = 0;
  let rexB = 0;
  const tail: number[] = [];
  let fixup: Omit<Fixup, 'end'> | undefined;
  const regField = (a.reg & 7) << 3;

  if ('reg' in a.rm) {
    rexB = a.rm.reg >= 8 ? 1 : 0;
    tail.push(0xc0 | regField | (a.rm.reg & 7));
  } else {
    const m = a.rm;
    const disp = toBigInt(m.disp ?? 0, 'displacement');
    if (!fitsS32(disp)) throw guestArgumentError(`displacement ${disp} does not fit in a signed 32-bit field`);
    if (m.scale !== undefined && ![1, 2, 4, 8].includes(m.scale)) {
      throw guestArgumentError(`scale must be 1, 2, 4 or 8, got ${String(m.scale)}`);
    }
    if (m.scale !== undefined && m.scale !== 1 && m.index === undefined) {
      throw guestArgumentError('a scale needs an index register');
    }
    const ss = [1, 2, 4, 8].indexOf(m.scale ?? 1) << 6;
    if (m.label !== undefined) {
      checkLabelName(m.label);
      if (m.base !== undefined || m.index !== undefined) {
        throw guestArgumentError('a RIP-relative (label) operand cannot have a base or index');
      }
      // mod 00, rm 101 = [rip + disp32] in 64-bit mode.
      tail.push(regField | 0x05);
      fixup = { at: tail.length, kind: 'rel32', label: m.label, addend: disp };
      tail.push(0, 0, 0, 0);
    } else {
      let index = 4; // 100 with REX.X = 0 means "no index"
      if (m.index !== undefined) {
        const ii = regInfo(m.index);
        if (ii.bits !== 64) throw guestArgumentError(`index register must be 64-bit, got ${m.index}`);
        if (ii.num === 4) throw guestArgumentError('rsp cannot be an index register');
        index = ii.num & 7;
        rexX = ii.num >= 8 ? 1 : 0;
      }
      if (m.base === undefined) {
        // No base: mod 00 with SIB base 101 means disp32 with no base register.
        // (mod 00 rm 101 without SIB would be RIP-relative in 64-bit mode.)
        tail.push(regField | 0x04, ss | (index << 3) | 0x05, ...le(disp, 4));
      } else {
        const bi = regInfo(m.base);
        if (bi.bits !== 64) throw guestArgumentError(`base register must be 64-bit, got ${m.base}`);
        rexB = bi.num >= 8 ? 1 : 0;
        const base = bi.num & 7;
        // rbp/r13 (low bits 101) with mod 00 mean "no base"/RIP, so they always
        // carry a displacement, a zero disp8 if need be.
        const mod = disp === 0n && base !== 5 ? 0 : fitsS8(disp) ? 1 : 2;
        // rsp/r12 (low bits 100) in rm mean "SIB follows", so they need a SIB.
        if (m.index !== undefined || base === 4) {
          tail.push((mod << 6) | regField | 0x04, ss | (index << 3) | base);
        } else {
          tail.push((mod << 6) | regField | base);
        }
        if (mod === 1) tail.push(...le(disp, 1));
        else if (mod === 2) tail.push(...le(disp, 4));
      }
    }
  }
  const rex = 0x40 | (rexW << 3) | (rexR << 2) | (rexX << 1) | rexB;
  if (rex !== 0x40 || a.forceRex) out.push(rex);
  out.push(...a.opcode);
  const tailStart = out.length;
  out.push(...tail);
  if (a.imm) out.push(...a.imm);
  const fixups: Fixup[] = fixup ? [{ ...fixup, at: fixup.at + tailStart, end: out.length }] : [];
  return { bytes: out, fixups };
}

/** Encode an instruction with the register in the low opcode bits (B8+r, 50+r). */
export function encodeOpReg(prefixBits: Bits, opcodeBase: number, r: RegInfo, imm: number[] = [], noRexW = false): number[] {
  const out: number[] = [];
  if (prefixBits === 16) out.push(0x66);
  const w = prefixBits === 64 && !noRexW ? 1 : 0;
  const rex = 0x40 | (w << 3) | (r.num >= 8 ? 1 : 0);
  if (rex !== 0x40 || needsRexFor8(r)) out.push(rex);
  out.push(opcodeBase + (r.num & 7), ...imm);
  return out;
}

/**
 * The accumulator short forms (op al/ax/eax/rax, imm) have no ModRM byte: only
 * the operand-size prefix or REX.W, the opcode and the immediate.
 */
export function encodeAccImm(bits: Bits, opcode: number, imm: number[]): number[] {
  const pre = bits === 16 ? [0x66] : bits === 64 ? [0x48] : [];
  return [...pre, opcode, ...imm];
}
