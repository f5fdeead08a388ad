/**
 * EventFd: an eventfd(2) counter, the kernel's doorbell between a VMM and
 * KVM. Give one to Vm.registerIoeventfd() and a guest write to that address
 * becomes a counter increment with no exit to userspace; give one to
 * Vm.registerIrqfd() and write(1) raises that GSI in the guest.
 *
 * wait() parks no thread: the fd joins libuv's epoll set and the promise
 * settles on the event loop when the counter is non-zero. write() is one
 * syscall, so any thread holding the fd number (`eventFd.fd`, e.g. passed
 * to a worker) can raise an irqfd.
 */
import { callNative, closedError, invalidArgument, KvmError, toKvmError, type ErrorArgs } from './errors.js';
import { describe } from './int.js';
import { isAbortSignal } from './options.js';
import { native } from './native.js';
import { Resource } from './resource.js';
import { readOptions, toBool, toUint } from './vm/struct.js';

/** Options of new EventFd(). */
export interface EventFdOptions {
  /** Initial counter value; default 0. */
  initialValue?: number;
  /** EFD_SEMAPHORE: each read takes 1 instead of the whole counter. */
  semaphore?: boolean;
}

const MAX_COUNT = (1n << 64n) - 2n;
const ECANCELED = 125;

/** An owned eventfd (non-blocking, close-on-exec). */
export class EventFd extends Resource {
  readonly #fd: number;
  /** The uv_poll wait in flight (libuv allows one per fd), shared by concurrent wait() calls. */
  #pending: { promise: Promise<bigint>; cancel(): boolean } | undefined;
  #shared: Promise<bigint> | undefined;
  /** wait() calls with an AbortSignal still interested in #shared. */
  #abortable = 0;
  #plain = 0;

  /** eventfd(2) with EFD_CLOEXEC | EFD_NONBLOCK (and EFD_SEMAPHORE if asked). */
  constructor(options: EventFdOptions = {}) {
    const o = readOptions(options, 'eventfd', ['initialValue', 'semaphore']);
    const initial = toUint(o.initialValue ?? 0, 32, 'initialValue', 'eventfd');
    const semaphore = toBool(o.semaphore, 'semaphore', 'eventfd');
    const fd = callNative('eventfd', { initialValue: initial }, () => native.eventfdCreate(initial, semaphore));
    super(`EventFd(fd ${fd})`, () => native.close(fd));
    this.#fd = fd;
  }

  /**
   * Whether `value` is a real EventFd (a brand check on its private field:
   * an object made with Object.create(EventFd.prototype), or a Proxy of one,
   * is not; a subclass instance is, and its own fd is used).
   */
  static isEventFd(value: unknown): value is EventFd {
    return typeof value === 'object' && value !== null && #fd in value;
  }

  /**
   * @internal The fd of a brand-checked EventFd for `op`, read from its
   * private field (a getter overridden by a subclass or a Proxy cannot name
   * another fd); ECLOSED after close().
   */
  static fdFor(eventFd: EventFd, op: string): number {
    eventFd.assertOpen(op);
    return eventFd.#fd;
  }

  /** The fd number (for KVM_IRQFD/KVM_IOEVENTFD, or to write from another thread). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /** Adds n (default 1) to the counter. Throws EAGAIN if it would pass 2^64-2. */
  write(n: number | bigint = 1n): void {
    this.assertOpen('eventfd write');
    const v = typeof n === 'number' && Number.isSafeInteger(n) ? BigInt(n) : n;
    if (typeof v !== 'bigint' || v < 1n || v > MAX_COUNT) throw invalidArgument('eventfd write', `n must be an integer in [1, 2^64-2], got ${describe(n)}`);
    callNative('eventfd write', { fd: this.#fd, n: v }, () => native.eventfdWrite(this.#fd, v));
  }

  /** Takes the counter (1 in semaphore mode) without blocking; 0n when it is zero. */
  read(): bigint {
    this.assertOpen('eventfd read');
    return callNative('eventfd read', { fd: this.#fd }, () => native.eventfdRead(this.#fd)) ?? 0n;
  }

  /**
   * Resolves with the counter (taken, as read() does) once it is non-zero.
   * Concurrent wait() calls share one read and resolve with the same value.
   * close() while waiting rejects with KvmError 'ECLOSED'; `signal` aborts
   * with 'ABORT_ERR'.
   */
  wait(options: { signal?: AbortSignal } = {}): Promise<bigint> {
    let signal: AbortSignal | undefined;
    try {
      const o = readOptions(options, 'eventfd wait', ['signal']);
      if (o.signal !== undefined && !isAbortSignal(o.signal)) throw invalidArgument('eventfd wait', 'signal must be an AbortSignal');
      signal = o.signal as AbortSignal | undefined;
      this.assertOpen('eventfd wait');
      if (signal?.aborted) throw new KvmError('eventfd wait aborted', { code: 'ABORT_ERR', args: { fd: this.#fd } });
    } catch (e) {
      return Promise.reject(e);
    }
    const shared = this.#startWait();
    if (!signal) {
      this.#plain++;
      return shared;
    }
    this.#abortable++;
    return new Promise<bigint>((resolve, reject) => {
      let done = false;
      const onAbort = (): void => {
        if (done) return;
        done = true;
        this.#abortable--;
        // The last interested waiter gave up: stop polling (nobody would take the count).
        if (this.#abortable === 0 && this.#plain === 0) this.#pending?.cancel();
        reject(new KvmError('eventfd wait aborted', { code: 'ABORT_ERR', args: { fd: this.#fd } }));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      shared.then(
        (v) => {
          if (!done) resolve(v);
        },
        (e) => {
          if (!done) reject(e);
        },
      ).finally(() => {
        if (!done) this.#abortable--;
        done = true;
        signal.removeEventListener('abort', onAbort);
      });
    });
  }

  protected override onClose(): void {
    // Stop polling before the fd is closed: a closed fd must not stay in epoll.
    this.#pending?.cancel();
  }

  #startWait(): Promise<bigint> {
    if (this.#shared) return this.#shared;
    const args: ErrorArgs = { fd: this.#fd };
    const pending = callNative('eventfd wait', args, () => native.eventfdWait(this.#fd));
    this.#pending = pending;
    const shared = this.track('eventfd wait', async () => {
      try {
        return await pending.promise;
      } catch (e) {
        if ((e as { errno?: number }).errno === ECANCELED) throw closedError(`EventFd(fd ${this.#fd})`, 'eventfd wait');
        throw toKvmError(e, 'eventfd wait', args);
      } finally {
        this.#pending = undefined;
        this.#shared = undefined;
        this.#plain = 0;
      }
    });
    this.#shared = shared;
    return shared;
  }
}
