/**
 * The in-kernel PIT (8254): KVM_CREATE_PIT2 and the kvm_pit_state2 codec behind
 * KVM_GET_PIT2 / KVM_SET_PIT2.
 */
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readArray, readOptions, toBool, toI64, toUint, view } from './struct.js';

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
