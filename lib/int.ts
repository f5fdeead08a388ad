/**
 * Conversion of user-supplied integers. 64-bit quantities (addresses, sizes,
 * registers) accept number or bigint and are handled as bigint inside; a
 * number must be a non-negative safe integer so no precision is lost silently.
 */
import { invalidArgument } from './errors.js';

/** A 64-bit value as callers may give it. */
export type U64Like = number | bigint;

/** 2^64, the exclusive upper bound of u64 values. */
export const U64_LIMIT = 1n << 64n;
/** The host's (and KVM's base) page size. */
export const PAGE_SIZE = 4096n;
/** Size of a 2 MiB large page. */
export const SIZE_2M = 2n << 20n;
/** Size of a 1 GiB huge page. */
export const SIZE_1G = 1n << 30n;

/** Converts to a u64 bigint or throws KvmError EINVAL naming the argument. */
export function toU64(value: unknown, name: string, op: string): bigint {
  if (typeof value === 'bigint') {
    if (value < 0n || value >= U64_LIMIT) throw invalidArgument(op, `${name} must be in [0, 2^64)`, { [name]: value });
    return value;
  }
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw invalidArgument(op, `${name} must be a non-negative safe integer or a bigint`, { [name]: value });
    }
    return BigInt(value);
  }
  throw invalidArgument(op, `${name} must be a number or bigint, got ${describe(value)}`);
}

/**
 * An options argument: undefined gives {}, an object is returned as is, and
 * anything else (null, a string, a number...) throws KvmError EINVAL instead
 * of a TypeError on the first property read.
 */
export function toOptions<T extends object>(value: T | undefined, op: string, name = 'options'): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null) throw invalidArgument(op, `${name} must be an object, got ${describe(value)}`);
  return value;
}

/** Converts to an unsigned 32-bit number or throws KvmError EINVAL. */
export function toU32(value: unknown, name: string, op: string): number {
  const v = typeof value === 'bigint' ? Number(value) : value;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
    throw invalidArgument(op, `${name} must be an integer in [0, 2^32), got ${describe(value)}`, { [name]: value });
  }
  return v;
}

/** Throws EINVAL unless value is a multiple of the page size. */
export function requirePageAligned(value: bigint, name: string, op: string, args: Record<string, unknown> = {}): void {
  if (value % PAGE_SIZE !== 0n) throw invalidArgument(op, `${name} must be a multiple of 4096`, { ...args, [name]: value });
}

/** Rounds up to a multiple of `align` (a power of two). */
export function alignUp(value: bigint, align: bigint): bigint {
  return (value + align - 1n) & ~(align - 1n);
}

/** Rounds down to a multiple of `align` (a power of two). */
export function alignDown(value: bigint, align: bigint): bigint {
  return value & ~(align - 1n);
}

/** Whether [a, a+as) and [b, b+bs) intersect. */
export function rangesOverlap(a: bigint, as: bigint, b: bigint, bs: bigint): boolean {
  return a < b + bs && b < a + as;
}

/** Short, safe description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'object') {
    // A revoked Proxy or a throwing getter must not turn an EINVAL into a TypeError.
    try {
      if (Array.isArray(value)) return 'an array';
      const name: unknown = (value as object).constructor?.name;
      return typeof name === 'string' ? name : 'object';
    } catch {
      return 'object';
    }
  }
  return typeof value;
}
