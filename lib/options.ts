/**
 * Reading a caller's options object safely. Every entry point that takes an
 * object reads it through readOptions() before it checks that its target is
 * open and before it acts, so no getter or Proxy trap of the caller's can run
 * between the check and the use (closing the VM and creating another that
 * gets the same fd number, for instance). Each key is read exactly once into
 * a plain object; unknown keys, throwing getters, revoked Proxies and values
 * of the wrong type are KvmError('EINVAL') naming the key.
 */
import { invalidArgument, KvmError } from './errors.js';
import { describe, toU32, toU64 } from './int.js';

/** Converts one option value (never undefined) or throws KvmError. */
export type OptionReader<T> = (value: unknown, key: string, op: string) => T;

/** Option name to its reader. */
export type OptionSchema = Readonly<Record<string, OptionReader<unknown>>>;

/** What readOptions() returns: every key of the schema, undefined when absent. */
export type OptionValues<S extends OptionSchema> = { [K in keyof S]: ReturnType<S[K]> | undefined };

/** Settings of readOptions(). */
export interface ReadOptionsSettings {
  /** What the argument is called in messages; default 'options'. */
  name?: string;
  /** Whether undefined is refused (default: undefined reads as {}). */
  required?: boolean;
}

function messageOf(e: unknown): string {
  try {
    return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } catch {
    return 'an unprintable value';
  }
}

/**
 * Reads `value` against `schema`: undefined gives every key undefined (unless
 * required); anything but a non-array object is EINVAL; an own enumerable key
 * the schema does not know is EINVAL naming it and the accepted ones; each
 * known key is read once (a getter that throws, or a revoked Proxy, is
 * EINVAL) and converted by its reader.
 */
export function readOptions<S extends OptionSchema>(value: unknown, op: string, schema: S, settings: ReadOptionsSettings = {}): OptionValues<S> {
  const name = settings.name ?? 'options';
  const out = Object.create(null) as Record<string, unknown>;
  const accepted = Object.keys(schema);
  if (value === undefined && !settings.required) {
    for (const k of accepted) out[k] = undefined;
    return out as OptionValues<S>;
  }
  if (typeof value !== 'object' || value === null || isArray(value, op, name)) {
    throw invalidArgument(op, `${name} must be an object${accepted.length ? ` with ${accepted.join(', ')}` : ''}, got ${describe(value)}`);
  }
  let keys: string[];
  try {
    keys = Object.keys(value);
  } catch (e) {
    throw new KvmError(`${op}: ${name} cannot be read (${messageOf(e)})`, { code: 'EINVAL', syscall: op.startsWith('KVM_') ? 'ioctl' : op, ioctl: op.startsWith('KVM_') ? op : undefined, cause: e });
  }
  for (const k of keys) {
    if (!Object.hasOwn(schema, k)) {
      throw invalidArgument(op, `unknown ${name === 'options' ? 'option' : `key of ${name}`} ${JSON.stringify(k)}; accepted: ${accepted.join(', ') || 'none'}`, { key: k });
    }
  }
  for (const k of accepted) {
    let raw: unknown;
    try {
      raw = (value as Record<string, unknown>)[k];
    } catch (e) {
      throw new KvmError(`${op}: reading ${name}.${k} threw (${messageOf(e)})`, { code: 'EINVAL', syscall: op.startsWith('KVM_') ? 'ioctl' : op, ioctl: op.startsWith('KVM_') ? op : undefined, args: { key: k }, cause: e });
    }
    out[k] = raw === undefined ? undefined : schema[k]!(raw, k, op);
  }
  return out as OptionValues<S>;
}

function isArray(value: object, op: string, name: string): boolean {
  try {
    return Array.isArray(value);
  } catch (e) {
    // Array.isArray throws on a revoked Proxy.
    throw new KvmError(`${op}: ${name} cannot be read (${messageOf(e)})`, { code: 'EINVAL', syscall: op, cause: e });
  }
}

/**
 * Copies an array argument element by element (length read once, each index
 * once), so a Proxy cannot change it after it was checked. Throws EINVAL for
 * a non-array, a revoked Proxy or a throwing element getter.
 */
export function readArray(value: unknown, op: string, name: string, maxLength = 1 << 20): unknown[] {
  let length: unknown;
  try {
    if (!Array.isArray(value)) throw invalidArgument(op, `${name} must be an array, got ${describe(value)}`);
    length = (value as unknown[]).length;
  } catch (e) {
    if (e instanceof KvmError) throw e;
    throw new KvmError(`${op}: ${name} cannot be read (${messageOf(e)})`, { code: 'EINVAL', syscall: op, cause: e });
  }
  if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0 || length > maxLength) {
    throw invalidArgument(op, `${name} has an invalid length`, { length: describe(length) });
  }
  const out: unknown[] = [];
  for (let i = 0; i < length; i++) {
    try {
      out.push((value as unknown[])[i]);
    } catch (e) {
      throw new KvmError(`${op}: reading ${name}[${i}] threw (${messageOf(e)})`, { code: 'EINVAL', syscall: op, args: { index: i }, cause: e });
    }
  }
  return out;
}

/** Readers for the usual option types. */
export const opt = {
  /** A u64 (number or bigint), as a bigint. */
  u64: ((v, k, op) => toU64(v, k, op)) as OptionReader<bigint>,
  /** A u32 (number or bigint), as a number. */
  u32: ((v, k, op) => toU32(v, k, op)) as OptionReader<number>,
  /** Exactly true or false. */
  boolean: ((v, k, op) => {
    if (typeof v !== 'boolean') throw invalidArgument(op, `${k} must be a boolean, got ${describe(v)}`);
    return v;
  }) as OptionReader<boolean>,
  /** A string without NUL characters. */
  string: ((v, k, op) => {
    if (typeof v !== 'string') throw invalidArgument(op, `${k} must be a string, got ${describe(v)}`);
    return v;
  }) as OptionReader<string>,
  /** A function (called later; its own errors are the caller's). */
  function: ((v, k, op) => {
    if (typeof v !== 'function') throw invalidArgument(op, `${k} must be a function, got ${describe(v)}`);
    return v;
  }) as OptionReader<(...args: never[]) => unknown>,
  /** One of the given strings. */
  oneOf<T extends string>(...choices: readonly T[]): OptionReader<T> {
    return (v, k, op) => {
      if (typeof v !== 'string' || !(choices as readonly string[]).includes(v)) {
        throw invalidArgument(op, `${k} must be one of ${choices.map((c) => `'${c}'`).join(', ')}, got ${describe(v)}`);
      }
      return v as T;
    };
  },
  /** A value accepted by `check` (a brand check such as HostMemory.isHostMemory), else EINVAL naming `what`. */
  brand<T>(check: (v: unknown) => v is T, what: string): OptionReader<T> {
    return (v, k, op) => {
      if (!check(v)) throw invalidArgument(op, `${k} must be a ${what}, got ${describe(v)}`);
      return v;
    };
  },
  /** Any value, unchecked (the caller validates it). */
  any: ((v) => v) as OptionReader<unknown>,
} as const;

/** A genuine AbortSignal (brand-checked through its `aborted` getter). */
export function isAbortSignal(v: unknown): v is AbortSignal {
  try {
    // instanceof asks a Proxy's getPrototypeOf trap, which may throw.
    if (!(v instanceof AbortSignal)) return false;
    // Throws on an object that only inherits from AbortSignal.prototype.
    Reflect.get(AbortSignal.prototype, 'aborted', v);
    return true;
  } catch {
    return false;
  }
}
