/**
 * The dirty page log of a memslot with logDirtyPages: KVM_GET_DIRTY_LOG
 * (fetch, and unless manual protection is on, clear and re-protect) and
 * KVM_CLEAR_DIRTY_LOG (re-protect chosen pages, with
 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled).
 */
import { invalidArgument } from '../errors.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { bigUint64View, toU64Arg, toUint } from './struct.js';

/** One slot's dirty bitmap: bit i set = page i of the slot was written. */
export class DirtyLog {
  constructor(
    /** The memslot id. */
    readonly slot: number,
    /** Guest-physical address of the slot's first page. */
    readonly guestPhysAddr: bigint,
    /** Pages in the slot (bits of `bitmap` that mean something). */
    readonly pages: number,
    /** The bitmap, 64 pages per word, bit 0 of word 0 = the slot's first page. */
    readonly bitmap: BigUint64Array,
  ) {}

  /** Whether page `index` of the slot is dirty. */
  isDirty(index: number): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.pages) return false;
    return ((this.bitmap[index >>> 6]! >> BigInt(index & 63)) & 1n) === 1n;
  }

  /** Indices (within the slot) of the dirty pages, ascending. */
  *dirtyPageIndices(): IterableIterator<number> {
    for (let w = 0; w < this.bitmap.length; w++) {
      let word = this.bitmap[w]!;
      while (word !== 0n) {
        const low = word & -word;
        const bit = low.toString(2).length - 1;
        const index = w * 64 + bit;
        if (index < this.pages) yield index;
        word ^= low;
      }
    }
  }

  /** Guest-physical addresses of the dirty pages, ascending. */
  *dirtyPages(): IterableIterator<bigint> {
    for (const i of this.dirtyPageIndices()) yield this.guestPhysAddr + BigInt(i) * 4096n;
  }

  /** Number of dirty pages. */
  get count(): number {
    let n = 0;
    for (const _ of this.dirtyPageIndices()) n++;
    return n;
  }
}

function slotOf(vm: Vm, slot: unknown, op: string): { id: number; gpa: bigint; pages: number } {
  const id = toUint(slot, 32, 'slot', op);
  vm.fdFor(op); // ECLOSED after close (its slot table is empty then: not ENOENT)
  const s = vm.memorySlots().find((m) => m.slot === id);
  if (!s) throw invalidArgument(op, `slot ${id} does not exist`, { slot: id }, 'ENOENT');
  if (!s.logDirtyPages) throw invalidArgument(op, `slot ${id} was not created with logDirtyPages`, { slot: id }, 'ENOENT');
  return { id, gpa: s.guestPhysAddr, pages: Number(s.size / 4096n) };
}

/** Words of bitmap a slot of `pages` pages needs. */
export function dirtyBitmapWords(pages: number): number {
  return Math.ceil(pages / 64);
}

/**
 * KVM_GET_DIRTY_LOG for a slot. `into` (at least dirtyBitmapWords(pages)
 * words) is filled and reused instead of allocating.
 */
export function getDirtyLog(vm: Vm, slot: number, into?: BigUint64Array): DirtyLog {
  const op = 'KVM_GET_DIRTY_LOG';
  const s = slotOf(vm, slot, op);
  const words = dirtyBitmapWords(s.pages);
  // The caller's array through the intrinsic getters: a subclass's length or subarray() cannot shrink what the kernel writes into.
  const given = into === undefined ? undefined : bigUint64View(into);
  if (into !== undefined && given === undefined) throw invalidArgument(op, 'into must be a BigUint64Array');
  if (given !== undefined && given.length < words) throw invalidArgument(op, `into has ${given.length} words; slot ${s.id} needs ${words}`, { slot: s.id });
  const bitmap = given ? given.subarray(0, words) : new BigUint64Array(words);
  const bytes = new Uint8Array(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength);
  callVm(vm, op, { slot: s.id }, (fd) => native.vmGetDirtyLog(fd, s.id, bytes, s.pages));
  return new DirtyLog(s.id, s.gpa, s.pages, bitmap);
}

/**
 * KVM_CLEAR_DIRTY_LOG: re-protects pages [firstPage, firstPage + numPages)
 * of the slot so their next write is logged again. firstPage must be a
 * multiple of 64; numPages too, unless the range ends at the slot's end.
 * Needs KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled (vm.enableCap).
 *
 * `bitmap` (bit i = page firstPage + i, at least dirtyBitmapWords(numPages)
 * words) clears only the pages whose bit is set: pass the bitmap
 * KVM_GET_DIRTY_LOG just gave, so a page dirtied between the get and the
 * clear stays dirty instead of being lost. Without it every page of the range
 * is cleared.
 */
export function clearDirtyLog(vm: Vm, slot: number, firstPage: bigint | number, numPages: number, bitmap?: BigUint64Array): void {
  const op = 'KVM_CLEAR_DIRTY_LOG';
  const s = slotOf(vm, slot, op);
  const first = toU64Arg(firstPage, 'firstPage', op);
  const n = toUint(numPages, 32, 'numPages', op);
  const args = { slot: s.id, firstPage: first, numPages: n };
  if (first % 64n !== 0n) throw invalidArgument(op, 'firstPage must be a multiple of 64', args);
  if (first + BigInt(n) > BigInt(s.pages)) throw invalidArgument(op, `range passes the slot's ${s.pages} pages`, args);
  if (n % 64 !== 0 && first + BigInt(n) !== BigInt(s.pages)) throw invalidArgument(op, "numPages must be a multiple of 64 unless the range ends at the slot's end", args);
  const given = bitmap === undefined ? undefined : bigUint64View(bitmap);
  if (bitmap !== undefined && given === undefined) throw invalidArgument(op, 'bitmap must be a BigUint64Array', args);
  const words = dirtyBitmapWords(n);
  if (given !== undefined && given.length < words) throw invalidArgument(op, `bitmap has ${given.length} words; ${n} pages need ${words}`, args);
  if (n === 0) return;
  // A copy: what is passed is what was checked, and the caller's array may change meanwhile.
  const bits = given ? given.slice(0, words) : new BigUint64Array(words).fill(~0n & ((1n << 64n) - 1n));
  callVm(vm, op, args, (fd) => native.vmClearDirtyLog(fd, s.id, first, n, new Uint8Array(bits.buffer)));
}
