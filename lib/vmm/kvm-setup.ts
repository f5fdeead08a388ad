/**
 * The VMM's use of KVM ioctls that the "A VMM can be built on node-kvm"
 * work adds to the public API (Vm.setTssAddr, createIrqchip, createPit2,
 * irqLine; Vcpu.setMsrs, getFpu/setFpu, getLapic/setLapic). They live in one
 * file so the rest of the VMM does not care whether this build of node-kvm
 * has them: each is looked up at run time, and what is missing is reported
 * (`missing`) instead of failing, so the boot can go as far as the host and
 * the library allow. The narrow interfaces below describe exactly the calls
 * made, so this compiles before and after those methods exist.
 */
import type { Vcpu, Vm } from '../index.js';
import { IDENTITY_MAP_ADDR, TSS_ADDR } from './layout.js';

/** The Vm methods used here (optional until the library has them). */
interface VmmVmMethods {
  setTssAddr?(gpa: bigint | number): void;
  setIdentityMapAddr?(gpa: bigint | number): void;
  createIrqchip?(): void;
  createPit2?(options?: { speakerDummy?: boolean }): void;
  irqLine?(irq: number, level: boolean | number): void;
}

/** One MSR as Vcpu.setMsrs takes it. */
interface MsrEntry {
  index: number;
  data: bigint;
}

/** The Vcpu methods used here (optional until the library has them). */
interface VmmVcpuMethods {
  setMsrs?(entries: readonly MsrEntry[]): void;
  setFpu?(update: { fcw?: number }): void;
  getLapic?(): { lvtLint0: number; lvtLint1: number };
  setLapic?(update: { lvtLint0?: number; lvtLint1?: number }): void;
}

/** What the machine-level setup achieved. */
export interface VmSetupResult {
  /** An in-kernel irqchip (PIC, IOAPIC, LAPICs) exists. */
  irqchip: boolean;
  /** An in-kernel PIT exists. */
  pit: boolean;
  /** Steps skipped because this node-kvm lacks the method, by name. */
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

/** x87 control word at reset (all exceptions masked). MXCSR is 0x1f80 from vcpu creation (KVM_SET_FPU ignores it). */
export const FPU_FCW = 0x37f;

/** LVT delivery modes of a PC's virtual-wire mode. */
const APIC_MODE_EXTINT = 0x7 << 8;
const APIC_MODE_NMI = 0x4 << 8;

function vmMethods(vm: Vm): VmmVmMethods {
  return vm as unknown as VmmVmMethods;
}

function vcpuMethods(vcpu: Vcpu): VmmVcpuMethods {
  return vcpu as unknown as VmmVcpuMethods;
}

/**
 * Machine-wide setup before any vcpu exists: TSS and identity-map pages (the
 * Intel KVM needs them for real-mode emulation; harmless elsewhere), the
 * in-kernel irqchip and PIT when `irqchip` is asked for.
 */
export function setUpVm(vm: Vm, options: { irqchip: boolean }): VmSetupResult {
  const m = vmMethods(vm);
  const missing: string[] = [];
  const call = (name: keyof VmmVmMethods, fn: () => void): boolean => {
    if (typeof m[name] !== 'function') {
      missing.push(`Vm.${name}`);
      return false;
    }
    fn();
    return true;
  };
  call('setTssAddr', () => m.setTssAddr!(TSS_ADDR));
  call('setIdentityMapAddr', () => m.setIdentityMapAddr!(IDENTITY_MAP_ADDR));
  let irqchip = false;
  let pit = false;
  if (options.irqchip) {
    irqchip = call('createIrqchip', () => m.createIrqchip!());
    // KVM_PIT_SPEAKER_DUMMY: the PIT answers port 0x61 itself.
    if (irqchip) pit = call('createPit2', () => m.createPit2!({ speakerDummy: true }));
  }
  return { irqchip, pit, missing };
}

/** The function raising or lowering an IRQ line of the in-kernel irqchip, if any. */
export function irqLineOf(vm: Vm, setup: VmSetupResult): ((irq: number, level: boolean) => void) | undefined {
  const m = vmMethods(vm);
  if (!setup.irqchip || typeof m.irqLine !== 'function') return undefined;
  return (irq, level) => m.irqLine!(irq, level);
}

/**
 * Per-vcpu setup the boot protocol leaves to the loader: reset MSRs, the
 * FPU's control words, and (with an irqchip) LINT0 as ExtINT and LINT1 as
 * NMI so the PIC's interrupts reach the boot CPU before Linux programs its
 * LAPIC. Returns the names of the methods this node-kvm lacks.
 */
export function setUpVcpu(vcpu: Vcpu, options: { irqchip: boolean }): string[] {
  const c = vcpuMethods(vcpu);
  const missing: string[] = [];
  if (typeof c.setMsrs === 'function') {
    try {
      c.setMsrs(BOOT_MSRS);
    } catch (e) {
      // A host that refuses one of these MSRs should not stop the boot: say so.
      missing.push(`Vcpu.setMsrs failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  } else {
    missing.push('Vcpu.setMsrs');
  }
  if (typeof c.setFpu === 'function') c.setFpu({ fcw: FPU_FCW });
  else missing.push('Vcpu.setFpu');
  if (options.irqchip) {
    if (typeof c.getLapic === 'function' && typeof c.setLapic === 'function') {
      const lapic = c.getLapic();
      // Mode bits 8-10 and the mask bit 16 replaced: LINT0 ExtINT, LINT1 NMI, both unmasked.
      c.setLapic({
        lvtLint0: (lapic.lvtLint0 & ~0x1_0700) | APIC_MODE_EXTINT,
        lvtLint1: (lapic.lvtLint1 & ~0x1_0700) | APIC_MODE_NMI,
      });
    } else {
      missing.push('Vcpu.getLapic/setLapic');
    }
  }
  return missing;
}
