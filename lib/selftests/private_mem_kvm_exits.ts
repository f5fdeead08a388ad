/**
 * Port of the kernel's x86/private_mem_kvm_exits_test: on a software-protected
 * VM, a guest that keeps reading a private page gets KVM_EXIT_MEMORY_FAULT
 * (KVM_RUN fails with EFAULT) with flags = PRIVATE, the page's gpa and size 4096:
 * 1. when the page's memslot (bound to a guest_memfd) is deleted while it runs;
 * 2. when the page is private but its memslot has no guest_memfd.
 * Upstream runs the vcpu on a pthread and deletes the slot from the main thread;
 * here the vcpu runs on its own thread (runAsync) and the event loop deletes it.
 * The guest reports a heartbeat every so often so that a kernel that never exits
 * fails the case (after a scaled time limit) instead of hanging it.
 */
import type { MemoryFaultExit } from '../exit.js';
import { Guest, spinReadProgram, type GuestEvent } from '../guest/index.js';
import { scaledTimeout } from '../time-scale.js';
import type { Vm } from '../vm.js';
import { check, checkEqual, SelftestFailure } from './assert.js';
import { firstReason, needs } from './host.js';
import type { SelftestContext, SelftestSuite } from './types.js';

const EXITS_TEST_GPA = 0xc0000000n;
const EXITS_TEST_SIZE = 4096n;
const EXITS_TEST_SLOT = 10;
const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1n << 3n;
const LIMIT_MS = scaledTimeout(30_000);

function describe(e: GuestEvent): string {
  if (e.kind === 'exit') return `exit ${e.exit.reason}`;
  if (e.kind === 'sync') return `sync ${e.args.map((a) => `0x${a.toString(16)}`).join(' ')}`;
  return e.kind;
}

/** Runs the guest until its first stop that is not a heartbeat or a signal, within the time limit. */
async function runToMemoryFault(guest: Guest, onFirstRun: () => void): Promise<MemoryFaultExit> {
  const deadline = performance.now() + LIMIT_MS;
  let first = true;
  for (;;) {
    const running = guest.run();
    if (first) {
      first = false;
      onFirstRun();
    }
    const e = await running;
    if (e.kind === 'exit' && e.exit.reason === 'memory-fault') return e.exit as MemoryFaultExit;
    const idle = e.kind === 'sync' || (e.kind === 'exit' && e.exit.reason === 'intr');
    if (!idle) throw new SelftestFailure(`expected KVM_EXIT_MEMORY_FAULT, got ${describe(e)}`, { expected: 'memory-fault', actual: describe(e) });
    if (performance.now() > deadline) throw new SelftestFailure(`no KVM_EXIT_MEMORY_FAULT within ${LIMIT_MS} ms; the guest kept reading`);
  }
}

function checkFault(exit: MemoryFaultExit): void {
  checkEqual(exit.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE, 'memory_fault.flags');
  check(exit.private, 'the exit is marked private');
  checkEqual(exit.gpa, EXITS_TEST_GPA, 'memory_fault.gpa');
  checkEqual(exit.size, EXITS_TEST_SIZE, 'memory_fault.size');
}

function guestFor(vm: Vm): Guest {
  return Guest.create(vm, { program: spinReadProgram({ gva: EXITS_TEST_GPA, heartbeatIterations: 100_000 }) });
}

async function memslotDeleted(ctx: SelftestContext): Promise<void> {
  using vm = ctx.kvm.createVm({ type: 'sw-protected' });
  const memory = vm.allocateMemory(EXITS_TEST_SIZE);
  const guestMemfd = vm.createGuestMemfd({ size: EXITS_TEST_SIZE });
  vm.setMemoryRegion({ slot: EXITS_TEST_SLOT, guestPhysAddr: EXITS_TEST_GPA, memory, guestMemfd });
  vm.setMemoryAttributes({ guestPhysAddr: EXITS_TEST_GPA, size: EXITS_TEST_SIZE, private: true });
  using guest = guestFor(vm);
  // Deleted while the vcpu is in KVM_RUN (or about to enter it), as upstream's main thread does.
  const exit = await runToMemoryFault(guest, () => setImmediate(() => vm.deleteMemoryRegion(EXITS_TEST_SLOT)));
  ctx.log(`exit after deletion: flags 0x${exit.flags.toString(16)} gpa 0x${exit.gpa.toString(16)} size ${exit.size}`);
  checkFault(exit);
}

async function memslotNotPrivate(ctx: SelftestContext): Promise<void> {
  using vm = ctx.kvm.createVm({ type: 'sw-protected' });
  const memory = vm.allocateMemory(EXITS_TEST_SIZE);
  // flags 0: no guest_memfd behind the slot.
  vm.setMemoryRegion({ slot: EXITS_TEST_SLOT, guestPhysAddr: EXITS_TEST_GPA, memory });
  vm.setMemoryAttributes({ guestPhysAddr: EXITS_TEST_GPA, size: EXITS_TEST_SIZE, private: true });
  using guest = guestFor(vm);
  const exit = await runToMemoryFault(guest, () => {});
  checkFault(exit);
}

const skip = (): string | undefined => firstReason(needs.vmType('sw-protected'), needs.privateMemory, needs.guestMemfd);

/** The suite. */
export const suite: SelftestSuite = {
  name: 'private_mem_kvm_exits',
  description: 'KVM_EXIT_MEMORY_FAULT (private) for a private access after memslot deletion and to a slot without guest_memfd',
  cases: [
    { name: 'private access after the memslot is deleted', skip, run: memslotDeleted },
    { name: 'private access to a memslot without guest_memfd', skip, run: memslotNotPrivate },
  ],
};
