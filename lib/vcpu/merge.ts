/**
 * Partial updates of decoded vcpu state: set*(update) reads the current
 * state, checks each given field against it (unknown names and wrong types
 * are KvmError EINVAL), and writes back the merged state.
 */
import { invalidArgument } from '../errors.js';
import { bigUint64View, isInstance, readArray, readOptions } from '../vm/struct.js';

/**
 * Merges `update` into `current` field by field. Numbers must stay integers
 * of the same range check `check(name, value)` applies; arrays must keep
 * their length; nested objects merge recursively.
 */
export function mergeState<T extends object>(current: T, update: unknown, op: string, check: (name: string, value: unknown, old: unknown) => unknown): T {
  const fields = Object.keys(current);
  const u = readOptions(update, op, fields, [], 'update');
  const out = { ...current } as Record<string, unknown>;
  for (const [name, value] of Object.entries(u)) {
    if (value === undefined) continue;
    const old = (current as Record<string, unknown>)[name];
    if (Array.isArray(old)) {
      const list = readArray(value, op, name, old.length); // each element read once; traps and getters are EINVAL
      if (list.length !== old.length) throw invalidArgument(op, `${name} must be an array of ${old.length} entries`);
      out[name] = list.map((x, i) => check(`${name}[${i}]`, x, old[i]));
    } else if (isInstance(old, BigUint64Array)) {
      // Through the intrinsic getters: a subclass's length or slice() cannot change what is written.
      const words = bigUint64View(value);
      if (words === undefined || words.length !== old.length) throw invalidArgument(op, `${name} must be a BigUint64Array of ${old.length} words`);
      out[name] = words.slice();
    } else if (typeof old === 'object' && old !== null) {
      out[name] = mergeState(old, value, op, check);
    } else {
      out[name] = check(name, value, old);
    }
  }
  return out as T;
}

/** A check for mergeState: bigint fields take u64/u128 bigints or safe integers, numbers take integers in [0, 2^bits). */
export function fieldCheck(op: string, bitsOf: (name: string) => number): (name: string, value: unknown, old: unknown) => unknown {
  return (name, value, old) => {
    const bits = bitsOf(name);
    if (typeof old === 'bigint') {
      const v = typeof value === 'number' && Number.isSafeInteger(value) ? BigInt(value) : value;
      if (typeof v !== 'bigint' || v < 0n || v >= 1n << BigInt(bits)) throw invalidArgument(op, `${name} must be an unsigned ${bits}-bit integer`, { [name]: value });
      return v;
    }
    if (typeof old === 'boolean') {
      if (typeof value !== 'boolean') throw invalidArgument(op, `${name} must be a boolean`);
      return value;
    }
    if (typeof old === 'string') {
      if (typeof value !== 'string') throw invalidArgument(op, `${name} must be a string`);
      return value;
    }
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
      throw invalidArgument(op, `${name} must be an integer in [0, 2^${bits})`, { [name]: value });
    }
    return value;
  };
}
