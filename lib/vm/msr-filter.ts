/**
 * KVM_X86_SET_MSR_FILTER: which guest RDMSR/WRMSR KVM handles. An access
 * the filter denies #GPs in the guest, or, with KVM_CAP_X86_USER_SPACE_MSR
 * enabled for KVM_MSR_EXIT_REASON_FILTER (4), exits to userspace as an
 * 'x86-rdmsr' / 'x86-wrmsr' exit with cause 'filter'. Host accesses
 * (vcpu.getMsrs/setMsrs) are never filtered.
 */
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readArray, readOptions, toBool, toUint } from './struct.js';

const OP = 'KVM_X86_SET_MSR_FILTER';
/** KVM_MSR_FILTER_MAX_RANGES. */
export const MSR_FILTER_MAX_RANGES = 16;
/** KVM_MSR_FILTER_MAX_BITMAP_SIZE (bytes) * 8: the most MSRs one range covers. */
export const MSR_FILTER_MAX_RANGE_MSRS = 0x600 * 8;
const FILTER_READ = 1;
const FILTER_WRITE = 2;
const DEFAULT_DENY = 1;

/** One range of MSRs the filter decides for; MSRs in no range get the default action. */
export interface MsrFilterRange {
  /** First MSR index of the range. */
  base: number;
  /** How many consecutive MSRs it covers (1..12288). */
  count: number;
  /** The range applies to RDMSR (default true). */
  read?: boolean;
  /** The range applies to WRMSR (default true). */
  write?: boolean;
  /** The MSRs of the range the guest may access (each in [base, base + count)); the rest of the range is denied. Default: none. */
  allow?: readonly number[];
}

/** Options of Vm.setMsrFilter(). */
export interface MsrFilterOptions {
  /** What happens to MSRs in no range: 'allow' (KVM handles them, the default) or 'deny'. */
  defaultAction?: 'allow' | 'deny';
  /** Up to 16 ranges. None (and defaultAction 'allow') removes the filter. */
  ranges?: readonly MsrFilterRange[];
}

/** The checked ranges as the addon takes them: [flags, base, nmsrs] triples and the bitmaps end to end. */
function encodeRanges(value: unknown): { triples: Uint32Array; bitmaps: Uint8Array } {
  const ranges = readArray(value ?? [], OP, 'ranges', MSR_FILTER_MAX_RANGES);
  const triples = new Uint32Array(ranges.length * 3);
  const maps: Uint8Array[] = [];
  ranges.forEach((raw, i) => {
    const name = `ranges[${i}]`;
    const r = readOptions(raw, OP, ['base', 'count', 'read', 'write', 'allow'], ['base', 'count'], name);
    const base = toUint(r.base, 32, `${name}.base`, OP);
    const count = toUint(r.count, 32, `${name}.count`, OP);
    if (count < 1 || count > MSR_FILTER_MAX_RANGE_MSRS) throw invalidArgument(OP, `${name}.count must be in [1, ${MSR_FILTER_MAX_RANGE_MSRS}], got ${count}`);
    if (base + count > 2 ** 32) throw invalidArgument(OP, `${name} runs past MSR 0xffffffff`);
    const flags = (toBool(r.read, `${name}.read`, OP, true) ? FILTER_READ : 0) | (toBool(r.write, `${name}.write`, OP, true) ? FILTER_WRITE : 0);
    if (flags === 0) throw invalidArgument(OP, `${name} applies to neither read nor write`);
    const bitmap = new Uint8Array(Math.ceil(count / 8));
    readArray(r.allow ?? [], OP, `${name}.allow`, count).forEach((msr, j) => {
      const index = toUint(msr, 32, `${name}.allow[${j}]`, OP);
      if (index < base || index >= base + count) throw invalidArgument(OP, `${name}.allow[${j}] (0x${index.toString(16)}) is outside the range`);
      bitmap[(index - base) >> 3]! |= 1 << ((index - base) & 7);
    });
    triples.set([flags, base, count], i * 3);
    maps.push(bitmap);
  });
  const bitmaps = new Uint8Array(maps.reduce((n, m) => n + m.length, 0));
  let off = 0;
  for (const m of maps) {
    bitmaps.set(m, off);
    off += m.length;
  }
  return { triples, bitmaps };
}

/** KVM_X86_SET_MSR_FILTER: replaces the VM's MSR filter (needs KVM_CAP_X86_MSR_FILTER). */
export function setMsrFilter(vm: Vm, options: MsrFilterOptions = {}): void {
  const o = readOptions(options, OP, ['defaultAction', 'ranges']);
  const action = o.defaultAction ?? 'allow';
  if (action !== 'allow' && action !== 'deny') throw invalidArgument(OP, `defaultAction must be 'allow' or 'deny', got ${String(action)}`);
  const { triples, bitmaps } = encodeRanges(o.ranges);
  const flags = action === 'deny' ? DEFAULT_DENY : 0;
  callVm(vm, OP, { defaultAction: action, ranges: triples.length / 3 }, (fd) => native.vmSetMsrFilter(fd, flags, triples, bitmaps));
}
