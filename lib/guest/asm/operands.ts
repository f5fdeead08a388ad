/**
 * The operand vocabulary of {@link Asm}: register names, immediates, memory
 * operands, jcc conditions and branch widths. Types and constants only; the
 * checks that turn them into encoding fields live in ./values.ts.
 *
 * @module
 */
import type { Asm } from '../asm.js';

/** The 64-bit general purpose registers, in hardware encoding order. */
export const REGS64 = [
  'rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
] as const;
/** The 32-bit general purpose registers, in hardware encoding order. */
export const REGS32 = [
  'eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi',
  'r8d', 'r9d', 'r10d', 'r11d', 'r12d', 'r13d', 'r14d', 'r15d',
] as const;
/** The 16-bit general purpose registers, in hardware encoding order. */
export const REGS16 = [
  'ax', 'cx', 'dx', 'bx', 'sp', 'bp', 'si', 'di',
  'r8w', 'r9w', 'r10w', 'r11w', 'r12w', 'r13w', 'r14w', 'r15w',
] as const;
/**
 * The 8-bit registers, in hardware encoding order. 'spl'..'dil' need a REX
 * prefix; the legacy 'ah'..'bh' are left out because they cannot be mixed with
 * REX and nothing here needs them.
 */
export const REGS8 = [
  'al', 'cl', 'dl', 'bl', 'spl', 'bpl', 'sil', 'dil',
  'r8b', 'r9b', 'r10b', 'r11b', 'r12b', 'r13b', 'r14b', 'r15b',
] as const;

/** A 64-bit general purpose register name. */
export type Reg64 = (typeof REGS64)[number];
/** A 32-bit general purpose register name (writes zero-extend to 64 bits). */
export type Reg32 = (typeof REGS32)[number];
/** A 16-bit general purpose register name. */
export type Reg16 = (typeof REGS16)[number];
/** An 8-bit register name (low byte of a general purpose register). */
export type Reg8 = (typeof REGS8)[number];
/** Any register this assembler knows. */
export type Reg = Reg64 | Reg32 | Reg16 | Reg8;
/** A register usable as a SIB index: rsp cannot be encoded as an index. */
export type IndexReg = Exclude<Reg64, 'rsp'>;
/** An immediate operand; numbers must be safe integers. */
export type Imm = number | bigint;
/** Operand width in bits. */
export type Bits = 8 | 16 | 32 | 64;

/**
 * A memory operand: [base + index*scale + disp], or, with `label`, the
 * RIP-relative address of a label plus `disp` (position independent, so the same
 * bytes work at any origin). With neither base nor index nor label, `disp` is an
 * absolute address (sign-extended 32-bit, so below 2 GiB).
 */
export interface Mem {
  /** Base register (any 64-bit register). */
  base?: Reg64;
  /** Index register (not rsp). */
  index?: IndexReg;
  /** Index scale; only meaningful with `index`. Default 1. */
  scale?: 1 | 2 | 4 | 8;
  /** Signed 32-bit displacement. Default 0. */
  disp?: number | bigint;
  /** RIP-relative reference to a label; excludes base and index. */
  label?: string;
}

/** Shorthand for a [base + disp] memory operand. */
export function mem(base: Reg64, disp: number | bigint = 0): Mem {
  return { base, disp };
}

/** The condition codes of jcc, with their usual aliases, mapped to the encoding nibble. */
export const CONDITIONS = {
  o: 0x0, no: 0x1,
  b: 0x2, c: 0x2, nae: 0x2,
  ae: 0x3, nb: 0x3, nc: 0x3,
  e: 0x4, z: 0x4,
  ne: 0x5, nz: 0x5,
  be: 0x6, na: 0x6,
  a: 0x7, nbe: 0x7,
  s: 0x8, ns: 0x9,
  p: 0xa, pe: 0xa,
  np: 0xb, po: 0xb,
  l: 0xc, nge: 0xc,
  ge: 0xd, nl: 0xd,
  le: 0xe, ng: 0xe,
  g: 0xf, nle: 0xf,
} as const;
/** A jcc condition name, e.g. 'e', 'ne', 'b', 'ge'. */
export type Condition = keyof typeof CONDITIONS;

/**
 * Branch width: 'short' forces rel8 (linking fails if the target is too far),
 * 'near' forces rel32, 'auto' uses rel8 when the target is in reach.
 */
export type BranchWidth = 'auto' | 'short' | 'near';

/** ALU operand forms accepted by add/sub/and/or/xor/cmp/adc/sbb. */
export type AluOperands = [dst: Reg, src: Reg | Mem | Imm] | [dst: Mem, src: Reg];
/** Operand forms accepted by {@link Asm.mov}. */
export type MovOperands = [dst: Reg, src: Reg | Mem | Imm] | [dst: Mem, src: Reg];
