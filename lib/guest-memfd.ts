/**
 * GuestMemfd: guest-first memory from KVM_CREATE_GUEST_MEMFD, bound to one VM.
 */
import { GUEST_MEMFD_FLAGS, Mm, type GuestMemfdFlag } from './constants.js';
import { callNative, errnoError, invalidArgument, toKvmError } from './errors.js';
import { describe, toU64, PAGE_SIZE, type U64Like } from './int.js';
import { opt, readArray, readOptions } from './options.js';
import { HostMemory } from './memory.js';
import { native, type NativeResult } from './native.js';
import { Resource } from './resource.js';

/** Options of Vm.createGuestMemfd(). */
export interface GuestMemfdOptions {
  /** Size in bytes: a non-zero multiple of 4096. */
  size: U64Like;
  /** Flags by name, or the raw bit mask. Checked against KVM_CAP_GUEST_MEMFD_FLAGS. */
  flags?: readonly GuestMemfdFlag[] | bigint;
}

/** fstat() of a guest_memfd. */
export interface GuestMemfdStat {
  /** File size in bytes (the size it was created with). */
  size: bigint;
  /** Preferred I/O block size (st_blksize). */
  blockSize: number;
  /** 512-byte blocks allocated (st_blocks): what is backed by memory now. */
  blocks: bigint;
  /** Inode number (st_ino). */
  inode: bigint;
}

/** Options of GuestMemfd.map(). */
export interface GuestMemfdMapOptions {
  /** Offset in the file to map from; default 0. A multiple of 4 KiB. */
  offset?: U64Like;
  /** Bytes to map; default the rest of the file. */
  length?: U64Like;
  /** Address alignment; default 2 MiB when the length allows it. */
  alignment?: U64Like;
}

/**
 * fallocate() is interrupted (EINTR) by any signal, SIGCHLD from a child
 * process exiting included; what it allocated stays allocated, so retrying
 * continues where it stopped. Bounded so a signal storm cannot spin forever.
 */
const FALLOCATE_EINTR_RETRIES = 1024;
const EINTR = 4;

const MAP_OPTIONS = { offset: opt.u64, length: opt.u64, alignment: opt.u64 } as const;

/** Converts flag names or a raw mask into the mask. */
export function guestMemfdFlagMask(flags: readonly GuestMemfdFlag[] | bigint | undefined, op: string): bigint {
  if (flags === undefined) return 0n;
  if (typeof flags === 'bigint') return toU64(flags, 'flags', op);
  if (typeof flags !== 'object' || flags === null) throw invalidArgument(op, 'flags must be an array of flag names or a bigint mask', { flags: describe(flags) });
  let mask = 0n;
  // Copied once (a Proxy cannot change it after the check).
  for (const f of readArray(flags, op, 'flags', 64)) {
    if (typeof f !== 'string' || !Object.hasOwn(GUEST_MEMFD_FLAGS, f)) {
      throw invalidArgument(op, `unknown guest_memfd flag ${describe(f)}; known: ${Object.keys(GUEST_MEMFD_FLAGS).join(', ')}`);
    }
    mask |= GUEST_MEMFD_FLAGS[f as GuestMemfdFlag];
  }
  return mask;
}

/** Flag names present in a mask (unknown bits are left out). */
export function guestMemfdFlagNames(mask: bigint): GuestMemfdFlag[] {
  return (Object.keys(GUEST_MEMFD_FLAGS) as GuestMemfdFlag[]).filter((f) => (mask & GUEST_MEMFD_FLAGS[f]) !== 0n);
}

/** Owner of one guest_memfd. */
export class GuestMemfd extends Resource {
  readonly #fd: number;
  /** The VM it belongs to (a guest_memfd can only be bound to its own VM). */
  readonly vmId: symbol;
  /** Size in bytes. */
  readonly size: bigint;
  /** Raw flag mask. */
  readonly flagMask: bigint;
  /** Flags by name. */
  readonly flags: readonly GuestMemfdFlag[];
  readonly #punchListeners = new Set<(offset: bigint, length: bigint) => void>();

  /** Private, and so in the published types too: a GuestMemfd comes from Vm.createGuestMemfd(). */
  private constructor(fd: number, vmId: symbol, size: bigint, flagMask: bigint) {
    super(`GuestMemfd(fd ${fd})`, () => native.close(fd));
    this.#fd = fd;
    this.vmId = vmId;
    this.size = size;
    this.flagMask = flagMask;
    this.flags = Object.freeze(guestMemfdFlagNames(flagMask));
    // No own properties can be added or changed: a getter planted on the
    // instance cannot run inside a check that reads vmId or size.
    Object.freeze(this);
  }

  /** @internal Wraps a new guest_memfd fd of the VM `vmId` names (Vm.createGuestMemfd()). */
  static fromFd(fd: number, vmId: symbol, size: bigint, flagMask: bigint): GuestMemfd {
    return new GuestMemfd(fd, vmId, size, flagMask);
  }

  /** Whether `value` is a real GuestMemfd (a brand check: a fake with the right prototype is not). */
  static isGuestMemfd(value: unknown): value is GuestMemfd {
    return typeof value === 'object' && value !== null && #fd in value;
  }

  /** The file descriptor; throws ECLOSED after close(). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /** Whether the guest_memfd supports host mmap (flag 'mmap'). */
  get mappable(): boolean {
    return this.flags.includes('mmap');
  }

  /**
   * Allocates backing pages for [offset, offset+length) without changing the
   * size (fallocate KEEP_SIZE). The range must lie inside the file.
   */
  allocate(offset: U64Like, length: U64Like): void {
    const [off, len] = this.#checkRange('fallocate', offset, length, false);
    const args = { offset: off, length: len, mode: 'keep-size' };
    for (let attempt = 0; ; attempt++) {
      try {
        native.fallocate(this.#fd, Mm.FALLOC_FL_KEEP_SIZE, off, len);
        return;
      } catch (e) {
        if ((e as { errno?: number }).errno === EINTR && attempt < FALLOCATE_EINTR_RETRIES) continue;
        throw toKvmError(e, 'fallocate', { ...args, attempts: attempt + 1 });
      }
    }
  }

  /** allocate() on a worker thread (large ranges take a while to zero); EINTR is retried too. */
  async allocateAsync(offset: U64Like, length: U64Like): Promise<void> {
    const [off, len] = this.#checkRange('fallocate', offset, length, false);
    await this.track('fallocate', async () => {
      for (let attempt = 0; ; attempt++) {
        const r = await native.fallocateAsync(this.#fd, Mm.FALLOC_FL_KEEP_SIZE, off, len);
        if (r.rc >= 0) return;
        if (r.errno === EINTR && attempt < FALLOCATE_EINTR_RETRIES) continue;
        throw errnoError(r.errno, 'fallocate', { offset: off, length: len, mode: 'keep-size', attempts: attempt + 1 }, 'fallocate');
      }
    });
  }

  /**
   * Frees the pages of [offset, offset+length) (fallocate PUNCH_HOLE |
   * KEEP_SIZE): they read back as zero. Both must be page aligned; the range
   * may extend past the end of the file.
   */
  punchHole(offset: U64Like, length: U64Like): void {
    const [off, len] = this.#checkRange('fallocate', offset, length, true);
    callNative('fallocate', { offset: off, length: len, mode: 'punch-hole' }, () =>
      native.fallocate(this.fd, Mm.FALLOC_FL_KEEP_SIZE | Mm.FALLOC_FL_PUNCH_HOLE, off, len),
    );
    for (const l of this.#punchListeners) l(off, len);
  }

  /** fstat() of the file. */
  stat(): GuestMemfdStat {
    const s = callNative('fstat', {}, () => native.fstat(this.fd));
    return { size: s.size, blockSize: s.blksize, blocks: s.blocks, inode: s.ino };
  }

  /**
   * mmap()s the file shared (needs the 'mmap' flag). Without 'init-shared'
   * the pages are private to the guest and host access would raise SIGBUS, so
   * the returned memory refuses `bytes`. The mapping may not extend past the
   * end of the file (that, too, would raise SIGBUS).
   */
  map(mapOptions: GuestMemfdMapOptions = {}): HostMemory {
    const options = readOptions(mapOptions, 'mmap', MAP_OPTIONS);
    this.assertOpen('mmap');
    if (!this.mappable) {
      throw invalidArgument('mmap', "this guest_memfd was created without the 'mmap' flag (the kernel answers ENODEV)", { flags: this.flags }, 'ENODEV');
    }
    const offset = options.offset ?? 0n;
    const length = options.length ?? (offset <= this.size ? this.size - offset : 0n);
    if (offset % PAGE_SIZE !== 0n || length % PAGE_SIZE !== 0n || length === 0n) {
      throw invalidArgument('mmap', 'offset and length must be page multiples and length non-zero', { offset, length });
    }
    if (offset > this.size || length > this.size - offset) {
      throw invalidArgument('mmap', 'range extends past the end of the guest_memfd (access would raise SIGBUS)', { offset, length, size: this.size });
    }
    const alignment = options.alignment ?? (length >= 2n << 20n ? 2n << 20n : PAGE_SIZE);
    const mapping = callNative('mmap', { offset, length }, () =>
      new native.Mapping(this.#fd, length, Mm.PROT_READ | Mm.PROT_WRITE, Mm.MAP_SHARED, offset, alignment),
    );
    return HostMemory.fromMapping(mapping, 'guest-memfd', false, this.flags.includes('init-shared'));
  }

  /**
   * @internal fallocate(KEEP_SIZE) on a worker thread for the software
   * pre-fault engine: resolves with { rc, errno }, and keeps the fd open while
   * in flight (close() waits), so the call never lands on a recycled fd number.
   */
  allocateRawAsync(offset: bigint, length: bigint): Promise<NativeResult> {
    return this.track('fallocate', () => native.fallocateAsync(this.#fd, Mm.FALLOC_FL_KEEP_SIZE, offset, length));
  }

  /** @internal The owning Vm listens to invalidate its mappings. */
  onPunchHole(listener: (offset: bigint, length: bigint) => void): () => void {
    this.#punchListeners.add(listener);
    return () => this.#punchListeners.delete(listener);
  }

  protected override onClose(): void {
    this.#punchListeners.clear();
  }

  #checkRange(op: string, offset: U64Like, length: U64Like, punch: boolean): [bigint, bigint] {
    const off = toU64(offset, 'offset', op);
    const len = toU64(length, 'length', op);
    this.assertOpen(op);
    const args = { offset: off, length: len, size: this.size };
    if (len === 0n) throw invalidArgument(op, 'length must be non-zero', args);
    if (off + len >= 1n << 63n) throw invalidArgument(op, 'offset + length overflows', args);
    if (punch && (off % PAGE_SIZE !== 0n || len % PAGE_SIZE !== 0n)) {
      throw invalidArgument(op, 'punch-hole offset and length must be page aligned', args);
    }
    if (!punch && off + len > this.size) throw invalidArgument(op, 'allocation past the end of the guest_memfd', args);
    return [off, len];
  }
}
