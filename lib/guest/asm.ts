/**
 * A small typed x86-64 assembler for the test guests this project runs.
 *
 * It covers what a guest needs to loop over memory and talk to the host over
 * port I/O: moves, loads and stores with full [base + index*scale + disp]
 * addressing, integer ALU operations, shifts, branches to labels and raw data.
 * It is deliberately not a general assembler: there are no 'ah'..'bh' registers,
 * no SSE, and no 16/32-bit code modes. Every instruction is encoded eagerly except
 * branches, whose width (rel8 or rel32) is chosen when the program is linked.
 *
 * @module
 */
import { guestArgumentError } from './guest-error.js';

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

/** Options for {@link Asm}. */
export interface AsmOptions {
  /**
   * Default width for jmp/jcc whose call does not specify one. 'auto' (the
   * default) gives the smallest code; 'near' keeps every branch 5 or 6 bytes so
   * code sizes do not depend on distances.
   */
  branches?: 'auto' | 'near';
}

/** Result of {@link Asm.link}. */
export interface LinkedProgram {
  /** The machine code and data, to be placed at `origin`. */
  code: Uint8Array;
  /** The address the code was linked for. */
  origin: bigint;
  /** Every label's absolute address (origin + offset). */
  labels: ReadonlyMap<string, bigint>;
}

/** ALU operand forms accepted by add/sub/and/or/xor/cmp/adc/sbb. */
export type AluOperands = [dst: Reg, src: Reg | Mem | Imm] | [dst: Mem, src: Reg];
/** Operand forms accepted by {@link Asm.mov}. */
export type MovOperands = [dst: Reg, src: Reg | Mem | Imm] | [dst: Mem, src: Reg];

// ---------------------------------------------------------------------------
// Register and immediate helpers

interface RegInfo {
  num: number;
  bits: Bits;
}

const REG_INFO: ReadonlyMap<string, RegInfo> = (() => {
  const m = new Map<string, RegInfo>();
  const add = (names: readonly string[], bits: Bits): void =>
    names.forEach((n, num) => m.set(n, { num, bits }));
  add(REGS64, 64);
  add(REGS32, 32);
  add(REGS16, 16);
  add(REGS8, 8);
  return m;
})();

function regInfo(r: unknown): RegInfo {
  const info = typeof r === 'string' ? REG_INFO.get(r) : undefined;
  if (info === undefined) throw guestArgumentError(`unknown register ${JSON.stringify(r)}`);
  return info;
}

function isReg(x: unknown): x is Reg {
  return typeof x === 'string' && REG_INFO.has(x);
}

function isImm(x: unknown): x is Imm {
  return typeof x === 'number' || typeof x === 'bigint';
}

function isMem(x: unknown): x is Mem {
  return typeof x === 'object' && x !== null;
}

function toBigInt(v: Imm, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw guestArgumentError(`${what} must be an integer (safe number or bigint), got ${String(v)}`);
  }
  return BigInt(v);
}

/**
 * Interpret `v` as a `bits`-wide value. Both the signed and the unsigned
 * spelling are accepted (0xff and -1 are the same byte), so callers can write
 * masks naturally; anything outside both ranges is a mistake.
 */
function fitWidth(v: Imm, bits: number, what: string): { u: bigint; s: bigint } {
  const b = toBigInt(v, what);
  const lo = -(1n << BigInt(bits - 1));
  const hi = (1n << BigInt(bits)) - 1n;
  if (b < lo || b > hi) throw guestArgumentError(`${what} ${b} does not fit in ${bits} bits`);
  return { u: BigInt.asUintN(bits, b), s: BigInt.asIntN(bits, b) };
}

function fitsS8(s: bigint): boolean {
  return s >= -128n && s <= 127n;
}

function fitsS32(s: bigint): boolean {
  return s >= -(1n << 31n) && s < 1n << 31n;
}

function le(value: bigint, size: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(size * 8, value);
  for (let i = 0; i < size; i++) {
    out.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return out;
}

function checkLabelName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw guestArgumentError(`label name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  return name;
}

// ---------------------------------------------------------------------------
// Program representation

type FixupKind = 'rel32' | 'abs64';

interface Fixup {
  /** Byte offset of the field inside the chunk. */
  at: number;
  /** For rel32: chunk offset the displacement is relative to (end of instruction). */
  end: number;
  kind: FixupKind;
  label: string;
  addend: bigint;
}

type Item =
  | { kind: 'bytes'; data: number[]; fixups: Fixup[] }
  | { kind: 'label'; name: string }
  | { kind: 'branch'; short: number[] | null; near: number[]; label: string; width: BranchWidth; useShort: boolean }
  | { kind: 'align'; alignment: number; fill: number };

/** An r/m operand: a register number (mod = 11) or a memory operand. */
type Rm = { reg: number } | Mem;

interface EncodeArgs {
  opcode: number[];
  /** The ModRM reg field: a register number or an opcode extension (/digit). */
  reg: number;
  rm: Rm;
  /** Operand width; 16 adds 0x66 and 64 sets REX.W. 8 and 32 add nothing. */
  bits: Bits;
  /** Set when an 8-bit operand is spl/bpl/sil/dil, which only exist with REX. */
  forceRex?: boolean;
  /** Set when `bits` must not produce REX.W (e.g. push/pop default to 64-bit). */
  noRexW?: boolean;
  imm?: number[];
}

/** True for spl/bpl/sil/dil: without REX those numbers mean ah/ch/dh/bh. */
function needsRexFor8(info: RegInfo): boolean {
  return info.bits === 8 && info.num >= 4 && info.num <= 7;
}

/**
 * A builder for x86-64 machine code. Instruction methods append to the program
 * and return `this` so calls chain; {@link Asm.link} / {@link Asm.assemble}
 * resolve labels for a given load address.
 *
 * Intel operand order throughout: destination first.
 */
export class Asm {
  private readonly items: Item[] = [];
  private readonly defined = new Set<string>();
  private readonly defaultWidth: 'auto' | 'near';
  private labelCounter = 0;

  /** Create an empty program. */
  constructor(options: AsmOptions = {}) {
    this.defaultWidth = options.branches ?? 'auto';
  }

  // -- labels ---------------------------------------------------------------

  /** Define `name` at the current position. Throws on a duplicate name. */
  label(name: string): this {
    checkLabelName(name);
    if (this.defined.has(name)) throw guestArgumentError(`duplicate label "${name}"`);
    this.defined.add(name);
    this.items.push({ kind: 'label', name });
    return this;
  }

  /**
   * A fresh label name that is not defined yet, for code emitters that need
   * private labels and may be called many times on one program. The name starts
   * with '.' so it cannot clash with ordinary names a caller would pick.
   */
  newLabel(hint = 'L'): string {
    let name: string;
    do name = `.${hint}.${this.labelCounter++}`;
    while (this.defined.has(name));
    return name;
  }

  /** Whether `name` has been defined. */
  hasLabel(name: string): boolean {
    return this.defined.has(name);
  }

  // -- raw emission ---------------------------------------------------------

  private emit(data: readonly number[], fixups: readonly Fixup[] = []): this {
    let last = this.items[this.items.length - 1];
    if (last === undefined || last.kind !== 'bytes') {
      last = { kind: 'bytes', data: [], fixups: [] };
      this.items.push(last);
    }
    const base = last.data.length;
    for (const f of fixups) last.fixups.push({ ...f, at: f.at + base, end: f.end + base });
    for (const b of data) last.data.push(b);
    return this;
  }

  /** Append raw bytes. */
  bytes(data: ArrayLike<number>): this {
    const out: number[] = [];
    for (let i = 0; i < data.length; i++) {
      const b = data[i]!;
      if (!Number.isInteger(b) || b < 0 || b > 255) throw guestArgumentError(`byte ${b} at index ${i} is not 0..255`);
      out.push(b);
    }
    return this.emit(out);
  }

  /** Append an 8-bit value (signed or unsigned spelling). */
  u8(v: Imm): this {
    return this.emit(le(fitWidth(v, 8, 'u8').u, 1));
  }

  /** Append a little-endian 16-bit value. */
  u16(v: Imm): this {
    return this.emit(le(fitWidth(v, 16, 'u16').u, 2));
  }

  /** Append a little-endian 32-bit value. */
  u32(v: Imm): this {
    return this.emit(le(fitWidth(v, 32, 'u32').u, 4));
  }

  /** Append a little-endian 64-bit value. */
  u64(v: Imm): this {
    return this.emit(le(fitWidth(v, 64, 'u64').u, 8));
  }

  /** Append the 64-bit absolute address of `label` (+ addend), resolved at link time. */
  u64Label(label: string, addend: Imm = 0): this {
    checkLabelName(label);
    return this.emit(le(0n, 8), [{ at: 0, end: 8, kind: 'abs64', label, addend: toBigInt(addend, 'addend') }]);
  }

  /** Append the UTF-8 bytes of `text` without a terminator. */
  ascii(text: string): this {
    return this.emit([...new TextEncoder().encode(text)]);
  }

  /** Append the UTF-8 bytes of `text` and a NUL terminator (a C string). */
  asciz(text: string): this {
    return this.emit([...new TextEncoder().encode(text), 0]);
  }

  /**
   * Pad with `fill` (default 0x90, nop, so padding inside code is harmless)
   * until the address is a multiple of `alignment` (a power of two). Alignment
   * is relative to the origin given at link time.
   */
  align(alignment: number, fill = 0x90): this {
    if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0) {
      throw guestArgumentError(`alignment must be a power of two, got ${alignment}`);
    }
    if (!Number.isInteger(fill) || fill < 0 || fill > 255) throw guestArgumentError(`fill byte ${fill} is not 0..255`);
    this.items.push({ kind: 'align', alignment, fill });
    return this;
  }

  // -- encoding core ----------------------------------------------------------

  /**
   * Encode prefix, REX, opcode, ModRM, SIB, displacement and immediate for one
   * instruction. The RIP-relative displacement fixup is measured from the end of
   * the whole instruction, immediate included, as the CPU does.
   */
  private inst(a: EncodeArgs): this {
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
    return this.emit(out, fixups);
  }

  /** Encode an instruction with the register in the low opcode bits (B8+r, 50+r). */
  private instOpReg(prefixBits: Bits, opcodeBase: number, r: RegInfo, imm: number[] = [], noRexW = false): this {
    const out: number[] = [];
    if (prefixBits === 16) out.push(0x66);
    const w = prefixBits === 64 && !noRexW ? 1 : 0;
    const rex = 0x40 | (w << 3) | (r.num >= 8 ? 1 : 0);
    if (rex !== 0x40 || needsRexFor8(r)) out.push(rex);
    out.push(opcodeBase + (r.num & 7), ...imm);
    return this.emit(out);
  }

  private static sameWidth(a: RegInfo, b: RegInfo, what: string): void {
    if (a.bits !== b.bits) throw guestArgumentError(`${what}: operand sizes differ (${a.bits} vs ${b.bits} bits)`);
  }

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
    if (isReg(src)) {
      const s = regInfo(src);
      Asm.sameWidth(d, s, 'mov');
      return this.inst({
        opcode: [d.bits === 8 ? 0x88 : 0x89], reg: s.num, rm: { reg: d.num }, bits: d.bits,
        forceRex: needsRexFor8(d) || needsRexFor8(s),
      });
    }
    if (!isImm(src)) throw guestArgumentError(`mov: bad source operand ${String(src)}`);
    const { u, s } = fitWidth(src, d.bits, 'mov immediate');
    switch (d.bits) {
      case 8:
        return this.instOpReg(8, 0xb0, d, le(u, 1));
      case 16:
        return this.instOpReg(16, 0xb8, d, le(u, 2));
      case 32:
        return this.instOpReg(32, 0xb8, d, le(u, 4));
      case 64:
        if (u < 1n << 32n) return this.instOpReg(32, 0xb8, d, le(u, 4));
        if (fitsS32(s)) return this.inst({ opcode: [0xc7], reg: 0, rm: { reg: d.num }, bits: 64, imm: le(s, 4) });
        return this.instOpReg(64, 0xb8, d, le(u, 8));
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
    if (isReg(src)) {
      const s = regInfo(src);
      Asm.sameWidth(d, s, name);
      return this.inst({
        opcode: [op * 8 + (d.bits === 8 ? 0 : 1)], reg: s.num, rm: { reg: d.num }, bits: d.bits,
        forceRex: needsRexFor8(d) || needsRexFor8(s),
      });
    }
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
    if (d.num === 0) return this.accImm(d.bits, op * 8 + 5, le(s, size));
    return this.inst({ opcode: [0x81], reg: op, rm: { reg: d.num }, bits: d.bits, imm: le(s, size) });
  }

  /**
   * The accumulator short forms (op al/ax/eax/rax, imm) have no ModRM byte: only
   * the operand-size prefix or REX.W, the opcode and the immediate.
   */
  private accImm(bits: Bits, opcode: number, imm: number[]): this {
    const pre = bits === 16 ? [0x66] : bits === 64 ? [0x48] : [];
    return this.emit([...pre, opcode, ...imm]);
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
    if (isReg(src)) {
      const s = regInfo(src);
      Asm.sameWidth(d, s, 'test');
      return this.inst({
        opcode: [d.bits === 8 ? 0x84 : 0x85], reg: s.num, rm: { reg: d.num }, bits: d.bits,
        forceRex: needsRexFor8(d) || needsRexFor8(s),
      });
    }
    const { u, s } = fitWidth(src, d.bits, 'test immediate');
    if (d.bits === 64 && !fitsS32(s)) throw guestArgumentError(`test immediate ${s} is not a sign-extended 32-bit value`);
    const size = d.bits === 8 ? 1 : d.bits === 16 ? 2 : 4;
    const imm = le(d.bits === 64 ? s : u, size);
    if (d.num === 0) {
      return this.accImm(d.bits, d.bits === 8 ? 0xa8 : 0xa9, imm);
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
      Asm.sameWidth(d, s, 'imul');
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
    return this.instOpReg(64, 0x50, r, [], true);
  }

  /** pop into a 64-bit register. */
  pop(dst: Reg64): this {
    const r = regInfo(dst);
    if (r.bits !== 64) throw guestArgumentError(`pop needs a 64-bit register, got ${dst}`);
    return this.instOpReg(64, 0x58, r, [], true);
  }

  // -- control flow -------------------------------------------------------------

  private branch(short: number[] | null, near: number[], label: string, width: BranchWidth | undefined): this {
    checkLabelName(label);
    const w = width ?? this.defaultWidth;
    if (w === 'short' && short === null) throw guestArgumentError('this branch has no short form');
    const useShort = short !== null && w !== 'near';
    this.items.push({ kind: 'branch', short, near, label, width: w, useShort });
    return this;
  }

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

  // -- port I/O -----------------------------------------------------------------

  /**
   * out port, src: `port` is 'dx' or an 8-bit immediate; `src` is al, ax or
   * eax. At CPL3 this needs IOPL 3 (RFLAGS 0x3002 in our set-up) and then exits to
   * the host as KVM_EXIT_IO. Under kvm_pvm that is not enough: it emulates a
   * CPL3 OUT and checks the I/O permission bitmap of the guest's TSS, so the
   * port must be allowed there too; `Guest` loads a TSS that allows every
   * port, and callers setting up vcpus themselves get one from
   * {@link ioPermissiveTss} (lib/guest/layout.ts). Without it the OUT
   * triple-faults (a 'shutdown' exit).
   */
  out(port: 'dx' | number, src: 'al' | 'ax' | 'eax'): this {
    const size = src === 'al' ? 8 : src === 'ax' ? 16 : src === 'eax' ? 32 : 0;
    if (size === 0) throw guestArgumentError(`out source must be al, ax or eax, got ${String(src)}`);
    const pre = size === 16 ? [0x66] : [];
    const wide = size === 8 ? 0 : 1;
    if (port === 'dx') return this.emit([...pre, 0xee + wide]);
    return this.emit([...pre, 0xe6 + wide, checkPort8(port)]);
  }

  /** in dst, port: `dst` is al, ax or eax; `port` is 'dx' or an 8-bit immediate. The same I/O permission rules as {@link Asm.out}. */
  in(dst: 'al' | 'ax' | 'eax', port: 'dx' | number): this {
    const size = dst === 'al' ? 8 : dst === 'ax' ? 16 : dst === 'eax' ? 32 : 0;
    if (size === 0) throw guestArgumentError(`in destination must be al, ax or eax, got ${String(dst)}`);
    const pre = size === 16 ? [0x66] : [];
    const wide = size === 8 ? 0 : 1;
    if (port === 'dx') return this.emit([...pre, 0xec + wide]);
    return this.emit([...pre, 0xe4 + wide, checkPort8(port)]);
  }

  // -- misc -------------------------------------------------------------------

  /** nop (one byte), `count` times. */
  nop(count = 1): this {
    if (!Number.isInteger(count) || count < 0) throw guestArgumentError(`nop count must be >= 0, got ${count}`);
    return this.emit(new Array<number>(count).fill(0x90));
  }

  /**
   * hlt. Note: at CPL3 hlt raises #GP instead of exiting; guests here leave via
   * port I/O (see ucall). Kept for CPL0 experiments.
   */
  hlt(): this {
    return this.emit([0xf4]);
  }

  /** pause: spin-wait hint, cheap to put in polling loops. */
  pause(): this {
    return this.emit([0xf3, 0x90]);
  }

  /** ud2: guaranteed invalid opcode, a deliberate crash. */
  ud2(): this {
    return this.emit([0x0f, 0x0b]);
  }

  /** int3: breakpoint trap. */
  int3(): this {
    return this.emit([0xcc]);
  }

  /** cpuid (eax/ecx in, eax/ebx/ecx/edx out). */
  cpuid(): this {
    return this.emit([0x0f, 0xa2]);
  }

  /** rdtsc: time stamp counter into edx:eax. */
  rdtsc(): this {
    return this.emit([0x0f, 0x31]);
  }

  /** mfence: full memory barrier. */
  mfence(): this {
    return this.emit([0x0f, 0xae, 0xf0]);
  }

  // -- linking ------------------------------------------------------------------

  /**
   * Resolve labels for a program loaded at `origin` and return the bytes and
   * label addresses. Throws on references to undefined labels and on rel8
   * branches forced 'short' whose target is out of reach.
   *
   * Branch widths are chosen by relaxation: every branch starts short where
   * allowed and is widened while its displacement does not fit; widening only
   * grows the code, so the loop ends after at most one pass per branch.
   */
  link(origin: Imm = 0n): LinkedProgram {
    const org = fitWidth(origin, 64, 'origin').u;
    const undefinedLabels = new Set<string>();
    for (const it of this.items) {
      if (it.kind === 'branch' && !this.defined.has(it.label)) undefinedLabels.add(it.label);
      if (it.kind === 'bytes') for (const f of it.fixups) if (!this.defined.has(f.label)) undefinedLabels.add(f.label);
    }
    if (undefinedLabels.size > 0) {
      throw guestArgumentError(`undefined label(s): ${[...undefinedLabels].map((l) => `"${l}"`).join(', ')}`);
    }

    // Work on copies of the width decisions so link() can be called repeatedly
    // (e.g. at different origins, where alignment padding may differ).
    const useShort = this.items.map((it) => (it.kind === 'branch' ? it.useShort : false));
    let offsets: number[] = [];
    let labels = new Map<string, number>();
    let total = 0;
    for (;;) {
      offsets = [];
      labels = new Map();
      let pc = 0;
      this.items.forEach((it, i) => {
        offsets.push(pc);
        switch (it.kind) {
          case 'bytes':
            pc += it.data.length;
            break;
          case 'label':
            labels.set(it.name, pc);
            break;
          case 'branch':
            pc += useShort[i] ? it.short!.length + 1 : it.near.length + 4;
            break;
          case 'align': {
            const a = BigInt(it.alignment);
            const mis = Number((org + BigInt(pc)) % a);
            pc += mis === 0 ? 0 : it.alignment - mis;
            break;
          }
        }
      });
      total = pc;
      let changed = false;
      this.items.forEach((it, i) => {
        if (it.kind !== 'branch' || !useShort[i]) return;
        const end = offsets[i]! + it.short!.length + 1;
        const rel = labels.get(it.label)! - end;
        if (rel < -128 || rel > 127) {
          if (it.width === 'short') {
            throw guestArgumentError(`short branch to "${it.label}" is out of rel8 range (${rel} bytes)`);
          }
          useShort[i] = false;
          changed = true;
        }
      });
      if (!changed) break;
    }

    const code = new Uint8Array(total);
    const dv = new DataView(code.buffer);
    this.items.forEach((it, i) => {
      const at = offsets[i]!;
      switch (it.kind) {
        case 'bytes':
          code.set(it.data, at);
          for (const f of it.fixups) {
            const target = labels.get(f.label)!;
            if (f.kind === 'abs64') {
              dv.setBigUint64(at + f.at, BigInt.asUintN(64, org + BigInt(target) + f.addend), true);
            } else {
              const rel = BigInt(target - (at + f.end)) + f.addend;
              if (!fitsS32(rel)) throw guestArgumentError(`RIP-relative reference to "${f.label}" is out of range`);
              dv.setInt32(at + f.at, Number(rel), true);
            }
          }
          break;
        case 'branch': {
          const op = useShort[i] ? it.short! : it.near;
          code.set(op, at);
          const end = at + op.length + (useShort[i] ? 1 : 4);
          const rel = labels.get(it.label)! - end;
          if (useShort[i]) dv.setInt8(at + op.length, rel);
          else dv.setInt32(at + op.length, rel, true);
          break;
        }
        case 'align': {
          const next = i + 1 < offsets.length ? offsets[i + 1]! : total;
          code.fill(it.fill, at, next);
          break;
        }
        case 'label':
          break;
      }
    });
    const absLabels = new Map<string, bigint>();
    for (const [name, off] of labels) absLabels.set(name, BigInt.asUintN(64, org + BigInt(off)));
    return { code, origin: org, labels: absLabels };
  }

  /** Link at `origin` and return just the bytes (see {@link Asm.link}). */
  assemble(origin: Imm = 0n): Uint8Array {
    return this.link(origin).code;
  }
}

function checkPort8(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 255) {
    throw guestArgumentError(`an immediate port must be 0..255 (use 'dx' for wider ports), got ${port}`);
  }
  return port;
}
