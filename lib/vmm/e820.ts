/**
 * The guest's physical memory map: where RAM is (below the 32-bit hole and,
 * for more than 3 GiB, above 4 GiB) and the E820 table the kernel reads from
 * boot_params. Pure.
 */

/** E820 entry types. */
export const E820Type = { RAM: 1, RESERVED: 2, ACPI: 3, NVS: 4, UNUSABLE: 5 } as const;

/** One E820 entry. */
export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** Start of the hole below 4 GiB kept free for the LAPIC, IOAPIC and other MMIO. */
export const MMIO_HOLE_START = 0xc000_0000;
/** First address above the hole. */
export const HIGH_MEMORY_START = 0x1_0000_0000;
/** End of conventional memory (the EBDA follows). */
export const EBDA_START = 0x9fc00;
/** Start of extended memory. */
export const EXTENDED_START = 0x100000;
/** Most entries boot_params holds. */
export const E820_MAX_ENTRIES = 128;

/** A RAM range of guest-physical memory, backed by one memslot. */
export interface RamRegion {
  gpa: number;
  size: number;
}

/** The RAM regions for `memorySize` bytes: one below the hole, one above 4 GiB if needed. */
export function ramRegions(memorySize: number): RamRegion[] {
  if (memorySize <= EXTENDED_START) throw new RangeError('guest memory must be larger than 1 MiB');
  const low = Math.min(memorySize, MMIO_HOLE_START);
  const regions: RamRegion[] = [{ gpa: 0, size: low }];
  if (memorySize > low) regions.push({ gpa: HIGH_MEMORY_START, size: memorySize - low });
  return regions;
}

/**
 * The E820 map for `memorySize` bytes of RAM: conventional memory up to the
 * EBDA, the EBDA and BIOS area reserved, extended memory, and RAM above 4 GiB.
 */
export function e820Map(memorySize: number): E820Entry[] {
  const [low, high] = ramRegions(memorySize);
  const entries: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820Type.RAM },
    { addr: EBDA_START, size: 0xa0000 - EBDA_START, type: E820Type.RESERVED },
    { addr: 0xf0000, size: 0x10000, type: E820Type.RESERVED },
    { addr: EXTENDED_START, size: low!.size - EXTENDED_START, type: E820Type.RAM },
  ];
  if (high) entries.push({ addr: high.gpa, size: high.size, type: E820Type.RAM });
  return entries;
}

/** Encodes entries as boot_params' e820_table (20 bytes each: addr u64, size u64, type u32). */
export function encodeE820(entries: readonly E820Entry[], into: Uint8Array, offset: number): void {
  if (entries.length > E820_MAX_ENTRIES) throw new RangeError(`at most ${E820_MAX_ENTRIES} E820 entries`);
  const v = new DataView(into.buffer, into.byteOffset, into.byteLength);
  entries.forEach((e, i) => {
    const off = offset + i * 20;
    v.setBigUint64(off, BigInt(e.addr), true);
    v.setBigUint64(off + 8, BigInt(e.size), true);
    v.setUint32(off + 16, e.type, true);
  });
}
