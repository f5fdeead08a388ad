/**
 * How much slower than usual this machine runs right now, for timeouts that must
 * hold on a busy or emulated machine. The kernel lab measures it at boot (a fixed
 * CPU loop in the guest's /init, timed against its idle duration) and exports it as
 * NODE_KVM_TIMEOUT_SCALE; vitest's testTimeout and the selftests' own step limits
 * multiply by it. Elsewhere it is 1 unless set.
 */
import { KvmError } from './errors.js';

/** The environment variable that carries the factor. */
export const TIMEOUT_SCALE_ENV = 'NODE_KVM_TIMEOUT_SCALE';

/**
 * The factor (at least 1) from NODE_KVM_TIMEOUT_SCALE, or 1 when unset. A value that
 * is not a number from 1 to 1000 is a KvmError 'EINVAL' naming the variable.
 */
export function timeoutScale(env: NodeJS.ProcessEnv = process.env): number {
  const text = env[TIMEOUT_SCALE_ENV];
  if (text === undefined || text === '') return 1;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 1 || value > 1000) {
    throw new KvmError(`${TIMEOUT_SCALE_ENV}=${text}: expected a number from 1 to 1000`, { code: 'EINVAL', args: { name: TIMEOUT_SCALE_ENV, value: text } });
  }
  return value;
}

/** `ms` scaled by timeoutScale(), rounded up to a whole millisecond. */
export function scaledTimeout(ms: number, env: NodeJS.ProcessEnv = process.env): number {
  return Math.ceil(ms * timeoutScale(env));
}
