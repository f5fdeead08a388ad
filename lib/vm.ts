/**
 * Vm: one KVM virtual machine. Owns its memslot table (the kernel's state,
 * mirrored so it can be validated and walked), its memory attributes, and
 * the guest_memfds, memory and vcpus created through it.
 */
import { MEMORY_ATTRIBUTE_PRIVATE, type CapName, type GuestMemfdFlag, type VmType, Cap } from './constants.js';
import { PrivateRanges, type GpaRange } from './attributes.js';
import { callNative, invalidArgument } from './errors.js';
import { GuestMemfd, guestMemfdFlagMask, guestMemfdFlagNames, type GuestMemfdOptions } from './guest-memfd.js';
import { describe, PAGE_SIZE, requirePageAligned, toU32, toU64, U64_LIMIT, type U64Like } from './int.js';
import { opt, readOptions } from './options.js';
import type { Kvm, KvmCapabilities } from './kvm.js';
import { checkSlot, slotFlags, SlotTable, type MemorySlot, type SlotLimits, type SlotRecord } from './memslots.js';
import { HostMemory, type AllocateMemoryOptions } from './memory.js';
import { native } from './native.js';
import { Resource } from './resource.js';
import { StatsReader, type StatDescriptor, type VmStats } from './stats.js';
import { Vcpu } from './vcpu.js';
import { SoftMmu } from './soft-mmu/index.js';
import * as vmm from './vm/index.js';
import type { Device, DeviceType } from './device.js';

/** KVM_CAP_MULTI_ADDRESS_SPACE: how many memslot address spaces (bits 16+ of a slot id) the VM has. */
const CAP_MULTI_ADDRESS_SPACE = 118;

const GUEST_MEMFD_OPTIONS = {
  size: opt.u64,
  flags: ((v, _k, op) => guestMemfdFlagMask(v as never, op)) as (v: unknown, k: string, op: string) => bigint,
} as const;
const ALLOCATE_OPTIONS = { hugePages: opt.boolean, alignment: opt.u64, noReserve: opt.boolean } as const;
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
const ATTRIBUTE_OPTIONS = { guestPhysAddr: opt.u64, size: opt.u64, private: opt.boolean } as const;

/** Options of Kvm.createVm(). */
export interface VmOptions {
  /** VM type; default 'default'. */
  type?: VmType;
}

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

/** Options of Vm.setMemoryAttributes(). */
export interface MemoryAttributesOptions {
  /** Start of the range; 4 KiB aligned. */
  guestPhysAddr: U64Like;
  /** Size of the range in bytes; a non-zero multiple of 4 KiB. */
  size: U64Like;
  /** Make the range private (KVM_MEMORY_ATTRIBUTE_PRIVATE) or shared. */
  private: boolean;
}

/** Why mappings of a guest range became invalid (for the software MMU). */
export type InvalidationReason = 'slot-delete' | 'slot-move' | 'attributes' | 'punch-hole';

/** A listener told about invalidated guest ranges. */
export type InvalidationListener = (gpa: bigint, size: bigint, reason: InvalidationReason, slot: number | undefined) => void;

/** A KVM virtual machine. */
export class Vm extends Resource {
  /** The Kvm it was created from. */
  readonly kvm: Kvm;
  /** The VM type it was created with. */
  readonly type: VmType;
  /** Identity used to tell whether a guest_memfd belongs to this VM. */
  readonly id: symbol = Symbol('Vm');
  readonly #fd: number;
  readonly #caps: KvmCapabilities;
  readonly #slots = new SlotTable();
  readonly #attributes = new PrivateRanges();
  readonly #children = new Set<Resource>();
  readonly #vcpus = new Map<number, Vcpu>();
  readonly #invalidationListeners = new Set<InvalidationListener>();
  /** Memory backing slots (or created here), with the function that stops watching it. */
  readonly #watched = new Map<HostMemory, () => void>();
  readonly #owned: { statsFd: number };
  #stats: StatsReader | undefined;
  /** Raw KVM_CAP_GUEST_MEMFD_FLAGS of this VM (bits node-kvm may not name yet included). */
  readonly #gmemFlags: bigint;
  #softMmu: SoftMmu | undefined;
  #memslotGeneration = 0;
  #preFaultEngine: Readonly<{ engine: 'kernel' | 'software'; reason: string }> | undefined;
  #maxVcpuId: number | undefined;
  /** Memslot address spaces (1, or 2 with SMM): bits 16+ of a slot id must be below it. */
  readonly #addressSpaces: number;

  /** @internal Use Kvm.createVm(). */
  constructor(kvm: Kvm, fd: number, type: VmType, caps: KvmCapabilities) {
    const owned = { statsFd: -1 };
    super(`Vm(fd ${fd})`, () => {
      if (owned.statsFd >= 0) native.close(owned.statsFd);
      native.close(fd);
    });
    this.kvm = kvm;
    this.type = type;
    this.#fd = fd;
    this.#owned = owned;
    // Some answers depend on the VM type and must come from the VM fd: 6.12
    // says GUEST_MEMFD = 1 on /dev/kvm but 0 on a default VM.
    const vmCap = (n: number): number => {
      try {
        return native.checkExtension(fd, n);
      } catch {
        return 0;
      }
    };
    this.#addressSpaces = Math.max(1, vmCap(CAP_MULTI_ADDRESS_SPACE));
    const guestMemfd = vmCap(Cap.GUEST_MEMFD) > 0;
    const gmemFlags = guestMemfd ? BigInt(vmCap(Cap.GUEST_MEMFD_FLAGS)) : 0n;
    this.#gmemFlags = gmemFlags;
    this.#caps = {
      ...caps,
      guestMemfd,
      guestMemfdFlags: guestMemfdFlagNames(gmemFlags),
      memoryAttributes: (BigInt(vmCap(Cap.MEMORY_ATTRIBUTES)) & MEMORY_ATTRIBUTE_PRIVATE) !== 0n ? ['private'] : [],
    };
  }

  /** The pre-fault engine remembered for this VM (see Vcpu.preFaultMemory()), once one was decided. */
  get preFaultEngine(): Readonly<{ engine: 'kernel' | 'software'; reason: string }> | undefined {
    return this.#preFaultEngine;
  }

  /** @internal Remembers the pre-fault engine decided for this VM (prefault/engine-choice.ts). */
  rememberPreFaultEngine(decision: { engine: 'kernel' | 'software'; reason: string }): void {
    this.#preFaultEngine = Object.freeze({ engine: decision.engine, reason: decision.reason });
  }

  /** The VM fd; throws ECLOSED after close(). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /**
   * The host's capabilities as seen when the VM was created, with the
   * VM-type-dependent ones (guestMemfd, guestMemfdFlags, memoryAttributes)
   * answered by this VM's fd.
   */
  get capabilities(): KvmCapabilities {
    return this.#caps;
  }

  /** KVM_CHECK_EXTENSION on the VM fd (answers for this VM's type). */
  checkExtension(cap: number | CapName): number {
    const n = typeof cap === 'string' ? (Object.hasOwn(Cap, cap) ? Cap[cap] : undefined) : toU32(cap, 'cap', 'KVM_CHECK_EXTENSION');
    if (n === undefined) throw invalidArgument('KVM_CHECK_EXTENSION', `unknown capability name ${describe(cap)}`);
    return callNative('KVM_CHECK_EXTENSION', { cap: n }, () => native.checkExtension(this.fd, n));
  }

  /** guest_memfd flags this VM accepts (KVM_CAP_GUEST_MEMFD_FLAGS on the VM fd). */
  get guestMemfdFlags(): readonly GuestMemfdFlag[] {
    return this.#caps.guestMemfdFlags;
  }

  /**
   * KVM_CREATE_GUEST_MEMFD. Size and flags are checked first: a flag this VM
   * does not support fails with the list of supported ones.
   */
  createGuestMemfd(options: GuestMemfdOptions): GuestMemfd {
    const op = 'KVM_CREATE_GUEST_MEMFD';
    const o = readOptions(options, op, GUEST_MEMFD_OPTIONS, { required: true });
    if (o.size === undefined) throw invalidArgument(op, 'size is required');
    const size = o.size;
    const mask = o.flags ?? 0n;
    this.assertOpen(op);
    if (!this.#caps.guestMemfd) throw invalidArgument(op, 'guest_memfd is not supported by this host (KVM_CAP_GUEST_MEMFD is 0)', {}, 'EOPNOTSUPP');
    if (size === 0n || size % PAGE_SIZE !== 0n) throw invalidArgument(op, 'size must be a non-zero multiple of 4096', { size });
    if (size >= 1n << 63n) throw invalidArgument(op, 'size is too large', { size });
    const supported = this.#gmemFlags;
    if ((mask & ~supported) !== 0n) {
      const names = guestMemfdFlagNames(supported);
      throw invalidArgument(op, `unsupported guest_memfd flags 0x${(mask & ~supported).toString(16)}; supported: ${names.length ? names.join(', ') : 'none'}`, {
        flags: mask,
        supported,
      });
    }
    if ((mask & 2n) !== 0n && (mask & 1n) === 0n) {
      throw invalidArgument(op, "'init-shared' requires 'mmap'", { flags: mask });
    }
    const fd = callNative(op, { size, flags: mask }, () => native.createGuestMemfd(this.#fd, size, mask));
    const gmem = new GuestMemfd(fd, this.id, size, mask);
    this.#adopt(gmem);
    gmem.onPunchHole((offset, length) => this.#invalidateGuestMemfd(gmem, offset, length));
    return gmem;
  }

  /**
   * Anonymous host memory for guest use, closed with the VM. Aligned to
   * 2 MiB when at least that large, so KVM can use huge mappings.
   */
  allocateMemory(size: U64Like, options: AllocateMemoryOptions = {}): HostMemory {
    // Read the options once, before the open check: a getter cannot close the VM in between.
    const o = readOptions(options, 'mmap', ALLOCATE_OPTIONS);
    const bytes = toU64(size, 'size', 'mmap');
    this.assertOpen('mmap');
    const memory = HostMemory.allocate(bytes, stripUndefined(o));
    this.#adopt(memory);
    return memory;
  }

  /** Registers a child the VM closes with itself (and watches, if it is memory). */
  #adopt(child: Resource): void {
    this.#children.add(child);
    if (child instanceof HostMemory) this.#watch(child);
  }

  /** Listens for the memory's close, once per memory. */
  #watch(memory: HostMemory): void {
    if (!this.#watched.has(memory)) this.#watched.set(memory, memory.onClosed((m) => this.#memoryClosed(m)));
  }

  /**
   * Creates or changes a memslot (KVM_SET_USER_MEMORY_REGION2, or the v1
   * ioctl when REGION2 is unavailable). Checked first against the VM's slot
   * table: alignment, overlap (EEXIST), guest_memfd bounds and ownership.
   * Closing the `memory` later deletes the slot first, so the guest can never
   * reach a host range that has been unmapped (and perhaps reused).
   */
  setMemoryRegion(options: SetMemoryRegionOptions): MemorySlot {
    const op = 'KVM_SET_USER_MEMORY_REGION2';
    // Every option is read once into plain values before anything is checked
    // or done: a getter or Proxy of the caller's runs here or never.
    const options_ = readOptions(options, op, REGION_OPTIONS, { required: true });
    if (options_.slot === undefined) throw invalidArgument(op, 'slot is required');
    if (options_.guestPhysAddr === undefined) throw invalidArgument(op, 'guestPhysAddr is required');
    const slot = options_.slot;
    const guestPhysAddr = options_.guestPhysAddr;
    const memory = options_.memory;
    const gmem = options_.guestMemfd;
    if (memory && options_.userspaceAddr !== undefined) throw invalidArgument(op, 'give memory or userspaceAddr, not both');
    const memoryOffset = options_.memoryOffset ?? 0n;
    let size: bigint;
    if (options_.size !== undefined) size = options_.size;
    else if (memory) size = memory.size > memoryOffset ? memory.size - memoryOffset : 0n;
    else throw invalidArgument(op, 'size is required without memory', { slot });
    const userspaceAddr = memory ? memory.address + memoryOffset : options_.userspaceAddr ?? 0n;
    const readonly = options_.readonly === true;
    const logDirtyPages = options_.logDirtyPages === true;
    const api = options_.api ?? 'auto';
    this.assertOpen(op);
    if (slot >>> 16 >= this.#addressSpaces) {
      throw invalidArgument(op, `slot id 0x${slot.toString(16)} names address space ${slot >>> 16} (bits 16+ of the id), but this VM has ${this.#addressSpaces === 1 ? 'only address space 0' : `address spaces 0-${this.#addressSpaces - 1}`} (KVM_CAP_MULTI_ADDRESS_SPACE)`, { slot });
    }
    const useV2 = api === 'v2' || (api === 'auto' && (gmem !== undefined || this.#caps.userMemory2));
    if (gmem && !useV2) throw invalidArgument('KVM_SET_USER_MEMORY_REGION', 'a guest_memfd slot needs KVM_SET_USER_MEMORY_REGION2', { slot });
    if (useV2 && !this.#caps.userMemory2) throw invalidArgument(op, 'KVM_SET_USER_MEMORY_REGION2 is not supported by this host', { slot }, 'EOPNOTSUPP');

    const record: SlotRecord = {
      slot,
      guestPhysAddr,
      size,
      userspaceAddr,
      memory,
      memoryOffset,
      guestMemfd: gmem,
      guestMemfdOffset: options_.guestMemfdOffset ?? 0n,
      readonly,
      logDirtyPages,
      flags: slotFlags({ readonly, logDirtyPages, guestMemfd: gmem }),
      api: useV2 ? 'v2' : 'v1',
    };
    checkSlot(this.#slots, record, this.#limits(), this.id);
    this.#setRegion(record, size);
    const old = this.#slots.get(slot);
    this.#slots.set(record);
    this.#memslotGeneration++;
    if (memory) this.#watch(memory);
    if (old && old.guestPhysAddr !== guestPhysAddr) this.#invalidate(old.guestPhysAddr, old.size, 'slot-move', slot);
    return record;
  }

  /** Deletes a memslot (size 0). Throws 'EINVAL' (as the kernel does) for a slot the VM does not have. */
  deleteMemoryRegion(slot: number): void {
    const op = 'KVM_SET_USER_MEMORY_REGION2';
    const id = toU32(slot, 'slot', op);
    this.assertOpen(op);
    const old = this.#slots.get(id);
    if (!old) throw invalidArgument(op, `slot ${id} does not exist`, { slot: id });
    // Deletion needs only the slot id and size 0; the guest_memfd may already be closed.
    this.#setRegion({ ...old, flags: 0, userspaceAddr: 0n, guestMemfd: undefined, guestMemfdOffset: 0n }, 0n);
    this.#slots.delete(id);
    this.#invalidate(old.guestPhysAddr, old.size, 'slot-delete', id);
  }

  /** Moves a memslot to another guest-physical address (same size and backing). */
  moveMemoryRegion(slot: number, guestPhysAddr: U64Like): MemorySlot {
    const op = 'KVM_SET_USER_MEMORY_REGION2';
    const id = toU32(slot, 'slot', op);
    const gpa = toU64(guestPhysAddr, 'guestPhysAddr', op);
    this.assertOpen(op);
    const old = this.#slots.get(id);
    if (!old) throw invalidArgument(op, `slot ${id} does not exist`, { slot: id });
    return this.setMemoryRegion({
      slot: old.slot,
      guestPhysAddr: gpa,
      size: old.size,
      ...(old.memory ? { memory: old.memory, memoryOffset: old.memoryOffset } : { userspaceAddr: old.userspaceAddr }),
      ...(old.guestMemfd ? { guestMemfd: old.guestMemfd, guestMemfdOffset: old.guestMemfdOffset } : {}),
      readonly: old.readonly,
      logDirtyPages: old.logDirtyPages,
      api: old.api,
    });
  }

  /** The memslots as node-kvm knows them, by slot id. */
  memorySlots(): MemorySlot[] {
    return [...this.#slots.values()].sort((a, b) => a.slot - b.slot);
  }

  /** The memslot containing gpa (address space 0), if any. */
  slotAt(gpa: U64Like): MemorySlot | undefined {
    return this.#slots.find(toU64(gpa, 'gpa', 'slotAt'));
  }

  /**
   * KVM_SET_MEMORY_ATTRIBUTES: marks a range private or shared, and records
   * it so the software MMU knows where to populate.
   */
  setMemoryAttributes(options: MemoryAttributesOptions): void {
    const op = 'KVM_SET_MEMORY_ATTRIBUTES';
    const o = readOptions(options, op, ATTRIBUTE_OPTIONS, { required: true });
    const gpa = toU64(o.guestPhysAddr, 'guestPhysAddr', op);
    const size = toU64(o.size, 'size', op);
    const isPrivate = o.private === true;
    this.assertOpen(op);
    const args = { guestPhysAddr: gpa, size, private: isPrivate };
    requirePageAligned(gpa, 'guestPhysAddr', op, args);
    requirePageAligned(size, 'size', op, args);
    if (size === 0n || gpa + size > U64_LIMIT) throw invalidArgument(op, 'size must be non-zero and gpa + size must not overflow', args);
    // Answered by the VM fd: private memory depends on the VM type (sw-protected, snp, tdx).
    if (!this.#caps.memoryAttributes.includes('private')) {
      throw invalidArgument(op, 'private memory attributes are not supported by this host/VM type (KVM_CAP_MEMORY_ATTRIBUTES lacks PRIVATE)', args, 'EOPNOTSUPP');
    }
    callNative(op, args, () => native.setMemoryAttributes(this.#fd, gpa, size, isPrivate ? MEMORY_ATTRIBUTE_PRIVATE : 0n, 0n));
    this.#attributes.set(gpa, gpa + size, isPrivate);
    this.#invalidate(gpa, size, 'attributes', undefined);
  }

  /** 'private', 'shared' or 'mixed' for a guest range, per the attributes set. */
  memoryAttributesOf(gpa: U64Like, size: U64Like): 'private' | 'shared' | 'mixed' {
    const start = toU64(gpa, 'gpa', 'memoryAttributesOf');
    return this.#attributes.classify(start, start + toU64(size, 'size', 'memoryAttributesOf'));
  }

  /** The private ranges recorded by setMemoryAttributes(). */
  privateRanges(): GpaRange[] {
    return this.#attributes.list();
  }

  /** @internal Attribute runs for the software MMU. */
  get attributeRanges(): PrivateRanges {
    return this.#attributes;
  }

  /** KVM_CREATE_VCPU plus the kvm_run mapping. */
  createVcpu(id = 0): Vcpu {
    const op = 'KVM_CREATE_VCPU';
    const vcpuId = toU32(id, 'id', op);
    this.assertOpen(op);
    if (this.#vcpus.has(vcpuId) && !this.#vcpus.get(vcpuId)!.closed) {
      throw invalidArgument(op, `vcpu ${vcpuId} already exists`, { id: vcpuId }, 'EEXIST');
    }
    const maxId = this.#vcpuIdLimit();
    if (vcpuId >= maxId) throw invalidArgument(op, `vcpu id ${vcpuId} is past the limit: ids must be below KVM_CAP_MAX_VCPU_ID (${maxId})`, { id: vcpuId, maxVcpuId: maxId });
    const fd = callNative(op, { id: vcpuId }, () => native.createVcpu(this.#fd, vcpuId));
    const vcpu = Vcpu.wrap(this, vcpuId, fd, this.#caps.vcpuMmapSize);
    this.#vcpus.set(vcpuId, vcpu);
    this.#children.add(vcpu);
    return vcpu;
  }

  /**
   * Takes ownership of a vcpu fd made elsewhere for this VM (checked with
   * KVM_GET_REGS), maps its kvm_run and registers it as vcpu `id`.
   */
  createVcpuFromRawFd(fd: number, id: number): Vcpu {
    const op = 'createVcpuFromRawFd';
    this.assertOpen(op);
    const n = toU32(fd, 'fd', op);
    const vcpuId = toU32(id, 'id', op);
    if (this.#vcpus.has(vcpuId) && !this.#vcpus.get(vcpuId)!.closed) throw invalidArgument(op, `vcpu ${vcpuId} already exists`, { id: vcpuId }, 'EEXIST');
    callNative('KVM_GET_REGS', { fd: n, what: 'vcpu fd check' }, () => native.getRegs(n));
    const vcpu = Vcpu.wrap(this, vcpuId, n, this.#caps.vcpuMmapSize);
    this.#vcpus.set(vcpuId, vcpu);
    this.#children.add(vcpu);
    return vcpu;
  }

  /** KVM_CAP_MAX_VCPU_ID of this VM (KVM_CAP_MAX_VCPUS where the kernel does not say). */
  #vcpuIdLimit(): number {
    if (this.#maxVcpuId === undefined) {
      let n = 0;
      try {
        n = native.checkExtension(this.#fd, Cap.MAX_VCPU_ID);
      } catch {
        // older kernels: fall back below
      }
      this.#maxVcpuId = n > 0 ? n : this.#caps.maxVcpus > 0 ? this.#caps.maxVcpus : 2 ** 32;
    }
    return this.#maxVcpuId;
  }

  /** Vcpus created and not closed. */
  vcpus(): Vcpu[] {
    return [...this.#vcpus.values()].filter((v) => !v.closed);
  }

  // ---- VMM ioctls (bodies in lib/vm/*) ----
  /** KVM_SET_TSS_ADDR. */
  setTssAddr(gpa: U64Like): void { vmm.setTssAddr(this, gpa); }
  /** KVM_SET_IDENTITY_MAP_ADDR. */
  setIdentityMapAddr(gpa: U64Like): void { vmm.setIdentityMapAddr(this, gpa); }
  /** KVM_CREATE_IRQCHIP: in-kernel PICs, IOAPIC and a LAPIC per vcpu (before creating vcpus). */
  createIrqchip(): void { vmm.createIrqchip(this); }
  /** KVM_GET_IRQCHIP. */
  getIrqchip(chip: vmm.IrqchipId): vmm.IrqchipState { return vmm.getIrqchip(this, chip); }
  /** KVM_SET_IRQCHIP. */
  setIrqchip(state: vmm.IrqchipState): void { vmm.setIrqchip(this, state); }
  /** KVM_CREATE_PIT2. */
  createPit2(options: vmm.CreatePit2Options = {}): void { vmm.createPit2(this, options); }
  /** KVM_GET_PIT2. */
  getPit2(): vmm.PitState { return vmm.getPit2(this); }
  /** KVM_SET_PIT2. */
  setPit2(state: vmm.PitState): void { vmm.setPit2(this, state); }
  /** KVM_IRQ_LINE: drive a GSI high or low. */
  irqLine(irq: number, level: boolean | 0 | 1): void { vmm.irqLine(this, irq, level); }
  /** KVM_IRQ_LINE_STATUS: irqLine returning the delivery status. */
  irqLineStatus(irq: number, level: boolean | 0 | 1): number { return vmm.irqLineStatus(this, irq, level); }
  /** KVM_SET_GSI_ROUTING. */
  setGsiRouting(entries: readonly vmm.GsiRoute[]): void { vmm.setGsiRouting(this, entries); }
  /** KVM_SIGNAL_MSI. */
  signalMsi(msi: vmm.Msi): number { return vmm.signalMsi(this, msi); }
  /** KVM_IRQFD: the EventFd raises the GSI. */
  registerIrqfd(options: vmm.IrqfdOptions): void { vmm.registerIrqfd(this, options); }
  /** KVM_IRQFD (deassign). */
  unregisterIrqfd(options: Omit<vmm.IrqfdOptions, 'resampleEventfd'>): void { vmm.unregisterIrqfd(this, options); }
  /** KVM_IOEVENTFD: a guest write signals the EventFd without an exit. */
  registerIoeventfd(options: vmm.IoeventfdOptions): void { vmm.registerIoeventfd(this, options); }
  /** KVM_IOEVENTFD (deassign). */
  unregisterIoeventfd(options: vmm.IoeventfdOptions): void { vmm.unregisterIoeventfd(this, options); }
  /** KVM_ENABLE_CAP on the VM. */
  enableCap(cap: number | CapName, args: readonly U64Like[] = []): void { vmm.enableCap(this, cap, args); }
  /** KVM_GET_CLOCK. */
  getClock(): vmm.ClockData { return vmm.getClock(this); }
  /** KVM_SET_CLOCK. */
  setClock(data: Partial<vmm.ClockData> & { clock: U64Like }): void { vmm.setClock(this, data); }
  /** KVM_GET_DIRTY_LOG for a logDirtyPages slot; `into` is reused as the bitmap. */
  getDirtyLog(slot: number, into?: BigUint64Array): vmm.DirtyLog { return vmm.getDirtyLog(this, slot, into); }
  /** KVM_CLEAR_DIRTY_LOG (after enableCap('MANUAL_DIRTY_LOG_PROTECT2', [...])); `bitmap` picks the pages (default all). */
  clearDirtyLog(slot: number, firstPage: U64Like, numPages: number, bitmap?: BigUint64Array): void { vmm.clearDirtyLog(this, slot, firstPage, numPages, bitmap); }
  /** KVM_CREATE_DEVICE (closed with the VM); with { test: true } only checks the type can be created. */
  createDevice(type: DeviceType | number, options?: { test?: false }): Device;
  createDevice(type: DeviceType | number, options: { test: true }): undefined;
  createDevice(type: DeviceType | number, options: vmm.CreateDeviceOptions = {}): Device | undefined { return vmm.createDevice(this, type, options); }
  /** KVM_REGISTER_COALESCED_MMIO. */
  registerCoalescedMmio(zone: vmm.CoalescedMmioZone): void { vmm.registerCoalescedMmio(this, zone); }
  /** KVM_UNREGISTER_COALESCED_MMIO. */
  unregisterCoalescedMmio(zone: vmm.CoalescedMmioZone): void { vmm.unregisterCoalescedMmio(this, zone); }
  /** KVM_SET_BOOT_CPU_ID. */
  setBootCpuId(id: number): void { vmm.setBootCpuId(this, id); }

  /** @internal The fd for an ioctl named `op` (ECLOSED after close). */
  fdFor(op: string): number {
    this.assertOpen(op);
    return this.#fd;
  }

  /** @internal Makes the VM close `child` with itself. */
  adoptChild<T extends Resource>(child: T): T {
    this.#adopt(child);
    return child;
  }

  /** Binary statistics of the VM, by name. */
  stats(): VmStats {
    return this.#statsReader().read<VmStats>();
  }

  /** Descriptors of the statistics stats() returns. */
  statsDescriptors(): readonly StatDescriptor[] {
    return this.#statsReader().descriptors;
  }

  /**
   * The software MMU's model of this VM's guest page tables: what the
   * software pre-fault engine mapped, kept consistent with slot deletes and
   * moves, attribute changes, punched holes and closed memory.
   * `vm.softMmu.lookup(gpa)` and `vm.softMmu.stats()` inspect it.
   */
  get softMmu(): SoftMmu {
    this.#softMmu ??= new SoftMmu();
    return this.#softMmu;
  }

  /** @internal Subscribe to invalidations of guest ranges (software MMU). */
  onInvalidate(listener: InvalidationListener): () => void {
    this.#invalidationListeners.add(listener);
    return () => this.#invalidationListeners.delete(listener);
  }

  /**
   * Closes the VM and everything created through it: vcpus (a running one is
   * kicked and released when its KVM_RUN returns), guest_memfds and memory
   * from allocateMemory() (released once no vcpu is still running).
   */
  protected override onClose(): void {
    const errors: unknown[] = [];
    const closeAll = (children: Resource[]): void => {
      for (const child of children) {
        try {
          child.close();
        } catch (e) {
          errors.push(e);
        }
      }
    };
    // Vcpus first: a running one is kicked out of KVM_RUN. Its memory must
    // stay mapped until it is out, or the guest's next access fails KVM_RUN
    // with EFAULT instead of the clean 'intr' exit.
    const vcpus = [...this.#vcpus.values()];
    const others = [...this.#children].filter((c) => !(c instanceof Vcpu));
    closeAll(vcpus);
    const busy = vcpus.filter((v) => v.running);
    if (busy.length === 0) closeAll(others);
    else void Promise.all(busy.map((v) => v.idle())).then(() => closeAll(others));
    this.#children.clear();
    for (const unwatch of this.#watched.values()) unwatch();
    this.#watched.clear();
    this.#vcpus.clear();
    this.#slots.clear();
    // Nothing is mapped any more: lookup() and stats() must not report the
    // memory that was just unmapped (a held vm.softMmu reference included).
    this.#softMmu?.zapAll();
    this.#memslotGeneration++;
    this.#invalidationListeners.clear();
    if (errors.length) throw errors[0];
  }

  #limits(): SlotLimits {
    return { nrMemslots: this.#caps.nrMemslots, readonlyMem: this.#caps.readonlyMem, guestMemfd: this.#caps.guestMemfd };
  }

  #setRegion(r: SlotRecord, size: bigint): void {
    const args = { slot: r.slot, guestPhysAddr: r.guestPhysAddr, size, flags: r.flags, guestMemfdOffset: r.guestMemfd ? r.guestMemfdOffset : undefined };
    if (r.api === 'v1') {
      callNative('KVM_SET_USER_MEMORY_REGION', args, () =>
        native.setUserMemoryRegion(this.#fd, r.slot, r.flags, r.guestPhysAddr, size, r.userspaceAddr),
      );
    } else {
      const gmemFd = r.guestMemfd ? r.guestMemfd.fd : 0;
      callNative('KVM_SET_USER_MEMORY_REGION2', args, () =>
        native.setUserMemoryRegion2(this.#fd, r.slot, r.flags, r.guestPhysAddr, size, r.userspaceAddr, r.guestMemfdOffset, gmemFd),
      );
    }
  }

  /**
   * Bumped by every memslot, attribute or backing change, so work that
   * spans a wait (a software pre-fault step populating on a worker thread)
   * can tell the memory it planned for changed meanwhile.
   */
  get memslotGeneration(): number {
    return this.#memslotGeneration;
  }

  #invalidate(gpa: bigint, size: bigint, reason: InvalidationReason, slot: number | undefined): void {
    this.#memslotGeneration++;
    // Like KVM's MMU notifiers: any change to what backs a range drops its mappings.
    this.#softMmu?.zapRange(gpa, size);
    for (const l of this.#invalidationListeners) l(gpa, size, reason, slot);
  }

  #invalidateGuestMemfd(gmem: GuestMemfd, offset: bigint, length: bigint): void {
    for (const s of this.#slots.values()) {
      if (s.guestMemfd !== gmem) continue;
      const start = offset > s.guestMemfdOffset ? offset : s.guestMemfdOffset;
      const end = offset + length < s.guestMemfdOffset + s.size ? offset + length : s.guestMemfdOffset + s.size;
      if (end > start) this.#invalidate(s.guestPhysAddr + (start - s.guestMemfdOffset), end - start, 'punch-hole', s.slot);
    }
  }

  /**
   * Memory behind memslots is being closed: delete those slots first. Left
   * in place, a slot would point at an unmapped range that the next mmap may
   * reuse, and the guest would read and write that unrelated memory.
   */
  #memoryClosed(memory: HostMemory): void {
    this.#children.delete(memory);
    this.#watched.delete(memory);
    if (this.closed) return;
    let failure: unknown;
    for (const s of [...this.#slots.values()]) {
      if (s.memory !== memory) continue;
      try {
        this.deleteMemoryRegion(s.slot);
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== undefined) throw failure;
  }

  #statsReader(): StatsReader {
    this.assertOpen('KVM_GET_STATS_FD');
    if (!this.#stats) {
      this.#owned.statsFd = callNative('KVM_GET_STATS_FD', {}, () => native.getStatsFd(this.#fd));
      this.#stats = new StatsReader(this.#owned.statsFd);
    }
    return this.#stats;
  }
}

/** A copy of `o` without its undefined entries (for APIs whose options are optional properties). */
function stripUndefined<T extends Record<string, unknown>>(o: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as { [K in keyof T]?: Exclude<T[K], undefined> };
}
