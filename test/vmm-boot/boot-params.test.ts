import { describe, expect, it } from 'vitest';
import { vmm } from '../../lib/index.js';
import { kvmErrorOf } from '../support/kvm.js';
import { debianKernel } from './kernels.js';

const MiB = 1 << 20;
const header = (over: Partial<vmm.SetupHeader> = {}): vmm.SetupHeader => ({
  setupSects: 39, version: 0x020f, loadflags: 1, code32Start: 0x100000, initrdAddrMax: 0x7fffffff, kernelAlignment: 0x200000,
  relocatable: true, xloadflags: 0x7f, cmdlineSize: 2047, payloadOffset: 0, payloadLength: 0, prefAddress: 0x1000000,
  initSize: 0x3c3f000, headerEnd: 0x26c, kernelVersion: undefined, ...over,
});

describe('e820Map and ramRegions', () => {
  it('maps 256 MiB as conventional memory, EBDA and BIOS reserved, extended memory', () => {
    expect(vmm.e820Map(256 * MiB)).toEqual([
      { addr: 0, size: 0x9fc00, type: 1 },
      { addr: 0x9fc00, size: 0x400, type: 2 },
      { addr: 0xf0000, size: 0x10000, type: 2 },
      { addr: 0x100000, size: 256 * MiB - 0x100000, type: 1 },
    ]);
    expect(vmm.ramRegions(256 * MiB)).toEqual([{ gpa: 0, size: 256 * MiB }]);
  });

  it('puts memory beyond 3 GiB above 4 GiB, leaving the MMIO hole', () => {
    const regions = vmm.ramRegions(4096 * MiB);
    expect(regions).toEqual([{ gpa: 0, size: 3072 * MiB }, { gpa: 4096 * MiB, size: 1024 * MiB }]);
    const map = vmm.e820Map(4096 * MiB);
    expect(map.at(-1)).toEqual({ addr: 4096 * MiB, size: 1024 * MiB, type: 1 });
    const ram = map.filter((e) => e.type === 1).reduce((n, e) => n + e.size, 0);
    expect(ram).toBe(4096 * MiB - 0x100000 + 0x9fc00);
  });

  it('encodes 20-byte entries', () => {
    const out = new Uint8Array(64);
    vmm.encodeE820([{ addr: 0x100000, size: 0x2000, type: 1 }, { addr: 2 ** 32, size: 1, type: 2 }], out, 4);
    const v = new DataView(out.buffer);
    expect(v.getBigUint64(4, true)).toBe(0x100000n);
    expect(v.getBigUint64(12, true)).toBe(0x2000n);
    expect(v.getUint32(20, true)).toBe(1);
    expect(v.getBigUint64(24, true)).toBe(2n ** 32n);
    expect(v.getUint32(40, true)).toBe(2);
  });
});

describe('planLayout', () => {
  it('loads at the preferred address and puts the initrd at the top of RAM, page aligned', () => {
    const l = vmm.planLayout({ memorySize: 256 * MiB, header: header(), kernelSize: 13 * MiB, cmdlineBytes: 100, initrdSize: 1_000_001 });
    expect(l.kernelAddr).toBe(0x1000000);
    expect(l.entry).toBe(0x1000200);
    expect(l.kernelEnd).toBe(0x1000000 + 0x3c3f000);
    expect(l.initrd!.addr % 4096).toBe(0);
    expect(l.initrd!.addr + l.initrd!.size).toBeLessThanOrEqual(256 * MiB);
    expect(256 * MiB - (l.initrd!.addr + l.initrd!.size)).toBeLessThan(4096);
  });

  it('keeps the initrd under initrd_addr_max', () => {
    const l = vmm.planLayout({ memorySize: 1024 * MiB, header: header({ initrdAddrMax: 0x1fffffff }), kernelSize: 1, cmdlineBytes: 0, initrdSize: 4096 });
    expect(l.initrd!.addr + 4096).toBeLessThanOrEqual(0x20000000);
  });

  it('moves a relocatable kernel lower when memory is small, and refuses what cannot fit', () => {
    const small = vmm.planLayout({ memorySize: 32 * MiB, header: header({ initSize: 20 * MiB }), kernelSize: MiB, cmdlineBytes: 0 });
    expect(small.kernelAddr).toBe(0x200000);
    expect(kvmErrorOf(() => vmm.planLayout({ memorySize: 32 * MiB, header: header({ relocatable: false, initSize: 32 * MiB }), kernelSize: MiB, cmdlineBytes: 0 })).message).toMatch(/more memory/);
  });

  it('refuses an initrd that would overlap the kernel, and a command line longer than the kernel takes', () => {
    expect(kvmErrorOf(() => vmm.planLayout({ memorySize: 80 * MiB, header: header(), kernelSize: MiB, cmdlineBytes: 0, initrdSize: 10 * MiB })).message).toMatch(/initrd/);
    const e = kvmErrorOf(() => vmm.planLayout({ memorySize: 256 * MiB, header: header({ cmdlineSize: 10 }), kernelSize: MiB, cmdlineBytes: 11 }));
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/at most 10/);
  });
});

describe('buildBootParams', () => {
  const debian = debianKernel();
  it.skipIf('missing' in debian)("copies the kernel's setup header and fills in the loader's fields", () => {
    if ('missing' in debian) return;
    const image = vmm.parseBzImage(debian.bytes);
    const e820 = vmm.e820Map(256 * MiB);
    const bp = vmm.buildBootParams({ image, cmdlineAddr: 0x20000, initrd: { addr: 0xf000000, size: 12345 }, e820 });
    const v = new DataView(bp.buffer);
    const O = vmm.BootParamsOffset;
    expect(bp.byteLength).toBe(4096);
    // The header bytes are the kernel's, except the fields a loader writes.
    expect(v.getUint32(0x202, true)).toBe(0x53726448);
    expect(v.getUint16(0x206, true)).toBe(image.header.version);
    expect(v.getUint32(0x260, true)).toBe(image.header.initSize);
    expect(bp[O.typeOfLoader]).toBe(0xff);
    expect(v.getUint16(O.vidMode, true)).toBe(0xffff);
    expect(v.getUint32(O.cmdLinePtr, true)).toBe(0x20000);
    expect(v.getUint32(O.extCmdLinePtr, true)).toBe(0);
    expect(v.getUint32(O.ramdiskImage, true)).toBe(0xf000000);
    expect(v.getUint32(O.ramdiskSize, true)).toBe(12345);
    expect(bp[O.sentinel]).toBe(0);
    expect(bp[O.e820Entries]).toBe(e820.length);
    expect(v.getBigUint64(O.e820Table + 3 * 20 + 8, true)).toBe(BigInt(256 * MiB - 0x100000));
    // Nothing past the header's end is copied from the setup code.
    expect(bp.subarray(image.header.headerEnd, O.e820Table).every((b) => b === 0)).toBe(true);
  });

  it('splits addresses above 4 GiB into the ext_ fields', () => {
    const setup = new Uint8Array(0x5000);
    const image = { header: header(), setup, kernel: new Uint8Array(1), compression: 'unknown' } as vmm.BzImage;
    const bp = vmm.buildBootParams({ image, cmdlineAddr: 0x1_2000_0000, initrd: { addr: 0x1_0000_0000, size: 0x1_0000_0010 }, e820: [] });
    const v = new DataView(bp.buffer);
    expect(v.getUint32(vmm.BootParamsOffset.cmdLinePtr, true)).toBe(0x2000_0000);
    expect(v.getUint32(vmm.BootParamsOffset.extCmdLinePtr, true)).toBe(1);
    expect(v.getUint32(vmm.BootParamsOffset.extRamdiskImage, true)).toBe(1);
    expect(v.getUint32(vmm.BootParamsOffset.ramdiskSize, true)).toBe(0x10);
    expect(v.getUint32(vmm.BootParamsOffset.extRamdiskSize, true)).toBe(1);
  });

  it('encodes the command line with a NUL and refuses non-ASCII', () => {
    expect([...vmm.encodeCmdline('ab')]).toEqual([0x61, 0x62, 0]);
    expect(() => vmm.encodeCmdline('a\u00e9')).toThrow(RangeError);
    expect(() => vmm.encodeCmdline('a\0b')).toThrow(RangeError);
  });
});

describe('64-bit entry state', () => {
  it('identity-maps 0-4 GiB with 2 MiB pages', () => {
    const pt = vmm.buildPageTables();
    const v = new DataView(pt.buffer);
    expect(v.getBigUint64(0, true)).toBe(0xa000n | 3n);
    for (let i = 0; i < 4; i++) expect(v.getBigUint64(0x1000 + i * 8, true)).toBe(BigInt(0xb000 + i * 0x1000) | 3n);
    // Walk a few addresses: PD index = addr >> 21.
    for (const addr of [0, 0x1000000, 0xfee00000, 0xffe00000]) {
      const pde = v.getBigUint64(0x2000 + (addr >>> 21) * 8, true);
      expect(pde & 0x80n).toBe(0x80n);
      expect(pde & ~0xfffn).toBe(BigInt(addr) & ~0x1fffffn);
    }
  });

  it('gives __BOOT_CS a flat 64-bit code segment and __BOOT_DS a flat data segment', () => {
    const gdt = new DataView(vmm.buildGdt().buffer);
    const cs = gdt.getBigUint64(vmm.BOOT_CS, true);
    const ds = gdt.getBigUint64(vmm.BOOT_DS, true);
    expect((cs >> 53n) & 1n).toBe(1n); // L
    expect((cs >> 47n) & 1n).toBe(1n); // P
    expect((cs >> 43n) & 1n).toBe(1n); // executable
    expect((ds >> 54n) & 1n).toBe(1n); // D/B
    expect((ds >> 41n) & 1n).toBe(1n); // writable
    const s = vmm.entrySregs();
    expect(s.cs).toMatchObject({ selector: 0x10, l: 1, db: 0, dpl: 0 });
    expect(s.ss.selector).toBe(0x18);
    expect(s.efer).toBe(0x500n);
    expect(s.cr0 & 0x80000001n).toBe(0x80000001n);
    expect(s.cr4 & 0x20n).toBe(0x20n);
    expect(s.cr4 & (1n << 12n)).toBe(0n); // no LA57
    const r = vmm.entryRegs(0x1000200);
    expect(r).toMatchObject({ rip: 0x1000200n, rsi: 0x7000n, rflags: 2n });
  });
});
