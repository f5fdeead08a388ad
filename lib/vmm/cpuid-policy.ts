/**
 * What CPUID the VMM offers its guest: KVM_GET_SUPPORTED_CPUID, trimmed to
 * what boots, with the topology of this VM filled in. Real VMMs
 * (Firecracker, kvmtool, QEMU) all start from the supported set and then
 * edit it the same way: set the hypervisor bit, give each vcpu its APIC id,
 * hide what the VMM does not emulate. Pure.
 */
import type { CpuidEntry } from '../cpuid.js';

/** Options of {@link guestCpuid}. */
export interface CpuidPolicyOptions {
  /** This vcpu's index (its initial APIC id). */
  vcpuId: number;
  /** Number of vcpus in the VM. */
  cpus: number;
  /** Whether an in-kernel irqchip exists (x2APIC and TSC-deadline need its LAPIC). */
  irqchip: boolean;
  /**
   * Offer the TSC-deadline timer (leaf 1 ECX bit 24) with the irqchip: KVM emulates it
   * (KVM_CAP_TSC_DEADLINE_TIMER) but KVM_GET_SUPPORTED_CPUID does not list it. A guest
   * with it skips calibrating the LAPIC timer, a timed check that a descheduled vcpu
   * thread fails ("APIC timer disabled due to verification failure").
   */
  tscDeadline?: boolean;
  /**
   * 'host' (default): what KVM supports, trimmed as below. 'emulator': also
   * hide the instruction-set extensions KVM's instruction emulator cannot
   * execute (AVX, BMI1/2, XSAVE, CMPXCHG16B, SMAP, FSGSBASE, ...), for hosts where a
   * CPL0 guest runs entirely in that emulator (kvm_pvm): Linux's zstd
   * decompressor uses BMI2's SHLX when CPUID offers it, and the emulator
   * fails on it (KVM_INTERNAL_ERROR_EMULATION).
   */
  profile?: 'host' | 'emulator';
  /**
   * XSAVE state offered: 'sse' (default: x87 and SSE only, AVX and every
   * AVX-dependent feature hidden), 'avx' (x87, SSE, AVX when leaf 1 has
   * AVX), or 'none' (no XSAVE at all, nor AVX: the guest uses FXSAVE, as
   * with QEMU's qemu64 model). Why not 'avx': in the lab's nested KVM (kvm_amd
   * under QEMU TCG) a guest offered AVX state reads an XSAVE size for XCR0
   * that does not match its own sum ("XSAVE consistency problem: size 832 !=
   * kernel_size 576"), disables XSAVE and panics in fpstate_reset. Why
   * bootLinux defaults to 'none': with 'sse' there, the first signal a user
   * process returns from fails (`init[1] bad frame in rt_sigreturn`, with
   * CPUID leaf 0xd consistent: XCR0 3, sizes 576, XSAVEOPT and XGETBV1 only),
   * while the same boot with no XSAVE reaches the marker and reboots.
   */
  xsave?: 'none' | 'sse' | 'avx';
}

/** AVX-dependent features hidden with xsave 'sse', by leaf and register. */
const AVX_DEPENDENT = {
  l1Ecx: (1 << 12) | (1 << 28) | (1 << 29), // FMA, AVX, F16C
  l7Ebx: (1 << 5) | (1 << 16) | (1 << 17) | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31), // AVX2, AVX-512*
  l7Ecx: (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14), // AVX-512 VBMI/VBMI2, VAES, VPCLMULQDQ, VNNI, BITALG, VPOPCNTDQ
  l7Edx: (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25), // AVX-512 4VNNIW/4FMAPS/VP2INTERSECT, AMX, FP16
  l7s1Eax: (1 << 4) | (1 << 5), // AVX-VNNI, AVX-512 BF16
} as const;

// Feature bits by register.
const L1_ECX_MONITOR = 1 << 3;
const L1_ECX_VMX = 1 << 5;
const L1_ECX_TSC_DEADLINE = 1 << 24;
const L1_ECX_X2APIC = 1 << 21;
const L1_ECX_HYPERVISOR = 1 << 31;
const L1_EDX_HTT = 1 << 28;
const L1_ECX_XSAVE = 1 << 26;
const L1_ECX_OSXSAVE = 1 << 27;
const L1_ECX_AVX = 1 << 28;
const L1_EDX_APIC = 1 << 9;
const L7_ECX_LA57 = 1 << 16;
const L7_ECX_WAITPKG = 1 << 5;
const L8000_0001_ECX_SVM = 1 << 2;
/**
 * Leaf 1 ECX bits the 'emulator' profile keeps: SSE3 (0), HYPERVISOR (31), and
 * X2APIC/TSC-deadline per irqchip. Not CX16: the emulator refuses CMPXCHG16B,
 * which SLUB uses when CPUID offers it.
 */
const EMU_L1_ECX_KEEP = (1 << 0) | L1_ECX_X2APIC | L1_ECX_TSC_DEADLINE | L1_ECX_HYPERVISOR;
/** Leaf 7.0 EBX bits the 'emulator' profile keeps: ERMS (9). */
const EMU_L7_EBX_KEEP = 1 << 9;
/** Leaf 0x80000001 ECX bits the 'emulator' profile keeps: LAHF/SAHF (0). */
const EMU_L8_ECX_KEEP = 1 << 0;

/** XSAVE state components the VMM offers: x87, SSE, AVX (XCR0 bits 0-2). */
const XSAVE_COMPONENTS = 0x7;

/**
 * The CPUID a vcpu gets. From the supported set it:
 * - sets the hypervisor bit and this vcpu's APIC id and the VM's logical count (leaf 1);
 * - clears MONITOR/MWAIT (KVM does not offer them; a guest must not idle on them),
 *   VMX/SVM (no nested virtualization), 5-level paging (LA57: this VMM builds 4-level
 *   tables, and kvm_pvm refuses CR4.LA57), WAITPKG;
 * - without an in-kernel irqchip, the APIC, x2APIC and the TSC-deadline timer; with it,
 *   the TSC-deadline timer when `tscDeadline` (KVM emulates it, the supported set omits it);
 * - limits XSAVE to x87/SSE/AVX (leaf 0xd): a guest that finds AVX-512 or AMX state the
 *   host's emulation lacks panics early in fpstate_reset (seen with QEMU -cpu host under
 *   nested TCG), and those components' subleaves go too;
 * - hides the architectural PMU (leaf 0xa version 0): there is no PMU to emulate;
 * - fills the x2APIC id of the topology leaves (0xb, 0x1f) with this vcpu's id.
 */
export function guestCpuid(supported: readonly CpuidEntry[], options: CpuidPolicyOptions): CpuidEntry[] {
  const { vcpuId, cpus, irqchip } = options;
  const emulator = options.profile === 'emulator';
  const avx = options.xsave === 'avx';
  const noXsave = options.xsave === 'none';
  const out: CpuidEntry[] = [];
  for (const entry of supported) {
    const e = { ...entry };
    if (noXsave) {
      if (e.function === 0xd) continue;
      if (e.function === 1) e.ecx &= ~(L1_ECX_XSAVE | L1_ECX_OSXSAVE);
    }
    if (emulator) {
      if (e.function === 0xd || e.function === 0x14 || e.function === 0x19 || e.function === 0x1d || e.function === 0x1e) continue;
      if (e.function === 1) e.ecx &= EMU_L1_ECX_KEEP;
      if (e.function === 7) {
        e.ebx &= EMU_L7_EBX_KEEP;
        e.ecx = 0;
        e.edx = 0;
        if (e.index === 0) e.eax = 0;
      }
      if (e.function === 0x8000_0001) e.ecx &= EMU_L8_ECX_KEEP;
    }
    if (!avx) {
      if (e.function === 1) e.ecx &= ~AVX_DEPENDENT.l1Ecx;
      if (e.function === 7 && e.index === 0) {
        e.ebx &= ~AVX_DEPENDENT.l7Ebx;
        e.ecx &= ~AVX_DEPENDENT.l7Ecx;
        e.edx &= ~AVX_DEPENDENT.l7Edx;
      }
      if (e.function === 7 && e.index === 1) e.eax &= ~AVX_DEPENDENT.l7s1Eax;
    }
    switch (e.function) {
      case 1:
        e.ecx |= L1_ECX_HYPERVISOR;
        e.ecx &= ~(L1_ECX_MONITOR | L1_ECX_VMX);
        if (!irqchip) {
          // No in-kernel LAPIC: its MMIO would exit to a VMM that has none.
          e.ecx &= ~(L1_ECX_X2APIC | L1_ECX_TSC_DEADLINE);
          e.edx &= ~L1_EDX_APIC;
        } else if (options.tscDeadline === true) {
          e.ecx |= L1_ECX_TSC_DEADLINE;
        }
        // EBX: [31:24] initial APIC id, [23:16] logical processors, [15:8] CLFLUSH size.
        e.ebx = ((vcpuId & 0xff) << 24) | ((Math.max(cpus, 1) & 0xff) << 16) | (e.ebx & 0xffff);
        if (cpus > 1) e.edx |= L1_EDX_HTT;
        else e.edx &= ~L1_EDX_HTT;
        break;
      case 5:
        // MONITOR/MWAIT parameters: nothing, as the feature is hidden.
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case 6:
        // Thermal and power management: nothing to offer.
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case 7:
        if (e.index === 0) e.ecx &= ~(L7_ECX_LA57 | L7_ECX_WAITPKG);
        break;
      case 0xa:
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case 0xb:
      case 0x1f:
        e.edx = vcpuId;
        break;
      case 0xd: {
        // Offer only components whose feature the guest also sees in leaf 1:
        // a guest told AVX state exists without AVX computes a different XSAVE
        // size than CPUID reports and disables XSAVE, then panics in
        // fpstate_reset (seen with Debian's 6.18 in the lab's nested KVM).
        const allowed = allowedXsave(supported) & (avx ? 0x7 : 0x3);
        if (allowed === 0) continue;
        if (e.index === 0) {
          e.eax &= allowed;
          e.edx = 0;
          // ECX: the largest area for the offered components; EBX (for the
          // current XCR0) KVM recomputes whenever the guest sets XCR0.
          e.ecx = xsaveSize(supported, e.eax);
          e.ebx = xsaveSize(supported, e.eax & 0x3);
        } else if (e.index === 1) {
          // XSAVEOPT/XSAVEC/XGETBV1/XSAVES stay; no supervisor components.
          e.ecx = 0;
          e.edx = 0;
          e.ebx = xsaveSize(supported, allowed & supportedXcr0(supported));
        } else if (e.index >= 2 && ((1 << e.index) & allowed) === 0) {
          continue;
        }
        break;
      }
      case 0x8000_0001:
        e.ecx &= ~L8000_0001_ECX_SVM;
        break;
      default:
        break;
    }
    out.push(e);
  }
  return out;
}

/** XSAVE components offered: none without XSAVE, x87 and SSE, AVX if leaf 1 offers AVX. */
function allowedXsave(supported: readonly CpuidEntry[]): number {
  const l1 = supported.find((e) => e.function === 1);
  if (!l1 || (l1.ecx & L1_ECX_XSAVE) === 0) return 0;
  return XSAVE_COMPONENTS & (0x3 | ((l1.ecx & L1_ECX_AVX) !== 0 ? 0x4 : 0));
}

function supportedXcr0(supported: readonly CpuidEntry[]): number {
  return supported.find((e) => e.function === 0xd && e.index === 0)?.eax ?? 0x3;
}

/** Standard-format XSAVE area size for the components in `mask`. */
function xsaveSize(supported: readonly CpuidEntry[], mask: number): number {
  let size = 576; // legacy region (512) + XSAVE header (64)
  for (let bit = 2; bit < 32; bit++) {
    if ((mask & (1 << bit)) === 0) continue;
    const leaf = supported.find((e) => e.function === 0xd && e.index === bit);
    if (leaf) size = Math.max(size, leaf.ebx + leaf.eax); // offset + size
  }
  return size;
}
