/**
 * The dirty ring (KVM_CAP_DIRTY_LOG_RING): instead of a bitmap per memslot,
 * KVM appends each page a vcpu dirties to that vcpu's ring, a shared mapping
 * of the vcpu fd. Userspace harvests entries in order (DIRTY -> RESET) and
 * gives them back with KVM_RESET_DIRTY_RINGS, which write-protects those pages
 * again. A vcpu whose ring is (nearly) full exits with
 * `dirty-ring-full` and keeps exiting until entries are harvested and reset.
 *
 * Order of use: enableDirtyRing(vm, entries) on a VM with no vcpus yet, then
 * DirtyRing.map(vcpu) for each vcpu, harvest(), resetDirtyRings(vm). With the
 * ring enabled KVM refuses KVM_GET_DIRTY_LOG.
 */
import { Mm } from '../constants.js';
import { callNative, invalidArgument, KvmError } from '../errors.js';
import { native, type DirtyRingLayout, type NativeMapping } from '../native.js';
import { Resource } from '../resource.js';
import { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';

/** Bytes of one ring entry (struct kvm_dirty_gfn; native/dirty_ring.cc asserts it). */
export const DIRTY_RING_ENTRY_BYTES = 16;

let cachedLayout: DirtyRingLayout | undefined;
/** The addon's ring layout, read on first use (so an older addon only fails here, not at import). */
function ringLayout(): DirtyRingLayout {
  if (cachedLayout) return cachedLayout;
  const l = callNative('dirtyRingLayout', {}, () => {
    if (typeof native.dirtyRingLayout !== 'function') throw new KvmError('this build of the node-kvm addon has no dirty ring support (rebuild it)', { code: 'EOPNOTSUPP' });
    return native.dirtyRingLayout();
  });
  if (l.entryBytes !== DIRTY_RING_ENTRY_BYTES) throw new KvmError(`the addon's kvm_dirty_gfn is ${l.entryBytes} bytes, expected ${DIRTY_RING_ENTRY_BYTES}`, { code: 'EINVAL' });
  cachedLayout = l;
  return l;
}

/** What this host's KVM offers for the dirty ring (KVM_CHECK_EXTENSION on the VM). */
export interface DirtyRingSupport {
  /** Whether a dirty ring can be enabled. */
  readonly supported: boolean;
  /** The largest ring in bytes (the capability's value; 0 when unsupported). */
  readonly maxBytes: number;
  /** The capability that enables it: DIRTY_LOG_RING, or DIRTY_LOG_RING_ACQ_REL on hosts with only that one. */
  readonly cap: number;
  /** Why not, when unsupported. */
  readonly reason?: string;
}

/** Rings enabled per VM: their entry count, so vcpus map the right size. */
const enabled = new WeakMap<Vm, number>();

/** Whether `vm`'s KVM has the dirty ring, and its largest size. */
export function dirtyRingSupport(vm: Vm): DirtyRingSupport {
  const layout = ringLayout();
  const plain = vm.checkExtension(layout.capDirtyLogRing);
  if (plain > 0) return { supported: true, maxBytes: plain, cap: layout.capDirtyLogRing };
  const acqRel = vm.checkExtension(layout.capDirtyLogRingAcqRel);
  if (acqRel > 0) return { supported: true, maxBytes: acqRel, cap: layout.capDirtyLogRingAcqRel };
  return { supported: false, maxBytes: 0, cap: layout.capDirtyLogRing, reason: 'KVM_CAP_DIRTY_LOG_RING and KVM_CAP_DIRTY_LOG_RING_ACQ_REL are 0 on this kernel' };
}

/**
 * Enables a dirty ring of `entries` entries (a power of two, at least one page
 * of entries, at most the capability's size) for every vcpu of `vm`. Must
 * come before the VM's first vcpu; once per VM.
 */
export function enableDirtyRing(vm: Vm, entries: number): void {
  const op = 'KVM_ENABLE_CAP';
  if (!Number.isSafeInteger(entries) || entries <= 0 || (entries & (entries - 1)) !== 0) throw invalidArgument(op, 'dirty ring entries must be a positive power of two', { entries: String(entries) });
  const bytes = entries * DIRTY_RING_ENTRY_BYTES;
  if (bytes < native.pageSize) throw invalidArgument(op, `a dirty ring needs at least ${native.pageSize / DIRTY_RING_ENTRY_BYTES} entries (one page)`, { entries });
  if (enabled.has(vm)) throw invalidArgument(op, `the dirty ring of this VM is already enabled (${enabled.get(vm)} entries)`, { entries }, 'EEXIST');
  const support = dirtyRingSupport(vm);
  if (!support.supported) throw invalidArgument(op, support.reason ?? 'no dirty ring', { entries }, 'EOPNOTSUPP');
  if (bytes > support.maxBytes) throw invalidArgument(op, `dirty ring of ${bytes} bytes is larger than this kernel's ${support.maxBytes}`, { entries });
  vm.enableCap(support.cap, [bytes]);
  enabled.set(vm, entries);
}

/** Entries of `vm`'s dirty ring, or undefined when it has none. */
export function dirtyRingEntries(vm: Vm): number | undefined {
  return enabled.get(vm);
}

/**
 * KVM_RESET_DIRTY_RINGS: rearms logging for every harvested (RESET) entry of
 * every vcpu's ring; returns how many entries were reset.
 */
export function resetDirtyRings(vm: Vm): number {
  const op = 'KVM_RESET_DIRTY_RINGS';
  return callVm(vm, op, {}, (fd) => native.vmResetDirtyRings(fd));
}

/** One harvested ring entry: page `offset` of memslot `slot` was dirtied. */
export interface DirtyGfn {
  /** Memslot id (address space in bits 16+). */
  readonly slot: number;
  /** Page index within the memslot. */
  readonly offset: bigint;
}

/** One vcpu's dirty ring, mapped from its fd; owns the mapping. */
export class DirtyRing extends Resource {
  /** Entries in the ring. */
  readonly entries: number;
  /** The vcpu whose ring this is. */
  readonly vcpuId: number;
  readonly #layout = ringLayout();
  readonly #flags: Uint32Array;
  readonly #view: DataView;
  #fetch = 0;

  private constructor(mapping: NativeMapping, entries: number, vcpuId: number) {
    super(`DirtyRing(vcpu ${vcpuId})`, () => mapping.unmap());
    this.entries = entries;
    this.vcpuId = vcpuId;
    const buffer = mapping.buffer();
    this.#flags = new Uint32Array(buffer);
    this.#view = new DataView(buffer);
  }

  /** Maps `vcpu`'s ring; its VM must have had enableDirtyRing() before the vcpu was created. */
  static map(vcpu: Vcpu): DirtyRing {
    const op = 'mmap';
    const layout = ringLayout();
    if (!Vcpu.isVcpu(vcpu)) throw invalidArgument(op, 'vcpu must be a Vcpu (a look-alike could name any fd)');
    const fd = vcpu.fd; // ECLOSED after close, before the ring is looked up
    const entries = enabled.get(vcpu.vm);
    if (entries === undefined) throw invalidArgument(op, 'the VM has no dirty ring (enableDirtyRing before creating vcpus)', { vcpu: vcpu.id }, 'ENODEV');
    const bytes = BigInt(entries * DIRTY_RING_ENTRY_BYTES);
    const offset = BigInt(layout.pageOffset * native.pageSize);
    const mapping = callNative(op, { what: 'dirty ring', vcpu: vcpu.id, bytes, offset }, () => new native.Mapping(fd, bytes, Mm.PROT_READ | Mm.PROT_WRITE, Mm.MAP_SHARED, offset, BigInt(native.pageSize)));
    return new DirtyRing(mapping, entries, vcpu.id);
  }

  /** Entries harvested so far (the next one to look at is fetchIndex % entries). */
  get fetchIndex(): number {
    this.assertOpen('fetchIndex');
    return this.#fetch;
  }

  /**
   * Takes the dirty entries from the fetch index on, in order, and marks each
   * harvested (RESET) for the next resetDirtyRings(). Stops at the first entry
   * KVM has not published, or after `max` entries.
   */
  harvest(max = this.entries): DirtyGfn[] {
    this.assertOpen('harvest');
    const out: DirtyGfn[] = [];
    const layout = this.#layout;
    const words = layout.entryBytes / 4;
    while (out.length < max) {
      const i = this.#fetch % this.entries;
      const flagsIndex = i * words + layout.flagsOffset / 4;
      // Atomics: the flags word is the handshake with KVM (load-acquire, store-release in the ABI).
      if ((Atomics.load(this.#flags, flagsIndex) & layout.flagDirty) === 0) break;
      const base = i * layout.entryBytes;
      out.push({ slot: this.#view.getUint32(base + layout.slotOffset, true), offset: this.#view.getBigUint64(base + layout.offsetOffset, true) });
      Atomics.store(this.#flags, flagsIndex, layout.flagReset);
      this.#fetch++;
    }
    return out;
  }
}
