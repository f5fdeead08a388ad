/**
 * Base of every object that owns a file descriptor or a mapping: explicit
 * close() and [Symbol.dispose], use after close throws KvmError 'ECLOSED',
 * and a FinalizationRegistry that releases what was never closed (a safety
 * net only: fds are scarce, so close explicitly or with `using`).
 */
import { closedError, toKvmError } from './errors.js';

const finalizer = new FinalizationRegistry<() => void>((release) => {
  try {
    release();
  } catch {
    // Nothing useful can be done about a failure inside a GC callback.
  }
});

/** An owned kernel resource with an explicit lifetime. */
export abstract class Resource implements Disposable {
  #closed = false;
  #inflight = 0;
  #pendingRelease: (() => void) | undefined;
  #idleWaiters: (() => void)[] = [];
  readonly #what: string;
  readonly #token = {};

  /**
   * @param what name used in errors ('Vm', 'Vcpu 0', ...)
   * @param release frees the kernel resource; must not capture `this`, or the
   *   finalizer could never run.
   */
  protected constructor(what: string, release: () => void) {
    this.#what = what;
    this.#release = release;
    finalizer.register(this, release, this.#token);
  }

  readonly #release: () => void;

  /** Whether close() has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Throws KvmError 'ECLOSED' if closed; `op` names the attempted call. */
  protected assertOpen(op: string): void {
    if (this.#closed) throw closedError(this.#what, op);
  }

  /**
   * Marks an asynchronous kernel call in flight: while any is, close() defers
   * releasing the fd so a worker thread never issues a call on a recycled fd.
   */
  protected async track<T>(op: string, work: () => Promise<T>): Promise<T> {
    this.assertOpen(op);
    this.#inflight++;
    try {
      return await work();
    } finally {
      this.#inflight--;
      if (this.#inflight === 0) {
        if (this.#pendingRelease) {
          const release = this.#pendingRelease;
          this.#pendingRelease = undefined;
          release();
        }
        for (const wake of this.#idleWaiters.splice(0)) wake();
      }
    }
  }

  /** @internal Resolves when no asynchronous call is in flight. */
  idle(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Number of asynchronous calls in flight. */
  protected get inflight(): number {
    return this.#inflight;
  }

  /** Hook for subclasses: runs once, before the resource is released. */
  protected onClose(): void {}

  /**
   * Releases the resource. Idempotent. If asynchronous calls are in flight
   * the release happens when the last one settles; the object is unusable
   * from now on either way.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    finalizer.unregister(this.#token);
    try {
      this.onClose();
    } finally {
      if (this.#inflight > 0) {
        this.#pendingRelease = this.#safeRelease;
      } else {
        this.#safeRelease();
      }
    }
  }

  readonly #safeRelease = (): void => {
    try {
      this.#release();
    } catch (e) {
      throw toKvmError(e, 'close', { object: this.#what });
    }
  };

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
