/**
 * The VM's own record of its memslots, and the checks made before the
 * kernel sees a change. The kernel does not let userspace read memslots back,
 * so this table is the single source of truth for the software MMU and for
 * consistent errors across kernel versions (overlaps are always EEXIST, a
 * guest_memfd binding past the file's end is always EINVAL).
 */
import { MemFlag } from './constants.js';
import { invalidArgument } from './errors.js';
import { PAGE_SIZE, rangesOverlap, U64_LIMIT } from './int.js';
import type { GuestMemfd } from './guest-memfd.js';
import type { HostMemory } from './memory.js';

/** A memslot as node-kvm knows it. Immutable: a change makes a new record. */
export interface MemorySlot {
  /** Slot id (address space in bits 16 and up, as in the kernel ABI). */
  readonly slot: number;
  /** Guest-physical address where the slot starts. */
  readonly guestPhysAddr: bigint;
  /** Size of the slot in bytes. */
  readonly size: bigint;
  /** Host address the slot maps (userspace_addr); 0n when none. */
  readonly userspaceAddr: bigint;
  /** The HostMemory behind userspaceAddr, when it came from node-kvm. */
  readonly memory: HostMemory | undefined;
  /** Offset of the slot inside `memory`. */
  readonly memoryOffset: bigint;
  /** The guest_memfd bound to the slot (KVM_MEM_GUEST_MEMFD), if any. */
  readonly guestMemfd: GuestMemfd | undefined;
  /** Offset of the slot inside `guestMemfd`. */
  readonly guestMemfdOffset: bigint;
  /** KVM_MEM_READONLY: guest writes exit as MMIO. */
  readonly readonly: boolean;
  /** KVM_MEM_LOG_DIRTY_PAGES: dirty logging is on. */
  readonly logDirtyPages: boolean;
  /** Raw KVM_MEM_* flags. */
  readonly flags: number;
}

/** Capabilities the checks depend on. */
export interface SlotLimits {
  nrMemslots: number;
  readonlyMem: boolean;
  guestMemfd: boolean;
}

const OP = 'KVM_SET_USER_MEMORY_REGION2';

/** A memslot plus the ioctl version that created it. */
export type SlotRecord = MemorySlot & { readonly api: 'v1' | 'v2' };

/**
 * The memslot table: by id, and per address space sorted by guest address so
 * overlap checks are O(log n) (KVM allows over 32,000 slots).
 */
export class SlotTable {
  readonly #byId = new Map<number, SlotRecord>();
  readonly #sorted = new Map<number, SlotRecord[]>();

  get size(): number {
    return this.#byId.size;
  }

  get(slot: number): SlotRecord | undefined {
    return this.#byId.get(slot);
  }

  values(): IterableIterator<SlotRecord> {
    return this.#byId.values();
  }

  set(record: SlotRecord): void {
    this.delete(record.slot);
    this.#byId.set(record.slot, record);
    const list = this.#list(record.slot >> 16);
    list.splice(bound(list, record.guestPhysAddr, false), 0, record);
  }

  delete(slot: number): void {
    const old = this.#byId.get(slot);
    if (!old) return;
    this.#byId.delete(slot);
    const list = this.#list(slot >> 16);
    list.splice(list.indexOf(old, bound(list, old.guestPhysAddr, false)), 1);
  }

  clear(): void {
    this.#byId.clear();
    this.#sorted.clear();
  }

  /** The slot containing gpa in an address space. */
  find(gpa: bigint, addressSpace = 0): SlotRecord | undefined {
    const list = this.#list(addressSpace);
    const i = bound(list, gpa, true) - 1;
    const s = list[i];
    return s && gpa < s.guestPhysAddr + s.size ? s : undefined;
  }

  /** The first slot other than `except` that overlaps [gpa, gpa+size). */
  overlapping(gpa: bigint, size: bigint, addressSpace: number, except: number): SlotRecord | undefined {
    const list = this.#list(addressSpace);
    // Slots are disjoint, so only the predecessor of gpa and the slots that
    // start inside the range can overlap it.
    for (let i = Math.max(0, bound(list, gpa, true) - 1); i < list.length; i++) {
      const s = list[i]!;
      if (s.guestPhysAddr >= gpa + size) break;
      if (s.slot !== except && rangesOverlap(s.guestPhysAddr, s.size, gpa, size)) return s;
    }
    return undefined;
  }

  #list(addressSpace: number): SlotRecord[] {
    let list = this.#sorted.get(addressSpace);
    if (!list) this.#sorted.set(addressSpace, (list = []));
    return list;
  }
}

/**
 * Index of the first slot starting at or after gpa (`inclusive` false), or
 * after gpa (`inclusive` true): a binary search over the sorted list.
 */
function bound(list: readonly SlotRecord[], gpa: bigint, inclusive: boolean): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const start = list[mid]!.guestPhysAddr;
    if (start < gpa || (inclusive && start === gpa)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Checks a new or changed slot against the table and returns nothing, or
 * throws the KvmError the kernel should give (and sometimes, on older
 * kernels, does not).
 */
export function checkSlot(slots: SlotTable, next: MemorySlot, limits: SlotLimits, vmId: symbol): void {
  const args = { slot: next.slot, guestPhysAddr: next.guestPhysAddr, size: next.size };
  const fail = (message: string, code = 'EINVAL', extra: Record<string, unknown> = {}): never => {
    throw invalidArgument(OP, message, { ...args, ...extra }, code);
  };
  if ((next.slot & 0xffff) >= limits.nrMemslots) fail(`slot id must be below KVM_CAP_NR_MEMSLOTS (${limits.nrMemslots})`);
  if (next.guestPhysAddr % PAGE_SIZE !== 0n) fail('guestPhysAddr must be page aligned');
  if (next.size === 0n) fail('size must be non-zero (use deleteMemoryRegion to delete a slot)');
  if (next.size % PAGE_SIZE !== 0n) fail('size must be a multiple of 4096');
  if (next.guestPhysAddr + next.size > U64_LIMIT) fail('guestPhysAddr + size overflows');
  if (next.userspaceAddr % PAGE_SIZE !== 0n) fail('host address must be page aligned', 'EINVAL', { userspaceAddr: next.userspaceAddr });
  if (next.readonly && !limits.readonlyMem) fail('read-only memslots are not supported (KVM_CAP_READONLY_MEM is 0)');
  if (next.memory) {
    if (next.memory.closed) fail('memory is closed', 'ECLOSED');
    if (next.memoryOffset % PAGE_SIZE !== 0n || next.memoryOffset + next.size > next.memory.size) {
      fail('the slot must lie inside its memory', 'EINVAL', { memoryOffset: next.memoryOffset, memorySize: next.memory.size });
    }
  }
  const gmem = next.guestMemfd;
  if (gmem) {
    if (!limits.guestMemfd) fail('guest_memfd is not supported by this host', 'EINVAL');
    if (gmem.closed) fail('guest_memfd is closed', 'EBADF');
    if (gmem.vmId !== vmId) fail('the guest_memfd belongs to another VM');
    if (next.readonly || next.logDirtyPages) fail('a guest_memfd slot cannot be read-only or log dirty pages');
    const off = next.guestMemfdOffset;
    const extra = { guestMemfdOffset: off, guestMemfdSize: gmem.size };
    if (off % PAGE_SIZE !== 0n) fail('guestMemfdOffset must be page aligned', 'EINVAL', extra);
    if (off + next.size >= 1n << 63n || off + next.size > gmem.size) fail('guestMemfdOffset + size must lie inside the guest_memfd', 'EINVAL', extra);
  }

  const old = slots.get(next.slot);
  if (old) checkChange(old, next, fail);

  const other = slots.overlapping(next.guestPhysAddr, next.size, next.slot >> 16, next.slot);
  if (other) {
    fail(`guest range overlaps slot ${other.slot}`, 'EEXIST', { otherSlot: other.slot, otherGuestPhysAddr: other.guestPhysAddr, otherSize: other.size });
  }
  if (gmem) {
    // Bindings of one guest_memfd are few; a linear scan over them is fine.
    for (const s of slots.values()) {
      if (s.slot !== next.slot && s.guestMemfd === gmem && rangesOverlap(s.guestMemfdOffset, s.size, next.guestMemfdOffset, next.size)) {
        fail(`guest_memfd range overlaps the binding of slot ${s.slot}`, 'EEXIST', { otherSlot: s.slot, otherGuestMemfdOffset: s.guestMemfdOffset });
      }
    }
  }
}

/** The kernel allows an existing slot only to move (same size) or change LOG_DIRTY_PAGES. */
function checkChange(old: MemorySlot, next: MemorySlot, fail: (message: string) => never): void {
  if (old.size !== next.size) fail(`slot ${old.slot} exists with another size; delete it first`);
  if (old.userspaceAddr !== next.userspaceAddr) fail(`slot ${old.slot} exists with another host address; delete it first`);
  if (old.readonly !== next.readonly) fail(`slot ${old.slot}: READONLY cannot change`);
  if (old.guestMemfd !== next.guestMemfd || old.guestMemfdOffset !== next.guestMemfdOffset) fail(`slot ${old.slot}: its guest_memfd binding cannot change`);
  if (old.guestMemfd && (old.guestPhysAddr !== next.guestPhysAddr || old.flags !== next.flags)) {
    fail(`slot ${old.slot} is bound to a guest_memfd: it cannot be moved or change flags`);
  }
}

/** KVM_MEM_* flags for a slot. */
export function slotFlags(s: { readonly: boolean; logDirtyPages: boolean; guestMemfd: unknown }): number {
  return (s.logDirtyPages ? MemFlag.LOG_DIRTY_PAGES : 0) | (s.readonly ? MemFlag.READONLY : 0) | (s.guestMemfd ? MemFlag.GUEST_MEMFD : 0);
}
