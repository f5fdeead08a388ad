/**
 * Eventfds the kernel wires to the guest: irqfd (kvm_irqfd: a write raises a
 * GSI) and ioeventfd (kvm_ioeventfd: a guest write signals the eventfd
 * instead of exiting to userspace).
 */
import { invalidArgument } from '../errors.js';
import { EventFd } from '../eventfd.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readOptions, toBool, toU64Arg, toUint, view } from './struct.js';

/** Options of Vm.registerIrqfd() / unregisterIrqfd(). */
export interface IrqfdOptions {
  /** Writing to it raises `gsi`. */
  eventfd: EventFd;
  /** kvm_irqfd.gsi: the global system interrupt the eventfd raises, as the GSI routing table (KVM_SET_GSI_ROUTING, or the default irqchip pins) maps it. */
  gsi: number;
  /** KVM_IRQFD_FLAG_RESAMPLE: a level-triggered irqfd; KVM signals this when the guest EOIs. */
  resampleEventfd?: EventFd;
}

function irqfdBytes(options: IrqfdOptions, op: string, deassign: boolean): { bytes: Uint8Array; gsi: number } {
  const o = readOptions(options, op, deassign ? ['eventfd', 'gsi'] : ['eventfd', 'gsi', 'resampleEventfd'], ['eventfd', 'gsi']);
  if (!EventFd.isEventFd(o.eventfd)) throw invalidArgument(op, 'eventfd must be an EventFd');
  if (o.resampleEventfd !== undefined && !EventFd.isEventFd(o.resampleEventfd)) throw invalidArgument(op, 'resampleEventfd must be an EventFd');
  const gsi = toUint(o.gsi, 32, 'gsi', op);
  const bytes = new Uint8Array(32);
  const v = view(bytes);
  v.setUint32(0, EventFd.fdFor(o.eventfd, op), true);
  v.setUint32(4, gsi, true);
  const resample = o.resampleEventfd as EventFd | undefined;
  v.setUint32(8, (deassign ? 1 : 0) | (resample ? 2 : 0), true);
  if (resample) v.setUint32(12, EventFd.fdFor(resample, op), true);
  return { bytes, gsi };
}

/** KVM_IRQFD: writing to the eventfd raises the GSI (edge; level with resampleEventfd). */
export function registerIrqfd(vm: Vm, options: IrqfdOptions): void {
  const op = 'KVM_IRQFD';
  const { bytes, gsi } = irqfdBytes(options, op, false);
  callVm(vm, op, { gsi }, (fd) => native.vmIrqfd(fd, bytes));
}

/** KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN. */
export function unregisterIrqfd(vm: Vm, options: Omit<IrqfdOptions, 'resampleEventfd'>): void {
  const op = 'KVM_IRQFD';
  const { bytes, gsi } = irqfdBytes(options, op, true);
  callVm(vm, op, { gsi, deassign: true }, (fd) => native.vmIrqfd(fd, bytes));
}

/** Options of Vm.registerIoeventfd() / unregisterIoeventfd(). */
export interface IoeventfdOptions {
  /** Incremented (no exit to userspace) when the guest writes `addr`. */
  eventfd: EventFd;
  /** Guest-physical MMIO address, or the port with `pio`. */
  addr: bigint | number;
  /** Access width to match: 1, 2, 4 or 8; 0 matches any width (KVM_CAP_IOEVENTFD_ANY_LENGTH). */
  len: 0 | 1 | 2 | 4 | 8;
  /** Only writes of this value signal (KVM_IOEVENTFD_FLAG_DATAMATCH). */
  datamatch?: bigint | number;
  /** A port-I/O address (KVM_IOEVENTFD_FLAG_PIO). */
  pio?: boolean;
}

function ioeventfdBytes(options: IoeventfdOptions, op: string, deassign: boolean): { bytes: Uint8Array; addr: bigint; len: number } {
  const o = readOptions(options, op, ['eventfd', 'addr', 'len', 'datamatch', 'pio'], ['eventfd', 'addr', 'len']);
  if (!EventFd.isEventFd(o.eventfd)) throw invalidArgument(op, 'eventfd must be an EventFd');
  const addr = toU64Arg(o.addr, 'addr', op);
  const len = toUint(o.len, 32, 'len', op);
  if (![0, 1, 2, 4, 8].includes(len)) throw invalidArgument(op, 'len must be 0, 1, 2, 4 or 8', { len });
  const pio = toBool(o.pio, 'pio', op);
  if (pio && addr > 0xffffn) throw invalidArgument(op, 'a port address must be below 0x10000', { addr });
  const bytes = new Uint8Array(64);
  const v = view(bytes);
  let flags = deassign ? 4 : 0;
  if (o.datamatch !== undefined) {
    const dm = toU64Arg(o.datamatch, 'datamatch', op);
    if (len !== 0 && len < 8 && dm >= 1n << BigInt(len * 8)) throw invalidArgument(op, `datamatch does not fit in ${len} bytes`, { datamatch: dm });
    v.setBigUint64(0, dm, true);
    flags |= 1;
  }
  if (pio) flags |= 2;
  v.setBigUint64(8, addr, true);
  v.setUint32(16, len, true);
  v.setInt32(20, EventFd.fdFor(o.eventfd, op), true);
  v.setUint32(24, flags, true);
  return { bytes, addr, len };
}

/** KVM_IOEVENTFD: a guest write to addr signals the eventfd instead of exiting. */
export function registerIoeventfd(vm: Vm, options: IoeventfdOptions): void {
  const op = 'KVM_IOEVENTFD';
  const { bytes, addr, len } = ioeventfdBytes(options, op, false);
  callVm(vm, op, { addr, len }, (fd) => native.vmIoeventfd(fd, bytes));
}

/** KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN (same options as registered). */
export function unregisterIoeventfd(vm: Vm, options: IoeventfdOptions): void {
  const op = 'KVM_IOEVENTFD';
  const { bytes, addr, len } = ioeventfdBytes(options, op, true);
  callVm(vm, op, { addr, len, deassign: true }, (fd) => native.vmIoeventfd(fd, bytes));
}
