/**
 * Shared/private conversion, host side: what a VMM does when its guest asks for a
 * range to change (an explicit request, as upstream's KVM_HC_MAP_GPA_RANGE
 * hypercall) or when KVM stops the guest with a memory-fault exit (an implicit
 * one: on SNP and TDX the exit's private flag says how the guest accessed the
 * page). Modelled on what QEMU does (kvm_convert_memory):
 *
 * 1. KVM_SET_MEMORY_ATTRIBUTES on the range (the kernel then zaps the old mappings);
 * 2. the side being left is freed: converting to shared punches the range out of
 *    the guest_memfd (private contents are gone for good, as on real hardware);
 *    converting to private allocates the range in the guest_memfd and, when asked,
 *    discards the shared host pages (MADV_DONTNEED: they read back as zero);
 * 3. the caller resumes the vcpu.
 *
 * On a software-protected VM the attributes are the source of truth (KVM marks a
 * fault private exactly when its gpa is private), so a memory-fault exit there
 * means a private gpa has no guest_memfd behind it (a plain slot, a deleted slot,
 * a released guest_memfd). answerMemoryFault() handles that case by policy:
 * by default it refuses with KvmError 'EFAULT' naming the missing backing;
 * `{ fallback: 'shared' }` converts the range to shared instead, so the guest
 * continues on shared memory there.
 */
import { invalidArgument, KvmError } from './errors.js';
import type { MemoryFaultExit } from './exit.js';
import { PAGE_SIZE, toU64, type U64Like } from './int.js';
import { Mm } from './constants.js';
import type { MemorySlot } from './memslots.js';
import { Vm } from './vm.js';
import { readOptions } from './vm/struct.js';

/** Options of convertMemory(). */
export interface ConvertMemoryOptions {
  /** First guest-physical address of the range (page aligned). */
  guestPhysAddr: U64Like;
  /** Size of the range in bytes (a page multiple, not 0). */
  size: U64Like;
  /** true: make the range private; false: shared. */
  private: boolean;
  /**
   * Free or allocate the guest_memfd side (fallocate): punch the range when
   * converting to shared, allocate it when converting to private. Default true.
   */
  fallocate?: boolean;
  /** When converting to private, also discard the shared host pages (MADV_DONTNEED). Default false. */
  discardShared?: boolean;
}

/** What convertMemory() did, piece by piece (one piece per memslot the range touches). */
export interface ConversionResult {
  /** First guest-physical address converted. */
  guestPhysAddr: bigint;
  /** Bytes converted. */
  size: bigint;
  /** The attribute the range now has: true private, false shared. */
  private: boolean;
  /** One entry per memslot the range touched: what happened to its guest_memfd and shared pages. */
  pieces: { slot: number; guestPhysAddr: bigint; size: bigint; guestMemfd: 'punched' | 'allocated' | 'untouched' | 'none'; sharedDiscarded: boolean }[];
}

const OP = 'convertMemory';

/** The slots covering [gpa, end) in order, each clipped to the range; a gap is an error. */
function covering(vm: Vm, gpa: bigint, end: bigint, args: Record<string, unknown>): { slot: MemorySlot; start: bigint; end: bigint }[] {
  const out: { slot: MemorySlot; start: bigint; end: bigint }[] = [];
  for (let g = gpa; g < end; ) {
    const slot = vm.slotAt(g);
    if (!slot) throw new KvmError(`${OP}: gpa 0x${g.toString(16)} is in no memslot`, { code: 'ENOENT', args: { ...args, gpa: g } });
    const slotEnd = slot.guestPhysAddr + slot.size;
    const stop = slotEnd < end ? slotEnd : end;
    out.push({ slot, start: g, end: stop });
    g = stop;
  }
  return out;
}

/**
 * Converts [guestPhysAddr, guestPhysAddr + size) to private or shared (see the
 * module comment for the steps). Every page must lie in a memslot; converting to
 * private needs a guest_memfd behind every page (KvmError 'EFAULT' otherwise,
 * before anything changes). Throws KvmError for bad arguments and whatever the
 * kernel refuses.
 */
export function convertMemory(vm: Vm, options: ConvertMemoryOptions): ConversionResult {
  if (!Vm.isVm(vm)) throw invalidArgument(OP, 'vm must be a Vm');
  if (typeof options !== 'object' || options === null) throw invalidArgument(OP, 'options must be an object { guestPhysAddr, size, private }');
  // Read once (throwing getters and revoked Proxies are EINVAL), then checked and used.
  const o = readOptions(options, OP, ['guestPhysAddr', 'size', 'private', 'fallocate', 'discardShared']);
  const gpa = toU64(o.guestPhysAddr as U64Like, 'guestPhysAddr', OP);
  const size = toU64(o.size as U64Like, 'size', OP);
  const toPrivate = o.private;
  if (typeof toPrivate !== 'boolean') throw invalidArgument(OP, 'private must be a boolean', { private: String(toPrivate) });
  const fallocate = o.fallocate ?? true;
  const discardShared = o.discardShared ?? false;
  if (typeof fallocate !== 'boolean' || typeof discardShared !== 'boolean') throw invalidArgument(OP, 'fallocate and discardShared must be booleans');
  const args = { guestPhysAddr: gpa, size, private: toPrivate };
  if (size === 0n || gpa % PAGE_SIZE !== 0n || size % PAGE_SIZE !== 0n) throw invalidArgument(OP, 'guestPhysAddr and size must be page aligned and size non-zero', args);
  const pieces = covering(vm, gpa, gpa + size, args);
  if (toPrivate) {
    const bare = pieces.find((p) => !p.slot.guestMemfd || p.slot.guestMemfd.closed);
    if (bare) {
      throw new KvmError(`${OP}: gpa 0x${bare.start.toString(16)} (slot ${bare.slot.slot}) has no guest_memfd, so it cannot be private`, { code: 'EFAULT', args: { ...args, slot: bare.slot.slot } });
    }
  }

  vm.setMemoryAttributes({ guestPhysAddr: gpa, size, private: toPrivate });

  const result: ConversionResult = { guestPhysAddr: gpa, size, private: toPrivate, pieces: [] };
  for (const p of pieces) {
    const gmem = p.slot.guestMemfd && !p.slot.guestMemfd.closed ? p.slot.guestMemfd : undefined;
    const offset = p.slot.guestMemfdOffset + (p.start - p.slot.guestPhysAddr);
    const length = p.end - p.start;
    let gmemAction: ConversionResult['pieces'][number]['guestMemfd'] = gmem ? 'untouched' : 'none';
    if (gmem && fallocate) {
      if (toPrivate) gmem.allocate(offset, length);
      else gmem.punchHole(offset, length);
      gmemAction = toPrivate ? 'allocated' : 'punched';
    }
    let sharedDiscarded = false;
    if (toPrivate && discardShared && p.slot.memory && !p.slot.memory.closed && p.slot.memory.hostAccessible) {
      p.slot.memory.adviseRawSync(p.slot.memoryOffset + (p.start - p.slot.guestPhysAddr), length, Mm.MADV_DONTNEED);
      sharedDiscarded = true;
    }
    result.pieces.push({ slot: p.slot.slot, guestPhysAddr: p.start, size: length, guestMemfd: gmemAction, sharedDiscarded });
  }
  return result;
}

/** Options of answerMemoryFault(). */
export interface AnswerMemoryFaultOptions {
  /**
   * When the exit asks for private memory that has no guest_memfd behind it:
   * 'refuse' (default) throws KvmError 'EFAULT'; 'shared' converts the range to
   * shared instead, so the guest can go on.
   */
  fallback?: 'refuse' | 'shared';
  /** Passed to convertMemory(). Default true. */
  fallocate?: boolean;
}

/**
 * Answers a memory-fault exit the way a VMM for SNP/TDX guests does: converts the
 * exit's range to what the access wanted (exit.private), then the caller runs the
 * vcpu again. Returns what was converted.
 */
export function answerMemoryFault(vm: Vm, exit: MemoryFaultExit, options: AnswerMemoryFaultOptions = {}): ConversionResult {
  if (typeof exit !== 'object' || exit === null || exit.reason !== 'memory-fault') throw invalidArgument('answerMemoryFault', "exit must be a 'memory-fault' exit");
  const o = readOptions(options, 'answerMemoryFault', ['fallback', 'fallocate']);
  const fallback = o.fallback ?? 'refuse';
  if (fallback !== 'refuse' && fallback !== 'shared') throw invalidArgument('answerMemoryFault', "fallback must be 'refuse' or 'shared'", { fallback: String(fallback) });
  // The exit's range is page aligned (KVM reports whole pages).
  const gpa = exit.gpa & ~(PAGE_SIZE - 1n);
  const size = ((exit.gpa + (exit.size > 0n ? exit.size : PAGE_SIZE) + PAGE_SIZE - 1n) & ~(PAGE_SIZE - 1n)) - gpa;
  const fallocate = o.fallocate ?? true;
  if (typeof fallocate !== 'boolean') throw invalidArgument('answerMemoryFault', 'fallocate must be a boolean');
  try {
    return convertMemory(vm, { guestPhysAddr: gpa, size, private: exit.private, fallocate });
  } catch (e) {
    if (!(e instanceof KvmError) || e.code !== 'EFAULT' || !exit.private || fallback !== 'shared') throw e;
    return convertMemory(vm, { guestPhysAddr: gpa, size, private: false, fallocate });
  }
}
