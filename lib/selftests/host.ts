/**
 * What this host can do, probed once per process, and the skip reasons cases
 * build from it. Skip checks run while vitest collects tests, so nothing here
 * throws: a host without a usable /dev/kvm just makes every check say so.
 */
import { GUEST_MEMFD_FLAGS, type GuestMemfdFlag, type VmType } from '../constants.js';
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { Kvm, type KvmCapabilities } from '../kvm.js';

/** The probe's findings. */
export interface HostProbe {
  /** Why KVM cannot be used at all (no device, no permission), else undefined. */
  unavailable: string | undefined;
  /** Capabilities of /dev/kvm (undefined when unavailable). */
  caps: KvmCapabilities | undefined;
  /** KVM_CAP_GUEST_MEMFD_FLAGS asked on a default VM's fd, which is the answer that counts. */
  defaultVmGuestMemfdFlags: bigint;
}

let cached: HostProbe | undefined;

/** Probes /dev/kvm once (later calls return the same object). */
export function probeHost(): HostProbe {
  if (cached) return cached;
  try {
    using kvm = Kvm.open();
    const caps = kvm.capabilities();
    // guest_memfd support depends on the VM type: ask a default VM (6.12
    // says yes on /dev/kvm and no on a default VM).
    using vm = kvm.createVm();
    const flags = BigInt(vm.checkExtension('GUEST_MEMFD_FLAGS'));
    cached = { unavailable: undefined, caps: { ...caps, guestMemfd: vm.capabilities.guestMemfd }, defaultVmGuestMemfdFlags: flags };
  } catch (e) {
    cached = { unavailable: `/dev/kvm is not usable: ${e instanceof Error ? e.message : String(e)}`, caps: undefined, defaultVmGuestMemfdFlags: 0n };
  }
  return cached;
}

/** A skip check: a reason, or undefined to run. */
export type SkipCheck = () => string | undefined;

/** The first reason any of the checks gives. */
export function firstReason(...checks: SkipCheck[]): string | undefined {
  for (const c of checks) {
    const reason = c();
    if (reason !== undefined) return reason;
  }
  return undefined;
}

/** The capabilities, for a check that already ran `needs.kvm`. */
function caps(): KvmCapabilities {
  return probeHost().caps!;
}

/** Skip checks for what cases need, each naming the capability that is missing. */
export const needs = {
  /** A usable /dev/kvm. */
  kvm: (): string | undefined => probeHost().unavailable,

  /** KVM_CAP_GUEST_MEMFD and KVM_SET_USER_MEMORY_REGION2. */
  guestMemfd: (): string | undefined =>
    firstReason(needs.kvm, () =>
      !caps().guestMemfd ? 'guest_memfd is not supported here (KVM_CAP_GUEST_MEMFD is 0)' : !caps().userMemory2 ? 'KVM_SET_USER_MEMORY_REGION2 is not supported here (KVM_CAP_USER_MEMORY2 is 0)' : undefined,
    ),

  /** guest_memfd creation flags a default VM must accept. */
  guestMemfdFlags:
    (flags: readonly GuestMemfdFlag[]): SkipCheck =>
    () =>
      firstReason(needs.guestMemfd, () => {
        const have = probeHost().defaultVmGuestMemfdFlags;
        const missing = flags.filter((f) => (have & GUEST_MEMFD_FLAGS[f]) === 0n);
        return missing.length ? `guest_memfd flag(s) ${missing.join(', ')} not supported here (KVM_CAP_GUEST_MEMFD_FLAGS is 0x${have.toString(16)})` : undefined;
      }),

  /** A VM type listed in KVM_CAP_VM_TYPES. */
  vmType:
    (type: VmType): SkipCheck =>
    () =>
      firstReason(needs.kvm, () =>
        caps().vmTypes.includes(type) ? undefined : `VM type '${type}' is not supported here (KVM_CAP_VM_TYPES offers: ${caps().vmTypes.join(', ')})`,
      ),

  /** Private memory: KVM_CAP_MEMORY_ATTRIBUTES with KVM_MEMORY_ATTRIBUTE_PRIVATE. */
  privateMemory: (): string | undefined =>
    firstReason(needs.kvm, () =>
      caps().memoryAttributes.includes('private') ? undefined : 'private memory needs KVM_CAP_MEMORY_ATTRIBUTES with PRIVATE, which this host does not offer',
    ),

  /**
   * A pre-fault that races memslot deletion, on the engine 'auto' picks:
   * before Linux 6.18 the kernel's KVM_PRE_FAULT_MEMORY could loop forever
   * when the slot was deleted under it (6.18 returns EAGAIN instead).
   */
  preFaultRaceSafe: (): string | undefined =>
    firstReason(needs.kvm, () => {
      if (!caps().preFaultMemory) return undefined; // the software engine handles the race
      const [major = 0, minor = 0] = release().split('.').map((n) => Number.parseInt(n, 10));
      return major > 6 || (major === 6 && minor >= 18)
        ? undefined
        : `Linux ${release()} can spin forever in KVM_PRE_FAULT_MEMORY when a memslot is deleted under it (fixed in 6.18, which returns EAGAIN)`;
    }),

  /** KVM_CAP_READONLY_MEM. */
  readonlyMemory: (): string | undefined =>
    firstReason(needs.kvm, () => (caps().readonlyMem ? undefined : 'read-only memslots are not supported here (KVM_CAP_READONLY_MEM is 0)')),
} as const;

/**
 * Whether /dev/kvm is kvm_pvm (shadow paging, no TDP), which behaves
 * differently from VMX/SVM KVM in documented ways (see docs/lab.md): cases use
 * it to tell such a known difference (a TODO) from a failure.
 */
export function isKvmPvm(): boolean {
  return existsSync('/sys/module/kvm_pvm');
}
