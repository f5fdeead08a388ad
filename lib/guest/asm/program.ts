/**
 * The core of {@link Asm}: the program being built (labels, raw data and
 * alignment, encoded instructions, branches) and its linking. The instruction
 * families are layers on top of it (moves.ts, arithmetic.ts, control-flow.ts,
 * system.ts); they all append through {@link AsmProgram.emit}.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import { encodeInst, type EncodeArgs, type Fixup } from './encoding.js';
import { linkItems, type Item, type LinkedProgram } from './link.js';
import type { BranchWidth, Imm } from './operands.js';
import { checkLabelName, fitWidth, le, toBigInt } from './values.js';

/** Options for {@link Asm}. */
export interface AsmOptions {
  /**
   * Default width for jmp/jcc whose call does not specify one. 'auto' (the
   * default) gives the smallest code; 'near' keeps every branch 5 or 6 bytes so
   * code sizes do not depend on distances.
   */
  branches?: 'auto' | 'near';
}

/**
 * The program under construction: labels, data directives and linking. Use
 * {@link Asm}, which adds the instructions; this layer has no instructions.
 */
export class AsmProgram {
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

  /** Append encoded bytes and their label fields to the program (every instruction ends here). */
  protected emit(data: readonly number[], fixups: readonly Fixup[] = []): this {
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

  // -- what the instruction families append -----------------------------------

  /** Append one instruction laid out by {@link encodeInst}. */
  protected inst(a: EncodeArgs): this {
    const { bytes, fixups } = encodeInst(a);
    return this.emit(bytes, fixups);
  }

  /**
   * Append a branch to `label` whose width the linker picks: `short` is the
   * rel8 opcode (null if there is none), `near` the rel32 one.
   */
  protected branch(short: number[] | null, near: number[], label: string, width: BranchWidth | undefined): this {
    checkLabelName(label);
    const w = width ?? this.defaultWidth;
    if (w === 'short' && short === null) throw guestArgumentError('this branch has no short form');
    const useShort = short !== null && w !== 'near';
    this.items.push({ kind: 'branch', short, near, label, width: w, useShort });
    return this;
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
    return linkItems(this.items, this.defined, origin);
  }

  /** Link at `origin` and return just the bytes (see {@link Asm.link}). */
  assemble(origin: Imm = 0n): Uint8Array {
    return this.link(origin).code;
  }
}
