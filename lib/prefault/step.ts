/**
 * One step of each engine, in a synchronous and an asynchronous form. A step
 * is given what is left of the request (at most maxStepBytes of it) and
 * answers like one KVM_PRE_FAULT_MEMORY call: errno 0 with the range moved
 * on, or an errno with the range unchanged.
 */
import { availableParallelism } from 'node:os';
import { native, type NativeResult } from '../native.js';
import type { PageLevel, PreFaultMapStep } from '../soft-mmu/index.js';
import { LEVEL_SIZE, planPreFaultStep, type SoftSlotView } from '../soft-mmu/index.js';
import { Mm } from '../constants.js';
import type { GuestMemfd } from '../guest-memfd.js';
import type { MemorySlot } from '../memslots.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';
import { madvisePopulateSupported } from '../memory.js';
import { hostMaxLevel } from './host-level.js';

/** What one step did. */
export interface StepOutcome {
  errno: number;
  gpa: bigint;
  size: bigint;
  /** Leaves the step mapped (software engine only). */
  leaves?: { level: PageLevel; count: number };
}

const ENOENT = 2;
const EFAULT = 14;
const EINVAL = 22;
const EAGAIN = 11;

/**
 * The host ranges behind [gpa, gpa+size) that a writing guest will need
 * writable: every overlap with a writable slot whose memory the host can
 * touch. KVM_PRE_FAULT_MEMORY faults as a read, so untouched anonymous memory
 * would be mapped to the shared zero page and the guest's first write would
 * fault again; populating for write first avoids that.
 */
function hostRangesToPopulate(vm: Vm, gpa: bigint, size: bigint): { slot: MemorySlot; offset: bigint; length: bigint }[] {
  const out: { slot: MemorySlot; offset: bigint; length: bigint }[] = [];
  const end = gpa + size;
  for (const slot of vm.memorySlots()) {
    const memory = slot.memory;
    if (slot.readonly || !memory || memory.closed || !memory.hostAccessible) continue;
    const start = gpa > slot.guestPhysAddr ? gpa : slot.guestPhysAddr;
    const stop = end < slot.guestPhysAddr + slot.size ? end : slot.guestPhysAddr + slot.size;
    for (const [s, e] of sharedRuns(vm, slot, start, stop)) {
      out.push({ slot, offset: slot.memoryOffset + (s - slot.guestPhysAddr), length: e - s });
    }
  }
  return out;
}

/**
 * The shared parts of [start, stop) in a slot: the kernel faults a private gpa of
 * a guest_memfd slot from the guest_memfd, never from userspace_addr, so
 * populating the host memory there would only waste it.
 */
function sharedRuns(vm: Vm, slot: MemorySlot, start: bigint, stop: bigint): [bigint, bigint][] {
  if (!slot.guestMemfd) return stop > start ? [[start, stop]] : [];
  const attrs = vm.attributeRanges;
  const runs: [bigint, bigint][] = [];
  for (let g = start; g < stop; ) {
    const runEnd = attrs.runEnd(g, stop);
    if (attrs.classify(g, runEnd) === 'shared') runs.push([g, runEnd]);
    g = runEnd;
  }
  return runs;
}

/**
 * Populates the host side of a kernel step for write. Failures are left to
 * the ioctl to report (it faults the same pages), so they are ignored here.
 */
export async function populateHostForKernelStep(vm: Vm, gpa: bigint, size: bigint, threads: number): Promise<void> {
  const jobs = hostRangesToPopulate(vm, gpa, size).flatMap(({ slot, offset, length }) =>
    split(offset, length, threads).map(([o, l]) => slot.memory!.adviseRawAsync(o, l, Mm.MADV_POPULATE_WRITE).catch(() => undefined)),
  );
  await Promise.all(jobs);
}

/** populateHostForKernelStep on the calling thread. */
export function populateHostForKernelStepSync(vm: Vm, gpa: bigint, size: bigint): void {
  for (const { slot, offset, length } of hostRangesToPopulate(vm, gpa, size)) {
    try {
      slot.memory!.adviseRawSync(offset, length, Mm.MADV_POPULATE_WRITE);
    } catch {
      // The ioctl that follows reports what cannot be faulted in.
    }
  }
}

/** A kernel step: one KVM_PRE_FAULT_MEMORY ioctl. */
export function kernelStepSync(vcpu: Vcpu, gpa: bigint, size: bigint): StepOutcome {
  const r = vcpu.ioctl('KVM_PRE_FAULT_MEMORY', { gpa, size }, (fd) => native.preFaultMemory(fd, gpa, size, 0n, vcpu.key));
  return { errno: r.rc < 0 ? r.errno : 0, gpa: r.gpa, size: r.size };
}

/** kernelStepSync on a worker thread. */
export async function kernelStepAsync(vcpu: Vcpu, gpa: bigint, size: bigint): Promise<StepOutcome> {
  const r = await vcpu.ioctl('KVM_PRE_FAULT_MEMORY', { gpa, size }, (fd) => native.preFaultMemoryAsync(fd, gpa, size, 0n, vcpu.key));
  return { errno: r.rc < 0 ? r.errno : 0, gpa: r.gpa, size: r.size };
}

/** The Vm's slots as the planner sees them. */
export function slotViews(vm: Vm): SoftSlotView[] {
  // Address space 0 only: the one a vcpu outside SMM (and KVM_PRE_FAULT_MEMORY) uses.
  return vm.memorySlots().filter((s) => s.slot >> 16 === 0).map((s) => {
    const view: SoftSlotView = {
      slot: s.slot,
      guestPhysAddr: s.guestPhysAddr,
      size: s.size,
      readonly: s.readonly,
      hostMaxLevel: hostMaxLevel(s.memory),
    };
    if (s.userspaceAddr !== 0n) view.hostAddress = s.userspaceAddr;
    if (s.guestMemfd) view.guestMemfd = { offset: s.guestMemfdOffset, flags: s.guestMemfd.flags, maxLevel: '4k' };
    return view;
  });
}

/** The plan of the next software step (or an errno outcome when there is nothing to map). */
export function planSoftwareStep(vm: Vm, gpa: bigint, size: bigint, maxStep: bigint): PreFaultMapStep | StepOutcome {
  const attrs = vm.attributeRanges;
  const plan = planPreFaultStep({
    slots: slotViews(vm),
    isPrivate: (g, s) => attrs.classify(g, g + s),
    range: { gpa, size },
    maxChunk: maxStep,
  });
  if (plan.kind === 'enoent') return { errno: ENOENT, gpa, size };
  if (plan.kind === 'efault') return { errno: EFAULT, gpa, size };
  return plan;
}

/** How populating a planned run is done: a host range to madvise, or a guest_memfd range to fallocate. */
type Populate =
  | { kind: 'madvise'; slot: MemorySlot; offset: bigint; length: bigint; advice: number }
  | { kind: 'fault' }
  | { kind: 'fallocate'; fd: number; gmem: GuestMemfd; offset: bigint; length: bigint }
  | { kind: 'none' };

function populateFor(vm: Vm, plan: PreFaultMapStep): Populate {
  // plan.gpa lies inside the planned slot: the table's O(log n) lookup finds it.
  const slot = vm.slotAt(plan.gpa);
  if (!slot) return { kind: 'none' };
  const advice = plan.writable ? Mm.MADV_POPULATE_WRITE : Mm.MADV_POPULATE_READ;
  const offsetInSlot = plan.gpa - slot.guestPhysAddr;
  const hostUsable = slot.memory !== undefined && !slot.memory.closed && slot.memory.hostAccessible;
  if (plan.backing === 'host' || (hostUsable && slot.memory!.kind === 'guest-memfd' && !plan.private)) {
    if (!hostUsable) return { kind: 'none' };
    const offset = slot.memoryOffset + offsetInSlot;
    // What protect() allows decides the access, as the host page tables decide
    // KVM's: no access is EFAULT; read-only pages are mapped read-only (KVM
    // faults them in for read and maps them without write permission).
    const allowed = slot.memory!.protectionOf(offset, plan.size);
    if (allowed === 'none') return { kind: 'fault' };
    if (allowed === 'read' && plan.writable) {
      plan.writable = false;
      return { kind: 'madvise', slot, offset, length: plan.size, advice: Mm.MADV_POPULATE_READ };
    }
    return { kind: 'madvise', slot, offset, length: plan.size, advice };
  }
  // Private memory (or a guest_memfd the host cannot touch): allocate it in the file.
  const gmem = slot.guestMemfd;
  if (!gmem || gmem.closed) return { kind: 'none' };
  return { kind: 'fallocate', fd: gmem.fd, gmem, offset: slot.guestMemfdOffset + offsetInSlot, length: plan.size };
}

/** Splits [offset, offset+length) into up to `parts` 2 MiB-aligned chunks. */
function split(offset: bigint, length: bigint, parts: number): [bigint, bigint][] {
  const align = LEVEL_SIZE['2m'];
  if (parts <= 1 || length < 4n * 1024n * 1024n) return [[offset, length]];
  let per = length / BigInt(parts);
  per = per - (per % align) || align;
  const out: [bigint, bigint][] = [];
  for (let o = offset; o < offset + length; o += per) out.push([o, o + per > offset + length ? offset + length - o : per]);
  return out;
}

/** Default number of populate threads. */
export function defaultThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

function record(vm: Vm, plan: PreFaultMapStep): StepOutcome['leaves'] {
  vm.softMmu.mapRange(plan.gpa, plan.size, plan.level, {
    slot: plan.slot,
    private: plan.private,
    writable: plan.writable,
    ...(plan.hostAddress !== undefined ? { hostAddress: plan.hostAddress } : {}),
  });
  return { level: plan.level, count: Number(plan.size / LEVEL_SIZE[plan.level]) };
}

function done(plan: PreFaultMapStep, gpa: bigint, size: bigint, leaves: StepOutcome['leaves']): StepOutcome {
  return { errno: 0, gpa: gpa + plan.progress, size: size - plan.progress, ...(leaves ? { leaves } : {}) };
}

/** Converts a populate failure to what the kernel would report. */
function populateErrno(errno: number): number {
  // EINTR and EAGAIN are retried by the loop as the kernel's are; a host that
  // cannot provide the memory (ENOMEM, EFAULT, EHWPOISON) is KVM's EFAULT.
  return errno === 4 || errno === 11 ? errno : EFAULT;
}

/**
 * An EINVAL from MADV_POPULATE_*: on a kernel without them (before 5.14),
 * touch every page instead (HostMemory.touchRawSync refuses pages protect()
 * made inaccessible); on a kernel with them, EINVAL means the range cannot be
 * faulted for this access, which is KVM's EFAULT. Never touch then: touching
 * an inaccessible page kills the process with SIGSEGV.
 */
function populateFallback(p: Extract<Populate, { kind: 'madvise' }>): NativeResult {
  if (madvisePopulateSupported()) return { rc: -1, errno: EFAULT };
  try {
    p.slot.memory!.touchRawSync(p.offset, p.length, p.advice === Mm.MADV_POPULATE_WRITE);
    return { rc: 0, errno: 0 };
  } catch {
    return { rc: -1, errno: EFAULT };
  }
}

/** A software step on the calling thread. */
export function softwareStepSync(vm: Vm, gpa: bigint, size: bigint, maxStep: bigint): StepOutcome {
  const plan = planSoftwareStep(vm, gpa, size, maxStep);
  if (!('kind' in plan)) return plan;
  const p = populateFor(vm, plan);
  if (p.kind === 'fault') return { errno: EFAULT, gpa, size };
  let r: NativeResult = { rc: 0, errno: 0 };
  try {
    if (p.kind === 'madvise') {
      try {
        p.slot.memory!.adviseRawSync(p.offset, p.length, p.advice);
      } catch (e) {
        if ((e as { errno?: number }).errno !== EINVAL) throw e;
        r = populateFallback(p);
      }
    } else if (p.kind === 'fallocate') {
      native.fallocate(p.fd, Mm.FALLOC_FL_KEEP_SIZE, p.offset, p.length);
    }
  } catch (e) {
    r = { rc: -1, errno: (e as { errno?: number }).errno ?? EFAULT };
  }
  if (r.rc < 0) return { errno: populateErrno(r.errno), gpa, size };
  return done(plan, gpa, size, record(vm, plan));
}

/** A software step with populate spread over worker threads. */
export async function softwareStepAsync(vm: Vm, gpa: bigint, size: bigint, maxStep: bigint, threads: number): Promise<StepOutcome> {
  const generation = vm.memslotGeneration;
  const plan = planSoftwareStep(vm, gpa, size, maxStep);
  if (!('kind' in plan)) return plan;
  const p = populateFor(vm, plan);
  if (p.kind === 'fault') return { errno: EFAULT, gpa, size };
  let results: NativeResult[] = [];
  if (p.kind === 'madvise') {
    const memory = p.slot.memory!;
    results = await Promise.all(split(p.offset, p.length, threads).map(([o, l]) => memory.adviseRawAsync(o, l, p.advice)));
    if (results.some((r) => r.rc < 0 && r.errno === EINVAL)) {
      // The memory may have been closed while the madvise ran.
      results = memory.closed ? [{ rc: -1, errno: EFAULT }] : [populateFallback(p)];
    }
  } else if (p.kind === 'fallocate') {
    // Through the GuestMemfd, so closing it waits for these calls instead of
    // freeing the fd number under them (a new fd could get it: they would allocate there).
    const gmem = p.gmem;
    results = await Promise.all(split(p.offset, p.length, threads).map(([o, l]) => gmem.allocateRawAsync(o, l)));
  }
  const failed = results.find((r) => r.rc < 0);
  if (failed) return { errno: populateErrno(failed.errno), gpa, size };
  // The kernel answers EAGAIN when a memslot is deleted or moved while it
  // faults; do the same rather than record a mapping of a slot that changed.
  if (vm.memslotGeneration !== generation) return { errno: EAGAIN, gpa, size };
  return done(plan, gpa, size, record(vm, plan));
}
