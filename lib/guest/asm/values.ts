/**
 * Operand checks and byte helpers shared by every instruction family of
 * {@link Asm}: register lookup, immediate range checks (a wrong operand is a
 * KvmError from the guest kit, never a silently truncated field) and
 * little-endian byte lists.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import { REGS16, REGS32, REGS64, REGS8, type Bits, type Imm, type Mem, type Reg } from './operands.js';

/** A register's hardware number (0..15) and width. */
export interface RegInfo {
  /** The encoding number: the low 3 bits go in ModRM/SIB/opcode, bit 3 in REX. */
  num: number;
  /** Operand width. */
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

/** The number and width of register `r`; throws on a name this assembler does not know. */
export function regInfo(r: unknown): RegInfo {
  const info = typeof r === 'string' ? REG_INFO.get(r) : undefined;
  if (info === undefined) throw guestArgumentError(`unknown register ${JSON.stringify(r)}`);
  return info;
}

/** Whether `x` is a register name. */
export function isReg(x: unknown): x is Reg {
  return typeof x === 'string' && REG_INFO.has(x);
}

/** Whether `x` is an immediate (number or bigint; range checks come later). */
export function isImm(x: unknown): x is Imm {
  return typeof x === 'number' || typeof x === 'bigint';
}

/** Whether `x` is a memory operand (any object: its fields are checked when encoded). */
export function isMem(x: unknown): x is Mem {
  return typeof x === 'object' && x !== null;
}

/** `v` as a bigint; a number must be a safe integer. */
export function toBigInt(v: Imm, what: string): bigint {
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
export function fitWidth(v: Imm, bits: number, what: string): { u: bigint; s: bigint } {
  const b = toBigInt(v, what);
  const lo = -(1n << BigInt(bits - 1));
  const hi = (1n << BigInt(bits)) - 1n;
  if (b < lo || b > hi) throw guestArgumentError(`${what} ${b} does not fit in ${bits} bits`);
  return { u: BigInt.asUintN(bits, b), s: BigInt.asIntN(bits, b) };
}

/** Whether `s` sign-extends from 8 bits. */
export function fitsS8(s: bigint): boolean {
  return s >= -128n && s <= 127n;
}

/** Whether `s` sign-extends from 32 bits. */
export function fitsS32(s: bigint): boolean {
  return s >= -(1n << 31n) && s < 1n << 31n;
}

/** The low `size` bytes of `value`, little-endian. */
export function le(value: bigint, size: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(size * 8, value);
  for (let i = 0; i < size; i++) {
    out.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return out;
}

/** `name` if it is a non-empty string; throws otherwise. */
export function checkLabelName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw guestArgumentError(`label name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  return name;
}

/** True for spl/bpl/sil/dil: without REX those numbers mean ah/ch/dh/bh. */
export function needsRexFor8(info: RegInfo): boolean {
  return info.bits === 8 && info.num >= 4 && info.num <= 7;
}

/** Throws unless two register operands have the same width. */
export function sameWidth(a: RegInfo, b: RegInfo, what: string): void {
  if (a.bits !== b.bits) throw guestArgumentError(`${what}: operand sizes differ (${a.bits} vs ${b.bits} bits)`);
}

/** An immediate I/O port: in/out encode it in one byte. */
export function checkPort8(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 255) {
    throw guestArgumentError(`an immediate port must be 0..255 (use 'dx' for wider ports), got ${port}`);
  }
  return port;
}
