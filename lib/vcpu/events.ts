/**
 * Pending events and run state of a vcpu: kvm_vcpu_events
 * (KVM_GET/SET_VCPU_EVENTS), kvm_mp_state (KVM_GET/SET_MP_STATE),
 * kvm_debugregs (KVM_GET/SET_DEBUGREGS) and kvm_guest_debug
 * (KVM_SET_GUEST_DEBUG).
 */
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vcpu } from '../vcpu.js';
import { enumName, readArray, readOptions, toBool, toEnum, toU64Arg, view } from '../vm/struct.js';
import { fieldCheck, mergeState } from './merge.js';

/** Pending and injected events (struct kvm_vcpu_events). Byte fields are 0/1 flags or vectors. */
export interface VcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  /** KVM_VCPUEVENT_VALID_* bits saying which optional fields are meaningful (on set: which to apply). */
  flags: number;
  smi: { smm: number; pending: number; smmInsideNmi: number; latchedInit: number };
  tripleFault: { pending: number };
  exceptionHasPayload: number;
  exceptionPayload: bigint;
}

/** KVM_VCPUEVENT_VALID_* flags. */
export const VCPU_EVENT_VALID = { NMI_PENDING: 1, SIPI_VECTOR: 2, SHADOW: 4, SMM: 8, PAYLOAD: 16, TRIPLE_FAULT: 32 } as const;

/** Decodes struct kvm_vcpu_events (also the events part of kvm_run's sync registers). */
export function decodeEvents(bytes: Uint8Array): VcpuEvents {
  const v = view(bytes);
  const u8 = (o: number): number => v.getUint8(o);
  return {
    exception: { injected: u8(0), nr: u8(1), hasErrorCode: u8(2), pending: u8(3), errorCode: v.getUint32(4, true) },
    interrupt: { injected: u8(8), nr: u8(9), soft: u8(10), shadow: u8(11) },
    nmi: { injected: u8(12), pending: u8(13), masked: u8(14) },
    sipiVector: v.getUint32(16, true),
    flags: v.getUint32(20, true),
    smi: { smm: u8(24), pending: u8(25), smmInsideNmi: u8(26), latchedInit: u8(27) },
    tripleFault: { pending: u8(28) },
    exceptionHasPayload: u8(55),
    exceptionPayload: v.getBigUint64(56, true),
  };
}

/** Encodes struct kvm_vcpu_events. */
export function encodeEvents(e: VcpuEvents): Uint8Array {
  const bytes = new Uint8Array(64);
  const v = view(bytes);
  const u8 = (o: number, x: number): void => v.setUint8(o, x);
  u8(0, e.exception.injected); u8(1, e.exception.nr); u8(2, e.exception.hasErrorCode); u8(3, e.exception.pending);
  v.setUint32(4, e.exception.errorCode, true);
  u8(8, e.interrupt.injected); u8(9, e.interrupt.nr); u8(10, e.interrupt.soft); u8(11, e.interrupt.shadow);
  u8(12, e.nmi.injected); u8(13, e.nmi.pending); u8(14, e.nmi.masked);
  v.setUint32(16, e.sipiVector, true);
  v.setUint32(20, e.flags, true);
  u8(24, e.smi.smm); u8(25, e.smi.pending); u8(26, e.smi.smmInsideNmi); u8(27, e.smi.latchedInit);
  u8(28, e.tripleFault.pending);
  u8(55, e.exceptionHasPayload);
  v.setBigUint64(56, e.exceptionPayload, true);
  return bytes;
}

const EVENT_BITS: Record<string, number> = { errorCode: 32, sipiVector: 32, flags: 32, exceptionPayload: 64 };

/** KVM_GET_VCPU_EVENTS. */
export function getVcpuEvents(vcpu: Vcpu): VcpuEvents {
  return decodeEvents(vcpu.ioctl('KVM_GET_VCPU_EVENTS', {}, (fd) => native.vcpuGetVcpuEvents(fd)));
}

/**
 * KVM_SET_VCPU_EVENTS; fields not given keep their current values. As in
 * api.rst, optional parts apply only with their VCPU_EVENT_VALID_* bit in
 * flags (the flags returned by get are kept unless given).
 */
export function setVcpuEvents(vcpu: Vcpu, update: Partial<{ [K in keyof VcpuEvents]: VcpuEvents[K] extends object ? Partial<VcpuEvents[K]> : VcpuEvents[K] }>): void {
  const op = 'KVM_SET_VCPU_EVENTS';
  const next = mergeState(getVcpuEvents(vcpu), update, op, fieldCheck(op, (n) => EVENT_BITS[n] ?? 8));
  const bytes = encodeEvents(next);
  vcpu.ioctl(op, {}, (fd) => native.vcpuSetVcpuEvents(fd, bytes));
}

/** KVM_MP_STATE_* by name. */
export const MP_STATES = {
  runnable: 0, uninitialized: 1, 'init-received': 2, halted: 3, 'sipi-received': 4,
  stopped: 5, 'check-stop': 6, operating: 7, load: 8, 'ap-reset-hold': 9, suspended: 10,
} as const;
/** A multiprocessing state name. */
export type MpState = keyof typeof MP_STATES;

/** KVM_GET_MP_STATE (a number if the kernel reports one node-kvm does not name). */
export function getMpState(vcpu: Vcpu): MpState | number {
  const n = view(vcpu.ioctl('KVM_GET_MP_STATE', {}, (fd) => native.vcpuGetMpState(fd))).getUint32(0, true);
  return enumName(MP_STATES, n);
}

/** KVM_SET_MP_STATE. */
export function setMpState(vcpu: Vcpu, state: MpState): void {
  const op = 'KVM_SET_MP_STATE';
  const name = toEnum(state, MP_STATES, 'state', op);
  const bytes = new Uint8Array(4);
  view(bytes).setUint32(0, MP_STATES[name], true);
  vcpu.ioctl(op, { state: name }, (fd) => native.vcpuSetMpState(fd, bytes));
}

/** Debug registers (struct kvm_debugregs). */
export interface DebugRegs {
  db: bigint[];
  dr6: bigint;
  dr7: bigint;
  flags: bigint;
}

/** KVM_GET_DEBUGREGS. */
export function getDebugRegs(vcpu: Vcpu): DebugRegs {
  const v = view(vcpu.ioctl('KVM_GET_DEBUGREGS', {}, (fd) => native.vcpuGetDebugRegs(fd)));
  return {
    db: [0, 1, 2, 3].map((i) => v.getBigUint64(i * 8, true)),
    dr6: v.getBigUint64(32, true),
    dr7: v.getBigUint64(40, true),
    flags: v.getBigUint64(48, true),
  };
}

/** KVM_SET_DEBUGREGS; fields not given keep their current values. */
export function setDebugRegs(vcpu: Vcpu, update: Partial<DebugRegs>): void {
  const op = 'KVM_SET_DEBUGREGS';
  const next = mergeState(getDebugRegs(vcpu), update, op, fieldCheck(op, () => 64));
  const bytes = new Uint8Array(128);
  const v = view(bytes);
  next.db.forEach((d, i) => v.setBigUint64(i * 8, d, true));
  v.setBigUint64(32, next.dr6, true);
  v.setBigUint64(40, next.dr7, true);
  v.setBigUint64(48, next.flags, true);
  vcpu.ioctl(op, {}, (fd) => native.vcpuSetDebugRegs(fd, bytes));
}

/** Options of Vcpu.setGuestDebug() (struct kvm_guest_debug). */
export interface GuestDebugOptions {
  /** KVM_GUESTDBG_ENABLE; false turns guest debugging off (the other options must then be unset). */
  enable: boolean;
  /** KVM_GUESTDBG_SINGLESTEP: exit with 'debug' after each instruction. */
  singleStep?: boolean;
  /** KVM_GUESTDBG_USE_SW_BP: INT3 exits to userspace. */
  softwareBreakpoints?: boolean;
  /** KVM_GUESTDBG_USE_HW_BP with DR0-DR3 and DR7 from `debugreg`. */
  hardwareBreakpoints?: boolean;
  /** KVM_GUESTDBG_INJECT_DB / INJECT_BP: inject #DB or #BP on the next entry. */
  injectDb?: boolean;
  injectBp?: boolean;
  /** KVM_GUESTDBG_BLOCKIRQ: no interrupts while single-stepping. */
  blockIrq?: boolean;
  /** DR0-DR7 for hardware breakpoints (8 values; DR4/DR5 unused). */
  debugreg?: readonly (bigint | number)[];
}

const GUESTDBG = { enable: 1, singleStep: 2, softwareBreakpoints: 0x10000, hardwareBreakpoints: 0x20000, injectDb: 0x40000, injectBp: 0x80000, blockIrq: 0x100000 } as const;

/** KVM_SET_GUEST_DEBUG. */
export function setGuestDebug(vcpu: Vcpu, options: GuestDebugOptions): void {
  const op = 'KVM_SET_GUEST_DEBUG';
  const o = readOptions(options, op, [...Object.keys(GUESTDBG), 'debugreg'], ['enable']);
  let control = 0;
  for (const [name, bit] of Object.entries(GUESTDBG)) if (toBool(o[name], name, op)) control |= bit;
  if (!(control & 1) && control !== 0) throw invalidArgument(op, 'enable must be true when other debug options are set');
  const bytes = new Uint8Array(72);
  const v = view(bytes);
  v.setUint32(0, control, true);
  if (o.debugreg !== undefined) {
    const regs = readArray(o.debugreg, op, 'debugreg', 8);
    if (regs.length !== 8) throw invalidArgument(op, 'debugreg must have 8 entries (DR0-DR7)');
    regs.forEach((r, i) => v.setBigUint64(8 + i * 8, toU64Arg(r, `debugreg[${i}]`, op), true));
  }
  vcpu.ioctl(op, { control }, (fd) => native.vcpuSetGuestDebug(fd, bytes));
}
