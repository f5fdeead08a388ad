/**
 * Where the VMM puts things in guest memory: the fixed low-memory structures
 * (GDT, boot_params, page tables, command line) and the kernel and initrd,
 * placed as the boot protocol asks. Pure: checks everything fits and never
 * overlaps, and says why not (KvmError EINVAL).
 */
import { invalidArgument } from '../errors.js';
import { ENTRY_64_OFFSET, type SetupHeader } from './bzimage.js';
import { EBDA_START, ramRegions } from './e820.js';

/** The GDT the 64-bit entry needs (null, null, __BOOT_CS 0x10, __BOOT_DS 0x18, TSS 0x20). */
export const GDT_ADDR = 0x500;
/** The zero page (struct boot_params). */
export const BOOT_PARAMS_ADDR = 0x7000;
/** PML4; the PDPT and four page directories follow (identity map of 0-4 GiB). */
export const PAGE_TABLES_ADDR = 0x9000;
/** Bytes of page tables: PML4 + PDPT + 4 PDs. */
export const PAGE_TABLES_SIZE = 6 * 4096;
/** The kernel command line. */
export const CMDLINE_ADDR = 0x20000;
/** Room for the command line (below the EBDA). */
export const CMDLINE_ROOM = 0x10000;
/** Initial stack pointer (the kernel sets its own at once). */
export const BOOT_STACK_TOP = 0x8ff0;
/** KVM_SET_TSS_ADDR wants three pages in the hole below 4 GiB. */
export const TSS_ADDR = 0xfffb_d000;
/** KVM_SET_IDENTITY_MAP_ADDR: one page just below the TSS. */
export const IDENTITY_MAP_ADDR = 0xfffb_c000;

/** Inputs of {@link planLayout}. */
export interface LayoutInput {
  memorySize: number;
  header: SetupHeader;
  kernelSize: number;
  /** Command line bytes without the NUL. */
  cmdlineBytes: number;
  initrdSize?: number;
}

/** Where everything goes. */
export interface BootLayout {
  kernelAddr: number;
  /** RIP of the 64-bit entry. */
  entry: number;
  /** End of the memory the kernel may use while decompressing (kernelAddr + init_size). */
  kernelEnd: number;
  cmdlineAddr: number;
  initrd: { addr: number; size: number } | undefined;
}

const OP = 'vmm.boot';

/**
 * Plans the load: the kernel at its preferred address (the boot protocol's
 * LOAD_PHYSICAL_ADDR; a relocatable kernel that does not fit there goes to
 * the lowest aligned address above 1 MiB), the initrd at the top of low RAM
 * below initrd_addr_max and clear of the kernel's init_size.
 */
export function planLayout(input: LayoutInput): BootLayout {
  const { memorySize, header, kernelSize } = input;
  const lowEnd = ramRegions(memorySize)[0]!.size;
  if (input.cmdlineBytes > header.cmdlineSize) {
    throw invalidArgument(OP, `command line is ${input.cmdlineBytes} bytes; this kernel accepts at most ${header.cmdlineSize}`, { cmdlineBytes: input.cmdlineBytes });
  }
  if (input.cmdlineBytes + 1 > CMDLINE_ROOM) throw invalidArgument(OP, `command line is longer than ${CMDLINE_ROOM - 1} bytes`);
  if (CMDLINE_ADDR + CMDLINE_ROOM > EBDA_START) throw new Error('layout constants overlap');

  let kernelAddr = header.prefAddress;
  if (kernelAddr + header.initSize > lowEnd && header.relocatable) {
    const align = header.kernelAlignment;
    kernelAddr = Math.ceil(0x100000 / align) * align;
  }
  if (kernelAddr < 0x100000 || kernelAddr + header.initSize > lowEnd) {
    throw invalidArgument(OP, `the kernel needs 0x${header.initSize.toString(16)} bytes at 0x${kernelAddr.toString(16)}: give the guest more memory (RAM below 3 GiB ends at 0x${lowEnd.toString(16)})`, {
      memorySize,
      initSize: header.initSize,
    });
  }
  if (kernelSize > header.initSize) throw invalidArgument(OP, 'kernel is larger than its init_size');
  const kernelEnd = kernelAddr + header.initSize;

  let initrd: BootLayout['initrd'];
  const size = input.initrdSize ?? 0;
  if (size > 0) {
    // initrd_addr_max is the highest address the initrd's last byte may occupy.
    const limit = Math.min(lowEnd, header.initrdAddrMax + 1);
    const addr = Math.floor((limit - size) / 4096) * 4096;
    if (addr < kernelEnd) {
      throw invalidArgument(OP, `the initrd (${size} bytes) does not fit between the kernel (ends at 0x${kernelEnd.toString(16)}) and 0x${limit.toString(16)}: give the guest more memory`, {
        memorySize,
        initrdSize: size,
      });
    }
    initrd = { addr, size };
  }
  return { kernelAddr, entry: kernelAddr + ENTRY_64_OFFSET, kernelEnd, cmdlineAddr: CMDLINE_ADDR, initrd };
}
