/**
 * Loads the compiled addon and declares its exact shape. This is the only file
 * that knows the addon's functions; everything else goes through `native`.
 *
 * The addon is thin by design: one function per syscall, plain values in and
 * out, failures thrown as Error objects carrying `errno`, `syscall` and `op`
 * (see errors.ts for the conversion to KvmError).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Result of a syscall run on a worker thread: errno is data, not an exception. */
export interface NativeResult {
  rc: number;
  errno: number;
}

/** One KVM_PRE_FAULT_MEMORY call: the range as the kernel left it. */
export interface NativePreFaultResult extends NativeResult {
  gpa: bigint;
  size: bigint;
}

/** A host mapping owned by the addon; its ArrayBuffer is detached on unmap. */
export interface NativeMapping {
  readonly address: bigint;
  readonly length: bigint;
  readonly mapped: boolean;
  /** The whole mapping, or [offset, offset+length); refuses views over maxLength (default 4 GiB). */
  buffer(offset?: bigint, length?: bigint, maxLength?: bigint): ArrayBuffer;
  unmap(): void;
  madvise(offset: bigint, length: bigint, advice: number): void;
  madviseAsync(offset: bigint, length: bigint, advice: number): Promise<NativeResult>;
  mprotect(offset: bigint, length: bigint, prot: number): void;
  /** Faults in each page of [offset, offset+length) by a read (or an atomic add of 0); the range must be accessible. */
  touch(offset: bigint, length: bigint, write: boolean): void;
}

/** The addon's exports. */
export interface NativeAddon {
  open(path: string): number;
  close(fd: number): void;
  getApiVersion(fd: number): number;
  checkExtension(fd: number, cap: number): number;
  getVcpuMmapSize(fd: number): number;
  getSupportedCpuid(fd: number, maxEntries: number): Uint8Array;
  createVm(fd: number, type: number): number;

  setUserMemoryRegion(vmFd: number, slot: number, flags: number, gpa: bigint, size: bigint, uaddr: bigint): void;
  setUserMemoryRegion2(
    vmFd: number, slot: number, flags: number, gpa: bigint, size: bigint, uaddr: bigint,
    guestMemfdOffset: bigint, guestMemfd: number,
  ): void;
  setMemoryAttributes(vmFd: number, address: bigint, size: bigint, attributes: bigint, flags: bigint): void;
  createGuestMemfd(vmFd: number, size: bigint, flags: bigint): number;
  createVcpu(vmFd: number, id: number): number;
  getStatsFd(fd: number): number;

  setCpuid2(vcpuFd: number, entries: Uint8Array): void;
  getRegs(vcpuFd: number): Uint8Array;
  setRegs(vcpuFd: number, bytes: Uint8Array): void;
  getSregs(vcpuFd: number): Uint8Array;
  setSregs(vcpuFd: number, bytes: Uint8Array): void;
  /**
   * KVM_RUN on the calling thread; returns errno (0 on success; EBUSY while
   * another thread runs the vcpu; ESHUTDOWN once its owner closed it). Off the
   * main thread, re-entered transparently after a watchdog kick unless the
   * worker is terminating.
   */
  run(vcpuFd: number, key?: number): number;
  /** KVM_PRE_FAULT_MEMORY; rc -1 with errno EBUSY while the vcpu runs elsewhere. */
  preFaultMemory(vcpuFd: number, gpa: bigint, size: bigint, flags: bigint, key?: number): NativePreFaultResult;
  preFaultMemoryAsync(vcpuFd: number, gpa: bigint, size: bigint, flags: bigint, key?: number): Promise<NativePreFaultResult>;
  /** Signals every thread in KVM_RUN/KVM_PRE_FAULT_MEMORY on this vcpu (by fd, or by key). */
  interrupt(vcpuFd: number, key?: number): boolean;

  /** A new process-wide vcpu key, owned by the caller. */
  vcpuKey(): number;
  /** Drops a reference to a key; the owner's release closes the vcpu for every thread. */
  vcpuRelease(key: number, owner: boolean): void;
  /** A close-on-exec duplicate of the vcpu fd for a worker handle. */
  vcpuDupForHandle(key: number, vcpuFd: number): number;
  /** Takes a handle's fd over (once). */
  vcpuAdopt(key: number, vcpuFd: number): void;
  /** Runs one short vcpu ioctl in fn unless the vcpu (by key, or fd) is in a long one (errno EBUSY, op ''). */
  vcpuExclusive<T>(key: number, fn: () => T, vcpuFd?: number): T;
  /** The main thread is exiting: kick every vcpu, let none enter KVM_RUN again. */
  processExiting(): void;
  /** A dedicated native thread for KVM_RUN (runAsync). */
  runThread(): object;
  /** KVM_RUN on that thread; resolves with errno. */
  runOn(thread: object, vcpuFd: number, key: number): Promise<number>;
  /** Stops and joins the thread. */
  endThread(thread: object): void;

  Mapping: new (fd: number, length: bigint, prot: number, flags: number, offset: bigint, alignment: bigint) => NativeMapping;
  pageSize: number;

  fallocate(fd: number, mode: number, offset: bigint, length: bigint): void;
  fallocateAsync(fd: number, mode: number, offset: bigint, length: bigint): Promise<NativeResult>;
  fstat(fd: number): { size: bigint; blksize: number; blocks: bigint; ino: bigint; mode: number };
  pread(fd: number, length: number, offset: bigint): Uint8Array;
  memfdCreate(name: string): number;

  // ---- VMM ioctls (vm_irq.cc, vm_state.cc, vcpu_state.cc, eventfd.cc, device.cc).
  // Struct ioctls take and give the struct's bytes; set-style ones return the ioctl's rc.
  vmCreateIrqchip(vmFd: number): number;
  vmGetIrqchip(vmFd: number, bytes: Uint8Array): Uint8Array;
  vmSetIrqchip(vmFd: number, bytes: Uint8Array): number;
  vmCreatePit2(vmFd: number, bytes: Uint8Array): number;
  vmGetPit2(vmFd: number): Uint8Array;
  vmSetPit2(vmFd: number, bytes: Uint8Array): number;
  vmIrqLine(vmFd: number, bytes: Uint8Array): number;
  vmIrqLineStatus(vmFd: number, bytes: Uint8Array): Uint8Array;
  vmSignalMsi(vmFd: number, bytes: Uint8Array): number;
  /** KVM_X86_SET_MSR_FILTER: flags, [flags, base, nmsrs] per range, the ranges' bitmaps end to end. */
  vmSetMsrFilter(vmFd: number, flags: number, ranges: Uint32Array, bitmaps: Uint8Array): void;
  vmIrqfd(vmFd: number, bytes: Uint8Array): number;
  vmIoeventfd(vmFd: number, bytes: Uint8Array): number;
  vmSetGsiRouting(vmFd: number, entries: Uint8Array): void;
  vmSetTssAddr(vmFd: number, gpa: number): number;
  vmSetIdentityMapAddr(vmFd: number, bytes: Uint8Array): number;
  /** KVM_ENABLE_CAP on a VM or vcpu fd. */
  enableCap(fd: number, bytes: Uint8Array): number;
  vmGetClock(vmFd: number): Uint8Array;
  vmSetClock(vmFd: number, bytes: Uint8Array): number;
  vmRegisterCoalescedMmio(vmFd: number, bytes: Uint8Array): number;
  vmUnregisterCoalescedMmio(vmFd: number, bytes: Uint8Array): number;
  vmSetBootCpuId(vmFd: number, id: number): number;
  vmGetDirtyLog(vmFd: number, slot: number, bitmap: Uint8Array, pages: number): void;
  vmClearDirtyLog(vmFd: number, slot: number, firstPage: bigint, numPages: number, bitmap: Uint8Array): void;
  vcpuGetFpu(vcpuFd: number): Uint8Array;
  vcpuSetFpu(vcpuFd: number, bytes: Uint8Array): number;
  vcpuGetLapic(vcpuFd: number): Uint8Array;
  vcpuSetLapic(vcpuFd: number, bytes: Uint8Array): number;
  vcpuGetXsave(vcpuFd: number): Uint8Array;
  vcpuGetXsave2(vcpuFd: number, size: number): Uint8Array;
  vcpuSetXsave(vcpuFd: number, bytes: Uint8Array): void;
  vcpuGetXcrs(vcpuFd: number): Uint8Array;
  vcpuSetXcrs(vcpuFd: number, bytes: Uint8Array): number;
  vcpuGetVcpuEvents(vcpuFd: number): Uint8Array;
  vcpuSetVcpuEvents(vcpuFd: number, bytes: Uint8Array): number;
  vcpuGetDebugRegs(vcpuFd: number): Uint8Array;
  vcpuSetDebugRegs(vcpuFd: number, bytes: Uint8Array): number;
  vcpuGetMpState(vcpuFd: number): Uint8Array;
  vcpuSetMpState(vcpuFd: number, bytes: Uint8Array): number;
  vcpuSetGuestDebug(vcpuFd: number, bytes: Uint8Array): number;
  vcpuTranslate(vcpuFd: number, bytes: Uint8Array): Uint8Array;
  vcpuInterrupt(vcpuFd: number, bytes: Uint8Array): number;
  vcpuNmi(vcpuFd: number): number;
  vcpuSmi(vcpuFd: number): number;
  vcpuGetTscKhz(vcpuFd: number): number;
  vcpuSetTscKhz(vcpuFd: number, khz: number): number;
  vcpuKvmclockCtrl(vcpuFd: number): number;
  vcpuGetCpuid2(vcpuFd: number, maxEntries: number): Uint8Array;
  vcpuGetNestedState(vcpuFd: number, size: number): Uint8Array;
  vcpuSetNestedState(vcpuFd: number, bytes: Uint8Array): void;
  /** KVM_GET_MSRS / KVM_SET_MSRS on entries (n x 16 bytes, values written back); returns the kernel's count. */
  getMsrs(fd: number, entries: Uint8Array): number;
  setMsrs(fd: number, entries: Uint8Array): number;
  msrIndexList(kvmFd: number): Uint32Array;
  msrFeatureIndexList(kvmFd: number): Uint32Array;
  getEmulatedCpuid(kvmFd: number, maxEntries: number): Uint8Array;
  eventfdCreate(initval: number, semaphore: boolean): number;
  eventfdWrite(fd: number, value: bigint): void;
  /** The counter, or null when it is 0. */
  eventfdRead(fd: number): bigint | null;
  /** One uv_poll wait per fd at a time; cancel() rejects it with ECANCELED. */
  eventfdWait(fd: number): { promise: Promise<bigint>; cancel(): boolean };
  createDevice(vmFd: number, type: number, flags: number): number;
  setDeviceAttr(fd: number, group: number, attr: bigint, value: Uint8Array | null): void;
  getDeviceAttr(fd: number, group: number, attr: bigint, out: Uint8Array): void;
  hasDeviceAttr(fd: number, group: number, attr: bigint): boolean;
  /** offsetof() of kvm_run fields in the distro's <linux/kvm.h>, by lib/exit-layout.ts's names (tests). */
  kvmRunLayout(): Record<string, number>;
  /** KVM_RESET_DIRTY_RINGS (dirty_ring.cc); returns the entries KVM rearmed. */
  vmResetDirtyRings(vmFd: number): number;
  /** The kvm_dirty_gfn layout and ring constants of dirty_ring.cc. */
  dirtyRingLayout(): DirtyRingLayout;
}

/** struct kvm_dirty_gfn and the dirty ring's constants, as native/dirty_ring.cc defines them. */
export interface DirtyRingLayout {
  entryBytes: number;
  flagsOffset: number;
  slotOffset: number;
  offsetOffset: number;
  flagDirty: number;
  flagReset: number;
  /** Pages into the vcpu fd where the ring is mapped (KVM_DIRTY_LOG_PAGE_OFFSET). */
  pageOffset: number;
  capDirtyLogRing: number;
  capDirtyLogRingAcqRel: number;
}

const require = createRequire(import.meta.url);
// Both lib/native.ts (tests) and dist/native.js (package) sit one level
// below the package root, where node-gyp-build looks for build/ and prebuilds/.
const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const load = require('node-gyp-build') as (dir: string) => unknown;

/** The loaded addon. */
export const native = load(packageRoot) as NativeAddon;

/** Where the addon was loaded from (a prebuild or a local build). */
export function addonPath(): string {
  const resolve = (load as unknown as { resolve?: (dir: string) => string }).resolve;
  return resolve ? resolve(packageRoot) : packageRoot;
}
