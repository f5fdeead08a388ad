/**
 * userfaultfd for guest memory: the first touch of a page (by a vcpu inside
 * KVM_RUN, or by any thread) is held by the kernel until node-kvm answers it,
 * the way a VMM restores a snapshot lazily or does post-copy migration.
 *
 * - `mode: 'missing'` (anonymous memory): the page does not exist yet; the
 *   answer is its contents (UFFDIO_COPY) or zeros (UFFDIO_ZEROPAGE).
 * - `mode: 'minor'` (shared memory from {@link allocateSharedMemory}): the
 *   page exists in the file's page cache but is not mapped here yet; the
 *   answer may rewrite it first and then maps it (UFFDIO_CONTINUE). Pages
 *   never written to the file fault as usual (zero-filled, no event).
 *
 * Faults are read and answered on a native thread of the Userfault's own
 * (poll on the uffd): never the libuv pool, never the event loop. Without a
 * `handler` the thread answers alone from `source` (zeros, bytes, a file, or
 * the page cache as it is). With a `handler`, each fault is passed to it on
 * the JS thread; it returns (or resolves to) the bytes, 'zero', 'keep' or
 * undefined (use `source`). A handler that throws, rejects or returns
 * something else gets the fault answered with zeros, and the error reported
 * (`onError`, `errors`): a vcpu is never left waiting. A fault taken by the
 * JS thread itself (it read `memory.bytes` in the range) cannot wait for a
 * JS handler; it is answered from `source` and reported as EDEADLK. close()
 * answers whatever is pending from `source` and unregisters the range.
 *
 * Needs userfaultfd without UFFD_USER_MODE_ONLY (KVM's accesses are kernel
 * mode): root or CAP_SYS_PTRACE, vm.unprivileged_userfaultfd = 1, or access
 * to /dev/userfaultfd.
 */
import { ftruncateSync } from 'node:fs';
import { callNative, invalidArgument, KvmError } from './errors.js';
import { opt, readOptions } from './options.js';
import { isInstance } from './vm/struct.js';
import { describe, PAGE_SIZE, SIZE_2M, toU64, type U64Like } from './int.js';
import { HostMemory } from './memory.js';
import { Mm } from './constants.js';
import { native } from './native.js';
import { Resource } from './resource.js';

/** Which faults are delivered. */
export type UserfaultMode = 'missing' | 'minor';

/** One fault, as the handler sees it. */
export interface UserfaultFault {
  /** Offset of the first byte to supply, from the start of the HostMemory (granule aligned). */
  readonly offset: bigint;
  /** Bytes the answer covers (the granule, shorter at the end of the range). */
  readonly length: bigint;
  /** Whether the access was a write. */
  readonly write: boolean;
  /** Whether it is a MINOR fault (the page is in the page cache). */
  readonly minor: boolean;
  /** The faulting thread's id (a vcpu thread, a worker...). */
  readonly threadId: number;
}

/**
 * A handler's answer: the bytes (shorter is zero-padded, longer is cut),
 * 'zero', 'keep' (MINOR: map the page cache contents as they are; MISSING:
 * zeros), or undefined (answer from `source`).
 */
export type UserfaultAnswer = Uint8Array | 'zero' | 'keep' | undefined;

/** Decides a fault's contents on the JS thread; may be async. */
export type UserfaultHandler = (fault: UserfaultFault) => UserfaultAnswer | Promise<UserfaultAnswer>;

/** Where the native thread takes contents from when no handler decides. */
export type UserfaultSource =
  | 'zero'
  | 'keep'
  /** Bytes copied in at registration (offset 0 = the range's first byte); past their end, zeros. */
  | Uint8Array
  /** A file read with pread at `offset + fault offset` (the fd is duplicated); past its end, zeros. */
  | { fd: number; offset?: U64Like };

/** Options of {@link registerUserfault}. */
export interface UserfaultOptions {
  /** 'missing' (anonymous memory) or 'minor' (shared memory from allocateSharedMemory()). */
  mode: UserfaultMode;
  /** Default answer: 'zero' for MISSING, 'keep' for MINOR. */
  source?: UserfaultSource;
  /** Decides each fault on the JS thread (see the module comment). */
  handler?: UserfaultHandler;
  /** Bytes answered per fault: '4k' (default) or '2m' (a 2 MiB-aligned block, as upstream does for THP). */
  granule?: '4k' | '2m';
  /** Start of the part of the memory to register (page aligned); default 0. */
  offset?: U64Like;
  /** Bytes to register (page multiple); default the rest of the memory. */
  length?: U64Like;
  /** Called with each error (handler failures, failed ioctls, EDEADLK). */
  onError?: (error: KvmError) => void;
}

/** Counters of one Userfault. */
export interface UserfaultStats {
  /** Fault messages read from the userfaultfd. */
  faults: bigint;
  /** Answered with UFFDIO_ZEROPAGE. */
  zeroed: bigint;
  /** Answered with UFFDIO_COPY (contents, or zeros for a write fault). */
  copied: bigint;
  /** Answered with UFFDIO_CONTINUE (MINOR). */
  continued: bigint;
  /** Answers the handler gave. */
  jsAnswers: bigint;
  /** Answers taken from `source`. */
  defaults: bigint;
  /** Errors reported (handler failures, failed ioctls, EDEADLK). */
  errors: bigint;
  /** Bytes supplied. */
  bytes: bigint;
  /** Sum over faults of the time from reading the fault to answering it, in ns. */
  latencyNs: bigint;
  /** The longest such time, in ns. */
  maxLatencyNs: bigint;
}

interface NativeUserfault {
  respond(id: bigint, answer: number, bytes?: Uint8Array): boolean;
  stats(): UserfaultStats;
  close(): void;
}

type NativeUserfaultCtor = new (
  start: bigint, length: bigint, mode: number, granule: bigint, policy: number, sourceBytes: Uint8Array | null,
  fileFd: number, fileOffset: bigint, minorFd: number, minorOffset: bigint,
  onMessage: (id: bigint, offset: bigint, flags: bigint, tid: number, report?: string) => void,
  faultsToJs: boolean,
) => NativeUserfault;

const addon = native as unknown as { Userfault: NativeUserfaultCtor; userfaultFeatures(): bigint };

const ANSWER = { default: 0, zero: 1, bytes: 2, keep: 3 } as const;
const POLICY = { zero: 0, bytes: 1, file: 2, keep: 3 } as const;
const FLAG_WRITE = 1n;
const FLAG_MINOR = 4n;
const FEATURE_MINOR_SHMEM = 1n << 10n;
const FEATURE_THREAD_ID = 1n << 8n;
/** Errors kept on `errors` (the counter goes on). */
const MAX_ERRORS = 100;
const OP = 'userfaultfd';

/** What this host's userfaultfd can do. */
export interface UserfaultSupport {
  /** Why userfaultfd cannot be used (e.g. EPERM), or undefined. */
  unavailable: string | undefined;
  /** UFFDIO_API's feature bits. */
  features: bigint;
  /** UFFD_FEATURE_MINOR_SHMEM: MINOR mode on shared memory. */
  minorShmem: boolean;
}

let support: UserfaultSupport | undefined;

/** Probes userfaultfd once (opens one, asks UFFDIO_API, closes it). */
export function userfaultSupport(): UserfaultSupport {
  if (support) return support;
  try {
    const features = addon.userfaultFeatures();
    support = {
      unavailable: (features & FEATURE_THREAD_ID) === 0n ? 'userfaultfd lacks UFFD_FEATURE_THREAD_ID (Linux < 4.14)' : undefined,
      features,
      minorShmem: (features & FEATURE_MINOR_SHMEM) !== 0n,
    };
  } catch (e) {
    support = { unavailable: `userfaultfd is not usable: ${e instanceof Error ? e.message : String(e)}`, features: 0n, minorShmem: false };
  }
  return support;
}

/** The memfd behind memory made by allocateSharedMemory(). */
const sharedFds = new WeakMap<HostMemory, number>();

/** Options of {@link allocateSharedMemory}. */
export interface SharedMemoryOptions {
  /** MADV_HUGEPAGE on the mapping (shmem THP also needs /sys/kernel/mm/transparent_hugepage/shmem_enabled). */
  hugePages?: boolean;
}

/**
 * Shared memory (a memfd mapped MAP_SHARED, kind 'memfd') that can back guest
 * memory and be registered in MINOR mode. The memfd is closed with the memory.
 */
export function allocateSharedMemory(size: U64Like, options: SharedMemoryOptions = {}): HostMemory {
  const op = 'memfd_create';
  const bytes = toU64(size, 'size', op);
  if (bytes === 0n || bytes % PAGE_SIZE !== 0n) throw invalidArgument(op, 'size must be a non-zero multiple of 4096', { size: bytes });
  const hugePages = options?.hugePages === true;
  const fd = callNative(op, {}, () => native.memfdCreate('node-kvm-shared'));
  let memory: HostMemory;
  try {
    callNative('ftruncate', { size: bytes }, () => ftruncateSync(fd, Number(bytes)));
    const alignment = bytes >= SIZE_2M ? SIZE_2M : PAGE_SIZE;
    const mapping = callNative('mmap', { size: bytes }, () => new native.Mapping(fd, bytes, Mm.PROT_READ | Mm.PROT_WRITE, Mm.MAP_SHARED, 0n, alignment));
    memory = HostMemory.fromMapping(mapping, 'memfd', hugePages, true);
  } catch (e) {
    native.close(fd);
    throw e;
  }
  sharedFds.set(memory, fd);
  memory.onClosed(() => native.close(fd));
  if (hugePages) memory.advise('hugepage');
  return memory;
}

/**
 * Open Userfaults, closed when the process exits: process.exit() on the main
 * thread does not tear the environment down, and libuv then joins its pool
 * threads, one of which may be a vcpu waiting for an answer only JS would give.
 * Closing answers it (from `source`) and unregisters the range.
 */
const openUserfaults = new Set<WeakRef<Userfault>>();
let exitHookInstalled = false;
function closeAllAtExit(): void {
  for (const ref of [...openUserfaults]) ref.deref()?.close();
}

/** A registered userfaultfd range with its serving thread. */
export class Userfault extends Resource {
  /** The memory whose faults this serves. */
  readonly memory: HostMemory;
  /** Which faults it serves. */
  readonly mode: UserfaultMode;
  /** Start of the registered range, as an offset into the memory. */
  readonly offset: bigint;
  /** Bytes registered. */
  readonly length: bigint;
  /** Bytes per answer. */
  readonly granule: bigint;
  readonly #native: NativeUserfault;
  readonly #errors: KvmError[] = [];
  readonly #onError: ((error: KvmError) => void) | undefined;
  readonly #handler: UserfaultHandler | undefined;
  readonly #ref = new WeakRef(this);
  #unlisten: () => void = () => {};

  /** @internal The one way to make a Userfault: registerUserfault() below. */
  static create(memory: HostMemory, mode: UserfaultMode, offset: bigint, length: bigint, granule: bigint, nat: NativeUserfault, handler: UserfaultHandler | undefined, onError: ((e: KvmError) => void) | undefined): Userfault {
    return new Userfault(memory, mode, offset, length, granule, nat, handler, onError);
  }

  /**
   * Use registerUserfault() or memory.registerUserfault(). Private, so the
   * published types refuse `new Userfault()` and subclasses.
   */
  private constructor(memory: HostMemory, mode: UserfaultMode, offset: bigint, length: bigint, granule: bigint, nat: NativeUserfault, handler: UserfaultHandler | undefined, onError: ((e: KvmError) => void) | undefined) {
    super(`Userfault(${mode}, 0x${(memory.address + offset).toString(16)})`, () => nat.close());
    this.memory = memory;
    this.mode = mode;
    this.offset = offset;
    this.length = length;
    this.granule = granule;
    this.#native = nat;
    this.#handler = handler;
    this.#onError = onError;
  }

  /** The errors so far (the first 100; `stats().errors` counts all). */
  get errors(): readonly KvmError[] {
    return this.#errors;
  }

  /** Counters since registration. */
  stats(): UserfaultStats {
    this.assertOpen('stats');
    return this.#native.stats();
  }

  /** @internal Joins the set closed at process exit. */
  joinExitSet(): void {
    openUserfaults.add(this.#ref);
  }

  /** @internal */
  attach(unlisten: () => void): void {
    this.#unlisten = unlisten;
  }

  /** @internal A message from the serving thread: a fault to decide, or a report. */
  receive(id: bigint, offset: bigint, flags: bigint, tid: number, report?: string): void {
    if (report !== undefined) {
      const code = report.startsWith('the JS thread itself') ? 'EDEADLK' : 'EIO';
      this.#fail(new KvmError(`userfault: ${report}`, { code, syscall: OP, args: { mode: this.mode } }));
      return;
    }
    if (this.closed || !this.#handler) return;
    const fault: UserfaultFault = Object.freeze({
      offset: offset + this.offset,
      length: this.granule < this.length - offset ? this.granule : this.length - offset,
      write: (flags & FLAG_WRITE) !== 0n,
      minor: (flags & FLAG_MINOR) !== 0n,
      threadId: tid,
    });
    let answer: UserfaultAnswer | Promise<UserfaultAnswer>;
    try {
      answer = this.#handler(fault);
    } catch (e) {
      this.#handlerFailed(id, fault, e);
      return;
    }
    if (answer !== null && typeof answer === 'object' && typeof (answer as Promise<unknown>).then === 'function' && !(answer instanceof Uint8Array)) {
      (answer as Promise<UserfaultAnswer>).then(
        (a) => this.#answer(id, fault, a),
        (e: unknown) => this.#handlerFailed(id, fault, e),
      );
      return;
    }
    this.#answer(id, fault, answer as UserfaultAnswer);
  }

  #answer(id: bigint, fault: UserfaultFault, answer: UserfaultAnswer): void {
    if (this.closed) return; // close() already answered it from `source`
    if (answer === undefined) this.#native.respond(id, ANSWER.default);
    else if (answer === 'zero') this.#native.respond(id, ANSWER.zero);
    else if (answer === 'keep') this.#native.respond(id, ANSWER.keep);
    else if (answer instanceof Uint8Array) this.#native.respond(id, ANSWER.bytes, answer);
    else this.#handlerFailed(id, fault, new TypeError(`the handler returned ${describe(answer)}; expected a Uint8Array, 'zero', 'keep' or undefined`));
  }

  #handlerFailed(id: bigint, fault: UserfaultFault, e: unknown): void {
    if (!this.closed) this.#native.respond(id, ANSWER.zero);
    const message = e instanceof Error ? e.message : describe(e);
    this.#fail(
      new KvmError(`userfault handler failed at offset 0x${fault.offset.toString(16)} (answered with zeros): ${message}`, {
        code: 'EIO',
        syscall: OP,
        args: { offset: fault.offset, write: fault.write, minor: fault.minor },
        cause: e,
      }),
    );
  }

  #fail(error: KvmError): void {
    if (this.#errors.length < MAX_ERRORS) this.#errors.push(error);
    try {
      this.#onError?.(error);
    } catch {
      // An onError that throws must not take down the serving path.
    }
  }

  protected override onClose(): void {
    openUserfaults.delete(this.#ref);
    this.#unlisten();
  }
}

/**
 * Registers [offset, offset+length) of `memory` with a new userfaultfd and
 * starts its serving thread. MISSING needs anonymous memory that nothing has
 * touched yet in the range (touched pages are not missing); MINOR needs
 * memory from allocateSharedMemory() and UFFD_FEATURE_MINOR_SHMEM. Closing
 * the memory closes the Userfault first.
 */
export function registerUserfault(memory: HostMemory, options: UserfaultOptions): Userfault {
  // A brand check: a Proxy of a HostMemory could name another address.
  if (!HostMemory.isHostMemory(memory)) throw invalidArgument(OP, `memory must be a HostMemory, got ${describe(memory)}`);
  // Each option is read once, here, before anything is checked or done (throwing getters and revoked Proxies are EINVAL).
  const o = readOptions(options, OP, { mode: opt.any, source: opt.any, handler: opt.any, granule: opt.any, offset: opt.any, length: opt.any, onError: opt.any }, { required: true });
  const { mode, source: sourceIn, handler, granule: granuleName, offset: offsetIn, length: lengthIn, onError } = o;
  const source = typeof sourceIn === 'object' && sourceIn !== null && !isInstance(sourceIn, Uint8Array) ? readOptions(sourceIn, OP, { fd: opt.any, offset: opt.any }, { name: 'source' }) : sourceIn;
  if (mode !== 'missing' && mode !== 'minor') throw invalidArgument(OP, `mode must be 'missing' or 'minor', got ${describe(mode)}`);
  if (handler !== undefined && typeof handler !== 'function') throw invalidArgument(OP, 'handler must be a function');
  if (onError !== undefined && typeof onError !== 'function') throw invalidArgument(OP, 'onError must be a function');
  if (granuleName !== undefined && granuleName !== '4k' && granuleName !== '2m') throw invalidArgument(OP, `granule must be '4k' or '2m', got ${describe(granuleName)}`);
  const granule = granuleName === '2m' ? SIZE_2M : PAGE_SIZE;
  const offset = toU64((offsetIn ?? 0n) as U64Like, 'offset', OP);
  if (memory.closed) throw new KvmError('registerUserfault on a closed HostMemory', { code: 'ECLOSED', syscall: OP });
  const length = toU64((lengthIn as U64Like | undefined) ?? (memory.size > offset ? memory.size - offset : 0n), 'length', OP);
  if (offset % PAGE_SIZE !== 0n || length % PAGE_SIZE !== 0n || length === 0n) throw invalidArgument(OP, 'offset and length must be page aligned, length non-zero', { offset, length });
  if (offset > memory.size || length > memory.size - offset) throw invalidArgument(OP, 'range outside the memory', { offset, length, size: memory.size });

  let policy: number = mode === 'minor' ? POLICY.keep : POLICY.zero;
  let bytes: Uint8Array | null = null;
  let fileFd = -1;
  let fileOffset = 0n;
  if (source === 'zero') policy = POLICY.zero;
  else if (source === 'keep') {
    if (mode !== 'minor') throw invalidArgument(OP, "source 'keep' is for mode 'minor' (a missing page has no contents to keep)");
    policy = POLICY.keep;
  } else if (isInstance(source, Uint8Array)) {
    policy = POLICY.bytes;
    bytes = source;
  } else if (typeof source === 'object' && source !== null) {
    const { fd, offset: fo } = source as { fd: unknown; offset?: U64Like };
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) throw invalidArgument(OP, 'source.fd must be an open file descriptor', { fd: describe(fd) });
    policy = POLICY.file;
    fileFd = fd;
    fileOffset = toU64(fo ?? 0n, 'source.offset', OP);
  } else if (source !== undefined) {
    throw invalidArgument(OP, `source must be 'zero', 'keep', a Uint8Array or { fd, offset }, got ${describe(source)}`);
  }

  const unavailable = userfaultSupport().unavailable;
  if (unavailable) throw new KvmError(unavailable, { code: 'EOPNOTSUPP', syscall: OP });
  let minorFd = -1;
  if (mode === 'minor') {
    const fd = sharedFds.get(memory);
    if (memory.kind !== 'memfd' || fd === undefined) throw invalidArgument(OP, "mode 'minor' needs shared memory from allocateSharedMemory() (kind 'memfd')", { kind: memory.kind });
    if (!userfaultSupport().minorShmem) throw new KvmError('this kernel has no UFFD_FEATURE_MINOR_SHMEM (Linux < 5.14)', { code: 'EOPNOTSUPP', syscall: OP });
    minorFd = fd;
  } else if (memory.kind !== 'anonymous') {
    throw invalidArgument(OP, `mode 'missing' is for anonymous memory (this is '${memory.kind}')`, { kind: memory.kind });
  }

  let uf: Userfault | undefined;
  // Always given: without a handler it still carries the thread's reports.
  const onMessage = (id: bigint, off: bigint, flags: bigint, tid: number, report?: string): void => uf?.receive(id, off, flags, tid, report);
  const start = memory.address + offset;
  const nat = callNative(OP, { mode, offset, length }, () => {
    const ctor = addon.Userfault;
    return new ctor(start, length, mode === 'minor' ? 1 : 0, granule, policy, bytes, fileFd, fileOffset, minorFd, offset, onMessage, handler !== undefined);
  });
  uf = Userfault.create(memory, mode, offset, length, granule, nat, handler as UserfaultHandler | undefined, onError as ((error: KvmError) => void) | undefined);
  const created = uf;
  created.attach(memory.onClosed(() => created.close()));
  created.joinExitSet();
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', closeAllAtExit);
  }
  return created;
}

