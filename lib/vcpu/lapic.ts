/**
 * The local APIC register page (struct kvm_lapic_state, 1024 bytes) as named
 * 32-bit registers: KVM_GET_LAPIC / KVM_SET_LAPIC. In xAPIC mode the APIC
 * id is in bits 24-31 of `id`; with x2APIC enabled KVM uses the full value
 * unless KVM_CAP_X2APIC_API says otherwise.
 */
import { native } from '../native.js';
import type { Vcpu } from '../vcpu.js';
import { view } from '../vm/struct.js';
import { fieldCheck, mergeState } from './merge.js';

/** Register offsets in the APIC page (Intel SDM vol. 3, table 11-1). */
export const LAPIC_REGISTERS = {
  id: 0x20, version: 0x30, tpr: 0x80, apr: 0x90, ppr: 0xa0, eoi: 0xb0, rrd: 0xc0, ldr: 0xd0, dfr: 0xe0, svr: 0xf0,
  esr: 0x280, lvtCmci: 0x2f0, icrLow: 0x300, icrHigh: 0x310, lvtTimer: 0x320, lvtThermal: 0x330, lvtPerf: 0x340,
  lvtLint0: 0x350, lvtLint1: 0x360, lvtError: 0x370, timerInitialCount: 0x380, timerCurrentCount: 0x390, timerDivide: 0x3e0,
} as const;
/** A named APIC register. */
export type LapicRegister = keyof typeof LAPIC_REGISTERS;

/** The LAPIC state: named registers plus the 256-bit ISR, TMR and IRR as 8 words each (word i = vectors 32i..32i+31). */
export type LapicState = Record<LapicRegister, number> & { isr: number[]; tmr: number[]; irr: number[] };

const BANKS = { isr: 0x100, tmr: 0x180, irr: 0x200 } as const;

function decodeLapic(bytes: Uint8Array): LapicState {
  const v = view(bytes);
  const out = {} as LapicState;
  for (const [name, off] of Object.entries(LAPIC_REGISTERS)) out[name as LapicRegister] = v.getUint32(off, true);
  for (const [name, off] of Object.entries(BANKS)) out[name as keyof typeof BANKS] = Array.from({ length: 8 }, (_, i) => v.getUint32(off + i * 16, true));
  return out;
}

function encodeLapic(s: LapicState, base: Uint8Array): Uint8Array {
  const bytes = base.slice();
  const v = view(bytes);
  for (const [name, off] of Object.entries(LAPIC_REGISTERS)) v.setUint32(off, s[name as LapicRegister], true);
  for (const [name, off] of Object.entries(BANKS)) s[name as keyof typeof BANKS].forEach((w, i) => v.setUint32(off + i * 16, w, true));
  return bytes;
}

/** Whether `vector` is set in a 256-bit bank (isr, tmr, irr) of a LapicState. */
export function lapicVectorSet(bank: readonly number[], vector: number): boolean {
  return ((bank[vector >>> 5]! >>> (vector & 31)) & 1) === 1;
}

/** KVM_GET_LAPIC (needs the in-kernel irqchip). */
export function getLapic(vcpu: Vcpu): LapicState {
  return decodeLapic(vcpu.ioctl('KVM_GET_LAPIC', {}, (fd) => native.vcpuGetLapic(fd)));
}

/** KVM_SET_LAPIC; registers not given keep their current values (other bytes of the page too). */
export function setLapic(vcpu: Vcpu, update: Partial<LapicState>): void {
  const op = 'KVM_SET_LAPIC';
  const raw = vcpu.ioctl('KVM_GET_LAPIC', {}, (fd) => native.vcpuGetLapic(fd));
  const next = mergeState(decodeLapic(raw), update, op, fieldCheck(op, () => 32));
  const bytes = encodeLapic(next, raw);
  vcpu.ioctl(op, {}, (fd) => native.vcpuSetLapic(fd, bytes));
}
