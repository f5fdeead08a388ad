/**
 * Port of the guest-memory parts of the kernel's set_memory_region selftest:
 * memslot flag validation, the memslot limit, guest_memfd binding errors,
 * overlapping guest_memfd bindings, and moving and deleting a memslot while a
 * guest is reading from it; the x86 in-use cases (no memslots, IDT in MMIO,
 * misaligned move, deleting memslot 0, x10, slot-zap quirk on and off) are in
 * memslot-in-use.ts.
 */
import { MemFlag, type VmType } from '../constants.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import type { MmioExit } from '../exit.js';
import { Guest, type GuestEvent } from '../guest/guest.js';
import { spinReadProgram, SpinReadReason } from '../guest/programs.js';
import { check, checkEqual, expectKvmError, expectOutcome, SelftestFailure, show } from './assert.js';
import { firstReason, needs, probeHost } from './host.js';
import type { SelftestCase, SelftestContext, SelftestSuite } from './types.js';
import { inUseCases } from './memslot-in-use.js';
import { describeEvent, nextEvent, whileRunning } from './guest-steps.js';

const P = 4096n;
const MiB = 1n << 20n;
const SLOT_GPA = 0xc0000000n;
const OTHER_GPA = 0x180000000n;

/** Raw KVM_SET_USER_MEMORY_REGION (v1) or ...REGION2 (v2), returning nothing; throws the addon's errno error. */
function rawRegion(vm: Vm, v: 1 | 2, slot: number, flags: number, gpa: bigint, size: bigint, uaddr: bigint, gmemOffset = 0n, gmemFd = 0): void {
  if (v === 1) native.setUserMemoryRegion(vm.fd, slot, flags, gpa, size, uaddr);
  else native.setUserMemoryRegion2(vm.fd, slot, flags, gpa, size, uaddr, gmemOffset, gmemFd);
}

/** Deletes a slot created with a raw call (node-kvm's table does not know it). */
function rawDelete(vm: Vm, slot: number): void {
  if (probeHost().caps!.userMemory2) native.setUserMemoryRegion2(vm.fd, slot, 0, 0n, 0n, 0n, 0n, 0);
  else native.setUserMemoryRegion(vm.fd, slot, 0, 0n, 0n, 0n);
}

const FLAG_NAMES: Record<number, string> = { [MemFlag.LOG_DIRTY_PAGES]: 'LOG_DIRTY_PAGES', [MemFlag.READONLY]: 'READONLY', [MemFlag.GUEST_MEMFD]: 'GUEST_MEMFD' };

function invalidFlags(ctx: SelftestContext): void {
  using vm = ctx.kvm.createVm();
  const mem = vm.allocateMemory(2n * MiB);
  const probe = probeHost();
  // Kernels before REGION2 only have the v1 ioctl to check.
  const versions: (1 | 2)[] = probe.caps!.userMemory2 ? [1, 2] : [1];
  let supported = MemFlag.LOG_DIRTY_PAGES;
  if (probe.caps!.readonlyMem) supported |= MemFlag.READONLY;
  // As upstream: GUEST_MEMFD counts as supported only where private memory is.
  if (needs.privateMemory() === undefined) supported |= MemFlag.GUEST_MEMFD;
  for (let bit = 0; bit < 32; bit++) {
    const flag = (1 << bit) >>> 0;
    const name = FLAG_NAMES[flag] ?? `bit ${bit}`;
    if (flag & supported) {
      if (flag === MemFlag.GUEST_MEMFD) continue; // needs a real guest_memfd: covered below
      for (const v of versions) {
        expectOutcome(() => rawRegion(vm, v, 0, flag, 0n, 2n * MiB, mem.address), 'OK', `v${v} with supported flag ${name}`);
        rawDelete(vm, 0);
      }
      continue;
    }
    // For v2 the VM fd stands in for the guest_memfd: it is open, but not one.
    for (const v of versions) {
      expectOutcome(() => rawRegion(vm, v, 0, flag, 0n, 2n * MiB, mem.address, 0n, vm.fd), 'EINVAL', `v${v} with unsupported flag ${name}`);
    }
  }
  if (!probe.caps!.guestMemfd || !probe.caps!.userMemory2) {
    ctx.log('guest_memfd is not supported here: GUEST_MEMFD flag combinations not checked');
    return;
  }
  using g = vm.createGuestMemfd({ size: 2n * MiB });
  for (const extra of [MemFlag.LOG_DIRTY_PAGES, MemFlag.READONLY]) {
    expectOutcome(
      () => rawRegion(vm, 2, 0, MemFlag.GUEST_MEMFD | extra, 0n, 2n * MiB, mem.address, 0n, g.fd),
      'EINVAL',
      `v2 with GUEST_MEMFD|${FLAG_NAMES[extra]}`,
    );
  }
}

function maxMemslots(ctx: SelftestContext): void {
  using vm = ctx.kvm.createVm();
  const n = vm.capabilities.nrMemslots;
  const slotSize = 2n * MiB;
  // One sparse reservation for all slots: nothing is touched, so nothing is allocated.
  const mem = vm.allocateMemory(BigInt(n + 1) * slotSize, { noReserve: true });
  for (let i = 0; i < n; i++) {
    const at = BigInt(i) * slotSize;
    vm.setMemoryRegion({ slot: i, guestPhysAddr: at, size: slotSize, memory: mem, memoryOffset: at });
  }
  checkEqual(vm.memorySlots().length, n, 'slots node-kvm records');
  const at = BigInt(n) * slotSize;
  expectKvmError(() => vm.setMemoryRegion({ slot: n, guestPhysAddr: at, size: slotSize, memory: mem, memoryOffset: at }), 'EINVAL', `slot ${n} (one past KVM_CAP_NR_MEMSLOTS)`);
  const v = probeHost().caps!.userMemory2 ? 2 : 1;
  expectOutcome(() => rawRegion(vm, v, n, 0, at, slotSize, mem.address + at), 'EINVAL', `raw v${v} for slot ${n}`);
  ctx.log(`${n} memslots of 2 MiB created`);
}

function gmemInvalidFds(ctx: SelftestContext, type: VmType = 'default'): void {
  using vm = ctx.kvm.createVm({ type });
  using other = ctx.kvm.createVm();
  using otherGmem = other.createGuestMemfd({ size: 4n * MiB });
  const bind = (fd: number) => () => rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD, SLOT_GPA, 2n * MiB, 0n, 0n, fd);
  expectOutcome(bind(ctx.kvm.fd), 'EINVAL', 'binding /dev/kvm as guest_memfd');
  expectOutcome(bind(vm.fd), 'EINVAL', 'binding the VM fd as guest_memfd');
  const memfd = native.memfdCreate('node-kvm-selftest');
  try {
    expectOutcome(bind(memfd), 'EINVAL', 'binding a plain memfd as guest_memfd');
  } finally {
    native.close(memfd);
  }
  // The memfd's number is free again now: it names a closed fd.
  expectOutcome(bind(memfd), 'EBADF', 'binding a closed fd');
  expectOutcome(bind(-1), 'EBADF', 'binding fd -1');
  expectOutcome(bind(otherGmem.fd), 'EINVAL', "binding another VM's guest_memfd (raw)");
  expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: otherGmem }), 'EINVAL', "binding another VM's guest_memfd");
  const closed = vm.createGuestMemfd({ size: 4n * MiB });
  closed.close();
  expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: closed }), 'EBADF', 'binding a closed GuestMemfd');
}

function gmemOffsets(ctx: SelftestContext, type: VmType = 'default'): void {
  using vm = ctx.kvm.createVm({ type });
  using g = vm.createGuestMemfd({ size: 4n * MiB });
  const raw = (gpa: bigint, size: bigint, uaddr: bigint, off: bigint) => () => rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD, gpa, size, uaddr, off, g.fd);
  for (let off = 1n; off < P; off++) {
    expectOutcome(raw(SLOT_GPA, 2n * MiB, 0n, off), 'EINVAL', `raw binding at guest_memfd offset ${off}`);
    expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: g, guestMemfdOffset: off }), 'EINVAL', `binding at guest_memfd offset ${off}`);
  }
  expectOutcome(raw(SLOT_GPA, 2n * MiB, 0n, 3n * MiB), 'EINVAL', 'raw binding that ends past the file');
  expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: g, guestMemfdOffset: 3n * MiB }), 'EINVAL', 'binding that ends past the file');
  expectOutcome(raw(SLOT_GPA + 1n, 2n * MiB, 0n, 0n), 'EINVAL', 'raw binding at an unaligned gpa');
  expectOutcome(raw(SLOT_GPA, 2n * MiB + 1n, 0n, 0n), 'EINVAL', 'raw binding of an unaligned size');
  expectOutcome(raw(SLOT_GPA, 2n * MiB, 0x1001n, 0n), 'EINVAL', 'raw binding with an unaligned userspace address');
  expectOutcome(raw(SLOT_GPA, 2n * MiB, 0n, 0n), 'OK', 'raw binding at offset 0');
  rawDelete(vm, 10);
  vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: g, guestMemfdOffset: 0 });
  check(vm.slotAt(SLOT_GPA)?.guestMemfd === g, 'node-kvm records the binding');
}

function gmemV1(ctx: SelftestContext, type: VmType = 'default'): void {
  using vm = ctx.kvm.createVm({ type });
  using g = vm.createGuestMemfd({ size: 2n * MiB });
  expectOutcome(() => rawRegion(vm, 1, 10, MemFlag.GUEST_MEMFD, SLOT_GPA, 2n * MiB, 0n), 'EINVAL', 'raw v1 with GUEST_MEMFD');
  const e = expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: g, api: 'v1' }), 'EINVAL', "setMemoryRegion with api 'v1' and a guest_memfd");
  checkEqual(e.ioctl, 'KVM_SET_USER_MEMORY_REGION', 'the ioctl the error names');
}

function gmemNoChange(ctx: SelftestContext, type: VmType = 'default'): void {
  using vm = ctx.kvm.createVm({ type });
  const g = vm.createGuestMemfd({ size: 4n * MiB });
  vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: g });
  expectKvmError(() => vm.moveMemoryRegion(10, SLOT_GPA + 0x10000000n), 'EINVAL', 'moving a guest_memfd slot');
  expectOutcome(() => rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD, SLOT_GPA + 0x10000000n, 2n * MiB, 0n, 0n, g.fd), 'EINVAL', 'raw move of a guest_memfd slot');
  expectOutcome(() => rawRegion(vm, 2, 10, MemFlag.GUEST_MEMFD | MemFlag.LOG_DIRTY_PAGES, SLOT_GPA, 2n * MiB, 0n, 0n, g.fd), 'EINVAL', 'raw flag change on a guest_memfd slot');
  expectOutcome(() => rawRegion(vm, 2, 10, 0, SLOT_GPA, 2n * MiB, 0n), 'EINVAL', 'raw removal of GUEST_MEMFD from a slot');
  g.close();
  vm.deleteMemoryRegion(10);
  checkEqual(vm.memorySlots().length, 0, 'slots left after deleting the one whose guest_memfd was closed');
}

function overlapping(ctx: SelftestContext, type: VmType = 'default'): void {
  using vm = ctx.kvm.createVm({ type });
  using g = vm.createGuestMemfd({ size: 10n * MiB });
  vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: 0 });
  vm.setMemoryRegion({ slot: 11, guestPhysAddr: OTHER_GPA, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: 4n * MiB });
  vm.deleteMemoryRegion(10);
  for (const off of [2n * MiB, 6n * MiB]) {
    expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: off }), 'EEXIST', `binding at guest_memfd offset ${show(off)}, overlapping slot 11's`);
  }
  for (const gpa of [OTHER_GPA - 2n * MiB, OTHER_GPA + 2n * MiB]) {
    expectKvmError(() => vm.setMemoryRegion({ slot: 10, guestPhysAddr: gpa, size: 4n * MiB, guestMemfd: g, guestMemfdOffset: 0 }), 'EEXIST', `binding at gpa ${show(gpa)}, overlapping slot 11's guest range`);
  }
}

function rawOverlapping(ctx: SelftestContext, type: VmType = 'default'): void {
  using vm = ctx.kvm.createVm({ type });
  using g = vm.createGuestMemfd({ size: 10n * MiB });
  const bind = (slot: number, gpa: bigint, off: bigint) => () => rawRegion(vm, 2, slot, MemFlag.GUEST_MEMFD, gpa, 4n * MiB, 0n, off, g.fd);
  expectOutcome(bind(10, SLOT_GPA, 0n), 'OK', 'slot 10 at offset 0');
  expectOutcome(bind(11, OTHER_GPA, 4n * MiB), 'OK', 'slot 11 at offset 4 MiB');
  rawDelete(vm, 10);
  const deviations: string[] = [];
  for (const off of [2n * MiB, 6n * MiB]) {
    const got = expectOutcome(bind(10, SLOT_GPA, off), ['EEXIST', 'EINVAL'], `slot 10 at guest_memfd offset ${show(off)}, overlapping slot 11's`);
    if (got === 'EINVAL') deviations.push(show(off));
  }
  if (deviations.length) {
    ctx.log(`deviation: this kernel answers EINVAL, not EEXIST (upstream), for overlapping guest_memfd offsets ${deviations.join(', ')}; node-kvm answers EEXIST`);
  }
  for (const gpa of [OTHER_GPA - 2n * MiB, OTHER_GPA + 2n * MiB]) {
    expectOutcome(bind(10, gpa, 0n), 'EEXIST', `slot 10 at gpa ${show(gpa)}, overlapping slot 11's guest range`);
  }
}

// ---------------------------------------------------------------------------
// Moving and deleting a memslot under a running guest.

const V0 = 0x5e1f_7e57_0000_0000n;
const V1 = V0 + 1n;
const V2 = V0 + 2n;
const V3 = V0 + 3n;
/** What the host answers to the guest's reads while the slot is gone. */
const MMIO_VALUE = 0x4d4d_494f_4d4d_494fn;
function expectSync(e: GuestEvent, value: bigint, reason: bigint, what: string): void {
  if (e.kind !== 'sync' || e.args[0] !== value || e.args[1] !== reason) {
    throw new SelftestFailure(`${what}: expected the guest to report ${show(value)} (reason ${reason}), got ${describeEvent(e)}`, { expected: show(value), actual: describeEvent(e) });
  }
}

function expectMmioRead(e: GuestEvent, what: string): MmioExit {
  if (e.kind !== 'exit' || e.exit.reason !== 'mmio' || (e.exit as MmioExit).physAddr !== SLOT_GPA || (e.exit as MmioExit).isWrite) {
    throw new SelftestFailure(`${what}: expected an MMIO read exit at ${show(SLOT_GPA)}, got ${describeEvent(e)}`, { expected: 'mmio read', actual: describeEvent(e) });
  }
  return e.exit as MmioExit;
}

/** Answers an MMIO read with MMIO_VALUE (the guest's load completes with it on the next run). */
function answerMmio(exit: MmioExit): void {
  new DataView(exit.data.buffer, exit.data.byteOffset, 8).setBigUint64(0, MMIO_VALUE, true);
}

async function moveDeleteWhileRunning(ctx: SelftestContext): Promise<void> {
  using vm = ctx.kvm.createVm();
  const mem = vm.allocateMemory(2n * MiB);
  const value = new DataView(mem.bytes.buffer, mem.bytes.byteOffset, 8);
  value.setBigUint64(0, V0, true);
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: SLOT_GPA, memory: mem });
  // The heartbeat hands control back every so often, so a guest that never
  // sees the expected change fails the step instead of hanging it.
  using guest = Guest.create(vm, { program: spinReadProgram({ gva: SLOT_GPA, heartbeatIterations: 200_000 }) });
  const order: string[] = [];
  const note = (e: GuestEvent): GuestEvent => (order.push(describeEvent(e)), e);

  expectSync(note(await nextEvent(guest)), V0, SpinReadReason.INITIAL, 'first read');

  // 1. A host write is seen by the running guest.
  expectSync(note(await whileRunning(guest, () => value.setBigUint64(0, V1, true))), V1, SpinReadReason.CHANGED, 'after the host wrote a new value');

  // 2. Moving the slot away: the old address no longer has memory, so the
  //    guest's read exits as MMIO. While it is away, the host changes the
  //    value; after moving it back the guest sees the new one.
  let exit = expectMmioRead(note(await whileRunning(guest, () => vm.moveMemoryRegion(1, OTHER_GPA))), 'after moving the slot away');
  answerMmio(exit);
  value.setBigUint64(0, V2, true);
  vm.moveMemoryRegion(1, SLOT_GPA);
  expectSync(note(await nextEvent(guest)), MMIO_VALUE, SpinReadReason.CHANGED, 'the read that exited as MMIO');
  expectSync(note(await nextEvent(guest)), V2, SpinReadReason.CHANGED, 'after moving the slot back');

  // 3. Deleting the slot: reads exit as MMIO, and keep doing so until the
  //    slot is recreated (with new memory holding a new value).
  exit = expectMmioRead(note(await whileRunning(guest, () => vm.deleteMemoryRegion(1))), 'after deleting the slot');
  answerMmio(exit);
  expectSync(note(await nextEvent(guest)), MMIO_VALUE, SpinReadReason.CHANGED, 'the read that exited as MMIO');
  exit = expectMmioRead(note(await nextEvent(guest)), 'the next read, slot still deleted');
  answerMmio(exit);
  const fresh = vm.allocateMemory(2n * MiB);
  new DataView(fresh.bytes.buffer, fresh.bytes.byteOffset, 8).setBigUint64(0, V3, true);
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: SLOT_GPA, memory: fresh });
  expectSync(note(await nextEvent(guest)), V3, SpinReadReason.CHANGED, 'after recreating the slot');
  ctx.log(`order seen: ${order.join('; ')}`);
}

/** The guest_memfd slot cases, by name, for running them on another VM type. */
const GMEM_CASES: [string, (ctx: SelftestContext, type: VmType) => void][] = [
  ['guest_memfd slot: invalid fds', gmemInvalidFds],
  ['guest_memfd slot: offsets and alignment', gmemOffsets],
  ['guest_memfd slot: v1 ioctl refuses GUEST_MEMFD', gmemV1],
  ['guest_memfd slot: no moves or flag changes; delete after close', gmemNoChange],
  ['overlapping bindings', overlapping],
  ['raw kernel: overlapping bindings', rawOverlapping],
];

/**
 * Upstream runs its guest_memfd slot checks on a software-protected VM, where
 * the bound range can be made private. Here they run on the default VM (this
 * kernel binds guest_memfd there too); this case repeats them where a
 * software-protected VM with private memory exists, and marks a bound range
 * private.
 */
function privateSlots(ctx: SelftestContext): void {
  const type: VmType = 'sw-protected';
  for (const [name, run] of GMEM_CASES) {
    try {
      run(ctx, type);
    } catch (e) {
      if (e instanceof Error) e.message = `${name}: ${e.message}`;
      throw e;
    }
  }
  using vm = ctx.kvm.createVm({ type });
  using g = vm.createGuestMemfd({ size: 4n * MiB });
  vm.setMemoryRegion({ slot: 10, guestPhysAddr: SLOT_GPA, size: 2n * MiB, guestMemfd: g });
  vm.setMemoryAttributes({ guestPhysAddr: SLOT_GPA, size: 2n * MiB, private: true });
  checkEqual(vm.memoryAttributesOf(SLOT_GPA, 2n * MiB), 'private', 'attributes of the bound range after marking it private');
  vm.setMemoryAttributes({ guestPhysAddr: SLOT_GPA, size: MiB, private: false });
  checkEqual(vm.memoryAttributesOf(SLOT_GPA, 2n * MiB), 'mixed', 'attributes after sharing the first half again');
}

const guestMemfdSkip = needs.guestMemfd;

/** The set_memory_region selftest port (guest-memory parts). */
export const suite: SelftestSuite = {
  name: 'set_memory_region',
  description: 'memslot flags and limits, guest_memfd binding errors, and slot changes under a running guest',
  cases: [
    { name: 'invalid flags (raw, v1 and v2)', run: invalidFlags },
    { name: 'max memslots', run: maxMemslots },
    ...GMEM_CASES.map(([name, run]): SelftestCase => ({ name, skip: guestMemfdSkip, run: (ctx) => run(ctx, 'default') })),
    {
      name: 'sw-protected VM: guest_memfd slot cases with private memory',
      skip: () => firstReason(needs.guestMemfd, needs.vmType('sw-protected'), needs.privateMemory),
      run: privateSlots,
    },
    { name: 'move and delete while the guest runs', run: moveDeleteWhileRunning },
    ...inUseCases(),
  ] satisfies SelftestCase[],
};

