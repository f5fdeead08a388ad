import { describe, expect, it } from 'vitest';
import { vmm } from '../../lib/index.js';

const sum = (b: Uint8Array): number => b.reduce((n, x) => (n + x) & 0xff, 0);
const text = (b: Uint8Array, off: number, len: number): string => String.fromCharCode(...b.subarray(off, off + len));

describe('buildMpTable', () => {
  it('writes a floating pointer and a configuration table whose checksums are zero', () => {
    const t = vmm.buildMpTable({ cpus: 2, cpuSignature: 0x830f10, cpuFeatures: 0x178bfbff });
    const v = new DataView(t.buffer);
    expect(text(t, 0, 4)).toBe('_MP_');
    expect(sum(t.subarray(0, 16))).toBe(0);
    const table = v.getUint32(4, true) - vmm.MPTABLE_ADDR;
    expect(table).toBe(16);
    expect(text(t, table, 4)).toBe('PCMP');
    const length = v.getUint16(table + 4, true);
    expect(table + length).toBe(t.byteLength);
    expect(t.byteLength).toBe(vmm.mpTableSize(2));
    expect(sum(t.subarray(table, table + length))).toBe(0);
    expect(v.getUint32(table + 36, true)).toBe(vmm.LAPIC_ADDR);
    // 2 processors, bus, IOAPIC, 24 I/O interrupts, 2 local interrupts.
    expect(v.getUint16(table + 34, true)).toBe(2 + 1 + 1 + vmm.IOAPIC_PINS + 2);
  });

  it('lists each vcpu as a processor (vcpu 0 the boot one) and the IOAPIC after them', () => {
    const t = vmm.buildMpTable({ cpus: 3, cpuSignature: 1, cpuFeatures: 2 });
    const p = 16 + 44;
    for (let id = 0; id < 3; id++) {
      const e = t.subarray(p + id * 20, p + id * 20 + 20);
      expect([e[0], e[1], e[3]]).toEqual([0, id, id === 0 ? 3 : 1]);
    }
    const bus = p + 60;
    expect([t[bus], text(t, bus + 2, 6)]).toEqual([1, 'ISA   ']);
    const ioapic = bus + 8;
    expect([t[ioapic], t[ioapic + 1], new DataView(t.buffer).getUint32(ioapic + 4, true)]).toEqual([2, 3, vmm.IOAPIC_ADDR]);
    // ISA IRQ n on IOAPIC pin n, as KVM's default GSI routing wires it.
    const irq5 = ioapic + 8 + 5 * 8;
    expect([...t.subarray(irq5, irq5 + 8)]).toEqual([3, 0, 0, 0, 0, 5, 3, 5]);
  });

  it('refuses a vcpu count it cannot describe', () => {
    expect(() => vmm.buildMpTable({ cpus: 0, cpuSignature: 0, cpuFeatures: 0 })).toThrow(/cpus/);
    expect(() => vmm.buildMpTable({ cpus: 255, cpuSignature: 0, cpuFeatures: 0 })).toThrow(/cpus/);
  });
});
