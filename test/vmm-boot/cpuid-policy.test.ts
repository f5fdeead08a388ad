import { describe, expect, it } from 'vitest';
import { vmm, type CpuidEntry } from '../../lib/index.js';

const leaf = (fn: number, index: number, regs: Partial<CpuidEntry> = {}): CpuidEntry => ({ function: fn, index, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0, ...regs });
const supported: CpuidEntry[] = [
  leaf(0, 0, { eax: 0xd }),
  leaf(1, 0, { ebx: 0x0800, ecx: (1 << 3) | (1 << 5) | (1 << 21) | (1 << 24) | (1 << 26) | (1 << 28) | 1, edx: (1 << 28) | (1 << 9) }),
  leaf(5, 0, { eax: 64, ebx: 64 }),
  leaf(6, 0, { eax: 4 }),
  leaf(7, 0, { ebx: (1 << 8) | (1 << 9) | (1 << 3), ecx: (1 << 16) | (1 << 5) | 1 }),
  leaf(0xa, 0, { eax: 0x07300402 }),
  leaf(0xb, 0, { edx: 99 }),
  leaf(0xd, 0, { eax: 0xe7, ebx: 2696, ecx: 2696 }),
  leaf(0xd, 1, { eax: 0xf, ecx: 0x1800 }),
  leaf(0xd, 2, { eax: 256, ebx: 576 }),
  leaf(0xd, 5, { eax: 64, ebx: 1088 }),
  leaf(0x8000_0001, 0, { ecx: (1 << 2) | 1 | (1 << 5) }),
];
const find = (entries: CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined => entries.find((e) => e.function === fn && e.index === index);

describe('guestCpuid', () => {
  it('sets the hypervisor bit, APIC id and logical count, and hides what the VMM does not offer', () => {
    const out = vmm.guestCpuid(supported, { vcpuId: 3, cpus: 4, irqchip: true, xsave: 'avx' });
    const l1 = find(out, 1)!;
    expect(l1.ecx >>> 31).toBe(1);
    expect(l1.ebx >>> 24).toBe(3);
    expect((l1.ebx >>> 16) & 0xff).toBe(4);
    expect(l1.ebx & 0xffff).toBe(0x0800);
    expect(l1.ecx & (1 << 3)).toBe(0); // MONITOR
    expect(l1.ecx & (1 << 5)).toBe(0); // VMX
    expect(l1.ecx & (1 << 21)).not.toBe(0); // x2APIC kept with an irqchip
    expect(l1.edx & (1 << 28)).not.toBe(0); // HTT with 4 cpus
    expect(l1.edx & (1 << 9)).not.toBe(0); // APIC with an irqchip
    expect(find(out, 7)!.ecx & (1 << 16)).toBe(0); // LA57
    expect(find(out, 7)!.ebx & (1 << 8)).not.toBe(0); // BMI2 kept on a host profile
    expect(find(out, 0xa)!.eax).toBe(0);
    expect(find(out, 5)!.eax).toBe(0);
    expect(find(out, 0xb)!.edx).toBe(3);
    expect(find(out, 0x8000_0001)!.ecx & (1 << 2)).toBe(0); // SVM
    // XSAVE: x87/SSE/AVX only; the AVX-512 component's subleaf is gone.
    expect(find(out, 0xd, 0)!.eax).toBe(0x7);
    expect(find(out, 0xd, 0)!.ecx).toBe(576 + 256);
    expect(find(out, 0xd, 0)!.ebx).toBe(576);
    expect(find(out, 0xd, 5)).toBeUndefined();
    expect(find(out, 0xd, 2)).toBeDefined();
    // The input is not modified.
    expect(find(supported, 1)!.ecx >>> 31).toBe(0);
  });

  it('offers AVX state only with AVX, and no XSAVE leaves without XSAVE', () => {
    const noAvx = supported.map((e) => (e.function === 1 ? { ...e, ecx: e.ecx & ~(1 << 28) } : e));
    const out = vmm.guestCpuid(noAvx, { vcpuId: 0, cpus: 1, irqchip: true, xsave: 'avx' });
    expect(find(out, 0xd, 0)!.eax).toBe(0x3);
    expect(find(out, 0xd, 0)!.ecx).toBe(576);
    expect(find(out, 0xd, 2)).toBeUndefined();
    const noXsave = supported.map((e) => (e.function === 1 ? { ...e, ecx: e.ecx & ~(1 << 26) } : e));
    expect(vmm.guestCpuid(noXsave, { vcpuId: 0, cpus: 1, irqchip: true }).some((e) => e.function === 0xd)).toBe(false);
  });

  it("by default offers x87/SSE state only and hides AVX and what depends on it", () => {
    const out = vmm.guestCpuid(supported, { vcpuId: 0, cpus: 1, irqchip: true });
    expect(find(out, 1)!.ecx & (1 << 28)).toBe(0);
    expect(find(out, 1)!.ecx & (1 << 26)).not.toBe(0); // XSAVE itself stays
    expect(find(out, 0xd, 0)!.eax).toBe(0x3);
    expect(find(out, 0xd, 0)!.ecx).toBe(576);
    expect(find(out, 0xd, 2)).toBeUndefined();
  });

  it("with xsave 'none' offers no XSAVE, no XSAVE leaves and no AVX", () => {
    const out = vmm.guestCpuid(supported, { vcpuId: 0, cpus: 1, irqchip: true, xsave: 'none' });
    const l1 = out.find((e) => e.function === 1)!;
    expect(l1.ecx & ((1 << 26) | (1 << 27) | (1 << 28))).toBe(0);
    expect(out.filter((e) => e.function === 0xd)).toEqual([]);
    // SSE3 and the rest of leaf 1 stay.
    expect(l1.ecx & 1).toBe(1);
  });

  it('hides x2APIC and TSC-deadline without an irqchip', () => {
    const l1 = find(vmm.guestCpuid(supported, { vcpuId: 0, cpus: 1, irqchip: false }), 1)!;
    expect(l1.ecx & ((1 << 21) | (1 << 24))).toBe(0);
    expect(l1.edx & (1 << 9)).toBe(0);
    expect(l1.edx & (1 << 28)).toBe(0);
  });

  it("the 'emulator' profile drops what KVM's instruction emulator cannot run", () => {
    const out = vmm.guestCpuid(supported, { vcpuId: 0, cpus: 1, irqchip: false, profile: 'emulator' });
    expect(find(out, 7)!.ebx).toBe(1 << 9); // only ERMS
    expect(find(out, 7)!.ecx).toBe(0);
    expect(find(out, 1)!.ecx & (1 << 26)).toBe(0); // XSAVE
    expect(find(out, 1)!.ecx & (1 << 28)).toBe(0); // AVX
    expect(find(out, 1)!.ecx & 1).toBe(1); // SSE3 stays
    expect(find(out, 1)!.ecx & (1 << 13)).toBe(0); // CX16
    expect(out.some((e) => e.function === 0xd)).toBe(false);
    expect(find(out, 0x8000_0001)!.ecx).toBe(1);
  });
});
