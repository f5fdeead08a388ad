/**
 * Vm: one KVM virtual machine. Owns its memslot table (the kernel's state,
 * mirrored so it can be validated and walked), its memory attributes, and
 * the guest_memfds, memory and vcpus created through it.
 */
import { capNumber, type CapName, type GuestMemfdFlag, type VmType } from './constants.js';
import { PrivateRanges, type GpaRange } from './attributes.js';
import { callNative, invalidArgument } from './errors.js';
import { GuestMemfd, type GuestMemfdOptions } from './guest-memfd.js';
import { toU32, toU64, type U64Like } from './int.js';
import { opt, readOptions } from './options.js';
import type { Kvm, KvmCapabilities } from './kvm.js';
import { checkSlot, SlotTable, type MemorySlot } from './memslots.js';
import { HostMemory, type AllocateMemoryOptions } from './memory.js';
import { native } from './native.js';
import { Resource } from './resource.js';
import { StatsReader, type StatDescriptor, type VmStats } from './stats.js';
import { Vcpu } from './vcpu.js';
import type { SoftMmu } from './soft-mmu/index.js';
import * as vmm from './vm/index.js';
import type { Device, DeviceType } from './device.js';
import { probeVmCapabilities, vcpuIdLimit } from './vm/capabilities.js';
import { closeVmChildren } from './vm/close-order.js';
import { GuestRangeInvalidations, type InvalidationListener } from './vm/invalidation.js';
import { checkGuestMemfdRequest, GUEST_MEMFD_OP, readGuestMemfdOptions } from './vm/guest-memfd-request.js';
import { ATTRIBUTES_OP, readAttributeOptions, setMemoryAttributes, type MemoryAttributesOptions } from './vm/memory-attributes.js';
import {
  deleteSlotsBackedBy, moveOptions, punchedRanges, readRegionOptions, REGION_OP, regionRecord, setRegion, slotLimits, type SetMemoryRegionOptions,
} from './vm/memory-region.js';

export type { SetMemoryRegionOptions } from './vm/memory-region.js';
export type { MemoryAttributesOptions } from './vm/memory-attributes.js';
export type { InvalidationListener, InvalidationReason } from './vm/invalidation.js';

const ALLOCATE_OPTIONS = { hugePages: opt.boolean, alignment: opt.u64, noReserve: opt.boolean } as const;

/** Options of Kvm.createVm(). */
export interface VmOptions {
  /** VM type; default 'default'. */
  type?: VmType;
}

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
  readonly #invalidations = new GuestRangeInvalidations();
  /** Memory backing slots (or created here), with the function that stops watching it. */
  readonly #watched = new Map<HostMemory, () => void>();
  readonly #owned: { statsFd: number };
  #stats: StatsReader | undefined;
  /** Raw KVM_CAP_GUEST_MEMFD_FLAGS of this VM (bits node-kvm may not name yet included). */
  readonly #gmemFlags: bigint;
  #preFaultEngine: Readonly<{ engine: 'kernel' | 'software'; reason: string }> | undefined;
  #maxVcpuId: number | undefined;
  /** Memslot address spaces (1, or 2 with SMM): bits 16+ of a slot id must be below it. */
  readonly #addressSpaces: number;

  /**
   * Private, and so in the published types too: a Vm comes from
   * Kvm.createVm() or Kvm.createVmFromRawFd().
   */
  private constructor(kvm: Kvm, fd: number, type: VmType, caps: KvmCapabilities) {
    const owned = { statsFd: -1 };
    super(`Vm(fd ${fd})`, () => {
      if (owned.statsFd >= 0) native.close(owned.statsFd);
      native.close(fd);
    });
    this.kvm = kvm;
    this.type = type;
    this.#fd = fd;
    this.#owned = owned;
    const probe = probeVmCapabilities(fd, caps);
    this.#addressSpaces = probe.addressSpaces;
    this.#gmemFlags = probe.guestMemfdFlags;
    this.#caps = probe.caps;
  }

  /** @internal Wraps a new VM fd of `kvm` (Kvm.createVm(), createVmFromRawFd()). */
  static fromFd(kvm: Kvm, fd: number, type: VmType, caps: KvmCapabilities): Vm {
    return new Vm(kvm, fd, type, caps);
  }

  /** Whether `value` is a real Vm (a brand check on its private fd: a Proxy of one, or an object with Vm's prototype, is not). */
  static isVm(value: unknown): value is Vm {
    return typeof value === 'object' && value !== null && #fd in value;
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
    const n = typeof cap === 'string' ? capNumber(cap, 'KVM_CHECK_EXTENSION') : toU32(cap, 'cap', 'KVM_CHECK_EXTENSION');
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
    const request = readGuestMemfdOptions(options);
    const { size, flags: mask } = request;
    this.assertOpen(GUEST_MEMFD_OP);
    checkGuestMemfdRequest(request, this.#caps.guestMemfd, this.#gmemFlags);
    const fd = callNative(GUEST_MEMFD_OP, { size, flags: mask }, () => native.createGuestMemfd(this.#fd, size, mask));
    const gmem = GuestMemfd.fromFd(fd, this.id, size, mask);
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
    const request = readRegionOptions(options);
    this.assertOpen(REGION_OP);
    const record = regionRecord(request, this.#addressSpaces, this.#caps);
    const { slot, guestPhysAddr, size, memory } = record;
    checkSlot(this.#slots, record, slotLimits(this.#caps), this.id);
    setRegion(this.#fd, record, size);
    const old = this.#slots.get(slot);
    this.#slots.set(record);
    this.#invalidations.bump();
    if (memory) this.#watch(memory);
    if (old && old.guestPhysAddr !== guestPhysAddr) this.#invalidations.invalidate(old.guestPhysAddr, old.size, 'slot-move', slot);
    return record;
  }

  /** Deletes a memslot (size 0). Throws 'EINVAL' (as the kernel does) for a slot the VM does not have. */
  deleteMemoryRegion(slot: number): void {
    const op = REGION_OP;
    const id = toU32(slot, 'slot', op);
    this.assertOpen(op);
    const old = this.#slots.get(id);
    if (!old) throw invalidArgument(op, `slot ${id} does not exist`, { slot: id });
    // Deletion needs only the slot id and size 0; the guest_memfd may already be closed.
    setRegion(this.#fd, { ...old, flags: 0, userspaceAddr: 0n, guestMemfd: undefined, guestMemfdOffset: 0n }, 0n);
    this.#slots.delete(id);
    this.#invalidations.invalidate(old.guestPhysAddr, old.size, 'slot-delete', id);
  }

  /** Moves a memslot to another guest-physical address (same size and backing). */
  moveMemoryRegion(slot: number, guestPhysAddr: U64Like): MemorySlot {
    const op = REGION_OP;
    const id = toU32(slot, 'slot', op);
    const gpa = toU64(guestPhysAddr, 'guestPhysAddr', op);
    this.assertOpen(op);
    const old = this.#slots.get(id);
    if (!old) throw invalidArgument(op, `slot ${id} does not exist`, { slot: id });
    return this.setMemoryRegion(moveOptions(old, gpa));
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
    const request = readAttributeOptions(options);
    this.assertOpen(ATTRIBUTES_OP);
    setMemoryAttributes(this.#fd, this.#caps, request);
    const { guestPhysAddr: gpa, size } = request;
    this.#attributes.set(gpa, gpa + size, request.private);
    this.#invalidations.invalidate(gpa, size, 'attributes', undefined);
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
    this.#assertNoVcpu(op, vcpuId);
    const maxId = this.#vcpuIdLimit();
    if (vcpuId >= maxId) throw invalidArgument(op, `vcpu id ${vcpuId} is past the limit: ids must be below KVM_CAP_MAX_VCPU_ID (${maxId})`, { id: vcpuId, maxVcpuId: maxId });
    return this.#addVcpu(vcpuId, callNative(op, { id: vcpuId }, () => native.createVcpu(this.#fd, vcpuId)));
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
    this.#assertNoVcpu(op, vcpuId);
    callNative('KVM_GET_REGS', { fd: n, what: 'vcpu fd check' }, () => native.getRegs(n));
    return this.#addVcpu(vcpuId, n);
  }

  /** EEXIST while vcpu `id` exists and is open. */
  #assertNoVcpu(op: string, id: number): void {
    if (this.#vcpus.get(id)?.closed === false) throw invalidArgument(op, `vcpu ${id} already exists`, { id }, 'EEXIST');
  }

  /** Wraps a new vcpu fd (its kvm_run mapped) as vcpu `id`, closed with the VM. */
  #addVcpu(id: number, fd: number): Vcpu {
    const vcpu = Vcpu.wrap(this, id, fd, this.#caps.vcpuMmapSize);
    this.#vcpus.set(id, vcpu);
    this.#children.add(vcpu);
    return vcpu;
  }

  /** KVM_CAP_MAX_VCPU_ID of this VM (KVM_CAP_MAX_VCPUS where the kernel does not say), asked once. */
  #vcpuIdLimit(): number {
    this.#maxVcpuId ??= vcpuIdLimit(this.#fd, this.#caps);
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
  /** KVM_X86_SET_MSR_FILTER: which guest MSR accesses KVM handles; no options removes the filter. */
  setMsrFilter(options?: vmm.MsrFilterOptions): void { vmm.setMsrFilter(this, options); }
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
    return this.#invalidations.softMmu;
  }

  /** @internal Subscribe to invalidations of guest ranges (software MMU). */
  onInvalidate(listener: InvalidationListener): () => void {
    return this.#invalidations.subscribe(listener);
  }

  /**
   * Closes the VM and everything created through it: vcpus (a running one is
   * kicked and released when its KVM_RUN returns), guest_memfds and memory
   * from allocateMemory() (released once no vcpu is still running).
   */
  protected override onClose(): void {
    // Vcpus first, memory once none runs (lib/vm/close-order.ts).
    const errors = closeVmChildren([...this.#vcpus.values()], [...this.#children].filter((c) => !(c instanceof Vcpu)));
    this.#children.clear();
    for (const unwatch of this.#watched.values()) unwatch();
    this.#watched.clear();
    this.#vcpus.clear();
    this.#slots.clear();
    this.#invalidations.close();
    if (errors.length) throw errors[0];
  }

  /**
   * Bumped by every memslot, attribute or backing change, so work that
   * spans a wait (a software pre-fault step populating on a worker thread)
   * can tell the memory it planned for changed meanwhile.
   */
  get memslotGeneration(): number {
    return this.#invalidations.generation;
  }

  #invalidateGuestMemfd(gmem: GuestMemfd, offset: bigint, length: bigint): void {
    for (const r of punchedRanges(this.#slots.values(), gmem, offset, length)) this.#invalidations.invalidate(r.gpa, r.size, 'punch-hole', r.slot);
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
    deleteSlotsBackedBy(this.#slots.values(), memory, (slot) => this.deleteMemoryRegion(slot));
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
