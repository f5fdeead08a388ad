/**
 * Helpers shared by the VMM codecs (lib/vm/*, lib/vcpu/*): reading options
 * once, checking integer ranges, and DataView access to kernel structs.
 * Every failure is a KvmError 'EINVAL' naming the argument.
 */
import { invalidArgument, KvmError } from '../errors.js';
import { describe, toU64, type U64Like } from '../int.js';

/** A DataView over exactly these bytes. */
export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A KvmError 'EINVAL' for an argument whose reading threw (a revoked Proxy, a throwing getter or trap). */
function unreadable(op: string, what: string, e: unknown): KvmError {
  let reason: string;
  try {
    reason = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } catch {
    reason = 'an unprintable value';
  }
  return new KvmError(`${op}: ${what} cannot be read (${reason})`, { code: 'EINVAL', syscall: op.startsWith('KVM_') ? 'ioctl' : op, ioctl: op.startsWith('KVM_') ? op : undefined, args: { argument: what }, cause: e });
}

/** Runs a read of the caller's value; whatever it throws becomes EINVAL naming `what`. */
function guarded<T>(op: string, what: string, read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof KvmError) throw e;
    throw unreadable(op, what, e);
  }
}

/**
 * Reads an options object once: its own enumerable properties are copied
 * (each getter runs once), unknown keys are refused naming the accepted ones,
 * and `required` keys must be present. The copy is what the caller checks and
 * uses, so nothing can change between the check and the call. A revoked
 * Proxy, a throwing getter or trap is EINVAL, never the caller's exception.
 */
export function readOptions(value: unknown, op: string, accepted: readonly string[], required: readonly string[] = [], name = 'options'): Record<string, unknown> {
  if (value === undefined && required.length === 0) return {};
  const keys = guarded(op, name, () => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw invalidArgument(op, `${name} must be an object, got ${describe(value)}`);
    }
    return Object.keys(value);
  });
  for (const key of keys) {
    if (!accepted.includes(key)) {
      throw invalidArgument(op, `unknown option ${JSON.stringify(key)} in ${name}; accepted: ${accepted.join(', ')}`, { option: key });
    }
  }
  const copy: Record<string, unknown> = {};
  for (const key of keys) copy[key] = guarded(op, `${name}.${key}`, () => (value as Record<string, unknown>)[key]);
  for (const key of required) {
    if (copy[key] === undefined) throw invalidArgument(op, `${name}.${key} is required`);
  }
  return copy;
}

const TYPED_ARRAY = Object.getPrototypeOf(Uint8Array.prototype) as object;
function intrinsicGetter(name: PropertyKey): (this: unknown) => unknown {
  return Object.getOwnPropertyDescriptor(TYPED_ARRAY, name)!.get! as (this: unknown) => unknown;
}
const TA_TAG = intrinsicGetter(Symbol.toStringTag);
const TA_BUFFER = intrinsicGetter('buffer');
const TA_OFFSET = intrinsicGetter('byteOffset');
const TA_LENGTH = intrinsicGetter('length');

/**
 * A plain BigUint64Array over the memory of `value`, when `value` is a real
 * BigUint64Array (a subclass instance included), read through the
 * intrinsic TypedArray getters: a subclass's `length`, `subarray()` or
 * `slice()`, or a Proxy, cannot make the library (and the kernel) see
 * another size than the memory really has. undefined for anything else.
 */
export function bigUint64View(value: unknown): BigUint64Array | undefined {
  if (!ArrayBuffer.isView(value) || TA_TAG.call(value) !== 'BigUint64Array') return undefined;
  const length = TA_LENGTH.call(value) as number;
  if (length === 0) return new BigUint64Array(0); // detached or empty
  return new BigUint64Array(TA_BUFFER.call(value) as ArrayBuffer, TA_OFFSET.call(value) as number, length);
}

/** `value instanceof ctor`, false (not a throw) for a revoked Proxy or a throwing getPrototypeOf trap. */
export function isInstance<T>(value: unknown, ctor: abstract new (...args: never[]) => T): value is T {
  try {
    return value instanceof ctor;
  } catch {
    return false;
  }
}

/** Copies an array argument once (length once, each element once), so a Proxy or later mutation cannot change it. */
export function readArray(value: unknown, op: string, name: string, max = 1 << 20): unknown[] {
  const length = guarded(op, name, () => {
    if (!Array.isArray(value)) throw invalidArgument(op, `${name} must be an array, got ${describe(value)}`);
    return (value as unknown[]).length;
  });
  if (length > max) throw invalidArgument(op, `${name} has ${length} entries; at most ${max}`);
  const out: unknown[] = [];
  for (let i = 0; i < length; i++) out.push(guarded(op, `${name}[${i}]`, () => (value as unknown[])[i]));
  return out;
}

/** An unsigned integer of `bits` (<= 32) bits, from number or bigint. */
export function toUint(value: unknown, bits: number, name: string, op: string): number {
  const v = typeof value === 'bigint' && value >= 0n && value < 1n << 53n ? Number(value) : value;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** bits) {
    throw invalidArgument(op, `${name} must be an integer in [0, 2^${bits}), got ${describe(value)}`, { [name]: value });
  }
  return v;
}

/** A boolean option (undefined gives the default). */
export function toBool(value: unknown, name: string, op: string, dflt = false): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== 'boolean') throw invalidArgument(op, `${name} must be a boolean, got ${describe(value)}`);
  return value;
}

/** A u64 given as number or bigint. */
export function toU64Arg(value: unknown, name: string, op: string): bigint {
  return toU64(value as U64Like, name, op);
}

/** A signed 64-bit value (number or bigint). */
export function toI64(value: unknown, name: string, op: string): bigint {
  const v = typeof value === 'number' && Number.isSafeInteger(value) ? BigInt(value) : value;
  if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) throw invalidArgument(op, `${name} must be a signed 64-bit integer, got ${describe(value)}`);
  return v;
}

/** An unsigned value of up to 128 bits (XMM registers, x87 registers). */
export function toU128(value: unknown, bits: number, name: string, op: string): bigint {
  const v = typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : value;
  if (typeof v !== 'bigint' || v < 0n || v >= 1n << BigInt(bits)) throw invalidArgument(op, `${name} must be an unsigned ${bits}-bit bigint, got ${describe(value)}`);
  return v;
}

/** Reads `bytes` little-endian bytes at `off` as an unsigned bigint. */
export function getWide(v: DataView, off: number, bytes: number): bigint {
  let out = 0n;
  for (let i = bytes - 8; i >= 0; i -= 8) out = (out << 64n) | v.getBigUint64(off + i, true);
  return out;
}

/** Writes an unsigned bigint as `bytes` little-endian bytes at `off`. */
export function setWide(v: DataView, off: number, bytes: number, value: bigint): void {
  for (let i = 0; i < bytes; i += 8) {
    v.setBigUint64(off + i, BigInt.asUintN(64, value), true);
    value >>= 64n;
  }
}

/** An enum given by name, from a name -> number table. */
export function toEnum<T extends Record<string, number>>(value: unknown, table: T, name: string, op: string): keyof T & string {
  if (typeof value !== 'string' || !Object.hasOwn(table, value)) {
    throw invalidArgument(op, `${name} must be one of ${Object.keys(table).join(', ')}, got ${describe(value)}`);
  }
  return value;
}

/** The name of a number in a name -> number table, or the number itself. */
export function enumName<T extends Record<string, number>>(table: T, n: number): (keyof T & string) | number {
  for (const [k, v] of Object.entries(table)) if (v === n) return k as keyof T & string;
  return n;
}
