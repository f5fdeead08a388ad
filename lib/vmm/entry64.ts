/**
 * The CPU state the Linux boot protocol's 64-bit entry wants
 * (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"): long mode with
 * paging on, an identity map covering the kernel, boot_params and command
 * line (we map all of 0-4 GiB with 2 MiB pages), a GDT with flat __BOOT_CS
 * (0x10) and __BOOT_DS (0x18), interrupts off, %rsi = boot_params. Pure: the
 * bytes to write into guest memory and the register values to set.
 */
import type { Segment } from '../regs.js';
import { BOOT_PARAMS_ADDR, BOOT_STACK_TOP, GDT_ADDR, PAGE_TABLES_ADDR, PAGE_TABLES_SIZE } from './layout.js';

/** __BOOT_CS. */
export const BOOT_CS = 0x10;
/** __BOOT_DS. */
export const BOOT_DS = 0x18;
/** A TSS selector, so TR is valid for VM entry checks. */
export const BOOT_TSS = 0x20;

/** CR0: PE | ET | PG, the least long mode needs (the kernel sets the rest itself). */
export const CR0_LONG_MODE = 0x8000_0011n;
/** CR4: PAE (4-level paging). */
export const CR4_PAE = 0x20n;
/** EFER: LME | LMA. */
export const EFER_LONG_MODE = 0x500n;

/** GDT descriptors (u64 each): null, null, 64-bit code, data, TSS (one 8-byte half; base 0). */
export const GDT_ENTRIES: readonly bigint[] = [
  0n,
  0n,
  0x00af_9b00_0000_ffffn, // 0x10: code, present, DPL 0, L=1, G=1
  0x00cf_9300_0000_ffffn, // 0x18: data, present, DPL 0, D/B=1, G=1
  0x0000_8b00_0000_0067n, // 0x20: busy 64-bit TSS, limit 0x67 (the upper half follows)
  0n,
];

/** Identity page tables for 0-4 GiB with 2 MiB pages, at PAGE_TABLES_ADDR. */
export function buildPageTables(): Uint8Array {
  const bytes = new Uint8Array(PAGE_TABLES_SIZE);
  const v = new DataView(bytes.buffer);
  const pml4 = PAGE_TABLES_ADDR;
  const pdpt = pml4 + 0x1000;
  const pd0 = pml4 + 0x2000;
  // Present | writable. No user bit: the kernel runs at CPL0.
  v.setBigUint64(0, BigInt(pdpt) | 3n, true);
  for (let i = 0; i < 4; i++) v.setBigUint64(0x1000 + i * 8, BigInt(pd0 + i * 0x1000) | 3n, true);
  for (let i = 0; i < 4 * 512; i++) {
    // Present | writable | PS (2 MiB leaf).
    v.setBigUint64(0x2000 + i * 8, (BigInt(i) << 21n) | 0x83n, true);
  }
  return bytes;
}

/** The GDT's bytes. */
export function buildGdt(): Uint8Array {
  const bytes = new Uint8Array(GDT_ENTRIES.length * 8);
  const v = new DataView(bytes.buffer);
  GDT_ENTRIES.forEach((e, i) => v.setBigUint64(i * 8, e, true));
  return bytes;
}

function segment(selector: number, type: number, code: boolean): Segment {
  return { base: 0n, limit: 0xffff_ffff, selector, type, present: 1, dpl: 0, db: code ? 0 : 1, s: 1, l: code ? 1 : 0, g: 1, avl: 0, unusable: 0 };
}

/** Special registers for the 64-bit entry (a partial kvm_sregs for Vcpu.setSregs). */
export function entrySregs(): {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment;
  gdt: { base: bigint; limit: number }; idt: { base: bigint; limit: number };
  cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint;
} {
  const data = segment(BOOT_DS, 3, false);
  return {
    cs: segment(BOOT_CS, 0xb, true),
    ds: data, es: data, fs: data, gs: data, ss: data,
    tr: { base: 0n, limit: 0x67, selector: BOOT_TSS, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 },
    gdt: { base: BigInt(GDT_ADDR), limit: GDT_ENTRIES.length * 8 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_LONG_MODE,
    cr3: BigInt(PAGE_TABLES_ADDR),
    cr4: CR4_PAE,
    efer: EFER_LONG_MODE,
  };
}

/** General registers for the 64-bit entry. */
export function entryRegs(entry: number): { rip: bigint; rsi: bigint; rsp: bigint; rbp: bigint; rflags: bigint } {
  // RFLAGS bit 1 is reserved-one; IF clear: interrupts off.
  return { rip: BigInt(entry), rsi: BigInt(BOOT_PARAMS_ADDR), rsp: BigInt(BOOT_STACK_TOP), rbp: 0n, rflags: 0x2n };
}
