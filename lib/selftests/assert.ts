/**
 * Assertions for selftest cases. lib/ must not depend on a test framework, so
 * this is a handful of checks that throw a SelftestFailure (a KvmError, like
 * every other failure of node-kvm) whose message says what was expected and
 * what happened.
 */
import { errnoCode, KvmError } from '../errors.js';

/** A failed selftest check. `args` carries expected/actual for the TAP YAML block. */
export class SelftestFailure extends KvmError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message, { code: 'ESELFTEST', errno: 0, syscall: 'none', args: details });
    this.name = 'SelftestFailure';
  }
}

/** Renders a value for a failure message (bigint in hex, arrays and objects as JSON). */
export function show(value: unknown): string {
  if (typeof value === 'bigint') return `0x${value.toString(16)}`;
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'object' && value !== null) {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
  }
  return String(value);
}

/** Throws unless `condition` holds. */
export function check(condition: unknown, message: string, details: Record<string, unknown> = {}): asserts condition {
  if (!condition) throw new SelftestFailure(message, details);
}

/** Throws unless `actual === expected` (Object.is; compare bigints as bigints). */
export function checkEqual<T>(actual: T, expected: T, what: string): void {
  if (!Object.is(actual, expected)) {
    throw new SelftestFailure(`${what}: expected ${show(expected)}, got ${show(actual)}`, { expected, actual });
  }
}

/**
 * Runs a call and names its outcome: 'OK' when it returns, else the errno
 * name. Understands the addon's errors (positive errno), Node's fs errors
 * (negative errno) and KvmError (its code, which may be node-kvm's own such
 * as 'ECLOSED'). Anything else is a bug in the case and is rethrown.
 */
export function outcomeOf(fn: () => unknown): string {
  try {
    fn();
    return 'OK';
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    const errno = (e as { errno?: unknown }).errno;
    if (typeof errno === 'number') return errnoCode(Math.abs(errno));
    throw e;
  }
}

/**
 * Asserts a call's outcome ('OK' or an errno name; several allowed) and
 * returns it, so callers that accept more than one can tell which happened.
 */
export function expectOutcome(fn: () => unknown, expected: string | readonly string[], what: string): string {
  const allowed = typeof expected === 'string' ? [expected] : expected;
  const got = outcomeOf(fn);
  if (!allowed.includes(got)) {
    throw new SelftestFailure(`${what}: expected ${allowed.join(' or ')}, got ${got}`, { expected: allowed.join('|'), actual: got });
  }
  return got;
}

/**
 * Asserts that a node-kvm call throws a KvmError with this code and returns
 * the error (a raw errno from anywhere else fails the check: node-kvm
 * promises KvmError only).
 */
export function expectKvmError(fn: () => unknown, code: string, what: string): KvmError {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof KvmError)) {
      throw new SelftestFailure(`${what}: expected KvmError ${code}, got ${e instanceof Error ? `${e.name}: ${e.message}` : show(e)}`, { expected: code });
    }
    if (e.code !== code) throw new SelftestFailure(`${what}: expected KvmError ${code}, got ${e.code} (${e.message})`, { expected: code, actual: e.code });
    return e;
  }
  throw new SelftestFailure(`${what}: expected KvmError ${code}, but the call succeeded`, { expected: code, actual: 'OK' });
}
