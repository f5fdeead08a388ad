/**
 * Kvm: the /dev/kvm system fd. Capabilities, supported CPUID, VM creation.
 */
import { capNumber, GUEST_MEMFD_FLAGS, VM_TYPES, type CapName, type GuestMemfdFlag, type VmType } from './constants.js';
import { decodeCpuid, type CpuidEntry } from './cpuid.js';
import { callNative, errnoCode, errnoError, invalidArgument, KvmError, toKvmError } from './errors.js';
import { describe, toU32 } from './int.js';
import { native } from './native.js';
import { opt, readOptions } from './options.js';
import { Resource } from './resource.js';
import { Vm, type VmOptions } from './vm.js';
import * as msrs from './vcpu/msrs.js';
import { createVmFromRawFd } from './vm/adopt.js';

/** Options for Kvm.open(). */
export interface KvmOpenOptions {
  /** Device path; default '/dev/kvm'. */
  path?: string;
}

/** What this host's KVM supports, by name. */
export interface KvmCapabilities {
  /** KVM_GET_API_VERSION (12 on every kernel since 2.6.22). */
  apiVersion: number;
  /** KVM_CAP_USER_MEMORY: KVM_SET_USER_MEMORY_REGION exists. */
  userMemory: boolean;
  /** KVM_SET_USER_MEMORY_REGION2 exists. */
  userMemory2: boolean;
  /** KVM_CAP_READONLY_MEM: read-only memslots (KVM_MEM_READONLY). */
  readonlyMem: boolean;
  /** KVM_CAP_SYNC_MMU: host page changes (madvise, munmap) reach the guest's mappings. */
  syncMmu: boolean;
  /** KVM_CAP_IMMEDIATE_EXIT: kvm_run.immediate_exit, which vcpu.kick() relies on. */
  immediateExit: boolean;
  /** KVM_CAP_BINARY_STATS_FD: stats() of VMs and vcpus. */
  binaryStatsFd: boolean;
  /** KVM_CAP_MEMORY_FAULT_INFO: KVM_RUN reports unresolved faults as 'memory-fault' exits. */
  memoryFaultInfo: boolean;
  /** KVM_CAP_GUEST_MEMFD: Vm.createGuestMemfd() (system-wide answer; a VM type may differ). */
  guestMemfd: boolean;
  /** guest_memfd flags accepted by this kernel (system-wide value of KVM_CAP_GUEST_MEMFD_FLAGS). */
  guestMemfdFlags: GuestMemfdFlag[];
  /**
   * KVM_CAP_PRE_FAULT_MEMORY is reported. Not proof that the ioctl works
   * (capability 236 collides with a downstream kernel's own); the pre-fault
   * engine settles it with a one-page trial.
   */
  preFaultMemory: boolean;
  /** VM types Kvm.createVm() accepts (KVM_CAP_VM_TYPES; ['default'] where the capability is missing). */
  vmTypes: VmType[];
  /** Memory attributes supported on the default VM type. */
  memoryAttributes: 'private'[];
  /** KVM_CAP_NR_MEMSLOTS: memslots per address space. */
  nrMemslots: number;
  /** KVM_CAP_NR_VCPUS: the recommended maximum number of vcpus. */
  nrVcpus: number;
  /** KVM_CAP_MAX_VCPUS: the hard maximum number of vcpus per VM. */
  maxVcpus: number;
  /** KVM_GET_VCPU_MMAP_SIZE: bytes of each vcpu's kvm_run mapping. */
  vcpuMmapSize: number;
}

const CREATE_VM_EINTR_RETRIES = 16;

/** An open /dev/kvm. */
export class Kvm extends Resource {
  readonly #fd: number;
  /** The device path it was opened from ('/dev/kvm'). */
  readonly path: string;
  #vcpuMmapSize: number | undefined;

  private constructor(fd: number, path: string) {
    super(`Kvm(${path})`, () => native.close(fd));
    this.#fd = fd;
    this.path = path;
  }

  /**
   * Opens /dev/kvm (or `path`). Needs read and write access: root, or
   * membership of the group owning the device (usually 'kvm').
   */
  static open(options: KvmOpenOptions = {}): Kvm {
    const path = readOptions(options, 'open', { path: opt.string }).path ?? '/dev/kvm';
    // The kernel would stop at a NUL and open a different path than asked.
    if (path.includes('\0')) throw invalidArgument('open', 'path must not contain NUL characters', { path: path.replace(/\0/g, '\\0') });
    let fd: number;
    try {
      fd = native.open(path);
    } catch (e) {
      const errno = (e as { errno?: number }).errno;
      if (typeof errno !== 'number') throw e;
      throw errnoError(errno, 'open', { path }, 'open', openHint(errnoCode(errno), path));
    }
    const kvm = new Kvm(fd, path);
    let version: number;
    try {
      version = kvm.apiVersion;
    } catch (e) {
      // Not a KVM device (ENOTTY from /dev/null, a regular file...): do not leak the fd.
      kvm.close();
      const k = toKvmError(e, 'KVM_GET_API_VERSION', { path });
      throw new KvmError(`${path} is not a KVM device: KVM_GET_API_VERSION failed with ${k.code} (expected /dev/kvm or another KVM character device)`, {
        code: k.code,
        errno: k.errno,
        ioctl: 'KVM_GET_API_VERSION',
        args: { path },
        cause: e,
      });
    }
    if (version !== 12) {
      kvm.close();
      throw new KvmError(`KVM_GET_API_VERSION returned ${version}, node-kvm needs 12`, { code: 'ENOTSUP', ioctl: 'KVM_GET_API_VERSION', args: { version } });
    }
    return kvm;
  }

  /** The system fd; throws ECLOSED after close(). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /** KVM_GET_API_VERSION (always 12 on any supported kernel). */
  get apiVersion(): number {
    return callNative('KVM_GET_API_VERSION', {}, () => native.getApiVersion(this.fd));
  }

  /** KVM_CHECK_EXTENSION on the system fd: 0 when absent, else a cap-specific value. */
  checkExtension(cap: number | CapName): number {
    const n = typeof cap === 'string' ? capNumber(cap, 'KVM_CHECK_EXTENSION') : toU32(cap, 'cap', 'KVM_CHECK_EXTENSION');
    this.assertOpen('KVM_CHECK_EXTENSION');
    return callNative('KVM_CHECK_EXTENSION', { cap: n }, () => native.checkExtension(this.fd, n));
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes of the kvm_run mapping. */
  get vcpuMmapSize(): number {
    this.#vcpuMmapSize ??= callNative('KVM_GET_VCPU_MMAP_SIZE', {}, () => native.getVcpuMmapSize(this.fd));
    return this.#vcpuMmapSize;
  }

  /** Everything node-kvm uses, decoded by name. */
  capabilities(): KvmCapabilities {
    const has = (c: CapName): number => this.checkExtension(c);
    const gmemFlags = BigInt(has('GUEST_MEMFD_FLAGS'));
    const vmTypeBits = has('VM_TYPES');
    const vmTypes = (Object.keys(VM_TYPES) as VmType[]).filter((t) => t === 'default' || (vmTypeBits & (1 << VM_TYPES[t])) !== 0);
    const attributes = BigInt(has('MEMORY_ATTRIBUTES'));
    return {
      apiVersion: this.apiVersion,
      userMemory: has('USER_MEMORY') > 0,
      userMemory2: has('USER_MEMORY2') > 0,
      readonlyMem: has('READONLY_MEM') > 0,
      syncMmu: has('SYNC_MMU') > 0,
      immediateExit: has('IMMEDIATE_EXIT') > 0,
      binaryStatsFd: has('BINARY_STATS_FD') > 0,
      memoryFaultInfo: has('MEMORY_FAULT_INFO') > 0,
      guestMemfd: has('GUEST_MEMFD') > 0,
      guestMemfdFlags: (Object.keys(GUEST_MEMFD_FLAGS) as GuestMemfdFlag[]).filter((f) => (gmemFlags & GUEST_MEMFD_FLAGS[f]) !== 0n),
      preFaultMemory: has('PRE_FAULT_MEMORY') > 0,
      vmTypes,
      memoryAttributes: (attributes & (1n << 3n)) !== 0n ? ['private'] : [],
      nrMemslots: has('NR_MEMSLOTS'),
      nrVcpus: has('NR_VCPUS'),
      maxVcpus: has('MAX_VCPUS'),
      vcpuMmapSize: this.vcpuMmapSize,
    };
  }

  /** KVM_GET_SUPPORTED_CPUID, growing the buffer on E2BIG. */
  supportedCpuid(): CpuidEntry[] {
    for (let max = 128; ; max *= 2) {
      try {
        return decodeCpuid(native.getSupportedCpuid(this.fd, max));
      } catch (e) {
        const errno = (e as { errno?: number }).errno;
        if (errno === 7 /* E2BIG */ && max < 4096) continue;
        throw toKvmError(e, 'KVM_GET_SUPPORTED_CPUID', { maxEntries: max });
      }
    }
  }

  /** KVM_GET_MSR_INDEX_LIST: MSRs KVM saves/restores for a vcpu. */
  msrIndexList(): number[] { return msrs.msrIndexList(this); }
  /** KVM_GET_MSR_FEATURE_INDEX_LIST: feature MSRs getMsrFeatures() reads. */
  msrFeatureIndexList(): number[] { return msrs.msrFeatureIndexList(this); }
  /** KVM_GET_MSRS on the system fd: feature MSR values. */
  getMsrFeatures(indices: readonly number[]): msrs.MsrEntry[] { return msrs.getMsrFeatures(this, indices); }
  /** KVM_GET_EMULATED_CPUID. */
  emulatedCpuid(): CpuidEntry[] { return msrs.emulatedCpuid(this); }
  /** Takes ownership of a VM fd made elsewhere (checked to be one); see lib/vm/adopt.ts. */
  createVmFromRawFd(fd: number, options: { type?: VmType } = {}): Vm { return createVmFromRawFd(this, fd, options); }

  /**
   * KVM_CREATE_VM. The type is checked against KVM_CAP_VM_TYPES first so an
   * unsupported one fails with the list of supported ones; EINTR (a signal
   * during creation) is retried a bounded number of times.
   */
  createVm(options: VmOptions = {}): Vm {
    // Options first (read once), then the open check, then the work.
    const raw = readOptions(options, 'KVM_CREATE_VM', { type: opt.any }).type ?? 'default';
    if (typeof raw !== 'string' || !Object.hasOwn(VM_TYPES, raw)) {
      throw invalidArgument('KVM_CREATE_VM', `unknown VM type ${describe(raw)}; known: ${Object.keys(VM_TYPES).join(', ')}`, { type: describe(raw) });
    }
    const type = raw as VmType;
    this.assertOpen('KVM_CREATE_VM');
    const caps = this.capabilities();
    const supported = caps.vmTypes;
    if (!supported.includes(type)) {
      throw invalidArgument('KVM_CREATE_VM', `VM type '${type}' is not supported by this host; supported: ${supported.join(', ')}`, { type, supported });
    }
    const number = VM_TYPES[type];
    for (let attempt = 0; ; attempt++) {
      try {
        const fd = native.createVm(this.fd, number);
        // No strong reference from here: a VM dropped without close() must
        // stay collectable while its Kvm lives (its finalizer closes the fd).
        return Vm.fromFd(this, fd, type, caps);
      } catch (e) {
        const errno = (e as { errno?: number }).errno;
        if (errno === 4 /* EINTR */ && attempt < CREATE_VM_EINTR_RETRIES) continue;
        throw toKvmError(e, 'KVM_CREATE_VM', { type, attempts: attempt + 1 });
      }
    }
  }

}

function openHint(code: string, path: string): string | undefined {
  if (code === 'EACCES' || code === 'EPERM') {
    return `no read/write access to ${path}: run as root, or add the user to the group that owns it (usually 'kvm') and make sure a udev rule gives that group rw, e.g. KERNEL=="kvm", GROUP="kvm", MODE="0660"`;
  }
  if (code === 'ENOENT') return `${path} does not exist: load the KVM module (kvm_intel / kvm_amd) or enable virtualization`;
  return undefined;
}
