/**
 * Vcpu control ioctls with small payloads: KVM_TRANSLATE, injection
 * (KVM_INTERRUPT, KVM_NMI, KVM_SMI), KVM_GET_CPUID2, the TSC frequency,
 * KVM_KVMCLOCK_CTRL, KVM_ENABLE_CAP on a vcpu, nested virtualization state
 * (kvm_nested_state) and the coalesced MMIO ring in the vcpu mapping.
 */
import { Cap, type CapName } from '../constants.js';
import { decodeCpuid, type CpuidEntry } from '../cpuid.js';
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vcpu } from '../vcpu.js';
import { encodeEnableCap } from '../vm/state.js';
import { bigUint64View, readOptions, toU64Arg, toUint, view } from '../vm/struct.js';

/** Result of KVM_TRANSLATE. */
export interface Translation {
  /** The guest-physical address (meaningful only when valid). */
  physicalAddress: bigint;
  /** kvm_translation.valid: the guest page tables (as of the current CR3/CR0/CR4/EFER) map the address; false: no mapping, physicalAddress is meaningless. */
  valid: boolean;
  /** kvm_translation.writeable: on x86 KVM always reports 1 (it does not check the R/W bits), so do not rely on it. */
  writeable: boolean;
  /** kvm_translation.usermode: on x86 KVM always reports 0 (the walk is a supervisor one and U/S is not reported), so do not rely on it. */
  usermode: boolean;
}

/** KVM_TRANSLATE: walks the guest's page tables for a guest-virtual address. */
export function translate(vcpu: Vcpu, gva: bigint | number): Translation {
  const op = 'KVM_TRANSLATE';
  const addr = toU64Arg(gva, 'gva', op);
  const req = new Uint8Array(24);
  view(req).setBigUint64(0, addr, true);
  const v = view(vcpu.ioctl(op, { gva: addr }, (fd) => native.vcpuTranslate(fd, req)));
  return { physicalAddress: v.getBigUint64(8, true), valid: v.getUint8(16) !== 0, writeable: v.getUint8(17) !== 0, usermode: v.getUint8(18) !== 0 };
}

/**
 * KVM_INTERRUPT: queues an external interrupt vector, for VMs without the
 * in-kernel irqchip (with it the kernel refuses: ENXIO).
 */
export function interrupt(vcpu: Vcpu, vector: number): void {
  const op = 'KVM_INTERRUPT';
  const n = toUint(vector, 8, 'vector', op);
  const bytes = new Uint8Array(4);
  view(bytes).setUint32(0, n, true);
  vcpu.ioctl(op, { vector: n }, (fd) => native.vcpuInterrupt(fd, bytes));
}

/** KVM_NMI: queues an NMI. */
export function nmi(vcpu: Vcpu): void {
  vcpu.ioctl('KVM_NMI', {}, (fd) => native.vcpuNmi(fd));
}

/** KVM_SMI: queues an SMI (KVM_CAP_X86_SMM). */
export function smi(vcpu: Vcpu): void {
  vcpu.ioctl('KVM_SMI', {}, (fd) => native.vcpuSmi(fd));
}

/** KVM_GET_CPUID2: the CPUID entries set on this vcpu (growing the buffer on E2BIG). */
export function getCpuid(vcpu: Vcpu): CpuidEntry[] {
  for (let max = 64; ; max *= 2) {
    try {
      return decodeCpuid(vcpu.ioctl('KVM_GET_CPUID2', { maxEntries: max }, (fd) => native.vcpuGetCpuid2(fd, max)));
    } catch (e) {
      if ((e as { code?: string }).code === 'E2BIG' && max < 4096) continue;
      throw e;
    }
  }
}

/** KVM_GET_TSC_KHZ. */
export function getTscKhz(vcpu: Vcpu): number {
  return vcpu.ioctl('KVM_GET_TSC_KHZ', {}, (fd) => native.vcpuGetTscKhz(fd));
}

/** KVM_SET_TSC_KHZ (KVM_CAP_TSC_CONTROL; scaling must be supported for other than the host rate). */
export function setTscKhz(vcpu: Vcpu, khz: number): void {
  const op = 'KVM_SET_TSC_KHZ';
  const n = toUint(khz, 32, 'khz', op);
  if (n === 0) throw invalidArgument(op, 'khz must be non-zero');
  vcpu.ioctl(op, { khz: n }, (fd) => native.vcpuSetTscKhz(fd, n));
}

/** KVM_KVMCLOCK_CTRL: tells the guest it was paused (kvmclock must be enabled by the guest, else EINVAL). */
export function kvmclockCtrl(vcpu: Vcpu): void {
  vcpu.ioctl('KVM_KVMCLOCK_CTRL', {}, (fd) => native.vcpuKvmclockCtrl(fd));
}

/** KVM_ENABLE_CAP on the vcpu. */
export function enableVcpuCap(vcpu: Vcpu, cap: number | CapName, args: readonly (bigint | number)[] = []): void {
  const op = 'KVM_ENABLE_CAP';
  const { bytes, n } = encodeEnableCap(cap, args, op);
  vcpu.ioctl(op, { cap: n, args }, (fd) => native.enableCap(fd, bytes));
}

/** Nested virtualization state (struct kvm_nested_state). */
export interface NestedState {
  /** KVM_STATE_NESTED_* flags (GUEST_MODE 1, RUN_PENDING 2, EVMCS 4, ...). */
  flags: number;
  /** KVM_STATE_NESTED_FORMAT_VMX (0) or _SVM (1). */
  format: 'vmx' | 'svm' | number;
  /** VMX header (format 'vmx'). */
  vmx?: { vmxonPa: bigint; vmcs12Pa: bigint; smmFlags: number; flags: number; preemptionTimerDeadline: bigint };
  /** SVM header (format 'svm'). */
  svm?: { vmcbPa: bigint };
  /** The format-specific data after the 128-byte header (VMCS12 / VMCB12...), as 64-bit words. */
  data: BigUint64Array;
}

const NESTED_HEADER = 128;

/** Bytes KVM_GET_NESTED_STATE may need (KVM_CAP_NESTED_STATE), or 0 if nested state is unsupported. */
export function nestedStateSize(vcpu: Vcpu): number {
  return vcpu.vm.checkExtension(Cap.NESTED_STATE);
}

function unsupported(op: string): Error {
  return invalidArgument(op, 'nested state is not supported here (KVM_CAP_NESTED_STATE is 0)', {}, 'EOPNOTSUPP');
}

/** KVM_GET_NESTED_STATE. */
export function getNestedState(vcpu: Vcpu): NestedState {
  const op = 'KVM_GET_NESTED_STATE';
  const size = nestedStateSize(vcpu);
  if (size < NESTED_HEADER) throw unsupported(op);
  const bytes = vcpu.ioctl(op, { size }, (fd) => native.vcpuGetNestedState(fd, size));
  const v = view(bytes);
  const formatNo = v.getUint16(2, true);
  const format = formatNo === 0 ? 'vmx' : formatNo === 1 ? 'svm' : formatNo;
  const dataBytes = bytes.slice(NESTED_HEADER, NESTED_HEADER + Math.floor((bytes.length - NESTED_HEADER) / 8) * 8);
  const out: NestedState = { flags: v.getUint16(0, true), format, data: new BigUint64Array(dataBytes.buffer) };
  if (format === 'vmx') {
    out.vmx = { vmxonPa: v.getBigUint64(8, true), vmcs12Pa: v.getBigUint64(16, true), smmFlags: v.getUint16(24, true), flags: v.getUint32(28, true), preemptionTimerDeadline: v.getBigUint64(32, true) };
  } else if (format === 'svm') {
    out.svm = { vmcbPa: v.getBigUint64(8, true) };
  }
  return out;
}

/** KVM_SET_NESTED_STATE, usually with what getNestedState() returned on the source. */
export function setNestedState(vcpu: Vcpu, state: NestedState): void {
  const op = 'KVM_SET_NESTED_STATE';
  const o = readOptions(state, op, ['flags', 'format', 'vmx', 'svm', 'data'], ['flags', 'format', 'data'], 'state');
  if (nestedStateSize(vcpu) < NESTED_HEADER) throw unsupported(op);
  const data = bigUint64View(o.data); // intrinsic getters: a subclass cannot misstate its size
  if (data === undefined) throw invalidArgument(op, 'data must be a BigUint64Array');
  const formatNo = o.format === 'vmx' ? 0 : o.format === 'svm' ? 1 : toUint(o.format, 16, 'format', op);
  const bytes = new Uint8Array(NESTED_HEADER + data.byteLength);
  const v = view(bytes);
  v.setUint16(0, toUint(o.flags, 16, 'flags', op), true);
  v.setUint16(2, formatNo, true);
  v.setUint32(4, bytes.length, true);
  if (formatNo === 0 && o.vmx !== undefined) {
    const x = readOptions(o.vmx, op, ['vmxonPa', 'vmcs12Pa', 'smmFlags', 'flags', 'preemptionTimerDeadline'], [], 'vmx');
    v.setBigUint64(8, toU64Arg(x.vmxonPa ?? 0n, 'vmxonPa', op), true);
    v.setBigUint64(16, toU64Arg(x.vmcs12Pa ?? 0n, 'vmcs12Pa', op), true);
    v.setUint16(24, toUint(x.smmFlags ?? 0, 16, 'smmFlags', op), true);
    v.setUint32(28, toUint(x.flags ?? 0, 32, 'flags', op), true);
    v.setBigUint64(32, toU64Arg(x.preemptionTimerDeadline ?? 0n, 'preemptionTimerDeadline', op), true);
  } else if (formatNo === 1 && o.svm !== undefined) {
    const s = readOptions(o.svm, op, ['vmcbPa'], [], 'svm');
    v.setBigUint64(8, toU64Arg(s.vmcbPa ?? 0n, 'vmcbPa', op), true);
  }
  bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), NESTED_HEADER);
  vcpu.ioctl(op, { size: bytes.length }, (fd) => native.vcpuSetNestedState(fd, bytes));
}

/** One coalesced write (struct kvm_coalesced_mmio). */
export interface CoalescedWrite {
  /** kvm_coalesced_mmio.phys_addr: the guest-physical address (or, with `pio`, the port) of the write. */
  physAddr: bigint;
  /** kvm_coalesced_mmio.len: the width of the write in bytes (1..8). */
  len: number;
  /** kvm_coalesced_mmio.pio: the write was to an I/O port of a KVM_REGISTER_COALESCED_PIO zone, not MMIO. */
  pio: boolean;
  /** The bytes written (len of them). */
  data: number[];
}

/** The ring's page in the vcpu mapping (KVM_COALESCED_MMIO_PAGE_OFFSET on x86). */
const RING_PAGE = 2;
const RING_ENTRY = 24;
const RING_HEADER = 8;

/**
 * Drains the coalesced MMIO ring (page 2 of the vcpu mapping): the writes to
 * zones registered with Vm.registerCoalescedMmio(), oldest first. The ring
 * is per VM; any vcpu can drain it.
 */
export function readCoalescedMmio(vcpu: Vcpu, runPage: Uint8Array): CoalescedWrite[] {
  const base = RING_PAGE * 4096;
  if (runPage.byteLength < base + 4096) throw invalidArgument('coalescedMmioRead', 'the vcpu mapping has no coalesced MMIO page (KVM_CAP_COALESCED_MMIO is 0)', { vcpu: vcpu.id }, 'EOPNOTSUPP');
  const words = new Int32Array(runPage.buffer, runPage.byteOffset + base, 2);
  const max = Math.floor((4096 - RING_HEADER) / RING_ENTRY);
  const v = new DataView(runPage.buffer, runPage.byteOffset + base, 4096);
  const out: CoalescedWrite[] = [];
  let first = Atomics.load(words, 0) >>> 0;
  const last = Atomics.load(words, 1) >>> 0;
  if (first >= max || last >= max) throw invalidArgument('coalescedMmioRead', 'corrupt coalesced MMIO ring indices', { first, last }, 'EIO');
  while (first !== last) {
    const off = RING_HEADER + first * RING_ENTRY;
    const len = Math.min(v.getUint32(off + 8, true), 8);
    out.push({ physAddr: v.getBigUint64(off, true), len, pio: v.getUint32(off + 12, true) !== 0, data: Array.from({ length: len }, (_, i) => v.getUint8(off + 16 + i)) });
    first = (first + 1) % max;
    Atomics.store(words, 0, first);
  }
  return out;
}
