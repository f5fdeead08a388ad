/**
 * The uncompressed kernel inside a bzImage: its payload decompressed on the
 * host and the vmlinux ELF's PT_LOAD segments. Loading those at their
 * physical addresses and entering the ELF entry point (phys_startup_64) with
 * the same 64-bit boot state skips the kernel's own decompressor. That is
 * what makes a boot possible where every guest instruction goes through
 * KVM's instruction emulator (kvm_pvm: about 70,000 instructions a second,
 * so decompressing 60 MB in the guest would take hours).
 */
import { spawnSync } from 'node:child_process';
import * as zlib from 'node:zlib';
import { invalidArgument } from '../errors.js';
import type { BzImage } from './bzimage.js';

/** One PT_LOAD segment. */
export interface ElfSegment {
  paddr: number;
  /** The file bytes (filesz); the rest up to memsz is zero. */
  data: Uint8Array;
  memsz: number;
}

/** A parsed vmlinux. */
export interface Vmlinux {
  /** Physical entry point (the ELF's e_entry is phys_startup_64). */
  entry: number;
  segments: ElfSegment[];
  /** Highest physical address used + 1. */
  end: number;
}

const OP = 'vmlinux';

/** Parses a little-endian x86-64 ELF executable's PT_LOAD segments. */
export function parseVmlinux(elf: Uint8Array): Vmlinux {
  if (elf.byteLength < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) throw invalidArgument(OP, 'not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) throw invalidArgument(OP, 'not a 64-bit little-endian ELF');
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const machine = v.getUint16(18, true);
  if (machine !== 62) throw invalidArgument(OP, `ELF machine ${machine} is not x86-64 (62)`);
  const entry = Number(v.getBigUint64(24, true));
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize < 56 || phoff + phnum * phentsize > elf.byteLength) throw invalidArgument(OP, 'program headers run past the end of the file');
  const segments: ElfSegment[] = [];
  let end = 0;
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (v.getUint32(off, true) !== 1) continue; // PT_LOAD
    const fileOff = Number(v.getBigUint64(off + 8, true));
    const paddr = Number(v.getBigUint64(off + 24, true));
    const filesz = Number(v.getBigUint64(off + 32, true));
    const memsz = Number(v.getBigUint64(off + 40, true));
    if (fileOff + filesz > elf.byteLength || filesz > memsz) throw invalidArgument(OP, `segment ${i} runs past the end of the file`);
    segments.push({ paddr, data: elf.subarray(fileOff, fileOff + filesz), memsz });
    end = Math.max(end, paddr + memsz);
  }
  if (segments.length === 0) throw invalidArgument(OP, 'no PT_LOAD segments');
  if (!segments.some((s) => entry >= s.paddr && entry < s.paddr + s.memsz)) throw invalidArgument(OP, `entry 0x${entry.toString(16)} is not in a loaded segment (not a physical entry point)`);
  return { entry, segments, end };
}

/**
 * Decompresses a bzImage's payload on the host: gzip with zlib, zstd with
 * zlib where this Node has it (22.15+) or the `zstd` program, xz with `xz`.
 * The kernel's build appends the uncompressed size (4 bytes), which
 * decompressors that check for trailing data refuse, so it is cut off.
 */
export function decompressPayload(image: BzImage): Uint8Array {
  const { payloadOffset, payloadLength } = image.header;
  const payload = image.kernel.subarray(payloadOffset, payloadOffset + payloadLength);
  const body = payload.subarray(0, payload.byteLength - 4);
  const z = zlib as unknown as { zstdDecompressSync?: (b: Uint8Array) => Buffer };
  switch (image.compression) {
    case 'gzip':
      return zlib.gunzipSync(body);
    case 'zstd':
      return typeof z.zstdDecompressSync === 'function' ? z.zstdDecompressSync(body) : run('zstd', ['-dc'], body);
    case 'xz':
      return run('xz', ['-dc', '--single-stream'], body);
    default:
      throw invalidArgument(OP, `cannot decompress a ${image.compression} payload on the host; boot the bzImage itself (load: 'bzimage')`, {}, 'EOPNOTSUPP');
  }
}

function run(program: string, args: string[], input: Uint8Array): Uint8Array {
  const r = spawnSync(program, args, { input, maxBuffer: 1 << 30 });
  if (r.error) throw invalidArgument(OP, `cannot run ${program} to decompress the kernel: ${r.error.message}`, {}, 'EOPNOTSUPP');
  if (r.status !== 0) throw invalidArgument(OP, `${program} failed: ${r.stderr.toString().trim()}`);
  return r.stdout;
}
