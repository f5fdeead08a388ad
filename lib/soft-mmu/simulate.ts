/**
 * An executable statement of what one KVM_PRE_FAULT_MEMORY call does, built
 * from the planner and the SoftMmu with no I/O. The software engine does the
 * same loop with host population between steps; tests use this to check that
 * the planner reproduces the kernel's results (e.g. the upstream selftest's).
 */

import type { PrivateAttributeQuery } from './attributes.js';
import type { SoftMmu, SoftMappingInfo } from './page-table.js';
import { planPreFaultStep, validatePreFaultRange, type SoftSlotView } from './plan.js';

/** Input of {@link simulatePreFaultMemory}. */
export interface SimulatePreFaultParams {
  /** Every memslot. */
  slots: readonly SoftSlotView[];
  /** Memory attributes; omitted means all shared. */
  isPrivate?: PrivateAttributeQuery;
  /** The request, as in struct kvm_pre_fault_memory; flags default to 0. */
  range: { gpa: bigint; size: bigint; flags?: number | bigint };
  /** Step size handed to the planner; only changes how work is batched. Default 1 GiB. */
  maxChunk?: bigint;
}

/** Outcome of one simulated call: the errno (null for a 0 return) and the range left. */
export interface SimulatedPreFaultResult {
  /** null when the call returned 0 (at least one page processed), else the errno name. */
  error: 'EINVAL' | 'ENOENT' | 'EFAULT' | null;
  /** gpa left to process (the kernel writes it back). */
  gpa: bigint;
  /** Bytes left to process. */
  size: bigint;
}

/**
 * One KVM_PRE_FAULT_MEMORY call against `mmu`: validate, then map step after
 * step until the range is done or a gpa cannot be mapped. As in the kernel, a
 * failure after some progress still returns success with the rest left in the
 * range; only a failure on the very first page reports the errno.
 */
export function simulatePreFaultMemory(mmu: SoftMmu, p: SimulatePreFaultParams): SimulatedPreFaultResult {
  let { gpa, size } = p.range;
  const invalid = validatePreFaultRange({ gpa, size, flags: p.range.flags ?? 0 });
  if (invalid !== null) return { error: invalid, gpa, size };
  const maxChunk = p.maxChunk ?? 1n << 30n;
  let progressed = false;
  while (size > 0n) {
    const step = planPreFaultStep({
      slots: p.slots,
      range: { gpa, size },
      maxChunk,
      ...(p.isPrivate === undefined ? {} : { isPrivate: p.isPrivate }),
    });
    if (step.kind !== 'map') {
      const error = step.kind === 'enoent' ? 'ENOENT' : 'EFAULT';
      return { error: progressed ? null : error, gpa, size };
    }
    const info: SoftMappingInfo = { slot: step.slot, private: step.private, writable: step.writable };
    if (step.hostAddress !== undefined) info.hostAddress = step.hostAddress;
    mmu.mapRange(step.gpa, step.size, step.level, info);
    gpa += step.progress;
    size -= step.progress;
    progressed = true;
  }
  return { error: null, gpa, size };
}
