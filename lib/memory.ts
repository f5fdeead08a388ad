/**
 * HostMemory: a host mapping that can back guest memory. Anonymous memory
 * (aligned, optionally THP) or a guest_memfd's mmap. Exposes the pages as a
 * zero-copy Uint8Array. Closing never detaches a view (Node may be using it);
 * the pages are replaced by zero pages until every view is collected.
 */
import { constants as bufferConstants } from 'node:buffer';
import { ADVICE, Mm, type Advice } from './constants.js';
import { callNative, errnoError, invalidArgument, KvmError } from './errors.js';
import { describe, SIZE_2M, toU64, requirePageAligned, PAGE_SIZE, type U64Like } from './int.js';
import { native, type NativeMapping, type NativeResult } from './native.js';
import { opt, readOptions } from './options.js';
import { Resource } from './resource.js';
import { registerUserfault, type Userfault, type UserfaultOptions } from './userfault.js';

/** Options for anonymous guest memory. */
export interface AllocateMemoryOptions {
  /**
   * Ask for transparent huge pages (MADV_HUGEPAGE). With THP, KVM can map
   * 2 MiB at a time: on a shadow-paging host one guest exit per 2 MiB instead
   * of one per 4 KiB. Default false.
   */
  hugePages?: boolean;
  /** Address alignment; default 2 MiB when size >= 2 MiB (so huge mappings are possible), else 4 KiB. */
  alignment?: U64Like;
  /** MAP_NORESERVE: do not reserve swap (for large sparse regions). Default false. */
  noReserve?: boolean;
}

/** Access allowed by HostMemory.protect(). */
export type Protection = 'none' | 'read' | 'read-write';

/** Where a HostMemory's pages come from. */
export type MemoryKind = 'anonymous' | 'guest-memfd' | 'memfd';

/** Options for populate(). */
export interface PopulateOptions {
  /** Populate writable (MADV_POPULATE_WRITE, default) or readable (MADV_POPULATE_READ). */
  write?: boolean;
  /** Start of the range inside the mapping; default 0. A multiple of 4 KiB. */
  offset?: U64Like;
  /** Bytes to populate; default the rest of the mapping. */
  length?: U64Like;
}

const POPULATE_RETRIES = 64;

/** The largest ArrayBuffer this Node.js allows (4 GiB on Node 20, 2^53-1 on Node 22+). */
const MAX_VIEW_BYTES = BigInt(bufferConstants.MAX_LENGTH);

/** Options of HostMemory.allocate() and Vm.allocateMemory(), as readOptions() reads them. */
const ALLOCATE_OPTIONS = { hugePages: opt.boolean, alignment: opt.u64, noReserve: opt.boolean } as const;
const POPULATE_OPTIONS = { write: opt.boolean, offset: opt.u64, length: opt.u64 } as const;

/** One run of pages with the same protection, [start, end) in bytes from the start. */
interface ProtectionRun {
  start: bigint;
  end: bigint;
  protection: Protection;
}

const PROTECTION_RANK: Record<Protection, number> = { none: 0, read: 1, 'read-write': 2 };

/** A host mapping owned by node-kvm. */
export class HostMemory extends Resource {
  readonly #mapping: NativeMapping;
  readonly #address: bigint;
  readonly #size: bigint;
  readonly #kind: MemoryKind;
  readonly #hugePages: boolean;
  readonly #hostAccessible: boolean;
  /** What protect() set, by range (read-write everywhere at first). */
  #protections: ProtectionRun[];
  #bytes: Uint8Array | undefined;
  readonly #closeListeners = new Set<(memory: HostMemory) => void>();

  /**
   * Use HostMemory.allocate(), vm.allocateMemory() or guestMemfd.map(). Private,
   * so the published types refuse `new HostMemory()` and subclasses.
   */
  private constructor(mapping: NativeMapping, kind: MemoryKind, hugePages: boolean, hostAccessible: boolean) {
    super(`HostMemory(${kind}, 0x${mapping.address.toString(16)})`, () => mapping.unmap());
    this.#mapping = mapping;
    this.#address = mapping.address;
    this.#size = mapping.length;
    this.#kind = kind;
    this.#hugePages = hugePages;
    this.#hostAccessible = hostAccessible;
    this.#protections = [{ start: 0n, end: mapping.length, protection: 'read-write' }];
    // No own properties can be planted on the instance (a getter named size
    // or closed that runs inside another object's check).
    Object.freeze(this);
  }

  /** @internal Wraps a mapping node-kvm made (guestMemfd.map(), shared memory for userfaults). */
  static fromMapping(mapping: NativeMapping, kind: MemoryKind, hugePages: boolean, hostAccessible: boolean): HostMemory {
    return new HostMemory(mapping, kind, hugePages, hostAccessible);
  }

  /**
   * Whether `value` is a real HostMemory (a brand check on its private
   * fields: an object made with Object.create(HostMemory.prototype), or a
   * Proxy of one, is not).
   */
  static isHostMemory(value: unknown): value is HostMemory {
    return typeof value === 'object' && value !== null && #mapping in value;
  }

  /** Host virtual address of the first byte. */
  get address(): bigint {
    return this.#address;
  }

  /** Size in bytes (page multiple). */
  get size(): bigint {
    return this.#size;
  }

  /** Anonymous memory or a guest_memfd mapping. */
  get kind(): MemoryKind {
    return this.#kind;
  }

  /** Whether MADV_HUGEPAGE was applied. */
  get hugePages(): boolean {
    return this.#hugePages;
  }

  /** False for a guest_memfd without INIT_SHARED: host access would raise SIGBUS. */
  get hostAccessible(): boolean {
    return this.#hostAccessible;
  }

  /** Maps anonymous, private, zero-filled memory. */
  static allocate(size: U64Like, allocateOptions: AllocateMemoryOptions = {}): HostMemory {
    const op = 'mmap';
    const options = readOptions(allocateOptions, op, ALLOCATE_OPTIONS);
    const bytes = toU64(size, 'size', op);
    if (bytes === 0n) throw invalidArgument(op, 'size must be non-zero', { size: bytes });
    requirePageAligned(bytes, 'size', op);
    const alignment = options.alignment ?? (bytes >= SIZE_2M ? SIZE_2M : PAGE_SIZE);
    if (alignment < PAGE_SIZE || (alignment & (alignment - 1n)) !== 0n) {
      throw invalidArgument(op, 'alignment must be a power of two >= 4096', { alignment });
    }
    const flags = Mm.MAP_PRIVATE | Mm.MAP_ANONYMOUS | (options.noReserve ? Mm.MAP_NORESERVE : 0);
    const mapping = callNative(op, { size: bytes, alignment }, () => new native.Mapping(-1, bytes, Mm.PROT_READ | Mm.PROT_WRITE, flags, 0n, alignment));
    const memory = new HostMemory(mapping, 'anonymous', options.hugePages === true, true);
    if (options.hugePages) memory.advise('hugepage');
    return memory;
  }

  /**
   * The whole mapping as a Uint8Array (zero-copy). After close() it reads
   * zeros (see the file comment). A buffer moved out with
   * ArrayBuffer.prototype.transfer() is replaced by a fresh view.
   */
  get bytes(): Uint8Array {
    this.assertOpen('bytes');
    if (!this.hostAccessible) {
      throw new KvmError('this guest_memfd mapping is not host-accessible (no INIT_SHARED): touching it would raise SIGBUS', {
        code: 'EACCES',
        syscall: 'mmap',
      });
    }
    if (this.size > MAX_VIEW_BYTES) {
      throw invalidArgument('bytes', `mapping larger than the largest ArrayBuffer this Node.js allows (${MAX_VIEW_BYTES} bytes); use view()`, { size: this.size }, 'ERANGE');
    }
    // byteLength 0 only when the cached buffer was transferred away (size is never 0).
    if (this.#bytes === undefined || this.#bytes.byteLength === 0) this.#bytes = new Uint8Array(this.#mapping.buffer(undefined, undefined, MAX_VIEW_BYTES));
    return this.#bytes;
  }

  /**
   * A zero-copy view of [offset, offset+length) (reads zeros after close). Works on
   * mappings larger than `bytes` allows, as long as the view itself fits.
   */
  view(offset: U64Like, length: U64Like): Uint8Array {
    const [off, len] = this.#range('view', offset, length);
    if (!this.hostAccessible) return this.bytes; // throws the SIGBUS explanation
    if (this.size <= MAX_VIEW_BYTES) return this.bytes.subarray(Number(off), Number(off + len));
    if (len > MAX_VIEW_BYTES) throw invalidArgument('view', `view larger than ${MAX_VIEW_BYTES} bytes`, { offset: off, length: len }, 'ERANGE');
    return new Uint8Array(this.#mapping.buffer(off, len, MAX_VIEW_BYTES));
  }

  /** madvise() over [offset, offset+length) (default: all). */
  advise(advice: Advice, offset: U64Like = 0n, length?: U64Like): void {
    const number = adviceNumber(advice);
    const [off, len] = this.#range('madvise', offset, length);
    callNative('madvise', { advice, offset: off, length: len }, () => this.#mapping.madvise(off, len, number));
  }

  /**
   * Faults the pages in now (MADV_POPULATE_WRITE / _READ) on a worker thread,
   * so the guest's first touch finds them present. EINTR and EAGAIN are
   * retried (bounded); other failures reject with KvmError.
   */
  async populate(populateOptions: PopulateOptions = {}): Promise<void> {
    const options = readOptions(populateOptions, 'madvise', POPULATE_OPTIONS);
    const advice = options.write === false ? Mm.MADV_POPULATE_READ : Mm.MADV_POPULATE_WRITE;
    const [o, len] = this.#range('madvise', options.offset ?? 0n, options.length);
    await this.track('madvise', async () => {
      for (let attempt = 0; ; attempt++) {
        const r = await this.#mapping.madviseAsync(o, len, advice);
        if (r.rc === 0) return;
        if ((r.errno === 4 || r.errno === 11) && attempt < POPULATE_RETRIES) continue;
        throw errnoError(r.errno, 'madvise', { advice: options.write === false ? 'populate-read' : 'populate-write', offset: o, length: len }, 'madvise');
      }
    });
  }

  /** Synchronous populate(): blocks the calling thread. */
  populateSync(populateOptions: PopulateOptions = {}): void {
    const options = readOptions(populateOptions, 'madvise', POPULATE_OPTIONS);
    this.advise(options.write === false ? 'populate-read' : 'populate-write', options.offset ?? 0n, options.length);
  }

  /**
   * @internal One madvise() for the pre-fault engine: throws the native errno
   * error so the caller can map it to KVM's semantics.
   */
  adviseRawSync(offset: bigint, length: bigint, advice: number): void {
    this.assertOpen('madvise');
    this.#mapping.madvise(offset, length, advice);
  }

  /** @internal madvise() on a worker thread; resolves with { rc, errno }. */
  adviseRawAsync(offset: bigint, length: bigint, advice: number): Promise<NativeResult> {
    return this.track('madvise', () => this.#mapping.madviseAsync(offset, length, advice));
  }

  /**
   * mprotect() over [offset, offset+length) (default: all). The memory
   * remembers what it set, so node-kvm itself never touches pages the
   * protection forbids (the software pre-fault engine reports EFAULT for
   * 'none' and maps 'read' pages read-only, as KVM does).
   */
  protect(protection: Protection, offset: U64Like = 0n, length?: U64Like): void {
    const prot = protection === 'none' ? Mm.PROT_NONE : protection === 'read' ? Mm.PROT_READ : protection === 'read-write' ? Mm.PROT_READ | Mm.PROT_WRITE : -1;
    if (prot < 0) throw invalidArgument('mprotect', `protection must be 'none', 'read' or 'read-write', got ${describe(protection)}`);
    const [off, len] = this.#range('mprotect', offset, length);
    callNative('mprotect', { protection, offset: off, length: len }, () => this.#mapping.mprotect(off, len, prot));
    // mprotect works on whole pages: the range it changed.
    const start = off - (off % PAGE_SIZE);
    const end = off + len === this.#size ? off + len : ((off + len + PAGE_SIZE - 1n) / PAGE_SIZE) * PAGE_SIZE;
    if (end > start) this.#protections = setRun(this.#protections, start, end > this.#size ? this.#size : end, protection);
  }

  /**
   * @internal The least access protect() allows anywhere in [offset,
   * offset+length): 'none', 'read' or 'read-write'.
   */
  protectionOf(offset: bigint, length: bigint): Protection {
    let least: Protection = 'read-write';
    const end = offset + length;
    for (const r of this.#protections) {
      if (r.end > offset && r.start < end && PROTECTION_RANK[r.protection] < PROTECTION_RANK[least]) least = r.protection;
    }
    return least;
  }

  /**
   * @internal Faults in [offset, offset+length) by touching each page, for
   * kernels without MADV_POPULATE_*. Refuses (EFAULT) a range that protect()
   * made inaccessible for the access, so it can never raise SIGSEGV.
   */
  touchRawSync(offset: bigint, length: bigint, write: boolean): void {
    this.assertOpen('touch');
    if (!this.#hostAccessible) throw invalidArgument('touch', 'memory is not host-accessible', {}, 'EFAULT');
    const allowed = this.protectionOf(offset, length);
    if (allowed === 'none' || (write && allowed === 'read')) {
      throw invalidArgument('touch', `the range is protected '${allowed}'`, { offset, length }, 'EFAULT');
    }
    callNative('touch', { offset, length }, () => this.#mapping.touch(offset, length, write));
  }

  /**
   * Serves first touches of this memory from userspace (userfaultfd) on a
   * native thread: `mode: 'missing'` for anonymous memory, `'minor'` for
   * shared memory from allocateSharedMemory(). See lib/userfault.ts; the
   * Userfault closes with this memory.
   */
  registerUserfault(options: UserfaultOptions): Userfault {
    return registerUserfault(this, options);
  }

  /** @internal Called when the memory is closed (memslot owners zap their mappings). */
  onClosed(listener: (memory: HostMemory) => void): () => void {
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  protected override onClose(): void {
    this.#bytes = undefined;
    for (const l of this.#closeListeners) l(this);
    this.#closeListeners.clear();
  }

  /** Validates [offset, offset+length) (length default: to the end) first, then checks open. */
  #range(op: string, offset: U64Like, length: U64Like | undefined): [bigint, bigint] {
    const off = toU64(offset, 'offset', op);
    const len = length === undefined ? (off <= this.size ? this.size - off : 0n) : toU64(length, 'length', op);
    this.assertOpen(op);
    if (off > this.size || len > this.size - off) {
      throw invalidArgument(op, 'range outside the memory', { offset: off, length: len, size: this.size });
    }
    return [off, len];
  }
}

/** The runs with [start, end) set to `protection`, sorted, neighbours with the same protection merged. */
function setRun(runs: readonly ProtectionRun[], start: bigint, end: bigint, protection: Protection): ProtectionRun[] {
  const pieces: ProtectionRun[] = [{ start, end, protection }];
  for (const r of runs) {
    if (r.start < start) pieces.push({ start: r.start, end: r.end < start ? r.end : start, protection: r.protection });
    if (r.end > end) pieces.push({ start: r.start > end ? r.start : end, end: r.end, protection: r.protection });
  }
  pieces.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
  const out: ProtectionRun[] = [];
  for (const p of pieces) {
    const last = out[out.length - 1];
    if (last && last.end === p.start && last.protection === p.protection) last.end = p.end;
    else out.push(p);
  }
  return out;
}

let populateSupport: boolean | undefined;

/**
 * @internal Whether this kernel has MADV_POPULATE_READ/WRITE (5.14+), tried
 * once on a scratch page. Where it does, an EINVAL from them means the range
 * is not accessible for the access, never "touch the pages yourself".
 */
export function madvisePopulateSupported(): boolean {
  if (populateSupport === undefined) {
    const scratch = new native.Mapping(-1, PAGE_SIZE, Mm.PROT_READ | Mm.PROT_WRITE, Mm.MAP_PRIVATE | Mm.MAP_ANONYMOUS, 0n, PAGE_SIZE);
    try {
      scratch.madvise(0n, PAGE_SIZE, Mm.MADV_POPULATE_WRITE);
      populateSupport = true;
    } catch (e) {
      if ((e as { errno?: number }).errno !== 22) throw e;
      populateSupport = false;
    } finally {
      scratch.unmap();
    }
  }
  return populateSupport;
}

/** @internal Tests force the answer to exercise the fallback (undefined: probe again). */
export function setMadvisePopulateSupportedForTest(value: boolean | undefined): void {
  populateSupport = value;
}

function adviceNumber(advice: Advice): number {
  if (typeof advice !== 'string' || !Object.hasOwn(ADVICE, advice)) {
    throw invalidArgument('madvise', `unknown advice ${describe(advice)}; known: ${Object.keys(ADVICE).join(', ')}`);
  }
  return ADVICE[advice];
}
