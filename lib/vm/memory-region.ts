/**
 * Memslot requests (struct kvm_userspace_memory_region and its REGION2 form):
 * reading Vm.setMemoryRegion()'s options once into plain values, choosing
 * the ioctl, and issuing it. The slot table itself (overlap and bounds
 * checks) is lib/memslots.ts; the Vm keeps the table and its invalidations.
 */
import { callNative, invalidArgument } from '../errors.js';
import { GuestMemfd } from '../guest-memfd.js';
import type { U64Like } from '../int.js';
import type { KvmCapabilities } from '../kvm.js';
import { HostMemory } from '../memory.js';
import { slotFlags, type SlotLimits, type SlotRecord } from '../memslots.js';
import { native } from '../native.js';
import { opt, readOptions } from '../options.js';

/** The ioctl named in errors of Vm.setMemoryRegion() and friends. */
export const REGION_OP = 'KVM_SET_USER_MEMORY_REGION2';

const REGION_OPTIONS = {
  slot: opt.u32,
  guestPhysAddr: opt.u64,
  size: opt.u64,
  memory: opt.brand(HostMemory.isHostMemory, 'HostMemory'),
  memoryOffset: opt.u64,
  userspaceAddr: opt.u64,
  guestMemfd: opt.brand(GuestMemfd.isGuestMemfd, 'GuestMemfd'),
  guestMemfdOffset: opt.u64,
  readonly: opt.boolean,
  logDirtyPages: opt.boolean,
  api: opt.oneOf('auto', 'v1', 'v2'),
} as const;

/** Options of Vm.setMemoryRegion(). */
export interface SetMemoryRegionOptions {
  /** Slot id: bits 0-15 the slot, bits 16 and up the address space. */
  slot: number;
  /** Guest-physical address where the slot starts; 4 KiB aligned. */
  guestPhysAddr: U64Like;
  /** Default: the memory's size minus memoryOffset. */
  size?: U64Like;
  /** Host memory backing the slot (anonymous, or a guest_memfd mapping). */
  memory?: HostMemory;
  /** Offset of the slot inside `memory`. */
  memoryOffset?: U64Like;
  /** A raw host address instead of `memory` (not validated beyond alignment). */
  userspaceAddr?: U64Like;
  /** Bind the slot to a guest_memfd (KVM_MEM_GUEST_MEMFD) for private memory. */
  guestMemfd?: GuestMemfd;
  /** Offset of the slot inside `guestMemfd`; default 0. 4 KiB aligned; offset + size within the file. */
  guestMemfdOffset?: U64Like;
  /** KVM_MEM_READONLY: guest writes exit as MMIO (needs readonlyMem). */
  readonly?: boolean;
  /** KVM_MEM_LOG_DIRTY_PAGES: track pages the guest writes. */
  logDirtyPages?: boolean;
  /** Which ioctl: 'auto' (REGION2 when available), 'v1' or 'v2'. */
  api?: 'auto' | 'v1' | 'v2';
}

/** A setMemoryRegion() request as plain values, read once from the caller's options. */
export interface RegionRequest {
  slot: number;
  guestPhysAddr: bigint;
  size: bigint;
  userspaceAddr: bigint;
  memory: HostMemory | undefined;
  memoryOffset: bigint;
  guestMemfd: GuestMemfd | undefined;
  guestMemfdOffset: bigint;
  readonly: boolean;
  logDirtyPages: boolean;
  api: 'auto' | 'v1' | 'v2';
}

/**
 * Reads every option once into plain values before anything is checked or
 * done: a getter or Proxy of the caller's runs here or never. Only what needs
 * no VM state is checked here (the VM's open check comes next).
 */
export function readRegionOptions(options: SetMemoryRegionOptions): RegionRequest {
  const op = REGION_OP;
  const o = readOptions(options, op, REGION_OPTIONS, { required: true });
  if (o.slot === undefined) throw invalidArgument(op, 'slot is required');
  if (o.guestPhysAddr === undefined) throw invalidArgument(op, 'guestPhysAddr is required');
  const slot = o.slot;
  const memory = o.memory;
  if (memory && o.userspaceAddr !== undefined) throw invalidArgument(op, 'give memory or userspaceAddr, not both');
  const memoryOffset = o.memoryOffset ?? 0n;
  let size: bigint;
  if (o.size !== undefined) size = o.size;
  else if (memory) size = memory.size > memoryOffset ? memory.size - memoryOffset : 0n;
  else throw invalidArgument(op, 'size is required without memory', { slot });
  return {
    slot,
    guestPhysAddr: o.guestPhysAddr,
    size,
    userspaceAddr: memory ? memory.address + memoryOffset : o.userspaceAddr ?? 0n,
    memory,
    memoryOffset,
    guestMemfd: o.guestMemfd,
    guestMemfdOffset: o.guestMemfdOffset ?? 0n,
    readonly: o.readonly === true,
    logDirtyPages: o.logDirtyPages === true,
    api: o.api ?? 'auto',
  };
}

/**
 * The slot record a request makes on this VM: its slot id must name one of
 * the VM's address spaces, and the ioctl version is chosen (REGION2 for a
 * guest_memfd slot, or with 'auto' where the host has it).
 */
export function regionRecord(r: RegionRequest, addressSpaces: number, caps: Pick<KvmCapabilities, 'userMemory2'>): SlotRecord {
  const op = REGION_OP;
  const { slot, guestMemfd: gmem } = r;
  if (slot >>> 16 >= addressSpaces) {
    throw invalidArgument(op, `slot id 0x${slot.toString(16)} names address space ${slot >>> 16} (bits 16+ of the id), but this VM has ${addressSpaces === 1 ? 'only address space 0' : `address spaces 0-${addressSpaces - 1}`} (KVM_CAP_MULTI_ADDRESS_SPACE)`, { slot });
  }
  const useV2 = r.api === 'v2' || (r.api === 'auto' && (gmem !== undefined || caps.userMemory2));
  if (gmem && !useV2) throw invalidArgument('KVM_SET_USER_MEMORY_REGION', 'a guest_memfd slot needs KVM_SET_USER_MEMORY_REGION2', { slot });
  if (useV2 && !caps.userMemory2) throw invalidArgument(op, 'KVM_SET_USER_MEMORY_REGION2 is not supported by this host', { slot }, 'EOPNOTSUPP');
  return {
    slot,
    guestPhysAddr: r.guestPhysAddr,
    size: r.size,
    userspaceAddr: r.userspaceAddr,
    memory: r.memory,
    memoryOffset: r.memoryOffset,
    guestMemfd: gmem,
    guestMemfdOffset: r.guestMemfdOffset,
    readonly: r.readonly,
    logDirtyPages: r.logDirtyPages,
    flags: slotFlags({ readonly: r.readonly, logDirtyPages: r.logDirtyPages, guestMemfd: gmem }),
    api: useV2 ? 'v2' : 'v1',
  };
}

/** The options that put slot `old` at `guestPhysAddr` with the same size and backing. */
export function moveOptions(old: SlotRecord, guestPhysAddr: bigint): SetMemoryRegionOptions {
  return {
    slot: old.slot,
    guestPhysAddr,
    size: old.size,
    ...(old.memory ? { memory: old.memory, memoryOffset: old.memoryOffset } : { userspaceAddr: old.userspaceAddr }),
    ...(old.guestMemfd ? { guestMemfd: old.guestMemfd, guestMemfdOffset: old.guestMemfdOffset } : {}),
    readonly: old.readonly,
    logDirtyPages: old.logDirtyPages,
    api: old.api,
  };
}

/** Issues the record's ioctl (v1 or REGION2) with `size` (0 deletes the slot). */
export function setRegion(vmFd: number, r: SlotRecord, size: bigint): void {
  const args = { slot: r.slot, guestPhysAddr: r.guestPhysAddr, size, flags: r.flags, guestMemfdOffset: r.guestMemfd ? r.guestMemfdOffset : undefined };
  if (r.api === 'v1') {
    callNative('KVM_SET_USER_MEMORY_REGION', args, () =>
      native.setUserMemoryRegion(vmFd, r.slot, r.flags, r.guestPhysAddr, size, r.userspaceAddr),
    );
  } else {
    const gmemFd = r.guestMemfd ? r.guestMemfd.fd : 0;
    callNative('KVM_SET_USER_MEMORY_REGION2', args, () =>
      native.setUserMemoryRegion2(vmFd, r.slot, r.flags, r.guestPhysAddr, size, r.userspaceAddr, r.guestMemfdOffset, gmemFd),
    );
  }
}

/**
 * The guest ranges of the slots bound to `gmem` that a hole punched at
 * [offset, offset + length) of the file reaches.
 */
export function* punchedRanges(slots: Iterable<SlotRecord>, gmem: GuestMemfd, offset: bigint, length: bigint): Generator<{ gpa: bigint; size: bigint; slot: number }> {
  for (const s of slots) {
    if (s.guestMemfd !== gmem) continue;
    const start = offset > s.guestMemfdOffset ? offset : s.guestMemfdOffset;
    const end = offset + length < s.guestMemfdOffset + s.size ? offset + length : s.guestMemfdOffset + s.size;
    if (end > start) yield { gpa: s.guestPhysAddr + (start - s.guestMemfdOffset), size: end - start, slot: s.slot };
  }
}

/** The capabilities the slot table's checks depend on. */
export function slotLimits(caps: Pick<KvmCapabilities, 'nrMemslots' | 'readonlyMem' | 'guestMemfd'>): SlotLimits {
  return { nrMemslots: caps.nrMemslots, readonlyMem: caps.readonlyMem, guestMemfd: caps.guestMemfd };
}

/**
 * Deletes every slot backed by `memory` (it is being closed), trying them
 * all; the first failure is thrown once all were tried.
 */
export function deleteSlotsBackedBy(slots: Iterable<SlotRecord>, memory: HostMemory, deleteSlot: (slot: number) => void): void {
  let failure: unknown;
  for (const s of [...slots]) {
    if (s.memory !== memory) continue;
    try {
      deleteSlot(s.slot);
    } catch (e) {
      failure ??= e;
    }
  }
  if (failure !== undefined) throw failure;
}
