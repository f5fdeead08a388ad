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
  /** KVM_RUN; returns errno (0 on success). */
  run(vcpuFd: number): number;
  runAsync(vcpuFd: number): Promise<number>;
  preFaultMemory(vcpuFd: number, gpa: bigint, size: bigint, flags: bigint): NativePreFaultResult;
  preFaultMemoryAsync(vcpuFd: number, gpa: bigint, size: bigint, flags: bigint): Promise<NativePreFaultResult>;
  /** Signals the thread blocked in KVM_RUN/KVM_PRE_FAULT_MEMORY on this fd. */
  interrupt(vcpuFd: number): boolean;

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
