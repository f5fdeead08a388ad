/**
 * The VMM's machine and vcpu setup through node-kvm's VMM ioctls: TSS and
 * identity-map pages, the in-kernel irqchip and PIT (Vm.createIrqchip,
 * createPit2, irqLine), and per vcpu the reset MSRs, FPU control words, XCR0
 * and the LAPIC's LINT0/LINT1 (Vcpu.setMsrs, setFpu, setXcrs, getLapic/setLapic),
 * set as real VMMs (Firecracker, kvmtool, QEMU) set them at reset.
 */
import { KvmError, type MsrEntry, type Vcpu, type Vm } from '../index.js';
import { IDENTITY_MAP_ADDR, TSS_ADDR } from './layout.js';

/** What the machine-level setup achieved. */
export interface VmSetupResult {
  /** An in-kernel irqchip (PIC, IOAPIC, LAPICs) exists. */
  irqchip: boolean;
  /** An in-kernel PIT exists. */
  pit: boolean;
  /** Steps the host refused (optional ones), with the error. */
  missing: string[];
}

/** MSRs a VMM sets at reset, as Firecracker and kvmtool do. */
export const BOOT_MSRS: readonly MsrEntry[] = [
  { index: 0x174, data: 0n }, // IA32_SYSENTER_CS
  { index: 0x175, data: 0n }, // IA32_SYSENTER_ESP
  { index: 0x176, data: 0n }, // IA32_SYSENTER_EIP
  { index: 0xc000_0081, data: 0n }, // STAR
  { index: 0xc000_0082, data: 0n }, // LSTAR
  { index: 0xc000_0084, data: 0n }, // SFMASK
  { index: 0xc000_0102, data: 0n }, // KERNEL_GS_BASE
  { index: 0x10, data: 0n }, // TSC
  { index: 0x1a0, data: 1n }, // IA32_MISC_ENABLE: fast strings
];

/** x87 control word at reset (all exceptions masked). */
export const FPU_FCW = 0x37f;
/** MXCSR at reset (all SSE exceptions masked). */
export const FPU_MXCSR = 0x1f80;
/** XCR0 at reset: x87 state only (the kernel enables the rest itself). */
export const RESET_XCR0 = 1n;

/** LVT delivery modes of a PC's virtual-wire mode. */
const APIC_MODE_EXTINT = 0x7 << 8;
const APIC_MODE_NMI = 0x4 << 8;

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * Machine-wide setup before any vcpu exists: TSS and identity-map pages (the
 * Intel KVM needs them for real-mode emulation; harmless elsewhere), the
 * in-kernel irqchip and PIT when `irqchip` is asked for.
 */
export function setUpVm(vm: Vm, options: { irqchip: boolean }): VmSetupResult {
  const missing: string[] = [];
  vm.setTssAddr(TSS_ADDR);
  try {
    vm.setIdentityMapAddr(IDENTITY_MAP_ADDR);
  } catch (e) {
    // Only the Intel KVM has it (ENOTTY/EINVAL elsewhere is no problem).
    if (!(e instanceof KvmError)) throw e;
    missing.push(`Vm.setIdentityMapAddr: ${e.message}`);
  }
  let irqchip = false;
  let pit = false;
  if (options.irqchip) {
    vm.createIrqchip();
    irqchip = true;
    // KVM_PIT_SPEAKER_DUMMY: the PIT answers port 0x61 itself.
    vm.createPit2({ speakerDummy: true });
    pit = true;
  }
  return { irqchip, pit, missing };
}

/** The function raising or lowering an IRQ line of the in-kernel irqchip, if any. */
export function irqLineOf(vm: Vm, setup: VmSetupResult): ((irq: number, level: boolean) => void) | undefined {
  if (!setup.irqchip) return undefined;
  return (irq, level) => vm.irqLine(irq, level);
}

/**
 * Per-vcpu setup the boot protocol leaves to the loader: reset MSRs, the
 * FPU's control words, XCR0, and (with an irqchip) LINT0 as ExtINT and
 * LINT1 as NMI so the PIC's interrupts reach the boot CPU before Linux
 * programs its LAPIC. Returns what the host refused (optional steps).
 */
export function setUpVcpu(vcpu: Vcpu, options: { irqchip: boolean; xsave: boolean }): string[] {
  const missing: string[] = [];
  try {
    vcpu.setMsrs(BOOT_MSRS);
  } catch (e) {
    // A host that refuses one of these MSRs should not stop the boot: say so.
    missing.push(`Vcpu.setMsrs: ${message(e)}`);
  }
  vcpu.setFpu({ fcw: FPU_FCW, mxcsr: FPU_MXCSR });
  if (options.xsave) {
    try {
      vcpu.setXcrs([{ xcr: 0, value: RESET_XCR0 }]);
    } catch (e) {
      missing.push(`Vcpu.setXcrs: ${message(e)}`);
    }
  }
  if (options.irqchip) {
    const lapic = vcpu.getLapic();
    // Mode bits 8-10 and the mask bit 16 replaced: LINT0 ExtINT, LINT1 NMI, both unmasked.
    vcpu.setLapic({
      lvtLint0: (lapic.lvtLint0 & ~0x1_0700) | APIC_MODE_EXTINT,
      lvtLint1: (lapic.lvtLint1 & ~0x1_0700) | APIC_MODE_NMI,
    });
  }
  return missing;
}
