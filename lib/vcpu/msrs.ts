/**
 * MSRs: KVM_GET_MSRS / KVM_SET_MSRS on a vcpu, and on the system fd the MSR
 * index lists and the feature MSRs (KVM_CAP_GET_MSR_FEATURES).
 * struct kvm_msrs ends in a flexible array of 16-byte kvm_msr_entry.
 */
import { decodeCpuid, type CpuidEntry } from '../cpuid.js';
import { callNative, KvmError, toKvmError } from '../errors.js';
import type { Kvm } from '../kvm.js';
import { native } from '../native.js';
import type { Vcpu } from '../vcpu.js';
import { readArray, readOptions, toU64Arg, toUint, view } from '../vm/struct.js';

/** One MSR and its value (struct kvm_msr_entry). */
export interface MsrEntry {
  /** kvm_msr_entry.index: the MSR number (the value of ecx for RDMSR/WRMSR, e.g. 0xc0000080 IA32_EFER). */
  index: number;
  /** kvm_msr_entry.data: the MSR's 64-bit value (read by KVM_GET_MSRS, written by KVM_SET_MSRS). */
  data: bigint;
}

const ENTRY = 16;
const MAX_MSRS = 4096;

function indexBytes(indices: readonly number[], op: string): { bytes: Uint8Array; list: number[] } {
  const list = readArray(indices, op, 'indices', MAX_MSRS).map((i, n) => toUint(i, 32, `indices[${n}]`, op));
  const bytes = new Uint8Array(list.length * ENTRY);
  const v = view(bytes);
  list.forEach((index, i) => v.setUint32(i * ENTRY, index, true));
  return { bytes, list };
}

function decodeEntries(bytes: Uint8Array, count: number): MsrEntry[] {
  const v = view(bytes);
  return Array.from({ length: count }, (_, i) => ({ index: v.getUint32(i * ENTRY, true), data: v.getBigUint64(i * ENTRY + 8, true) }));
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** A partial KVM_GET_MSRS/KVM_SET_MSRS: the kernel stopped at entry `done`. */
function partialError(op: string, list: readonly number[], done: number, vcpu?: number): KvmError {
  const msr = list[done]!;
  return new KvmError(`${op} stopped at MSR ${hex(msr)} (entry ${done} of ${list.length}): the kernel refused it`, {
    code: 'EINVAL',
    ioctl: op,
    args: { msr: hex(msr), processed: done, requested: list.length, ...(vcpu === undefined ? {} : { vcpu }) },
  });
}

/** KVM_GET_MSRS on a vcpu; throws (naming the MSR) if the kernel reads fewer than asked. */
export function getMsrs(vcpu: Vcpu, indices: readonly number[]): MsrEntry[] {
  const op = 'KVM_GET_MSRS';
  const { bytes, list } = indexBytes(indices, op);
  const done = vcpu.ioctl(op, { count: list.length }, (fd) => native.getMsrs(fd, bytes));
  if (done < list.length) throw partialError(op, list, done, vcpu.id);
  return decodeEntries(bytes, done);
}

/**
 * KVM_SET_MSRS. The kernel returns how many it set, stopping at the first
 * MSR it refuses: a partial set throws KvmError 'EINVAL' naming that MSR
 * (args.msr) and how many were set before it (args.processed).
 */
export function setMsrs(vcpu: Vcpu, entries: readonly MsrEntry[]): void {
  const op = 'KVM_SET_MSRS';
  const list = readArray(entries, op, 'entries', MAX_MSRS);
  const bytes = new Uint8Array(list.length * ENTRY);
  const v = view(bytes);
  const indices: number[] = [];
  list.forEach((e, i) => {
    const o = readOptions(e, op, ['index', 'data'], ['index', 'data'], `entries[${i}]`);
    const index = toUint(o.index, 32, `entries[${i}].index`, op);
    indices.push(index);
    v.setUint32(i * ENTRY, index, true);
    v.setBigUint64(i * ENTRY + 8, toU64Arg(o.data, `entries[${i}].data`, op), true);
  });
  const done = vcpu.ioctl(op, { count: list.length }, (fd) => native.setMsrs(fd, bytes));
  if (done < list.length) throw partialError(op, indices, done, vcpu.id);
}

/** KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and restores for a vcpu. */
export function msrIndexList(kvm: Kvm): number[] {
  const fd = kvm.fd;
  return Array.from(callNative('KVM_GET_MSR_INDEX_LIST', {}, () => native.msrIndexList(fd)));
}

/** KVM_GET_MSR_FEATURE_INDEX_LIST: the feature MSRs getMsrFeatures() can read. */
export function msrFeatureIndexList(kvm: Kvm): number[] {
  const fd = kvm.fd;
  return Array.from(callNative('KVM_GET_MSR_FEATURE_INDEX_LIST', {}, () => native.msrFeatureIndexList(fd)));
}

/** KVM_GET_MSRS on the system fd: the values of feature MSRs (e.g. ARCH_CAPABILITIES). */
export function getMsrFeatures(kvm: Kvm, indices: readonly number[]): MsrEntry[] {
  const op = 'KVM_GET_MSRS';
  const { bytes, list } = indexBytes(indices, op); // read before the fd is taken: an element getter cannot recycle it
  const fd = kvm.fd;
  const done = callNative(op, { count: list.length, fd: 'system' }, () => native.getMsrs(fd, bytes));
  if (done < list.length) throw partialError(op, list, done);
  return decodeEntries(bytes, done);
}

/** KVM_GET_EMULATED_CPUID: CPUID bits KVM emulates (not necessarily fast), growing the buffer on E2BIG. */
export function emulatedCpuid(kvm: Kvm): CpuidEntry[] {
  const fd = kvm.fd;
  for (let max = 64; ; max *= 2) {
    try {
      return decodeCpuid(native.getEmulatedCpuid(fd, max));
    } catch (e) {
      if ((e as { errno?: number }).errno === 7 /* E2BIG */ && max < 4096) continue;
      throw toKvmError(e, 'KVM_GET_EMULATED_CPUID', { maxEntries: max });
    }
  }
}
