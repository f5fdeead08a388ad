/**
 * The memslot_perf workloads' geometry and guest programs: where the test
 * memory lies, how it is cut into memslots, and what the vcpu does in each of
 * the six tests. Shared by the selftest port (memslot_perf-workload.ts), the
 * benchmark family and the C reference, which is handed the very same guest
 * code (lib/bench/memslot-perf.ts), so both sides run identical guests.
 *
 * Sizes follow the upstream test (Linux 7.3 memslot_perf_test) divided by a
 * `scale` (1 = upstream's sizes): the whole area is 512 MiB / scale plus a
 * 64 KiB page of sync data and slack, the map test uses 32 MiB / scale, the
 * unmap tests 128 MiB / scale, the move tests move the last slot with a
 * 192 KiB area the guest writes.
 *
 * Guest/host handshake (upstream's sync_area, at the first test page): u32
 * start flag (host sets it once the guest is ready), u32 exit flag (host sets
 * it to end the guest), u32 sync flag (host sets it and spins until the
 * guest clears it: each side then knows the other finished its half), u64
 * address of the move test's area. Upstream clears the sync flag with a
 * compare-exchange; only the host ever sets it and only the guest ever clears
 * it, so a plain load and store do the same on x86.
 */
import { Asm } from '../guest/asm.js';
import { emitUcallAbort, emitUcallDone, emitUcallSync } from '../guest/ucall.js';

const MiB = 1n << 20n;
/** Guest and host page size (x86-64). */
export const PAGE = 4096n;
/** Where the test memory starts (upstream MEM_GPA: 256 MiB). */
export const MEM_GPA = 256n * MiB;
/** The sync area and slack before the test area (upstream MEM_EXTRA_SIZE). */
export const MEM_EXTRA = 64n << 10n;
/** First byte the tests write (upstream MEM_TEST_GPA). */
export const TEST_GPA = MEM_GPA + MEM_EXTRA;
/** The move tests' area (upstream MEM_TEST_MOVE_SIZE): 3 x 64 KiB, half of it in the moved slot when active. */
export const MOVE_SIZE = 3n * (64n << 10n);
/** What the guest writes (upstream MEM_TEST_VAL_1). */
export const VAL_1 = 0x1122334455667788n;
/** What the host writes for the RW test, and the map test's second half (upstream MEM_TEST_VAL_2). */
export const VAL_2 = 0x99aabbccddeeff00n;

/** Byte offsets in the sync area (at MEM_GPA). */
export const SYNC = { start: 0, exit: 4, sync: 8, moveArea: 16 } as const;

/** The six tests, in upstream's order and spelling. */
export const MEMSLOT_PERF_TESTS = ['map', 'unmap', 'unmap chunked', 'move active area', 'move inactive area', 'RW'] as const;
/** One of the six tests. */
export type MemslotPerfTest = (typeof MEMSLOT_PERF_TESTS)[number];

/** The scales allowed: the unmap tests need 128 MiB / scale to hold whole pairs of 2 MiB chunks. */
export const MEMSLOT_PERF_SCALES: readonly number[] = [1, 2, 4, 8, 16, 32];

/** The sizes of one test at one scale, in bytes. */
export interface MemslotPerfGeometry {
  test: MemslotPerfTest;
  scale: number;
  /** The memory cut into slots (from MEM_GPA). */
  memSize: bigint;
  /** The part the guest and host work on (from TEST_GPA); the move tests' area. */
  testSize: bigint;
  /** Pages per madvise(MADV_DONTNEED) call in the unmap tests. */
  chunkPages: bigint;
  /** Where the move tests move the last slot to (upstream MEM_TEST_MOVE_GPA_DEST). */
  moveDest: bigint;
}

/** The geometry of `test` at `scale` (one of MEMSLOT_PERF_SCALES). */
export function memslotPerfGeometry(test: MemslotPerfTest, scale: number): MemslotPerfGeometry {
  if (!MEMSLOT_PERF_SCALES.includes(scale)) throw new RangeError(`memslot_perf scale must be one of ${MEMSLOT_PERF_SCALES.join(', ')}, got ${scale}`);
  const s = BigInt(scale);
  const whole = (512n * MiB) / s;
  const area = test === 'map' ? (32n * MiB) / s : test === 'unmap' || test === 'unmap chunked' ? (128n * MiB) / s : whole;
  const memSize = area + MEM_EXTRA;
  const testSize = test.startsWith('move') ? MOVE_SIZE : area;
  const chunkPages = test === 'unmap chunked' ? (2n * MiB) / PAGE : 1n;
  return { test, scale, memSize, testSize, chunkPages, moveDest: MEM_GPA + whole + MEM_EXTRA };
}

/** How the memory is cut into slots 1..slots (upstream: slot 0 is the system slot). */
export interface SlotLayout {
  /** Test slots (not counting slot 0). */
  slots: number;
  pages: bigint;
  pagesPerSlot: bigint;
  /** Extra pages of the last slot. */
  remainder: bigint;
}

/** Cuts `memSize` into `slots` slots as upstream does; undefined when a slot would get no page. */
export function slotLayout(memSize: bigint, slots: number): SlotLayout | undefined {
  const pages = memSize / PAGE;
  const pagesPerSlot = pages / BigInt(slots);
  if (pagesPerSlot === 0n) return undefined;
  return { slots, pages, pagesPerSlot, remainder: pages % BigInt(slots) };
}

/** Guest-physical address of test slot index i (0-based: slot id i + 1). */
export function slotGpa(layout: SlotLayout, i: number): bigint {
  return MEM_GPA + BigInt(i) * layout.pagesPerSlot * PAGE;
}

/** Pages of test slot index i. */
export function slotPages(layout: SlotLayout, i: number): bigint {
  return i === layout.slots - 1 ? layout.pagesPerSlot + layout.remainder : layout.pagesPerSlot;
}

/** Guest page-table bytes the memory needs with 4 KiB pages (one table per 2 MiB, plus the upper levels). */
export function pageTableBytes(memSize: bigint): bigint {
  return ((memSize + 2n * MiB - 1n) / (2n * MiB) + 8n) * PAGE;
}

// r15 holds the sync area's address throughout; rax/rdx/rdi/rsi are the ucalls'.
function syncField(field: keyof typeof SYNC): { base: 'r15'; disp: number } {
  return { base: 'r15', disp: SYNC[field] };
}

/** Upstream guest_perform_sync(): wait for the host's flag and clear it; to `exit` when told to stop. */
function emitPerformSync(a: Asm, exit: string): void {
  const top = a.newLabel('sync');
  const got = a.newLabel('synced');
  a.label(top);
  a.load('eax', syncField('exit')).test('eax', 'eax').jnz(exit, 'near');
  a.load('eax', syncField('sync')).test('eax', 'eax').jnz(got);
  a.jmp(top);
  a.label(got).storeImm(syncField('sync'), 0, 32);
}

/** Writes `value` (a register) to the first u64 of each page of [gpa, gpa + size). */
function emitWritePages(a: Asm, gpa: bigint, size: bigint, value: 'r12' | 'r13'): void {
  const loop = a.newLabel('write');
  a.mov('rbx', gpa).mov('rcx', size / PAGE);
  a.label(loop).store({ base: 'rbx' }, value).add('rbx', Number(PAGE)).decJnz('rcx', loop);
}

/**
 * The guest program of a test: SYNC(0) once ready, spin until the start
 * flag, then the test's loop until the exit flag, then DONE. Upstream's
 * guest_code_test_memslot_{map,unmap,move,rw}.
 */
export function memslotPerfProgram(g: MemslotPerfGeometry): Asm {
  const a = new Asm({ branches: 'near' });
  a.label('start').mov('r15', MEM_GPA).mov('r12', VAL_1).mov('r13', VAL_2).mov('r11', 0);
  emitUcallSync(a, 0);
  a.label('spin').load('eax', syncField('start')).test('eax', 'eax').jz('spin');
  a.label('loop');
  switch (g.test) {
    case 'map': {
      const half = g.testSize / 2n;
      emitWritePages(a, TEST_GPA, half, 'r12');
      emitPerformSync(a, 'done');
      emitWritePages(a, TEST_GPA + half, half, 'r13');
      emitPerformSync(a, 'done');
      break;
    }
    case 'unmap':
    case 'unmap chunked':
      // One page per half per sync: more would make it a map test (upstream's comment).
      a.mov('rbx', TEST_GPA).store({ base: 'rbx' }, 'r12');
      emitPerformSync(a, 'done');
      a.mov('rbx', TEST_GPA + g.testSize / 2n).store({ base: 'rbx' }, 'r13');
      emitPerformSync(a, 'done');
      break;
    case 'move active area':
    case 'move inactive area':
      // No sync: the host only moves the slot back and forth; MMIO exits (the
      // moved half, while it is away) are answered by the vcpu thread.
      a.load('eax', syncField('exit')).test('eax', 'eax').jnz('done');
      a.load('r14', syncField('moveArea'));
      a.mov('rbx', 'r14').mov('rcx', MOVE_SIZE / PAGE);
      a.label('move_write').store({ base: 'rbx' }, 'r12').add('rbx', Number(PAGE)).decJnz('rcx', 'move_write');
      break;
    case 'RW':
      emitWritePages(a, TEST_GPA, g.testSize, 'r12');
      emitPerformSync(a, 'done');
      // The host wrote VAL_2 in the middle of every page: check it and clear it.
      a.mov('rbx', TEST_GPA + PAGE / 2n).mov('rcx', g.testSize / PAGE);
      a.label('rw_check').load('r14', { base: 'rbx' }).cmp('r14', 'r13').jne('rw_bad');
      a.store({ base: 'rbx' }, 'r11').add('rbx', Number(PAGE)).decJnz('rcx', 'rw_check');
      emitPerformSync(a, 'done');
      break;
  }
  a.jmp('loop');
  a.label('done');
  emitUcallDone(a);
  a.jmp('done');
  if (g.test === 'RW') {
    a.label('rw_bad');
    emitUcallAbort(a, { text: 'RW: a page does not hold the value the host wrote (value: its address)' }, 'rbx');
    a.jmp('rw_bad');
  }
  return a;
}
