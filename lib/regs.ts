/** kvm_regs and kvm_sregs (x86-64) as typed objects. */

/** General-purpose registers, rip and rflags. */
export interface Regs {
  /** RAX. */
  rax: bigint;
  /** RBX. */
  rbx: bigint;
  /** RCX. */
  rcx: bigint;
  /** RDX. */
  rdx: bigint;
  /** RSI. */
  rsi: bigint;
  /** RDI. */
  rdi: bigint;
  /** RSP: the stack pointer. */
  rsp: bigint;
  /** RBP. */
  rbp: bigint;
  /** R8. */
  r8: bigint;
  /** R9. */
  r9: bigint;
  /** R10. */
  r10: bigint;
  /** R11. */
  r11: bigint;
  /** R12. */
  r12: bigint;
  /** R13. */
  r13: bigint;
  /** R14. */
  r14: bigint;
  /** R15. */
  r15: bigint;
  /** RIP: the next instruction. */
  rip: bigint;
  /** RFLAGS (bit 1 is always set; IOPL in bits 12-13). */
  rflags: bigint;
}

/** The order of kvm_regs' 18 u64 fields. */
export const REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const satisfies readonly (keyof Regs)[];

/** A segment register (struct kvm_segment). */
export interface Segment {
  /** Segment base (ignored for CS/DS/ES/SS in 64-bit mode, used for FS/GS). */
  base: bigint;
  /** Limit in bytes, already expanded by the granularity bit (0xffffffff for 4 GiB). */
  limit: number;
  /** Selector value; the low two bits are the RPL. */
  selector: number;
  /** Descriptor type nibble (e.g. 0xb = code execute/read accessed, 3 = data read/write accessed, 11 = busy TSS). */
  type: number;
  /** Present bit. */
  present: number;
  /** Descriptor privilege level. */
  dpl: number;
  /** Default operand size (D/B); must be 0 for a 64-bit code segment. */
  db: number;
  /** 1 for code/data descriptors, 0 for system descriptors (TSS, LDT). */
  s: number;
  /** Long-mode code segment bit. */
  l: number;
  /** Granularity bit (limit counted in 4 KiB units in the descriptor). */
  g: number;
  /** Available-for-software bit. */
  avl: number;
  /** KVM's "unusable" flag (null selector loaded). */
  unusable: number;
}

/** A descriptor table register (kvm_dtable). */
export interface DescriptorTable {
  /** Linear base address of the table. */
  base: bigint;
  /** Limit in bytes (size - 1). */
  limit: number;
}

/** Special registers (kvm_sregs). */
export interface Sregs {
  /** Code segment. */
  cs: Segment;
  /** Data segment. */
  ds: Segment;
  /** Extra data segment. */
  es: Segment;
  /** FS (its base is used in 64-bit mode). */
  fs: Segment;
  /** GS (its base is used in 64-bit mode). */
  gs: Segment;
  /** Stack segment. */
  ss: Segment;
  /** Task register: the TSS. */
  tr: Segment;
  /** Local descriptor table register. */
  ldt: Segment;
  /** Global descriptor table register. */
  gdt: DescriptorTable;
  /** Interrupt descriptor table register. */
  idt: DescriptorTable;
  /** CR0 (PE, PG, ...). */
  cr0: bigint;
  /** CR2: the last page-fault address. */
  cr2: bigint;
  /** CR3: the page-table root. */
  cr3: bigint;
  /** CR4 (PAE, ...). */
  cr4: bigint;
  /** CR8: the task priority. */
  cr8: bigint;
  /** The EFER MSR (LME, LMA, NXE, ...). */
  efer: bigint;
  /** The APIC base MSR. */
  apicBase: bigint;
  /** Pending external interrupt bitmap (4 u64). */
  interruptBitmap: bigint[];
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL = [['cr0', 224], ['cr2', 232], ['cr3', 240], ['cr4', 248], ['cr8', 256], ['efer', 264], ['apicBase', 272]] as const;

/** Size of kvm_regs. */
export const REGS_SIZE = 144;
/** Size of kvm_sregs. */
export const SREGS_SIZE = 312;

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes kvm_regs. */
export function decodeRegs(bytes: Uint8Array): Regs {
  const v = view(bytes);
  const out = {} as Regs;
  REG_NAMES.forEach((name, i) => {
    out[name] = v.getBigUint64(i * 8, true);
  });
  return out;
}

/** Encodes kvm_regs. */
export function encodeRegs(regs: Regs): Uint8Array {
  const bytes = new Uint8Array(REGS_SIZE);
  const v = view(bytes);
  REG_NAMES.forEach((name, i) => v.setBigUint64(i * 8, BigInt.asUintN(64, regs[name]), true));
  return bytes;
}

function decodeSegment(v: DataView, off: number): Segment {
  return {
    base: v.getBigUint64(off, true),
    limit: v.getUint32(off + 8, true),
    selector: v.getUint16(off + 12, true),
    type: v.getUint8(off + 14),
    present: v.getUint8(off + 15),
    dpl: v.getUint8(off + 16),
    db: v.getUint8(off + 17),
    s: v.getUint8(off + 18),
    l: v.getUint8(off + 19),
    g: v.getUint8(off + 20),
    avl: v.getUint8(off + 21),
    unusable: v.getUint8(off + 22),
  };
}

function encodeSegment(v: DataView, off: number, s: Segment): void {
  v.setBigUint64(off, BigInt.asUintN(64, s.base), true);
  v.setUint32(off + 8, s.limit >>> 0, true);
  v.setUint16(off + 12, s.selector, true);
  v.setUint8(off + 14, s.type);
  v.setUint8(off + 15, s.present);
  v.setUint8(off + 16, s.dpl);
  v.setUint8(off + 17, s.db);
  v.setUint8(off + 18, s.s);
  v.setUint8(off + 19, s.l);
  v.setUint8(off + 20, s.g);
  v.setUint8(off + 21, s.avl);
  v.setUint8(off + 22, s.unusable);
}

/** Decodes kvm_sregs. */
export function decodeSregs(bytes: Uint8Array): Sregs {
  const v = view(bytes);
  const out = {} as Sregs;
  SEGMENTS.forEach((name, i) => {
    out[name] = decodeSegment(v, i * 24);
  });
  out.gdt = { base: v.getBigUint64(192, true), limit: v.getUint16(200, true) };
  out.idt = { base: v.getBigUint64(208, true), limit: v.getUint16(216, true) };
  for (const [name, off] of CONTROL) out[name] = v.getBigUint64(off, true);
  out.interruptBitmap = [0, 1, 2, 3].map((i) => v.getBigUint64(280 + i * 8, true));
  return out;
}

/** Encodes kvm_sregs. */
export function encodeSregs(s: Sregs): Uint8Array {
  const bytes = new Uint8Array(SREGS_SIZE);
  const v = view(bytes);
  SEGMENTS.forEach((name, i) => encodeSegment(v, i * 24, s[name]));
  v.setBigUint64(192, BigInt.asUintN(64, s.gdt.base), true);
  v.setUint16(200, s.gdt.limit, true);
  v.setBigUint64(208, BigInt.asUintN(64, s.idt.base), true);
  v.setUint16(216, s.idt.limit, true);
  for (const [name, off] of CONTROL) v.setBigUint64(off, BigInt.asUintN(64, s[name]), true);
  s.interruptBitmap.forEach((word, i) => v.setBigUint64(280 + i * 8, BigInt.asUintN(64, word), true));
  return bytes;
}
