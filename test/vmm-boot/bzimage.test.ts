import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { vmm } from '../../lib/index.js';
import { decompressPayload, parseVmlinux } from '../../lib/vmm/vmlinux.js';
import { kvmErrorOf } from '../support/kvm.js';
import { debianKernel, tinyKernel } from './kernels.js';

const debian = debianKernel();
const tiny = tinyKernel();
const hasZstd = typeof (await import('node:zlib') as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function' || spawnSync('zstd', ['--version']).status === 0;

/** A minimal valid-looking header to corrupt field by field. */
function fakeImage(): Uint8Array {
  const img = new Uint8Array(0x5000 + 0x1000);
  const v = new DataView(img.buffer);
  img[0x1f1] = 39;
  v.setUint16(0x1fe, 0xaa55, true);
  img[0x201] = 0x6a; // jump offset: header ends at 0x26c
  v.setUint32(0x202, 0x53726448, true);
  v.setUint16(0x206, 0x020f, true);
  img[0x211] = 1;
  v.setUint32(0x22c, 0x7fffffff, true);
  v.setUint32(0x230, 0x200000, true);
  img[0x234] = 1;
  v.setUint16(0x236, 0x7f, true);
  v.setUint32(0x238, 2048, true);
  v.setUint32(0x248, 0x100, true);
  v.setUint32(0x24c, 0x100, true);
  v.setBigUint64(0x258, 0x1000000n, true);
  v.setUint32(0x260, 0x10000, true);
  return img;
}

describe('parseBzImage', () => {
  it.skipIf('missing' in debian)(`reads Debian's 6.18 bzImage ${'missing' in debian ? debian.missing : ''}`, () => {
    if ('missing' in debian) return;
    const img = vmm.parseBzImage(debian.bytes);
    expect(img.header.version).toBeGreaterThanOrEqual(0x020c);
    expect(img.header.kernelVersion).toMatch(/^6\.18\./);
    expect(img.header.xloadflags & vmm.XLoadFlags.KERNEL_64).toBe(1);
    expect(img.header.relocatable).toBe(true);
    expect(img.header.prefAddress).toBe(0x1000000);
    expect(img.header.kernelAlignment).toBe(0x200000);
    expect(img.header.initSize).toBeGreaterThan(img.kernel.byteLength);
    expect(img.compression).toBe('zstd');
    expect(img.setup.byteLength).toBe((img.header.setupSects + 1) * 512);
    expect(img.setup.byteLength + img.kernel.byteLength).toBe(debian.bytes.byteLength);
  });

  it.skipIf('missing' in debian || !hasZstd)('decompresses the payload to a vmlinux with a physical entry point', () => {
    if ('missing' in debian) return;
    const img = vmm.parseBzImage(debian.bytes);
    const elf = parseVmlinux(decompressPayload(img));
    expect(elf.segments.length).toBeGreaterThan(0);
    expect(elf.segments[0]!.paddr).toBe(img.header.prefAddress);
    expect(elf.end).toBeLessThanOrEqual(img.header.prefAddress + img.header.initSize);
    expect(elf.entry).toBeGreaterThanOrEqual(img.header.prefAddress);
  });

  it.skipIf('missing' in tiny)(`reads a tinyconfig bzImage ${'missing' in tiny ? tiny.missing : ''}`, () => {
    if ('missing' in tiny) return;
    const img = vmm.parseBzImage(tiny.bytes);
    expect(img.header.xloadflags & vmm.XLoadFlags.KERNEL_64).toBe(1);
    expect(img.kernel.byteLength).toBeGreaterThan(0);
  });

  it('accepts the synthetic header it is corrupted from', () => {
    expect(vmm.parseBzImage(fakeImage()).header.headerEnd).toBe(0x26c);
  });

  const corruptions: [string, (img: Uint8Array, v: DataView) => void, RegExp][] = [
    ['boot flag', (_i, v) => v.setUint16(0x1fe, 0x1234, true), /boot flag/],
    ['HdrS magic', (_i, v) => v.setUint32(0x202, 0, true), /HdrS/],
    ['protocol 2.11', (_i, v) => v.setUint16(0x206, 0x020b, true), /too old/],
    ['no 64-bit entry', (_i, v) => v.setUint16(0x236, 0x7e, true), /64-bit entry/],
    ['zImage', (i) => (i[0x211] = 0), /LOADED_HIGH/],
    ['setup past the end', (i) => (i[0x1f1] = 200), /setup_sects/],
    ['init_size 0', (_i, v) => v.setUint32(0x260, 0, true), /init_size/],
    ['init_size below the kernel', (_i, v) => v.setUint32(0x260, 0x100, true), /init_size/],
    ['payload past the end', (_i, v) => v.setUint32(0x24c, 0x100000, true), /payload/],
    ['alignment not a power of two', (_i, v) => v.setUint32(0x230, 0x300000, true), /power of two/],
  ];
  for (const [name, corrupt, message] of corruptions) {
    it(`refuses ${name} with EINVAL`, () => {
      const img = fakeImage();
      corrupt(img, new DataView(img.buffer));
      const e = kvmErrorOf(() => vmm.parseBzImage(img));
      expect(e.code).toBe('EINVAL');
      expect(e.message).toMatch(message);
    });
  }

  it('refuses a too-small file and a non-Uint8Array', () => {
    expect(kvmErrorOf(() => vmm.parseBzImage(new Uint8Array(100))).code).toBe('EINVAL');
    expect(kvmErrorOf(() => vmm.parseBzImage('bzImage' as unknown as Uint8Array)).code).toBe('EINVAL');
  });

  it('formats protocol versions', () => {
    expect(vmm.fmtVersion(0x020f)).toBe('2.15');
    expect(vmm.fmtVersion(0x0206)).toBe('2.06');
  });
});

describe('parseVmlinux', () => {
  it('refuses what is not an x86-64 ELF', () => {
    expect(kvmErrorOf(() => parseVmlinux(new Uint8Array(64))).message).toMatch(/not an ELF/);
    const elf = new Uint8Array(128);
    elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
    new DataView(elf.buffer).setUint16(18, 3, true);
    expect(kvmErrorOf(() => parseVmlinux(elf)).message).toMatch(/x86-64/);
  });

  it('reads PT_LOAD segments and checks the entry is inside one', () => {
    const elf = new Uint8Array(0x200);
    const v = new DataView(elf.buffer);
    elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
    v.setUint16(18, 62, true);
    v.setBigUint64(24, 0x1000010n, true); // entry
    v.setBigUint64(32, 64n, true); // phoff
    v.setUint16(54, 56, true);
    v.setUint16(56, 1, true);
    v.setUint32(64, 1, true); // PT_LOAD
    v.setBigUint64(64 + 8, 0x100n, true); // offset
    v.setBigUint64(64 + 24, 0x1000000n, true); // paddr
    v.setBigUint64(64 + 32, 0x100n, true); // filesz
    v.setBigUint64(64 + 40, 0x2000n, true); // memsz
    const parsed = parseVmlinux(elf);
    expect(parsed.entry).toBe(0x1000010);
    expect(parsed.segments[0]!.data.byteLength).toBe(0x100);
    expect(parsed.end).toBe(0x1002000);
    v.setBigUint64(24, 0xffffffff81000000n, true);
    expect(kvmErrorOf(() => parseVmlinux(elf)).message).toMatch(/not in a loaded segment/);
  });
});
