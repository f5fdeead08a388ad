/**
 * Synchronized registers (KVM_CAP_SYNC_REGS): kvm_run carries copies of
 * kvm_regs, kvm_sregs and kvm_vcpu_events, saving the GET/SET ioctls around
 * an exit. kvm_valid_regs asks KVM to fill them on every exit;
 * kvm_dirty_regs tells KVM to load them on the next KVM_RUN.
 *
 * kvm_run layout: kvm_valid_regs at 288, kvm_dirty_regs at 296, and
 * struct kvm_sync_regs at 304 (regs 144 bytes, sregs 312, events 64).
 */
import { invalidArgument } from '../errors.js';
import { decodeRegs, decodeSregs, encodeRegs, encodeSregs, regsUpdate, type Regs, type Sregs } from '../regs.js';
import type { Vcpu } from '../vcpu.js';
import { readOptions, toEnum } from '../vm/struct.js';
import { decodeEvents, encodeEvents, type VcpuEvents } from './events.js';

/** KVM_SYNC_X86_* bits by name. */
export const SYNC_REGS = { regs: 1, sregs: 2, events: 4 } as const;
/** One part of the synchronized registers. */
export type SyncRegsKind = keyof typeof SYNC_REGS;

const VALID = 288;
const DIRTY = 296;
const REGS = 304;
const SREGS = REGS + 144;
const EVENTS = SREGS + 312;

/** The synchronized registers as kvm_run holds them now. */
export interface SyncRegs {
  /** kvm_sync_regs.regs (KVM_SYNC_X86_REGS): the general-purpose registers, rip and rflags, as struct kvm_regs. */
  regs: Regs;
  /** kvm_sync_regs.sregs (KVM_SYNC_X86_SREGS): segments, descriptor tables, control registers and EFER, as struct kvm_sregs. */
  sregs: Sregs;
  /** kvm_sync_regs.events (KVM_SYNC_X86_EVENTS): pending and injected events, as struct kvm_vcpu_events. */
  events: VcpuEvents;
}

function words(run: Uint8Array): DataView {
  return new DataView(run.buffer, run.byteOffset, EVENTS + 64);
}

function bit(kind: unknown, op: string): bigint {
  return BigInt(SYNC_REGS[toEnum(kind, SYNC_REGS, 'kind', op)]);
}

function update(vcpu: Vcpu, run: Uint8Array, offset: number, kind: unknown, set: boolean, op: string): void {
  const b = bit(kind, op);
  vcpu.ioctl(op, { kind }, () => {
    const v = words(run);
    const cur = v.getBigUint64(offset, true);
    v.setBigUint64(offset, set ? cur | b : cur & ~b, true);
  });
}

/** Sets a bit of kvm_valid_regs: KVM fills that part on every exit. */
export function setSyncValidReg(vcpu: Vcpu, run: Uint8Array, kind: SyncRegsKind): void {
  update(vcpu, run, VALID, kind, true, 'setSyncValidReg');
}

/** Clears a bit of kvm_valid_regs. */
export function clearSyncValidReg(vcpu: Vcpu, run: Uint8Array, kind: SyncRegsKind): void {
  update(vcpu, run, VALID, kind, false, 'clearSyncValidReg');
}

/** Sets a bit of kvm_dirty_regs: KVM loads that part from kvm_run on the next KVM_RUN. */
export function setSyncDirtyReg(vcpu: Vcpu, run: Uint8Array, kind: SyncRegsKind): void {
  update(vcpu, run, DIRTY, kind, true, 'setSyncDirtyReg');
}

/** Clears a bit of kvm_dirty_regs. */
export function clearSyncDirtyReg(vcpu: Vcpu, run: Uint8Array, kind: SyncRegsKind): void {
  update(vcpu, run, DIRTY, kind, false, 'clearSyncDirtyReg');
}

/** The synchronized registers as of the last exit (meaningful for the parts set valid). */
export function syncRegs(vcpu: Vcpu, run: Uint8Array): SyncRegs {
  return vcpu.ioctl('syncRegs', {}, () => ({
    regs: decodeRegs(run.subarray(REGS, REGS + 144)),
    sregs: decodeSregs(run.subarray(SREGS, SREGS + 312)),
    events: decodeEvents(run.subarray(EVENTS, EVENTS + 64)),
  }));
}

/**
 * Writes parts of the synchronized registers into kvm_run and marks them
 * dirty, so the next KVM_RUN loads them (the sync_regs_mut of kvm-ioctls).
 * Each part given is a whole struct (start from syncRegs()).
 */
export function setSyncRegs(vcpu: Vcpu, run: Uint8Array, parts: Partial<SyncRegs>): void {
  const op = 'setSyncRegs';
  // Read once (throwing getters, revoked Proxies: EINVAL); regs range-checked as setRegs() does, never truncated.
  const copy = readOptions(parts, op, Object.keys(SYNC_REGS), [], 'parts');
  const regs = copy.regs === undefined ? undefined : regsUpdate(copy.regs, op);
  const encoded: [number, Uint8Array, bigint][] = [];
  try {
    if (regs !== undefined) encoded.push([REGS, encodeRegs(regs as Regs), 1n]);
    if (copy.sregs !== undefined) encoded.push([SREGS, encodeSregs(copy.sregs as Sregs), 2n]);
    if (copy.events !== undefined) encoded.push([EVENTS, encodeEvents(copy.events as VcpuEvents), 4n]);
  } catch (e) {
    throw invalidArgument(op, `a part is not a whole struct: ${(e as Error).message}`);
  }
  vcpu.ioctl(op, {}, () => {
    const v = words(run);
    let dirty = v.getBigUint64(DIRTY, true);
    for (const [off, bytes, b] of encoded) {
      run.set(bytes, off);
      dirty |= b;
    }
    v.setBigUint64(DIRTY, dirty, true);
  });
}
