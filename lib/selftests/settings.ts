/**
 * Reading `--set key=value` settings: sizes with binary suffixes and integers
 * (decimal or 0x hex). A malformed value is the user's mistake and fails the
 * case with KvmError 'EINVAL' naming the key.
 */
import { KvmError } from '../errors.js';
import type { SelftestContext } from './types.js';

const SUFFIX: Record<string, bigint> = { '': 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n };

/** Parses '16M', '1g', '4096', '0x1000' into bytes; undefined when malformed. */
export function parseSize(text: string): bigint | undefined {
  const t = text.trim().toLowerCase();
  if (/^0x[0-9a-f]+$/.test(t)) return BigInt(t);
  const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/.exec(t);
  return m ? BigInt(m[1]!) * SUFFIX[m[2]!]! : undefined;
}

/** A size setting, or `fallback` when not given. */
export function sizeSetting(ctx: SelftestContext, key: string, fallback: bigint): bigint {
  const text = ctx.settings.get(key);
  if (text === undefined) return fallback;
  const value = parseSize(text);
  if (value === undefined) throw new KvmError(`setting ${key}=${text}: expected a size such as 16M, 1G or 0x1000`, { code: 'EINVAL', args: { key, value: text } });
  return value;
}

/** A count setting (1..max; sizes' suffixes allowed), or `fallback` when not given. */
export function countSetting(ctx: SelftestContext, key: string, fallback: number, max: number): number {
  const text = ctx.settings.get(key);
  if (text === undefined) return fallback;
  const n = parseSize(text);
  if (n === undefined || n < 1n || n > BigInt(max)) throw new KvmError(`setting ${key}=${text}: expected 1..${max}`, { code: 'EINVAL', args: { key, value: text } });
  return Number(n);
}
