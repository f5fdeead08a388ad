/**
 * VM-wide settings: the TSS and identity-map addresses (Intel real-mode
 * support), KVM_ENABLE_CAP, the kvmclock (kvm_clock_data), coalesced MMIO
 * zones and the boot CPU.
 */
import { capNumber, type CapName } from '../constants.js';
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readArray, readOptions, toBool, toU64Arg, toUint, view } from './struct.js';

/** KVM_SET_TSS_ADDR: a 3-page region below 4 GiB the guest never uses. */
export function setTssAddr(vm: Vm, gpa: bigint | number): void {
  const op = 'KVM_SET_TSS_ADDR';
  const addr = toU64Arg(gpa, 'gpa', op);
  if (addr % 4096n !== 0n || addr + 3n * 4096n > 1n << 32n) throw invalidArgument(op, 'gpa must be page aligned with 3 pages below 4 GiB', { gpa: addr });
  callVm(vm, op, { gpa: addr }, (fd) => native.vmSetTssAddr(fd, Number(addr)));
}

/** KVM_SET_IDENTITY_MAP_ADDR: one page below 4 GiB for the EPT identity map. */
export function setIdentityMapAddr(vm: Vm, gpa: bigint | number): void {
  const op = 'KVM_SET_IDENTITY_MAP_ADDR';
  const addr = toU64Arg(gpa, 'gpa', op);
  if (addr % 4096n !== 0n || addr + 4096n > 1n << 32n) throw invalidArgument(op, 'gpa must be a page-aligned address below 4 GiB', { gpa: addr });
  const bytes = new Uint8Array(8);
  view(bytes).setBigUint64(0, addr, true);
  callVm(vm, op, { gpa: addr }, (fd) => native.vmSetIdentityMapAddr(fd, bytes));
}

/** Encodes struct kvm_enable_cap (shared by Vm.enableCap and Vcpu.enableCap). */
export function encodeEnableCap(cap: number | CapName, args: readonly (bigint | number)[], op: string): { bytes: Uint8Array; n: number } {
  const n = typeof cap === 'string' ? capNumber(cap, op) : toUint(cap, 32, 'cap', op);
  const list = readArray(args, op, 'args', 4);
  const bytes = new Uint8Array(104);
  const v = view(bytes);
  v.setUint32(0, n, true);
  list.forEach((a, i) => v.setBigUint64(8 + i * 8, toU64Arg(a, `args[${i}]`, op), true));
  return { bytes, n };
}

/** KVM_ENABLE_CAP on the VM: up to 4 u64 arguments, as api.rst gives for the capability. */
export function enableCap(vm: Vm, cap: number | CapName, args: readonly (bigint | number)[] = []): void {
  const op = 'KVM_ENABLE_CAP';
  const { bytes, n } = encodeEnableCap(cap, args, op);
  callVm(vm, op, { cap: n, args }, (fd) => native.enableCap(fd, bytes));
}

/** The VM's kvmclock (struct kvm_clock_data). */
export interface ClockData {
  /** Nanoseconds of guest kvmclock time. */
  clock: bigint;
  /** KVM_CLOCK_TSC_STABLE (2), KVM_CLOCK_REALTIME (4), KVM_CLOCK_HOST_TSC (8). */
  flags: number;
  /** CLOCK_REALTIME in ns when the clock was read (valid with KVM_CLOCK_REALTIME). */
  realtime: bigint;
  /** Host TSC when the clock was read (valid with KVM_CLOCK_HOST_TSC). */
  hostTsc: bigint;
}

/** Flags of kvm_clock_data. */
export const CLOCK_FLAGS = { TSC_STABLE: 2, REALTIME: 4, HOST_TSC: 8 } as const;

/** KVM_GET_CLOCK. */
export function getClock(vm: Vm): ClockData {
  const v = view(callVm(vm, 'KVM_GET_CLOCK', {}, (fd) => native.vmGetClock(fd)));
  return { clock: v.getBigUint64(0, true), flags: v.getUint32(8, true), realtime: v.getBigUint64(16, true), hostTsc: v.getBigUint64(24, true) };
}

/**
 * KVM_SET_CLOCK. Only `clock` is required; `realtime` with flags
 * KVM_CLOCK_REALTIME makes KVM advance the clock by the time since then.
 */
export function setClock(vm: Vm, data: Partial<ClockData> & { clock: bigint | number }): void {
  const op = 'KVM_SET_CLOCK';
  const o = readOptions(data, op, ['clock', 'flags', 'realtime', 'hostTsc'], ['clock'], 'data');
  const bytes = new Uint8Array(48);
  const v = view(bytes);
  const flags = toUint(o.flags ?? 0, 32, 'flags', op);
  if ((flags & ~(CLOCK_FLAGS.REALTIME | CLOCK_FLAGS.TSC_STABLE | CLOCK_FLAGS.HOST_TSC)) !== 0) throw invalidArgument(op, 'unknown clock flags', { flags });
  v.setBigUint64(0, toU64Arg(o.clock, 'clock', op), true);
  // KVM_SET_CLOCK only accepts KVM_CLOCK_REALTIME as input.
  v.setUint32(8, flags & CLOCK_FLAGS.REALTIME, true);
  v.setBigUint64(16, toU64Arg(o.realtime ?? 0n, 'realtime', op), true);
  v.setBigUint64(24, toU64Arg(o.hostTsc ?? 0n, 'hostTsc', op), true);
  callVm(vm, op, { clock: o.clock }, (fd) => native.vmSetClock(fd, bytes));
}

/** A coalesced MMIO (or PIO) zone (struct kvm_coalesced_mmio_zone). */
export interface CoalescedMmioZone {
  /** kvm_coalesced_mmio_zone.addr: the first guest-physical address (or, with `pio`, the first port) of the zone. */
  addr: bigint | number;
  /** kvm_coalesced_mmio_zone.size: the zone's length in bytes (ports for `pio`); writes inside it go to the coalesced ring instead of exiting. */
  size: number;
  /** A port-I/O zone (KVM_CAP_COALESCED_PIO). */
  pio?: boolean;
}

function zoneBytes(zone: CoalescedMmioZone, op: string): { bytes: Uint8Array; addr: bigint; size: number } {
  const o = readOptions(zone, op, ['addr', 'size', 'pio'], ['addr', 'size'], 'zone');
  const addr = toU64Arg(o.addr, 'addr', op);
  const size = toUint(o.size, 32, 'size', op);
  if (size === 0) throw invalidArgument(op, 'size must be non-zero');
  const bytes = new Uint8Array(16);
  const v = view(bytes);
  v.setBigUint64(0, addr, true);
  v.setUint32(8, size, true);
  v.setUint32(12, toBool(o.pio, 'pio', op) ? 1 : 0, true);
  return { bytes, addr, size };
}

/** KVM_REGISTER_COALESCED_MMIO: writes to the zone are queued in the ring, not exits. */
export function registerCoalescedMmio(vm: Vm, zone: CoalescedMmioZone): void {
  const op = 'KVM_REGISTER_COALESCED_MMIO';
  const { bytes, addr, size } = zoneBytes(zone, op);
  callVm(vm, op, { addr, size }, (fd) => native.vmRegisterCoalescedMmio(fd, bytes));
}

/** KVM_UNREGISTER_COALESCED_MMIO. */
export function unregisterCoalescedMmio(vm: Vm, zone: CoalescedMmioZone): void {
  const op = 'KVM_UNREGISTER_COALESCED_MMIO';
  const { bytes, addr, size } = zoneBytes(zone, op);
  callVm(vm, op, { addr, size }, (fd) => native.vmUnregisterCoalescedMmio(fd, bytes));
}

/** KVM_SET_BOOT_CPU_ID (before any vcpu is created). */
export function setBootCpuId(vm: Vm, id: number): void {
  const op = 'KVM_SET_BOOT_CPU_ID';
  const n = toUint(id, 32, 'id', op);
  callVm(vm, op, { id: n }, (fd) => native.vmSetBootCpuId(fd, n));
}
