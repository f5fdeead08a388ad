/**
 * The Intel MultiProcessor Specification (1.4) table: how a guest without
 * ACPI finds its processors, its IOAPIC and how ISA interrupts are wired.
 * Without it Linux runs in virtual-wire mode with no IOAPIC, and with more
 * than one vcpu it never learns the others exist. Firecracker and kvmtool
 * write one for the same reason. Pure: returns the bytes to put at
 * {@link MPTABLE_ADDR} (the BIOS area 0xf0000-0xfffff that Linux scans, which
 * the E820 map marks reserved).
 */
import { invalidArgument } from '../errors.js';

/** Where the floating pointer goes; the configuration table follows it. */
export const MPTABLE_ADDR = 0xf0000;
/** The in-kernel IOAPIC's MMIO base. */
export const IOAPIC_ADDR = 0xfec0_0000;
/** The LAPICs' MMIO base. */
export const LAPIC_ADDR = 0xfee0_0000;
/** Pins of KVM's in-kernel IOAPIC. */
export const IOAPIC_PINS = 24;

const FLOATING_SIZE = 16;
const HEADER_SIZE = 44;
const PROCESSOR_SIZE = 20;
const SMALL_ENTRY_SIZE = 8;
const SPEC_REV = 4; // MP spec 1.4
const LAPIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;

const ENTRY_PROCESSOR = 0;
const ENTRY_BUS = 1;
const ENTRY_IOAPIC = 2;
const ENTRY_IO_INTERRUPT = 3;
const ENTRY_LOCAL_INTERRUPT = 4;
const INT_TYPE_INT = 0;
const INT_TYPE_NMI = 1;
const INT_TYPE_EXTINT = 3;
const CPU_ENABLED = 1;
const CPU_BOOT = 2;
const ISA_BUS_ID = 0;

/** Inputs of {@link buildMpTable}. */
export interface MpTableOptions {
  /** Number of vcpus (processor entries, APIC ids 0..cpus-1). */
  cpus: number;
  /** CPUID leaf 1 EAX (the processor entries' signature). */
  cpuSignature: number;
  /** CPUID leaf 1 EDX (the processor entries' feature flags). */
  cpuFeatures: number;
}

/** Bytes of the table for `cpus` processors. */
export function mpTableSize(cpus: number): number {
  return FLOATING_SIZE + HEADER_SIZE + cpus * PROCESSOR_SIZE + SMALL_ENTRY_SIZE * (2 + IOAPIC_PINS + 2);
}

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

/** The floating pointer and the configuration table, one processor per vcpu (APIC id = vcpu index). */
export function buildMpTable(options: MpTableOptions): Uint8Array {
  const { cpus } = options;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 254) throw invalidArgument('buildMpTable', 'cpus must be in [1, 254]', { cpus });
  const bytes = new Uint8Array(mpTableSize(cpus));
  const v = new DataView(bytes.buffer);
  const ascii = (off: number, text: string): void => {
    for (let i = 0; i < text.length; i++) bytes[off + i] = text.charCodeAt(i);
  };
  // The IOAPIC's id follows the processors' APIC ids.
  const ioapicId = cpus;

  // ---- configuration table, after the floating pointer ----
  const base = FLOATING_SIZE;
  let off = base + HEADER_SIZE;
  let entries = 0;
  for (let id = 0; id < cpus; id++) {
    v.setUint8(off, ENTRY_PROCESSOR);
    v.setUint8(off + 1, id);
    v.setUint8(off + 2, LAPIC_VERSION);
    v.setUint8(off + 3, CPU_ENABLED | (id === 0 ? CPU_BOOT : 0));
    v.setUint32(off + 4, options.cpuSignature >>> 0, true);
    v.setUint32(off + 8, options.cpuFeatures >>> 0, true);
    off += PROCESSOR_SIZE;
    entries++;
  }
  v.setUint8(off, ENTRY_BUS);
  v.setUint8(off + 1, ISA_BUS_ID);
  ascii(off + 2, 'ISA   ');
  off += SMALL_ENTRY_SIZE;
  entries++;
  v.setUint8(off, ENTRY_IOAPIC);
  v.setUint8(off + 1, ioapicId);
  v.setUint8(off + 2, IOAPIC_VERSION);
  v.setUint8(off + 3, 1); // enabled
  v.setUint32(off + 4, IOAPIC_ADDR, true);
  off += SMALL_ENTRY_SIZE;
  entries++;
  // KVM's default GSI routing sends ISA IRQ n to IOAPIC pin n (the PIT's IRQ 0 to pin 0).
  for (let pin = 0; pin < IOAPIC_PINS; pin++) {
    v.setUint8(off, ENTRY_IO_INTERRUPT);
    v.setUint8(off + 1, INT_TYPE_INT);
    v.setUint16(off + 2, 0, true); // polarity and trigger conform to the bus
    v.setUint8(off + 4, ISA_BUS_ID);
    v.setUint8(off + 5, pin);
    v.setUint8(off + 6, ioapicId);
    v.setUint8(off + 7, pin);
    off += SMALL_ENTRY_SIZE;
    entries++;
  }
  // LINT0 ExtINT (the PIC, virtual wire), LINT1 NMI, on every LAPIC.
  for (const [type, lint] of [[INT_TYPE_EXTINT, 0], [INT_TYPE_NMI, 1]] as const) {
    v.setUint8(off, ENTRY_LOCAL_INTERRUPT);
    v.setUint8(off + 1, type);
    v.setUint16(off + 2, 0, true);
    v.setUint8(off + 4, ISA_BUS_ID);
    v.setUint8(off + 5, 0);
    v.setUint8(off + 6, 0xff);
    v.setUint8(off + 7, lint);
    off += SMALL_ENTRY_SIZE;
    entries++;
  }
  const tableLength = off - base;
  ascii(base, 'PCMP');
  v.setUint16(base + 4, tableLength, true);
  v.setUint8(base + 6, SPEC_REV);
  ascii(base + 8, 'NODE-KVM');
  ascii(base + 16, 'VMM         ');
  v.setUint16(base + 34, entries, true);
  v.setUint32(base + 36, LAPIC_ADDR, true);
  v.setUint8(base + 7, checksum(bytes.subarray(base, off)));

  // ---- floating pointer ----
  ascii(0, '_MP_');
  v.setUint32(4, MPTABLE_ADDR + base, true);
  v.setUint8(8, 1); // length in 16-byte units
  v.setUint8(9, SPEC_REV);
  // Feature bytes 1-5 zero: a configuration table is present; no IMCR (virtual wire).
  v.setUint8(10, checksum(bytes.subarray(0, FLOATING_SIZE)));
  return bytes;
}
