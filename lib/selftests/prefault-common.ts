/**
 * Shared by the pre_fault_memory and map_memory ports: the 513-page test
 * region, its guest, and a pre-fault that races a memslot deletion.
 */
import { Guest, touchPagesProgram } from '../guest/index.js';
import type { Kvm } from '../kvm.js';
import { PreFaultError, type PreFaultResult } from '../prefault/index.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';
import type { VmType } from '../constants.js';
import type { GuestMemfd } from '../guest-memfd.js';
import { check, checkEqual } from './assert.js';

/** 4 KiB. */
export const PAGE = 4096n;
/** 2 MiB. */
export const SIZE_2M = 2n << 20n;
/** The test region: 2 MiB + one page, so a 2 MiB-aligned region ends one page into the next huge page. */
export const TEST_SIZE = SIZE_2M + PAGE;
/** Memslot id upstream uses. */
export const TEST_SLOT = 10;

/** A VM with the test region in slot 10 and a vcpu whose guest reads every page of it. */
export interface RegionFixture extends Disposable {
  vm: Vm;
  guest: Guest;
  vcpu: Vcpu;
  gpa: bigint;
  /** The guest_memfd bound to slot 10 (private fixtures only). */
  guestMemfd: GuestMemfd | undefined;
  /** Re-creates slot 10 exactly as it was. */
  recreateSlot(): void;
}

/** Options of regionFixture(). */
export interface RegionFixtureOptions {
  /**
   * Upstream's private configuration: slot 10 is bound to a guest_memfd
   * (KVM_MEM_GUEST_MEMFD, anonymous memory for its shared side) and the whole
   * region is set private with KVM_SET_MEMORY_ATTRIBUTES, so the kernel faults
   * it from the guest_memfd. Needs a VM type with private memory (sw-protected).
   */
  private?: boolean;
}

/** Builds the fixture at `gpa` (2 MiB aligned, identity-mapped by the guest). */
export function regionFixture(kvm: Kvm, type: VmType, gpa: bigint, options: RegionFixtureOptions = {}): RegionFixture {
  const vm = kvm.createVm({ type });
  try {
    const memory = vm.allocateMemory(2n * SIZE_2M);
    const guestMemfd = options.private ? vm.createGuestMemfd({ size: 2n * SIZE_2M }) : undefined;
    const recreateSlot = (): void => {
      vm.setMemoryRegion({ slot: TEST_SLOT, guestPhysAddr: gpa, size: TEST_SIZE, memory, ...(guestMemfd ? { guestMemfd, guestMemfdOffset: 0n } : {}) });
    };
    recreateSlot();
    if (guestMemfd) {
      // Attributes belong to the VM's gpa space, not to the slot: they survive
      // the slot's deletion and re-creation in the racing calls.
      vm.setMemoryAttributes({ guestPhysAddr: gpa, size: TEST_SIZE, private: true });
      checkEqual(vm.memoryAttributesOf(gpa, TEST_SIZE), 'private', 'attributes of the test region after KVM_SET_MEMORY_ATTRIBUTES');
    }
    const program = touchPagesProgram({ startGva: gpa, pages: TEST_SIZE / PAGE, write: false, ucall: true });
    const guest = Guest.create(vm, { program, map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, ...(gpa >= 4n << 30n ? [{ gpa, size: 2n * SIZE_2M, pageSize: '2m' as const }] : [])] });
    return { vm, guest, vcpu: guest.vcpu, gpa, guestMemfd, recreateSlot, [Symbol.dispose]: () => vm.close() };
  } catch (e) {
    vm.close();
    throw e;
  }
}

/** The highest 2 MiB-aligned gpa for the region below the guest's physical (and identity-mappable) limit. */
export function highTestGpa(kvm: Kvm): bigint {
  const leaf = kvm.supportedCpuid().find((e) => e.function === 0x80000008);
  const physBits = Math.min(leaf ? leaf.eax & 0xff : 36, 47);
  const top = 1n << BigInt(physBits);
  return (top - 4n * SIZE_2M) & ~(SIZE_2M - 1n);
}

/** Outcome of one racing pre-fault. */
export interface RaceOutcome {
  /** Bytes left undone at the end. */
  left: bigint;
  /** The error code of the last call, undefined when it succeeded. */
  code: string | undefined;
  /** Whether the slot was deleted (and recreated) during the call. */
  raced: boolean;
  results: PreFaultResult[];
}

/**
 * Pre-faults [offset, offset+size) of the region while the event loop
 * deletes slot 10 as soon as the first step is in flight on its worker
 * thread (upstream uses a second pthread: here the pre-fault runs on a libuv
 * worker and the deletion on the main thread, a true race). After the first
 * call ends, the slot is recreated and the rest retried, as upstream does.
 */
export async function preFaultRacingDeletion(f: RegionFixture, offset: bigint, size: bigint): Promise<RaceOutcome> {
  let remaining = { gpa: f.gpa + offset, size };
  let code: string | undefined;
  const results: PreFaultResult[] = [];
  const attempt = async (): Promise<void> => {
    try {
      results.push(await f.vcpu.preFaultMemory(remaining));
      remaining = { gpa: remaining.gpa + remaining.size, size: 0n };
      code = undefined;
    } catch (e) {
      if (!(e instanceof PreFaultError)) throw e;
      results.push(e.result);
      remaining = e.remaining;
      code = e.code;
    }
  };
  let raced = false;
  const racer = setImmediate(() => {
    f.vm.deleteMemoryRegion(TEST_SLOT);
    raced = true;
  });
  await attempt();
  clearImmediate(racer);
  if (raced) {
    f.recreateSlot();
    if (remaining.size > 0n) await attempt();
  }
  return { left: remaining.size, code, raced, results };
}

/** Checks one call's final state the way upstream does. */
export function checkOutcome(o: RaceOutcome, expectedLeft: bigint, what: string): void {
  checkEqual(o.left, expectedLeft, `${what}: bytes left`);
  if (expectedLeft === 0n) check(o.code === undefined, `${what}: expected success, got ${o.code}`);
  else checkEqual(o.code, 'ENOENT', `${what}: error code`);
}

/** Runs the region's guest to DONE (it reads one u64 from every page). */
export async function runGuestOverRegion(f: RegionFixture): Promise<void> {
  await f.guest.runToDone();
}
