/**
 * bzImage parsing: the x86 boot protocol's setup header (Documentation/arch/
 * x86/boot.rst) and the checks a loader must make before trusting it. Pure:
 * takes the file's bytes, returns the fields the VMM needs and the
 * protected-mode kernel to copy into guest memory.
 */
import { invalidArgument } from '../errors.js';

/** Where the setup header starts inside the bzImage (and inside boot_params). */
export const SETUP_HEADER_OFFSET = 0x1f1;
/** "HdrS", the setup header's magic at 0x202. */
export const SETUP_HEADER_MAGIC = 0x53726448;
/** 0xAA55 at 0x1fe. */
export const BOOT_FLAG = 0xaa55;
/** Oldest protocol with the 64-bit entry (xloadflags, XLF_KERNEL_64): 2.12. */
export const MIN_PROTOCOL_64BIT = 0x020c;

/** loadflags bits. */
export const LoadFlags = { LOADED_HIGH: 0x01, KASLR: 0x02, QUIET: 0x20, KEEP_SEGMENTS: 0x40, CAN_USE_HEAP: 0x80 } as const;
/** xloadflags bits. */
export const XLoadFlags = {
  KERNEL_64: 0x01,
  CAN_BE_LOADED_ABOVE_4G: 0x02,
  EFI_HANDOVER_32: 0x04,
  EFI_HANDOVER_64: 0x08,
  EFI_KEXEC: 0x10,
  FIVE_LEVEL: 0x20,
  FIVE_LEVEL_ENABLED: 0x40,
} as const;

/** Offset of the 64-bit entry point from the protected-mode kernel's load address. */
export const ENTRY_64_OFFSET = 0x200;

/** The setup header fields a 64-bit loader reads. */
export interface SetupHeader {
  setupSects: number;
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  version: number;
  loadflags: number;
  code32Start: number;
  initrdAddrMax: number;
  kernelAlignment: number;
  relocatable: boolean;
  xloadflags: number;
  /** Longest command line the kernel accepts, without the terminating NUL. */
  cmdlineSize: number;
  payloadOffset: number;
  payloadLength: number;
  /** Where the kernel prefers to be loaded (its LOAD_PHYSICAL_ADDR). */
  prefAddress: number;
  /** Bytes the kernel needs from its load address to decompress in place. */
  initSize: number;
  /** Bytes of header to copy into boot_params.hdr (0x1f1 up to 0x202 + jump offset). */
  headerEnd: number;
  /** The kernel's version string (from kernel_version), if any. */
  kernelVersion: string | undefined;
}

/** A parsed bzImage. */
export interface BzImage {
  header: SetupHeader;
  /** The setup sectors (boot sector included): their header goes into boot_params. */
  setup: Uint8Array;
  /** The protected-mode kernel (compressed vmlinux and decompressor) to load. */
  kernel: Uint8Array;
  /** Compression of the payload, from its magic bytes. */
  compression: 'gzip' | 'zstd' | 'xz' | 'lzma' | 'bzip2' | 'lz4' | 'lzo' | 'unknown';
}

const OP = 'bzImage';

/**
 * Parses and checks a bzImage: boot flag, HdrS magic, protocol >= 2.12 with
 * XLF_KERNEL_64 (the only entry this VMM uses), sizes inside the file.
 * Throws KvmError EINVAL naming what is wrong.
 */
export function parseBzImage(image: Uint8Array): BzImage {
  if (!(image instanceof Uint8Array)) throw invalidArgument(OP, 'the kernel image must be a Uint8Array');
  if (image.byteLength < 0x270) throw invalidArgument(OP, `file too small for a bzImage (${image.byteLength} bytes)`);
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const bootFlag = v.getUint16(0x1fe, true);
  if (bootFlag !== BOOT_FLAG) throw invalidArgument(OP, `not a bzImage: boot flag is 0x${bootFlag.toString(16)}, expected 0xaa55`);
  const magic = v.getUint32(0x202, true);
  if (magic !== SETUP_HEADER_MAGIC) throw invalidArgument(OP, 'not a bzImage: no "HdrS" setup header (too old a kernel, or not an x86 kernel)');
  const version = v.getUint16(0x206, true);
  if (version < MIN_PROTOCOL_64BIT) {
    throw invalidArgument(OP, `boot protocol ${fmtVersion(version)} is too old: the 64-bit entry needs 2.12 or later`, { version });
  }
  const setupSects = image[0x1f1] === 0 ? 4 : image[0x1f1]!;
  const setupBytes = (setupSects + 1) * 512;
  if (setupBytes >= image.byteLength) throw invalidArgument(OP, `setup_sects ${setupSects} leaves no kernel in a ${image.byteLength}-byte file`);
  const headerEnd = 0x202 + image[0x201]!;
  const xloadflags = v.getUint16(0x236, true);
  if ((xloadflags & XLoadFlags.KERNEL_64) === 0) throw invalidArgument(OP, 'the kernel has no 64-bit entry point (XLF_KERNEL_64 clear): a 32-bit kernel?', { xloadflags });
  const loadflags = image[0x211]!;
  if ((loadflags & LoadFlags.LOADED_HIGH) === 0) throw invalidArgument(OP, 'a zImage (loaded low) is not supported: LOADED_HIGH is clear', { loadflags });
  const header: SetupHeader = {
    setupSects,
    version,
    loadflags,
    code32Start: v.getUint32(0x214, true),
    initrdAddrMax: v.getUint32(0x22c, true),
    kernelAlignment: v.getUint32(0x230, true),
    relocatable: image[0x234] !== 0,
    xloadflags,
    cmdlineSize: v.getUint32(0x238, true),
    payloadOffset: v.getUint32(0x248, true),
    payloadLength: v.getUint32(0x24c, true),
    prefAddress: Number(v.getBigUint64(0x258, true)),
    initSize: v.getUint32(0x260, true),
    headerEnd,
    kernelVersion: kernelVersionString(image, v.getUint16(0x20e, true)),
  };
  if (header.initSize === 0) throw invalidArgument(OP, 'init_size is 0');
  const kernel = image.subarray(setupBytes);
  if (header.initSize < kernel.byteLength) throw invalidArgument(OP, `init_size 0x${header.initSize.toString(16)} is smaller than the kernel (${kernel.byteLength} bytes)`);
  if (header.payloadOffset + header.payloadLength > kernel.byteLength) throw invalidArgument(OP, 'payload runs past the end of the file');
  if (header.kernelAlignment === 0 || (header.kernelAlignment & (header.kernelAlignment - 1)) !== 0) {
    throw invalidArgument(OP, `kernel_alignment 0x${header.kernelAlignment.toString(16)} is not a power of two`);
  }
  return { header, setup: image.subarray(0, setupBytes), kernel, compression: compressionOf(kernel.subarray(header.payloadOffset, header.payloadOffset + 8)) };
}

/** "2.15" for 0x020f. */
export function fmtVersion(version: number): string {
  return `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
}

function kernelVersionString(image: Uint8Array, pointer: number): string | undefined {
  // kernel_version points 0x200 bytes before the string's offset in the file.
  if (pointer === 0) return undefined;
  const start = pointer + 0x200;
  if (start >= image.byteLength) return undefined;
  let end = start;
  while (end < image.byteLength && end - start < 256 && image[end] !== 0) end++;
  return new TextDecoder('latin1').decode(image.subarray(start, end));
}

function compressionOf(m: Uint8Array): BzImage['compression'] {
  const starts = (...bytes: number[]): boolean => bytes.every((b, i) => m[i] === b);
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x5d, 0x00, 0x00)) return 'lzma';
  if (starts(0x42, 0x5a, 0x68)) return 'bzip2';
  if (starts(0x02, 0x21, 0x4c, 0x18)) return 'lz4';
  if (starts(0x89, 0x4c, 0x5a, 0x4f)) return 'lzo';
  return 'unknown';
}
