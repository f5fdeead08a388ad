/**
 * HostMemory: a host mapping that can back guest memory. Anonymous memory
 * (aligned, optionally THP) or a guest_memfd's mmap. Exposes the pages as a
 * zero-copy Uint8Array that is detached when the memory is closed.
 */
import { constants as bufferConstants } from 'node:buffer';
import { ADVICE, Mm, type Advice } from './constants.js';
import { callNative, errnoError, invalidArgument, KvmError } from './errors.js';
import { describe, SIZE_2M, toOptions, toU64, requirePageAligned, PAGE_SIZE, type U64Like } from './int.js';
import { native, type NativeMapping, type NativeResult } from './native.js';
import { Resource } from './resource.js';

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
export type MemoryKind = 'anonymous' | 'guest-memfd';

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

/** A host mapping owned by node-kvm. */
export class HostMemory extends Resource {
  readonly #mapping: NativeMapping;
  /** Host virtual address of the first byte. */
  readonly address: bigint;
  /** Size in bytes (page multiple). */
  readonly size: bigint;
  /** Anonymous memory or a guest_memfd mapping. */
  readonly kind: MemoryKind;
  /** Whether MADV_HUGEPAGE was applied. */
  readonly hugePages: boolean;
  /** False for a guest_memfd without INIT_SHARED: host access would raise SIGBUS. */
  readonly hostAccessible: boolean;
  #bytes: Uint8Array | undefined;
  readonly #closeListeners = new Set<(memory: HostMemory) => void>();

  /** @internal Use HostMemory.allocate(), vm.allocateMemory() or guestMemfd.map(). */
  constructor(mapping: NativeMapping, kind: MemoryKind, hugePages: boolean, hostAccessible: boolean) {
    super(`HostMemory(${kind}, 0x${mapping.address.toString(16)})`, () => mapping.unmap());
    this.#mapping = mapping;
    this.address = mapping.address;
    this.size = mapping.length;
    this.kind = kind;
    this.hugePages = hugePages;
    this.hostAccessible = hostAccessible;
  }

  /** Maps anonymous, private, zero-filled memory. */
  static allocate(size: U64Like, allocateOptions: AllocateMemoryOptions = {}): HostMemory {
    const op = 'mmap';
    const options = toOptions(allocateOptions, op);
    const bytes = toU64(size, 'size', op);
    if (bytes === 0n) throw invalidArgument(op, 'size must be non-zero', { size: bytes });
    requirePageAligned(bytes, 'size', op);
    const alignment = options.alignment === undefined ? (bytes >= SIZE_2M ? SIZE_2M : PAGE_SIZE) : toU64(options.alignment, 'alignment', op);
    if (alignment < PAGE_SIZE || (alignment & (alignment - 1n)) !== 0n) {
      throw invalidArgument(op, 'alignment must be a power of two >= 4096', { alignment });
    }
    const flags = Mm.MAP_PRIVATE | Mm.MAP_ANONYMOUS | (options.noReserve ? Mm.MAP_NORESERVE : 0);
    const mapping = callNative(op, { size: bytes, alignment }, () => new native.Mapping(-1, bytes, Mm.PROT_READ | Mm.PROT_WRITE, flags, 0n, alignment));
    const memory = new HostMemory(mapping, 'anonymous', options.hugePages === true, true);
    if (options.hugePages) memory.advise('hugepage');
    return memory;
  }

  /** The whole mapping as a Uint8Array (zero-copy; detached on close). */
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
    this.#bytes ??= new Uint8Array(this.#mapping.buffer(undefined, undefined, MAX_VIEW_BYTES));
    return this.#bytes;
  }

  /**
   * A zero-copy view of [offset, offset+length), detached on close. Works on
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
    this.assertOpen('madvise');
    const number = adviceNumber(advice);
    const [off, len] = this.#range('madvise', offset, length ?? this.size - toU64(offset, 'offset', 'madvise'));
    callNative('madvise', { advice, offset: off, length: len }, () => this.#mapping.madvise(off, len, number));
  }

  /**
   * Faults the pages in now (MADV_POPULATE_WRITE / _READ) on a worker thread,
   * so the guest's first touch finds them present. EINTR and EAGAIN are
   * retried (bounded); other failures reject with KvmError.
   */
  async populate(populateOptions: PopulateOptions = {}): Promise<void> {
    const options = toOptions(populateOptions, 'madvise');
    const advice = options.write === false ? Mm.MADV_POPULATE_READ : Mm.MADV_POPULATE_WRITE;
    const off = toU64(options.offset ?? 0n, 'offset', 'madvise');
    const [o, len] = this.#range('madvise', off, options.length ?? this.size - off);
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
    const options = toOptions(populateOptions, 'madvise');
    const off = toU64(options.offset ?? 0n, 'offset', 'madvise');
    this.advise(options.write === false ? 'populate-read' : 'populate-write', off, options.length ?? this.size - off);
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

  /** mprotect() over [offset, offset+length) (default: all). */
  protect(protection: Protection, offset: U64Like = 0n, length?: U64Like): void {
    this.assertOpen('mprotect');
    const prot = protection === 'none' ? Mm.PROT_NONE : protection === 'read' ? Mm.PROT_READ : protection === 'read-write' ? Mm.PROT_READ | Mm.PROT_WRITE : -1;
    if (prot < 0) throw invalidArgument('mprotect', `protection must be 'none', 'read' or 'read-write'`, { protection });
    const [off, len] = this.#range('mprotect', offset, length ?? this.size - toU64(offset, 'offset', 'mprotect'));
    callNative('mprotect', { protection, offset: off, length: len }, () => this.#mapping.mprotect(off, len, prot));
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

  #range(op: string, offset: U64Like, length: U64Like): [bigint, bigint] {
    this.assertOpen(op);
    const off = toU64(offset, 'offset', op);
    const len = toU64(length, 'length', op);
    if (off > this.size || len > this.size - off) {
      throw invalidArgument(op, 'range outside the memory', { offset: off, length: len, size: this.size });
    }
    return [off, len];
  }
}

function adviceNumber(advice: Advice): number {
  if (typeof advice !== 'string' || !Object.hasOwn(ADVICE, advice)) {
    throw invalidArgument('madvise', `unknown advice ${describe(advice)}; known: ${Object.keys(ADVICE).join(', ')}`);
  }
  return ADVICE[advice];
}
