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
