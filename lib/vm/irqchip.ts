/**
 * The in-kernel irqchip (two 8259 PICs and an IOAPIC): KVM_CREATE_IRQCHIP and
 * the kvm_irqchip codec behind KVM_GET_IRQCHIP / KVM_SET_IRQCHIP.
 */
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readArray, readOptions, toEnum, toU64Arg, toUint, view } from './struct.js';

/** The chips of the in-kernel irqchip, as KVM_GET_IRQCHIP numbers them. */
export const IRQCHIP_IDS = { 'pic-master': 0, 'pic-slave': 1, ioapic: 2 } as const;
/** One chip of the in-kernel irqchip. */
export type IrqchipId = keyof typeof IRQCHIP_IDS;

/** An 8259 PIC (struct kvm_pic_state). */
export interface PicState {
  /** last_irr: the IRR as last sampled, for edge detection (an edge-triggered line raises IRR on a 0 to 1 change). */
  lastIrr: number;
  /** irr: the interrupt request register, one bit per input line IR0-IR7 asking for service. */
  irr: number;
  /** imr: the interrupt mask register (OCW1): a set bit masks that line. */
  imr: number;
  /** isr: the in-service register: lines acknowledged (INTA) and not yet EOIed. */
  isr: number;
  /** priority_add: the line with the highest priority (rotation, OCW2), 0 after reset. */
  priorityAdd: number;
  /** irq_base: the vector of IR0 from ICW2 (a multiple of 8; Linux uses 0x30 master, 0x38 slave). */
  irqBase: number;
  /** read_reg_select: OCW3 RIS: a read of the command port gives ISR (1) or IRR (0). */
  readRegSelect: number;
  /** poll: an OCW3 poll command is pending (the next read returns the highest request). */
  poll: number;
  /** special_mask: special mask mode (OCW3 SMM) is on. */
  specialMask: number;
  /** init_state: where the ICW1-ICW4 initialization sequence is (0: done). */
  initState: number;
  /** auto_eoi: ICW4 AEOI: an interrupt is EOIed at INTA time. */
  autoEoi: number;
  /** rotate_on_auto_eoi: priorities rotate on each automatic EOI (OCW2 rotate in AEOI mode). */
  rotateOnAutoEoi: number;
  /** special_fully_nested_mode: ICW4 SFNM (the master accepts nested requests from a slave in service). */
  specialFullyNestedMode: number;
  /** init4: ICW1 IC4: the initialization sequence includes ICW4. */
  init4: number;
  /** elcr: the edge/level control register (ports 0x4d0/0x4d1): a set bit makes that line level triggered. */
  elcr: number;
  /** elcr_mask: the ELCR bits the guest may change (IRQ0-2, 8 and 13 are fixed edge on a PC). */
  elcrMask: number;
}
const PIC_FIELDS = [
  'lastIrr', 'irr', 'imr', 'isr', 'priorityAdd', 'irqBase', 'readRegSelect', 'poll',
  'specialMask', 'initState', 'autoEoi', 'rotateOnAutoEoi', 'specialFullyNestedMode', 'init4', 'elcr', 'elcrMask',
] as const satisfies readonly (keyof PicState)[];

/** The IOAPIC (struct kvm_ioapic_state); redirtbl has 24 64-bit entries. */
export interface IoapicState {
  /** kvm_ioapic_state.base_address: the guest-physical address of the IOAPIC's MMIO window (0xfec00000 by default). */
  baseAddress: bigint;
  /** kvm_ioapic_state.ioregsel: the IOREGSEL index register, the register the next IOWIN access reads or writes. */
  ioregsel: number;
  /** kvm_ioapic_state.id: the IOAPIC ID (bits 24-27 of its register 0, the ID the MP/ACPI tables give it). */
  id: number;
  /** kvm_ioapic_state.irr: one bit per pin (0..23): the pin has a pending request (a level-triggered pin keeps it while asserted). */
  irr: number;
  /** kvm_ioapic_state.redirtbl: the 24 redirection entries, one u64 per pin (vector, delivery and destination mode, polarity, remote IRR, trigger mode, mask in bit 16, destination in bits 56-63). */
  redirtbl: bigint[];
}
const IOAPIC_PINS = 24;

/** State of one chip (struct kvm_irqchip). */
export type IrqchipState = { chip: 'pic-master' | 'pic-slave'; pic: PicState } | { chip: 'ioapic'; ioapic: IoapicState };

const IRQCHIP_SIZE = 520;

function encodeIrqchip(s: IrqchipState, op: string): { bytes: Uint8Array; chip: IrqchipId } {
  const o = readOptions(s, op, ['chip', 'pic', 'ioapic'], ['chip'], 'state');
  const chip = toEnum(o.chip, IRQCHIP_IDS, 'chip', op);
  const bytes = new Uint8Array(IRQCHIP_SIZE);
  const v = view(bytes);
  v.setUint32(0, IRQCHIP_IDS[chip], true);
  if (chip === 'ioapic') {
    const io = readOptions(o.ioapic, op, ['baseAddress', 'ioregsel', 'id', 'irr', 'redirtbl'], ['baseAddress', 'ioregsel', 'id', 'irr', 'redirtbl'], 'ioapic');
    v.setBigUint64(8, toU64Arg(io.baseAddress, 'baseAddress', op), true);
    v.setUint32(16, toUint(io.ioregsel, 32, 'ioregsel', op), true);
    v.setUint32(20, toUint(io.id, 32, 'id', op), true);
    v.setUint32(24, toUint(io.irr, 32, 'irr', op), true);
    const table = readArray(io.redirtbl, op, 'redirtbl', IOAPIC_PINS);
    if (table.length !== IOAPIC_PINS) throw invalidArgument(op, `redirtbl must have ${IOAPIC_PINS} entries`);
    table.forEach((e, i) => v.setBigUint64(32 + i * 8, toU64Arg(e, `redirtbl[${i}]`, op), true));
  } else {
    const pic = readOptions(o.pic, op, PIC_FIELDS, PIC_FIELDS, 'pic');
    PIC_FIELDS.forEach((f, i) => v.setUint8(8 + i, toUint(pic[f], 8, f, op)));
  }
  return { bytes, chip };
}

function decodeIrqchip(bytes: Uint8Array): IrqchipState {
  const v = view(bytes);
  const id = v.getUint32(0, true);
  if (id === IRQCHIP_IDS.ioapic) {
    return {
      chip: 'ioapic',
      ioapic: {
        baseAddress: v.getBigUint64(8, true),
        ioregsel: v.getUint32(16, true),
        id: v.getUint32(20, true),
        irr: v.getUint32(24, true),
        redirtbl: Array.from({ length: IOAPIC_PINS }, (_, i) => v.getBigUint64(32 + i * 8, true)),
      },
    };
  }
  const pic = {} as PicState;
  PIC_FIELDS.forEach((f, i) => (pic[f] = v.getUint8(8 + i)));
  return { chip: id === 0 ? 'pic-master' : 'pic-slave', pic };
}

/** KVM_CREATE_IRQCHIP. */
export function createIrqchip(vm: Vm): void {
  callVm(vm, 'KVM_CREATE_IRQCHIP', {}, (fd) => native.vmCreateIrqchip(fd));
}

/** KVM_GET_IRQCHIP for one chip. */
export function getIrqchip(vm: Vm, chip: IrqchipId): IrqchipState {
  const op = 'KVM_GET_IRQCHIP';
  const id = toEnum(chip, IRQCHIP_IDS, 'chip', op);
  const req = new Uint8Array(IRQCHIP_SIZE);
  view(req).setUint32(0, IRQCHIP_IDS[id], true);
  return decodeIrqchip(callVm(vm, op, { chip: id }, (fd) => native.vmGetIrqchip(fd, req)));
}

/** KVM_SET_IRQCHIP. */
export function setIrqchip(vm: Vm, state: IrqchipState): void {
  const op = 'KVM_SET_IRQCHIP';
  const { bytes, chip } = encodeIrqchip(state, op);
  callVm(vm, op, { chip }, (fd) => native.vmSetIrqchip(fd, bytes));
}
