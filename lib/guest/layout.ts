/**
 * Register state for a 64-bit long-mode guest running at CPL3, as plain data.
 *
 * Under kvm_pvm (see the host facts) only this kind of guest runs natively;
 * real mode, protected mode and CPL0 long mode are run by KVM's instruction
 * emulator and never take shadow page faults. The values here are the set-up
 * measured to work there; the caller applies them with KVM_SET_SREGS /
 * KVM_SET_REGS (after KVM_SET_CPUID2, or EFER.LME is refused) before the first
 * KVM_RUN. Nothing in this file talks to KVM.
 *
 * @module
 */

import type { Segment, Sregs } from '../regs.js';
import { guestArgumentError } from './guest-error.js';

/** One segment register (struct kvm_segment), as lib/regs.ts defines it. */
export type { Segment };

/**
 * The subset of struct kvm_sregs (lib/regs.ts's Sregs) this set-up defines;
 * other fields keep their current values. What it puts there: cs a 64-bit
 * code segment of DPL 3; ds, es, fs, gs and ss data segments of DPL 3 (ss's
 * DPL must equal the CPL); tr a busy 64-bit TSS, needed for a valid
 * long-mode state; ldt unusable (no LDT); cr3 the page-table root; cr0, cr4
 * and efer as LONG_MODE_CR0, LONG_MODE_CR4 and LONG_MODE_EFER.
 */
export interface LongModeSregs extends Pick<Sregs, 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt' | 'cr0' | 'cr3' | 'cr4' | 'efer'> {}

/** The subset of struct kvm_regs set before the first run. */
export interface InitialRegs {
  /** Entry point (guest virtual). */
  rip: bigint;
  /** Initial stack pointer (guest virtual). */
  rsp: bigint;
  /** RFLAGS: 0x3002 (IOPL 3 plus the always-one bit 1). */
  rflags: bigint;
}

/** CR0.PE: protected mode. */
export const CR0_PE = 1n << 0n;
/** CR0.ET: extension type, hardwired to 1 on modern CPUs. */
export const CR0_ET = 1n << 4n;
/** CR0.PG: paging. */
export const CR0_PG = 1n << 31n;
/** CR4.PAE: physical address extension, required for long mode. */
export const CR4_PAE = 1n << 5n;
/** EFER.LME: long mode enable. */
export const EFER_LME = 1n << 8n;
/** EFER.LMA: long mode active (KVM wants it consistent with LME + PG). */
export const EFER_LMA = 1n << 10n;

/** CR0 for the guest: PE | ET | PG = 0x80000011. */
export const LONG_MODE_CR0 = CR0_PE | CR0_ET | CR0_PG;
/** CR4 for the guest: PAE only (0x20). LA57 is refused by KVM_SET_SREGS here. */
export const LONG_MODE_CR4 = CR4_PAE;
/** EFER for the guest: LME | LMA = 0x500 (no NXE, no SCE). */
export const LONG_MODE_EFER = EFER_LME | EFER_LMA;
/**
 * RFLAGS for the guest: IOPL 3 so that `out`/`in` at CPL3 do not fault but exit
 * to the host as KVM_EXIT_IO; bit 1 is reserved and always 1. IF stays clear.
 */
export const CPL3_RFLAGS = 0x3002n;

/** User code selector: GDT index 6, RPL 3 (the value Linux uses for 64-bit user code). */
export const USER_CS_SELECTOR = 0x33;
/** User data selector: GDT index 5, RPL 3 (Linux's user data selector). */
export const USER_DS_SELECTOR = 0x2b;
/** TSS selector: GDT index 8, RPL 0, following the same Linux-like GDT layout. */
export const TSS_SELECTOR = 0x40;

/** Input of {@link longModeCpl3Sregs}. */
export interface LongModeSregsOptions {
  /** Page-table root (e.g. from buildIdentityPageTables). */
  cr3: number | bigint;
}

function big(v: number | bigint, what: string): bigint {
  if (typeof v === 'bigint') {
    if (v < 0n || v >= 1n << 64n) throw guestArgumentError(`${what} ${v} is not a 64-bit unsigned value`);
    return v;
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw guestArgumentError(`${what} must be a non-negative integer (safe number or bigint), got ${String(v)}`);
  }
  return BigInt(v);
}

function dataSegment(): Segment {
  return {
    base: 0n, limit: 0xffffffff, selector: USER_DS_SELECTOR, type: 3,
    present: 1, dpl: 3, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
  };
}

/**
 * Special registers for a 64-bit CPL3 guest with paging rooted at `cr3`:
 * CR0 0x80000011, CR4 0x20, EFER 0x500; CS 0x33 (type 0xb, L=1, D=0, DPL 3);
 * SS/DS/ES/FS/GS 0x2b (type 3, D=1, DPL 3); TR a busy 64-bit TSS (type 11,
 * limit 0x67, the minimum TSS size); LDT unusable.
 *
 * CPL comes from SS.DPL/CS.DPL as loaded, so no GDT in guest memory is needed as
 * long as the guest never reloads segments or takes an interrupt.
 */
export function longModeCpl3Sregs(opts: LongModeSregsOptions): LongModeSregs {
  const cr3 = big(opts.cr3, 'cr3');
  if (cr3 & 0xfffn) throw guestArgumentError(`cr3 0x${cr3.toString(16)} is not 4 KiB aligned`);
  return {
    cs: {
      base: 0n, limit: 0xffffffff, selector: USER_CS_SELECTOR, type: 0xb,
      present: 1, dpl: 3, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0,
    },
    ds: dataSegment(),
    es: dataSegment(),
    fs: dataSegment(),
    gs: dataSegment(),
    ss: dataSegment(),
    tr: {
      base: 0n, limit: 0x67, selector: TSS_SELECTOR, type: 11,
      present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0,
    },
    ldt: {
      base: 0n, limit: 0, selector: 0, type: 2,
      present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 1,
    },
    cr0: LONG_MODE_CR0,
    cr3,
    cr4: LONG_MODE_CR4,
    efer: LONG_MODE_EFER,
  };
}

/** Input of {@link initialRegs}. */
export interface InitialRegsOptions {
  /** Entry point. */
  rip: number | bigint;
  /** Initial stack pointer (top of a mapped, writable region; 16-byte aligned is customary). */
  rsp: number | bigint;
}

/** General registers for the first run: rip, rsp and RFLAGS 0x3002. */
export function initialRegs(opts: InitialRegsOptions): InitialRegs {
  return { rip: big(opts.rip, 'rip'), rsp: big(opts.rsp, 'rsp'), rflags: CPL3_RFLAGS };
}

/**
 * A suggested guest-physical layout for small test guests, all inside the first
 * 2 MiB so one small memslot holds everything: page 0 left unused (catches null
 * pointers only if unmapped, but keeps addresses non-zero), tables at 0x1000
 * (24 KiB for the default 4 GiB map), code at 0x10000, a 64 KiB stack below
 * 0x30000, and data from 0x100000. Nothing depends on it; it only saves each
 * test from inventing addresses.
 */
export const DEFAULT_GUEST_LAYOUT = {
  /** Page tables (PML4 first). */
  tablesGpa: 0x1000n,
  /** Code load address / entry point. */
  codeGpa: 0x10000n,
  /** Initial rsp (the stack grows down from here to 0x20000). */
  stackTop: 0x30000n,
  /** First address for test data. */
  dataGpa: 0x100000n,
  /** Size of memory covering all of the above. */
  memorySize: 0x200000n,
} as const;

/** Where Guest puts its TSS: just above the default stack. */
export const DEFAULT_TSS_GPA = 0x30000n;
/** Offset of the I/O permission bitmap inside the permissive TSS (right after the 0x68-byte TSS). */
const TSS_IOMAP_OFFSET = 0x68;
/** 65,536 ports, one bit each. */
const IOMAP_BYTES = 0x2000;
/** Bytes ioPermissiveTss writes: the TSS, the I/O bitmap, and the 0xff byte that ends it. */
export const IO_PERMISSIVE_TSS_SIZE = TSS_IOMAP_OFFSET + IOMAP_BYTES + 1;

/** Input of {@link ioPermissiveTss}. */
export interface IoPermissiveTssOptions {
  /** Guest-physical address of the TSS; default DEFAULT_TSS_GPA. */
  tssGpa?: number | bigint;
  /** Guest-physical address of `memory[0]`; default 0. */
  memoryGpa?: number | bigint;
}

/**
 * Writes a 64-bit TSS whose I/O permission bitmap allows every port into
 * guest memory, and returns the task register to load (`sregs.tr`).
 *
 * kvm_pvm emulates a CPL3 `OUT`/`IN` and checks the guest TSS's I/O bitmap
 * (it does not honour IOPL 3), so without this only the ports covered by
 * whatever bytes sit at TR.base reach userspace; the rest triple-fault.
 * Real KVM with IOPL 3 ignores the bitmap. `Guest` calls this itself; call
 * it when you set up vcpus yourself, e.g.
 * `vcpu.setSregs({ ...longModeCpl3Sregs({ cr3 }), tr: ioPermissiveTss(memory.bytes) })`.
 * The memory from `tssGpa` for IO_PERMISSIVE_TSS_SIZE bytes is overwritten.
 */
export function ioPermissiveTss(memory: Uint8Array, options: IoPermissiveTssOptions = {}): Segment {
  if (!(memory instanceof Uint8Array)) throw guestArgumentError('ioPermissiveTss: memory must be a Uint8Array');
  const tssGpa = big(options.tssGpa ?? DEFAULT_TSS_GPA, 'tssGpa');
  const memoryGpa = big(options.memoryGpa ?? 0n, 'memoryGpa');
  const offset = tssGpa - memoryGpa;
  if (offset < 0n || offset + BigInt(IO_PERMISSIVE_TSS_SIZE) > BigInt(memory.length)) {
    throw guestArgumentError(
      `ioPermissiveTss: the TSS at 0x${tssGpa.toString(16)} (${IO_PERMISSIVE_TSS_SIZE} bytes) is not inside the memory given (0x${memoryGpa.toString(16)}, ${memory.length} bytes)`,
      { tssGpa, memoryGpa, size: memory.length },
    );
  }
  const base = Number(offset);
  memory.fill(0, base, base + IO_PERMISSIVE_TSS_SIZE - 1);
  new DataView(memory.buffer, memory.byteOffset, memory.byteLength).setUint16(base + 0x66, TSS_IOMAP_OFFSET, true);
  memory[base + IO_PERMISSIVE_TSS_SIZE - 1] = 0xff;
  return {
    base: tssGpa, limit: IO_PERMISSIVE_TSS_SIZE - 1, selector: TSS_SELECTOR, type: 11,
    present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0,
  };
}
