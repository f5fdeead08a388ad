/** kvm_cpuid_entry2 encoding: CPUID leaves as plain objects. */
import { invalidArgument, KvmError } from './errors.js';
import { describe, toU32 } from './int.js';
import { readArray } from './vm/struct.js';

/** One CPUID leaf/subleaf as KVM reports and accepts it. */
export interface CpuidEntry {
  /** The leaf: the EAX input of CPUID. */
  function: number;
  /** The subleaf: the ECX input, where the leaf has subleaves. */
  index: number;
  /** KVM_CPUID_FLAG_* bits (e.g. 1 = the index is significant). */
  flags: number;
  /** EAX output. */
  eax: number;
  /** EBX output. */
  ebx: number;
  /** ECX output. */
  ecx: number;
  /** EDX output. */
  edx: number;
}

const ENTRY_SIZE = 40;

/** Decodes an array of kvm_cpuid_entry2. */
export function decodeCpuid(bytes: Uint8Array): CpuidEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: CpuidEntry[] = [];
  for (let off = 0; off + ENTRY_SIZE <= bytes.byteLength; off += ENTRY_SIZE) {
    out.push({
      function: view.getUint32(off, true),
      index: view.getUint32(off + 4, true),
      flags: view.getUint32(off + 8, true),
      eax: view.getUint32(off + 12, true),
      ebx: view.getUint32(off + 16, true),
      ecx: view.getUint32(off + 20, true),
      edx: view.getUint32(off + 24, true),
    });
  }
  return out;
}

const CPUID_FIELDS = ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const;

/**
 * A register value: an integer in [0, 2^32), or a negative int32 (what JS
 * bitwise operators give: `e.ecx & ~bit` is negative when bit 31 is set),
 * taken as its bit pattern. Anything else (2^32 + 5, -2^31 - 1, 1.5, '7')
 * is EINVAL naming the field, never truncated.
 */
function cpuidField(value: unknown, name: string, op: string): number {
  if (typeof value === 'number' && Number.isInteger(value) && value < 0 && value >= -(2 ** 31)) return value >>> 0;
  return toU32(value, name, op);
}

/**
 * Reads and checks a caller's entries once (each entry and field read once):
 * every entry an object with only CpuidEntry's keys, each given field a u32
 * or int32 (cpuidField), else KvmError 'EINVAL' naming it (`entries[3].eax`).
 * A field left out is 0, as the kernel struct's default.
 */
export function readCpuidEntries(entries: unknown, op: string, max = 4096): CpuidEntry[] {
  const list = readArray(entries, op, 'entries', max);
  const out: CpuidEntry[] = new Array(list.length);
  for (let i = 0; i < list.length; i++) {
    // Read field by field (no per-entry copy: a VMM sets CPUID for every vcpu, thousands of times).
    const raw = list[i];
    let e: CpuidEntry;
    try {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalidArgument(op, `entries[${i}] must be an object, got ${describe(raw)}`);
      const keys = Object.keys(raw);
      for (const k of keys) {
        if (!(CPUID_FIELDS as readonly string[]).includes(k)) throw invalidArgument(op, `unknown key ${JSON.stringify(k)} of entries[${i}]; accepted: ${CPUID_FIELDS.join(', ')}`, { key: k });
      }
      const r = raw as Record<string, unknown>;
      const field = (f: (typeof CPUID_FIELDS)[number]): number => (r[f] === undefined ? 0 : cpuidField(r[f], `entries[${i}].${f}`, op));
      e = { function: field('function'), index: field('index'), flags: field('flags'), eax: field('eax'), ebx: field('ebx'), ecx: field('ecx'), edx: field('edx') };
    } catch (err) {
      if (err instanceof KvmError) throw err;
      throw new KvmError(`${op}: entries[${i}] cannot be read (${String((err as Error)?.message ?? err)})`, { code: 'EINVAL', syscall: 'ioctl', ioctl: op, args: { index: i }, cause: err });
    }
    out[i] = e;
  }
  return out;
}

/** Encodes entries as an array of kvm_cpuid_entry2 (padding zeroed). */
export function encodeCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const bytes = new Uint8Array(entries.length * ENTRY_SIZE);
  const view = new DataView(bytes.buffer);
  entries.forEach((e, i) => {
    const off = i * ENTRY_SIZE;
    view.setUint32(off, e.function >>> 0, true);
    view.setUint32(off + 4, e.index >>> 0, true);
    view.setUint32(off + 8, e.flags >>> 0, true);
    view.setUint32(off + 12, e.eax >>> 0, true);
    view.setUint32(off + 16, e.ebx >>> 0, true);
    view.setUint32(off + 20, e.ecx >>> 0, true);
    view.setUint32(off + 24, e.edx >>> 0, true);
  });
  return bytes;
}
