/**
 * Floating-point and extended state: kvm_fpu (KVM_GET/SET_FPU), kvm_xsave
 * (KVM_GET_XSAVE, KVM_GET_XSAVE2 when KVM_CAP_XSAVE2 reports a larger area,
 * KVM_SET_XSAVE) and kvm_xcrs (KVM_GET/SET_XCRS).
 */
import { Cap } from '../constants.js';
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vcpu } from '../vcpu.js';
import { getWide, readArray, readOptions, setWide, toU64Arg, toUint, view } from '../vm/struct.js';
import { fieldCheck, mergeState } from './merge.js';

/** x87 and SSE state (struct kvm_fpu). */
export interface Fpu {
  /** ST0-ST7 / MM0-MM7, each in a 16-byte slot (80 bits used). */
  fpr: bigint[];
  fcw: number;
  fsw: number;
  /** Abridged tag word (one bit per register). */
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  /** XMM0-XMM15 as 128-bit values. */
  xmm: bigint[];
  /** Ignored by KVM_SET_FPU and left 0 by KVM_GET_FPU (the kernel copies it neither way): use getXsave()/setXsave(). */
  mxcsr: number;
}

function decodeFpu(bytes: Uint8Array): Fpu {
  const v = view(bytes);
  return {
    fpr: Array.from({ length: 8 }, (_, i) => getWide(v, i * 16, 16)),
    fcw: v.getUint16(128, true),
    fsw: v.getUint16(130, true),
    ftwx: v.getUint8(132),
    lastOpcode: v.getUint16(134, true),
    lastIp: v.getBigUint64(136, true),
    lastDp: v.getBigUint64(144, true),
    xmm: Array.from({ length: 16 }, (_, i) => getWide(v, 152 + i * 16, 16)),
    mxcsr: v.getUint32(408, true),
  };
}

function encodeFpu(f: Fpu): Uint8Array {
  const bytes = new Uint8Array(416);
  const v = view(bytes);
  f.fpr.forEach((x, i) => setWide(v, i * 16, 16, x));
  v.setUint16(128, f.fcw, true);
  v.setUint16(130, f.fsw, true);
  v.setUint8(132, f.ftwx);
  v.setUint16(134, f.lastOpcode, true);
  v.setBigUint64(136, f.lastIp, true);
  v.setBigUint64(144, f.lastDp, true);
  f.xmm.forEach((x, i) => setWide(v, 152 + i * 16, 16, x));
  v.setUint32(408, f.mxcsr, true);
  return bytes;
}

const FPU_BITS: Record<string, number> = { fcw: 16, fsw: 16, ftwx: 8, lastOpcode: 16, lastIp: 64, lastDp: 64, mxcsr: 32 };
const bitsOf = (name: string): number => FPU_BITS[name.replace(/\[\d+\]$/, '')] ?? (name.startsWith('fpr') || name.startsWith('xmm') ? 128 : 64);

/** KVM_GET_FPU. */
export function getFpu(vcpu: Vcpu): Fpu {
  return decodeFpu(vcpu.ioctl('KVM_GET_FPU', {}, (fd) => native.vcpuGetFpu(fd)));
}

/** KVM_SET_FPU; fields not given keep their current values. */
export function setFpu(vcpu: Vcpu, update: Partial<Fpu>): void {
  const op = 'KVM_SET_FPU';
  const next = mergeState(getFpu(vcpu), update, op, fieldCheck(op, bitsOf));
  const bytes = encodeFpu(next);
  vcpu.ioctl(op, {}, (fd) => native.vcpuSetFpu(fd, bytes));
}

/** The XSAVE area (struct kvm_xsave), legacy region and header decoded. */
export interface Xsave {
  fcw: number;
  fsw: number;
  /** Abridged x87 tag word. */
  ftw: number;
  fop: number;
  fip: bigint;
  fdp: bigint;
  mxcsr: number;
  mxcsrMask: number;
  /** ST0-ST7 in 16-byte slots. */
  st: bigint[];
  /** XMM0-XMM15. */
  xmm: bigint[];
  /** XSTATE_BV: which components hold non-initial state. */
  xstateBv: bigint;
  /** XCOMP_BV (0 in the standard format KVM uses). */
  xcompBv: bigint;
  /**
   * The extended region from byte 576 to the end as 64-bit words (AVX
   * YMM_Hi128 first, at the offsets CPUID leaf 0xD gives). Its length is
   * fixed by the vcpu's XSAVE size.
   */
  extended: BigUint64Array;
}

const XSAVE_BASE = 4096;
const EXTENDED = 576;

/** Bytes of this vcpu's XSAVE area: KVM_CAP_XSAVE2 on the VM (>= 4096), else 4096. */
export function xsaveSize(vcpu: Vcpu): number {
  let size = 0;
  try {
    size = vcpu.vm.checkExtension(Cap.XSAVE2);
  } catch {
    size = 0;
  }
  return Math.max(XSAVE_BASE, Math.ceil(size / 8) * 8);
}

function decodeXsave(bytes: Uint8Array): Xsave {
  const v = view(bytes);
  return {
    fcw: v.getUint16(0, true),
    fsw: v.getUint16(2, true),
    ftw: v.getUint8(4),
    fop: v.getUint16(6, true),
    fip: v.getBigUint64(8, true),
    fdp: v.getBigUint64(16, true),
    mxcsr: v.getUint32(24, true),
    mxcsrMask: v.getUint32(28, true),
    st: Array.from({ length: 8 }, (_, i) => getWide(v, 32 + i * 16, 16)),
    xmm: Array.from({ length: 16 }, (_, i) => getWide(v, 160 + i * 16, 16)),
    xstateBv: v.getBigUint64(512, true),
    xcompBv: v.getBigUint64(520, true),
    extended: new BigUint64Array(bytes.slice(EXTENDED).buffer),
  };
}

function encodeXsave(x: Xsave, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  const v = view(bytes);
  v.setUint16(0, x.fcw, true);
  v.setUint16(2, x.fsw, true);
  v.setUint8(4, x.ftw);
  v.setUint16(6, x.fop, true);
  v.setBigUint64(8, x.fip, true);
  v.setBigUint64(16, x.fdp, true);
  v.setUint32(24, x.mxcsr, true);
  v.setUint32(28, x.mxcsrMask, true);
  x.st.forEach((s, i) => setWide(v, 32 + i * 16, 16, s));
  x.xmm.forEach((s, i) => setWide(v, 160 + i * 16, 16, s));
  v.setBigUint64(512, x.xstateBv, true);
  v.setBigUint64(520, x.xcompBv, true);
  bytes.set(new Uint8Array(x.extended.buffer, x.extended.byteOffset, Math.min(x.extended.byteLength, size - EXTENDED)), EXTENDED);
  return bytes;
}

const XSAVE_BITS: Record<string, number> = { fcw: 16, fsw: 16, ftw: 8, fop: 16, mxcsr: 32, mxcsrMask: 32 };
const xsaveBits = (name: string): number => XSAVE_BITS[name] ?? (name.startsWith('st') || name.startsWith('xmm') ? 128 : 64);

/** KVM_GET_XSAVE2 when the area is larger than 4096 bytes (KVM_CAP_XSAVE2), else KVM_GET_XSAVE. */
export function getXsave(vcpu: Vcpu): Xsave {
  const size = xsaveSize(vcpu);
  if (size > XSAVE_BASE) return decodeXsave(vcpu.ioctl('KVM_GET_XSAVE2', { size }, (fd) => native.vcpuGetXsave2(fd, size)));
  return decodeXsave(vcpu.ioctl('KVM_GET_XSAVE', {}, (fd) => native.vcpuGetXsave(fd)));
}

/** KVM_SET_XSAVE; fields not given keep their current values. */
export function setXsave(vcpu: Vcpu, update: Partial<Xsave>): void {
  const op = 'KVM_SET_XSAVE';
  const size = xsaveSize(vcpu);
  const next = mergeState(getXsave(vcpu), update, op, fieldCheck(op, xsaveBits));
  const bytes = encodeXsave(next, size);
  vcpu.ioctl(op, { size }, (fd) => native.vcpuSetXsave(fd, bytes));
}

/** One extended control register (struct kvm_xcr). */
export interface Xcr {
  /** Which XCR (0 = XCR0, the XSAVE feature mask). */
  xcr: number;
  value: bigint;
}

/** KVM_GET_XCRS. */
export function getXcrs(vcpu: Vcpu): Xcr[] {
  const v = view(vcpu.ioctl('KVM_GET_XCRS', {}, (fd) => native.vcpuGetXcrs(fd)));
  const n = Math.min(v.getUint32(0, true), 16);
  return Array.from({ length: n }, (_, i) => ({ xcr: v.getUint32(8 + i * 16, true), value: v.getBigUint64(16 + i * 16, true) }));
}

/** KVM_SET_XCRS (up to 16 entries; XCR0 must be a valid feature mask). */
export function setXcrs(vcpu: Vcpu, xcrs: readonly Xcr[]): void {
  const op = 'KVM_SET_XCRS';
  const list = readArray(xcrs, op, 'xcrs', 16);
  if (list.length === 0) throw invalidArgument(op, 'xcrs must not be empty');
  const bytes = new Uint8Array(392);
  const v = view(bytes);
  v.setUint32(0, list.length, true);
  list.forEach((x, i) => {
    const o = readOptions(x, op, ['xcr', 'value'], ['xcr', 'value'], `xcrs[${i}]`);
    v.setUint32(8 + i * 16, toUint(o.xcr, 32, 'xcr', op), true);
    v.setBigUint64(16 + i * 16, toU64Arg(o.value, 'value', op), true);
  });
  vcpu.ioctl(op, { count: list.length }, (fd) => native.vcpuSetXcrs(fd, bytes));
}
