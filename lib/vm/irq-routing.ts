/**
 * How interrupts reach the irqchip: IRQ lines (kvm_irq_level), the GSI routing
 * table (kvm_irq_routing_entry) and directly injected MSIs (kvm_msi).
 */
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { IRQCHIP_IDS, type IrqchipId } from './irqchip.js';
import { readArray, readOptions, toEnum, toU64Arg, toUint, view } from './struct.js';

function irqLevelBytes(irq: unknown, level: unknown, op: string): Uint8Array {
  const bytes = new Uint8Array(8);
  const v = view(bytes);
  v.setUint32(0, toUint(irq, 32, 'irq', op), true);
  if (typeof level !== 'boolean' && level !== 0 && level !== 1) throw invalidArgument(op, 'level must be a boolean or 0/1');
  v.setUint32(4, level === true || level === 1 ? 1 : 0, true);
  return bytes;
}

/** KVM_IRQ_LINE: sets the level of a GSI (irqchip pin). */
export function irqLine(vm: Vm, irq: number, level: boolean | 0 | 1): void {
  const op = 'KVM_IRQ_LINE';
  const bytes = irqLevelBytes(irq, level, op);
  callVm(vm, op, { irq, level }, (fd) => native.vmIrqLine(fd, bytes));
}

/**
 * KVM_IRQ_LINE_STATUS: as irqLine, returning the kernel's status: > 0
 * delivered (to that many targets), 0 coalesced or masked, < 0 an error.
 */
export function irqLineStatus(vm: Vm, irq: number, level: boolean | 0 | 1): number {
  const op = 'KVM_IRQ_LINE_STATUS';
  const bytes = irqLevelBytes(irq, level, op);
  return view(callVm(vm, op, { irq, level }, (fd) => native.vmIrqLineStatus(fd, bytes))).getInt32(0, true);
}

/** An MSI (struct kvm_msi): address, data and, with flags VALID_DEVID, a device id. */
export interface Msi {
  /** kvm_msi.address_lo/address_hi: the 64-bit MSI address the device would write (0xfee00000 | destination APIC ID << 12 | redirection hint and destination mode bits on x86). */
  address: bigint | number;
  /** kvm_msi.data: the 32-bit MSI data (vector in bits 0-7, delivery mode in 8-10, level and trigger mode in 14-15). */
  data: number;
  /** PCI requester id; sets KVM_MSI_VALID_DEVID. */
  devid?: number;
}

/** A GSI routing entry (struct kvm_irq_routing_entry). */
export type GsiRoute =
  | { gsi: number; type: 'irqchip'; irqchip: IrqchipId; pin: number }
  | ({ gsi: number; type: 'msi' } & Msi);

const ROUTE_SIZE = 48;

function encodeRoutes(entries: readonly GsiRoute[], op: string): Uint8Array {
  const list = readArray(entries, op, 'entries', 4096);
  const bytes = new Uint8Array(list.length * ROUTE_SIZE);
  const v = view(bytes);
  list.forEach((raw, i) => {
    const base = readOptions(raw, op, ['gsi', 'type', 'irqchip', 'pin', 'address', 'data', 'devid'], ['gsi', 'type'], `entries[${i}]`);
    const off = i * ROUTE_SIZE;
    v.setUint32(off, toUint(base.gsi, 32, 'gsi', op), true);
    if (base.type === 'irqchip') {
      if (base.address !== undefined || base.data !== undefined || base.devid !== undefined) throw invalidArgument(op, `entries[${i}]: an irqchip route takes irqchip and pin only`);
      v.setUint32(off + 4, 1, true);
      v.setUint32(off + 16, IRQCHIP_IDS[toEnum(base.irqchip, IRQCHIP_IDS, 'irqchip', op)], true);
      v.setUint32(off + 20, toUint(base.pin, 32, 'pin', op), true);
    } else if (base.type === 'msi') {
      if (base.irqchip !== undefined || base.pin !== undefined) throw invalidArgument(op, `entries[${i}]: an msi route takes address, data and devid only`);
      v.setUint32(off + 4, 2, true);
      const address = toU64Arg(base.address, 'address', op);
      v.setUint32(off + 16, Number(address & 0xffff_ffffn), true);
      v.setUint32(off + 20, Number(address >> 32n), true);
      v.setUint32(off + 24, toUint(base.data, 32, 'data', op), true);
      if (base.devid !== undefined) {
        v.setUint32(off + 8, 1, true); // KVM_MSI_VALID_DEVID
        v.setUint32(off + 28, toUint(base.devid, 32, 'devid', op), true);
      }
    } else {
      throw invalidArgument(op, `entries[${i}].type must be 'irqchip' or 'msi'`);
    }
  });
  return bytes;
}

/** KVM_SET_GSI_ROUTING: replaces the whole GSI routing table. */
export function setGsiRouting(vm: Vm, entries: readonly GsiRoute[]): void {
  const op = 'KVM_SET_GSI_ROUTING';
  const bytes = encodeRoutes(entries, op);
  callVm(vm, op, { entries: bytes.length / ROUTE_SIZE }, (fd) => native.vmSetGsiRouting(fd, bytes));
}

/** KVM_SIGNAL_MSI: injects one MSI. Returns > 0 if delivered, 0 if the guest blocked it. */
export function signalMsi(vm: Vm, msi: Msi): number {
  const op = 'KVM_SIGNAL_MSI';
  const o = readOptions(msi, op, ['address', 'data', 'devid'], ['address', 'data'], 'msi');
  const address = toU64Arg(o.address, 'address', op);
  const bytes = new Uint8Array(32);
  const v = view(bytes);
  v.setUint32(0, Number(address & 0xffff_ffffn), true);
  v.setUint32(4, Number(address >> 32n), true);
  v.setUint32(8, toUint(o.data, 32, 'data', op), true);
  if (o.devid !== undefined) {
    v.setUint32(12, 1, true);
    v.setUint32(16, toUint(o.devid, 32, 'devid', op), true);
  }
  return callVm(vm, op, { address, data: o.data }, (fd) => native.vmSignalMsi(fd, bytes));
}
