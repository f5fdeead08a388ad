/**
 * The interrupt family of VM ioctls: the in-kernel irqchip (two 8259 PICs
 * and an IOAPIC) and PIT, IRQ lines, GSI routing, MSIs, irqfd and ioeventfd.
 * Codecs for kvm_irqchip, kvm_pit_state2, kvm_irq_routing_entry, kvm_msi,
 * kvm_irqfd and kvm_ioeventfd, and the bodies of the Vm methods.
 */
import { invalidArgument } from '../errors.js';
import { EventFd } from '../eventfd.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readArray, readOptions, toBool, toEnum, toI64, toU64Arg, toUint, view } from './struct.js';

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

/** One PIT channel (struct kvm_pit_channel_state). */
export interface PitChannelState {
  /** count: the initial count last written (1..65536; a 0 written counts as 65536). */
  count: number;
  /** latched_count: the 16-bit count latched by a counter-latch command, returned by the next reads. */
  latchedCount: number;
  /** count_latched: nonzero while a latched count is waiting to be read (the access mode in force when it was latched). */
  countLatched: number;
  /** status_latched: a read-back command latched the status byte, returned by the next read. */
  statusLatched: number;
  /** status: the latched status byte (output pin, null count, rw mode, mode, bcd). */
  status: number;
  /** read_state: which byte the next read of the channel returns (1 LSB, 2 MSB, 3/4 first/second of a word). */
  readState: number;
  /** write_state: which byte the next write sets (as read_state). */
  writeState: number;
  /** write_latch: the LSB of a 16-bit count written while waiting for its MSB. */
  writeLatch: number;
  /** rw_mode: the access mode of the last control word: 1 LSB only, 2 MSB only, 3 LSB then MSB. */
  rwMode: number;
  /** mode: the counting mode 0-5 (Linux's periodic tick uses 2, its one-shot tick 4). */
  mode: number;
  /** bcd: 1 when the channel counts in BCD, 0 in binary. */
  bcd: number;
  /** gate: the level of the channel's GATE input (always 1 for channels 0 and 1; bit 0 of port 0x61 for channel 2). */
  gate: number;
  /** ktime (ns) when the count was loaded; signed. */
  countLoadTime: bigint;
}
/** The PIT (struct kvm_pit_state2). */
export interface PitState {
  /** kvm_pit_state2.channels: the three 8254 counters: 0 drives IRQ0 (the timer tick), 1 is the legacy DRAM refresh, 2 the PC speaker (gate from port 0x61). */
  channels: [PitChannelState, PitChannelState, PitChannelState];
  /** KVM_PIT_FLAGS_HPET_LEGACY (1) and KVM_PIT_FLAGS_SPEAKER_DATA_ON (2). */
  flags: number;
}
const PIT_U8 = ['countLatched', 'statusLatched', 'status', 'readState', 'writeState', 'writeLatch', 'rwMode', 'mode', 'bcd', 'gate'] as const;
const PIT_FIELDS = ['count', 'latchedCount', ...PIT_U8, 'countLoadTime'] as const;

function decodePit(bytes: Uint8Array): PitState {
  const v = view(bytes);
  const channel = (off: number): PitChannelState => {
    const c = { count: v.getUint32(off, true), latchedCount: v.getUint16(off + 4, true) } as PitChannelState;
    PIT_U8.forEach((f, i) => (c[f] = v.getUint8(off + 6 + i)));
    c.countLoadTime = v.getBigInt64(off + 16, true);
    return c;
  };
  return { channels: [channel(0), channel(24), channel(48)], flags: v.getUint32(72, true) };
}

function encodePit(s: PitState, op: string): Uint8Array {
  const o = readOptions(s, op, ['channels', 'flags'], ['channels'], 'state');
  const channels = readArray(o.channels, op, 'channels', 3);
  if (channels.length !== 3) throw invalidArgument(op, 'channels must have 3 entries');
  const bytes = new Uint8Array(112);
  const v = view(bytes);
  channels.forEach((ch, n) => {
    const c = readOptions(ch, op, PIT_FIELDS, PIT_FIELDS, `channels[${n}]`);
    const off = n * 24;
    v.setUint32(off, toUint(c.count, 32, 'count', op), true);
    v.setUint16(off + 4, toUint(c.latchedCount, 16, 'latchedCount', op), true);
    PIT_U8.forEach((f, i) => v.setUint8(off + 6 + i, toUint(c[f], 8, f, op)));
    v.setBigInt64(off + 16, toI64(c.countLoadTime, 'countLoadTime', op), true);
  });
  v.setUint32(72, toUint(o.flags ?? 0, 32, 'flags', op), true);
  return bytes;
}

/** Options of Vm.createPit2(). */
export interface CreatePit2Options {
  /** KVM_PIT_SPEAKER_DUMMY: emulate a dummy PC speaker port (0x61). */
  speakerDummy?: boolean;
}

/** KVM_CREATE_PIT2 (needs the in-kernel irqchip). */
export function createPit2(vm: Vm, options: CreatePit2Options = {}): void {
  const op = 'KVM_CREATE_PIT2';
  const o = readOptions(options, op, ['speakerDummy']);
  const bytes = new Uint8Array(64);
  view(bytes).setUint32(0, toBool(o.speakerDummy, 'speakerDummy', op) ? 1 : 0, true);
  callVm(vm, op, {}, (fd) => native.vmCreatePit2(fd, bytes));
}

/** KVM_GET_PIT2. */
export function getPit2(vm: Vm): PitState {
  return decodePit(callVm(vm, 'KVM_GET_PIT2', {}, (fd) => native.vmGetPit2(fd)));
}

/** KVM_SET_PIT2. */
export function setPit2(vm: Vm, state: PitState): void {
  const bytes = encodePit(state, 'KVM_SET_PIT2');
  callVm(vm, 'KVM_SET_PIT2', {}, (fd) => native.vmSetPit2(fd, bytes));
}

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
