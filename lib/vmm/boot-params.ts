/**
 * boot_params (the "zero page") for the 64-bit entry: the kernel's own setup
 * header copied in and completed by the loader (type_of_loader, command line,
 * initrd), plus the E820 map. Pure.
 */
import { SETUP_HEADER_OFFSET, type BzImage } from './bzimage.js';
import { encodeE820, type E820Entry } from './e820.js';

/** Size of struct boot_params. */
export const BOOT_PARAMS_SIZE = 4096;

/** Field offsets inside boot_params (arch/x86/include/uapi/asm/bootparam.h). */
export const BootParamsOffset = {
  extRamdiskImage: 0x0c0,
  extRamdiskSize: 0x0c4,
  extCmdLinePtr: 0x0c8,
  e820Entries: 0x1e8,
  sentinel: 0x1ef,
  vidMode: 0x1fa,
  typeOfLoader: 0x210,
  loadflags: 0x211,
  ramdiskImage: 0x218,
  ramdiskSize: 0x21c,
  heapEndPtr: 0x224,
  cmdLinePtr: 0x228,
  e820Table: 0x2d0,
} as const;

/** "Undefined" boot loader id (0xff): we have no assigned one. */
export const LOADER_TYPE_UNDEFINED = 0xff;
/** vid_mode "normal" (0xffff): no video mode switch. */
export const VID_MODE_NORMAL = 0xffff;

/** What goes into boot_params beyond the kernel's own header. */
export interface BootParamsInput {
  image: BzImage;
  cmdlineAddr: number;
  initrd?: { addr: number; size: number } | undefined;
  e820: readonly E820Entry[];
}

/** Builds the 4096-byte zero page. */
export function buildBootParams(input: BootParamsInput): Uint8Array {
  const bp = new Uint8Array(BOOT_PARAMS_SIZE);
  const v = new DataView(bp.buffer);
  const { image } = input;
  // The setup header as the kernel shipped it, up to its own end.
  bp.set(image.setup.subarray(SETUP_HEADER_OFFSET, image.header.headerEnd), SETUP_HEADER_OFFSET);
  // sentinel stays 0: a non-zero one tells the kernel the loader did not clear boot_params.
  bp[BootParamsOffset.sentinel] = 0;
  v.setUint16(BootParamsOffset.vidMode, VID_MODE_NORMAL, true);
  bp[BootParamsOffset.typeOfLoader] = LOADER_TYPE_UNDEFINED;
  // Keep LOADED_HIGH; the 64-bit entry ignores CAN_USE_HEAP and KEEP_SEGMENTS.
  bp[BootParamsOffset.loadflags] = image.header.loadflags & ~0x80;
  setLowHigh(v, BootParamsOffset.cmdLinePtr, BootParamsOffset.extCmdLinePtr, input.cmdlineAddr);
  if (input.initrd) {
    setLowHigh(v, BootParamsOffset.ramdiskImage, BootParamsOffset.extRamdiskImage, input.initrd.addr);
    setLowHigh(v, BootParamsOffset.ramdiskSize, BootParamsOffset.extRamdiskSize, input.initrd.size);
  }
  bp[BootParamsOffset.e820Entries] = input.e820.length;
  encodeE820(input.e820, bp, BootParamsOffset.e820Table);
  return bp;
}

/** Splits a value over a low u32 field (in hdr) and its ext_* high u32. */
function setLowHigh(v: DataView, low: number, high: number, value: number): void {
  v.setUint32(low, value >>> 0, true);
  v.setUint32(high, Math.floor(value / 2 ** 32) >>> 0, true);
}

/** The command line as the kernel reads it: ASCII bytes and a NUL. */
export function encodeCmdline(cmdline: string): Uint8Array {
  for (let i = 0; i < cmdline.length; i++) {
    const c = cmdline.charCodeAt(i);
    if (c === 0 || c > 0x7e) throw new RangeError(`the command line must be printable ASCII (character ${i} is 0x${c.toString(16)})`);
  }
  const bytes = new Uint8Array(cmdline.length + 1);
  for (let i = 0; i < cmdline.length; i++) bytes[i] = cmdline.charCodeAt(i);
  return bytes;
}
