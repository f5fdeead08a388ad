/**
 * Invalidation of guest ranges, as KVM's MMU notifiers do it: any change to
 * what backs a range (a slot deleted or moved, attributes changed, a hole
 * punched, memory closed) drops the software MMU's mappings of it and tells
 * the listeners. Every change also bumps the VM's memslot generation.
 */
import { SoftMmu } from '../soft-mmu/index.js';

/** Why mappings of a guest range became invalid (for the software MMU). */
export type InvalidationReason = 'slot-delete' | 'slot-move' | 'attributes' | 'punch-hole';

/** A listener told about invalidated guest ranges. */
export type InvalidationListener = (gpa: bigint, size: bigint, reason: InvalidationReason, slot: number | undefined) => void;

/** One VM's software MMU, its invalidation listeners and its memslot generation. */
export class GuestRangeInvalidations {
  readonly #listeners = new Set<InvalidationListener>();
  #softMmu: SoftMmu | undefined;
  #generation = 0;

  /** The software MMU (made on first use). */
  get softMmu(): SoftMmu {
    this.#softMmu ??= new SoftMmu();
    return this.#softMmu;
  }

  /** Bumped by every memslot, attribute or backing change. */
  get generation(): number {
    return this.#generation;
  }

  /** Records a change that invalidates nothing (a new slot). */
  bump(): void {
    this.#generation++;
  }

  /** Drops the mappings of [gpa, gpa + size) and tells the listeners. */
  invalidate(gpa: bigint, size: bigint, reason: InvalidationReason, slot: number | undefined): void {
    this.#generation++;
    this.#softMmu?.zapRange(gpa, size);
    for (const l of this.#listeners) l(gpa, size, reason, slot);
  }

  /** Adds a listener; returns the function that removes it. */
  subscribe(listener: InvalidationListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The VM closed: nothing is mapped any more, so lookup() and stats() must
   * not report the memory just unmapped (a held vm.softMmu reference included).
   */
  close(): void {
    this.#softMmu?.zapAll();
    this.#generation++;
    this.#listeners.clear();
  }
}
