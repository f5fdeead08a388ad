/**
 * Interrupts for the CPL3 test guest: a GDT with the user code/data
 * descriptors the guest's selectors name (delivery loads CS and SS from it),
 * and an IDT whose 64-bit interrupt gates point at user (DPL 3) handlers, so
 * an interrupt taken at CPL3 stays at CPL3: no stack switch, IRETQ returns.
 *
 * Layout (in the system memslot, above the TSS): GDT at 0x40000, IDT at
 * 0x41000. Nothing here talks to KVM except the KVM_SET_SREGS that loads
 * GDTR and IDTR.
 *
 * @module
 */
import type { HostMemory } from '../memory.js';
import type { Vcpu } from '../vcpu.js';
import type { Asm } from './asm.js';
import { USER_CS_SELECTOR, USER_DS_SELECTOR } from './layout.js';

/** Where the GDT lives. */
export const GUEST_GDT_GPA = 0x40000n;
/** Where the IDT lives (256 gates of 16 bytes). */
export const GUEST_IDT_GPA = 0x41000n;
/** The local APIC's EOI register (xAPIC MMIO, identity mapped). */
export const LAPIC_EOI_GPA = 0xfee000b0n;

const GDT_ENTRIES = 10;
/** Flat 64-bit user code: P, DPL 3, S, type 0xb, L. */
const USER_CODE = 0x00affb000000ffffn;
/** Flat user data: P, DPL 3, S, type 3, D/B, G. */
const USER_DATA = 0x00cff3000000ffffn;

/** One 16-byte 64-bit interrupt gate (type 0xE) to `handler` through CS 0x33, with DPL 3. */
function gate(handler: bigint): [bigint, bigint] {
  const low =
    (handler & 0xffffn) |
    (BigInt(USER_CS_SELECTOR) << 16n) |
    ((0x80n | (3n << 5n) | 0xen) << 40n) | // P, DPL 3, interrupt gate
    (((handler >> 16n) & 0xffffn) << 48n);
  return [low, handler >> 32n];
}

/**
 * Writes the GDT and an IDT with a user gate for each vector of `handlers`
 * (vector -> guest-virtual handler address), and loads GDTR/IDTR. Call after
 * Guest.create(), before the first run.
 */
export function installUserIdt(vcpu: Vcpu, memory: HostMemory, handlers: ReadonlyMap<number, bigint>): void {
  const v = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, memory.bytes.byteLength);
  const gdt = Number(GUEST_GDT_GPA);
  for (let i = 0; i < GDT_ENTRIES; i++) v.setBigUint64(gdt + i * 8, 0n, true);
  v.setBigUint64(gdt + (USER_DS_SELECTOR >> 3) * 8, USER_DATA, true);
  v.setBigUint64(gdt + (USER_CS_SELECTOR >> 3) * 8, USER_CODE, true);
  const idt = Number(GUEST_IDT_GPA);
  memory.bytes.fill(0, idt, idt + 256 * 16);
  for (const [vector, handler] of handlers) {
    if (!Number.isInteger(vector) || vector < 0 || vector > 255) throw new RangeError(`vector ${vector} is not 0..255`);
    const [lo, hi] = gate(handler);
    v.setBigUint64(idt + vector * 16, lo, true);
    v.setBigUint64(idt + vector * 16 + 8, hi, true);
  }
  vcpu.setSregs({ gdt: { base: GUEST_GDT_GPA, limit: GDT_ENTRIES * 8 - 1 }, idt: { base: GUEST_IDT_GPA, limit: 256 * 16 - 1 } });
}

/** STI (allowed at CPL3 with IOPL 3, which the guest's RFLAGS has). */
export function emitSti(a: Asm): Asm {
  return a.bytes([0xfb]);
}

/** IRETQ. */
export function emitIretq(a: Asm): Asm {
  return a.bytes([0x48, 0xcf]);
}

/**
 * A handler that adds 1 to the u64 at `counterGva`, writes the LAPIC EOI
 * register (unless `eoi` is false: without the in-kernel irqchip that write
 * would be an MMIO exit), and returns with IRETQ; it preserves every register.
 */
export function emitCountingHandler(a: Asm, label: string, counterGva: bigint, eoi = true): Asm {
  a.label(label).push('rax').push('rbx');
  a.mov('rbx', counterGva).load('rax', { base: 'rbx' }).inc('rax').store({ base: 'rbx' }, 'rax');
  if (eoi) a.mov('rbx', LAPIC_EOI_GPA).mov('eax', 0).store({ base: 'rbx' }, 'eax');
  a.pop('rbx').pop('rax');
  return emitIretq(a);
}
