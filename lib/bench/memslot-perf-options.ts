/**
 * Options of the memslot-perf benchmark family (`--family memslot-perf`,
 * opt-in: the default run leaves it out), parsed and checked like the other
 * families' options.
 */
import { MEMSLOT_PERF_SCALES, MEMSLOT_PERF_TESTS, type MemslotPerfTest } from '../selftests/memslot_perf-guest.js';
import { BenchUsageError, parseInteger, parseNameList } from './options.js';

/** The command line's names of the tests (upstream's, with dashes). */
export const MEMSLOT_TEST_NAMES: Readonly<Record<string, MemslotPerfTest>> = {
  map: 'map',
  unmap: 'unmap',
  'unmap-chunked': 'unmap chunked',
  'move-active': 'move active area',
  'move-inactive': 'move inactive area',
  rw: 'RW',
};

/** Checked options of the memslot-perf family. */
export interface MemslotPerfOptions {
  tests: MemslotPerfTest[];
  /** Memslots including slot 0 (upstream -s), or 'max' (KVM_CAP_NR_MEMSLOTS). */
  slots: number | 'max';
  /** Upstream's sizes divided by this. */
  scale: number;
  /** Each test runs this long on each side (upstream -l). */
  seconds: number;
}

/** The command line's spelling. */
export interface RawMemslotPerfOptions {
  memslotTests?: string;
  memslotSlots?: string;
  memslotScale?: string;
  memslotSeconds?: string;
}

/** The defaults: every test, 257 slots, 1/8 of upstream's sizes, 1 s per test and side (about 15 s). */
export const MEMSLOT_PERF_DEFAULTS = {
  memslotTests: Object.keys(MEMSLOT_TEST_NAMES).join(','),
  memslotSlots: '257',
  memslotScale: '8',
  memslotSeconds: '1',
} as const;

/** The family's options (call only when --family names memslot-perf). */
export function resolveMemslotPerfOptions(raw: RawMemslotPerfOptions): MemslotPerfOptions {
  const names = parseNameList(raw.memslotTests ?? MEMSLOT_PERF_DEFAULTS.memslotTests, Object.keys(MEMSLOT_TEST_NAMES), '--memslot-tests');
  const slotsText = (raw.memslotSlots ?? MEMSLOT_PERF_DEFAULTS.memslotSlots).trim();
  const slots = slotsText === 'max' ? 'max' : parseInteger(slotsText, '--memslot-slots', 2, 1 << 20);
  const scale = parseInteger(raw.memslotScale ?? MEMSLOT_PERF_DEFAULTS.memslotScale, '--memslot-scale', 1, 32);
  if (!MEMSLOT_PERF_SCALES.includes(scale)) throw new BenchUsageError(`--memslot-scale: ${scale} is not one of ${MEMSLOT_PERF_SCALES.join(', ')}`);
  const secondsText = raw.memslotSeconds ?? MEMSLOT_PERF_DEFAULTS.memslotSeconds;
  const seconds = Number(secondsText);
  if (!/^\s*\d+(\.\d+)?\s*$/.test(secondsText) || seconds > 600) throw new BenchUsageError(`--memslot-seconds: ${JSON.stringify(secondsText)} is not a number of seconds (0..600)`);
  return { tests: names.map((n) => MEMSLOT_TEST_NAMES[n]!), slots, scale, seconds };
}
