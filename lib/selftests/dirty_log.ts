/**
 * Port of the kernel's dirty_log_test: one vcpu keeps writing the current
 * iteration number into random pages of a dirty-logged memslot while the host
 * collects the dirty log, once while the guest runs and once after stopping
 * it, in each of a number of iterations. After each iteration every page must
 * agree with the log: a page reported dirty holds this iteration's number
 * (with the exceptions below), and a page reported clean holds an older one.
 * So a page the guest wrote since the last collection and the log missed
 * fails the case.
 *
 * Three ways to collect, one case each (upstream's log modes):
 * - dirty-log: KVM_GET_DIRTY_LOG, which also re-protects what it reports;
 * - clear-log: KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG of exactly the
 *   pages it reported (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with
 *   INITIALLY_SET where offered: the first log reports every page);
 * - dirty-ring: the per-vcpu ring (KVM_CAP_DIRTY_LOG_RING), harvested and
 *   rearmed with KVM_RESET_DIRTY_RINGS, which must reset exactly the entries
 *   harvested. A full ring stops the vcpu (`dirty-ring-full`) until the host
 *   harvests; the last entry harvested may belong to a write that has not
 *   retired yet, so its page may still hold an older number, and the write
 *   may retire in the next iteration with the previous number.
 *
 * Upstream uses 1 GiB + 3 pages (the 3 make the bitmap's last word partial),
 * 32 iterations of 10 ms, at least 256 guest writes per iteration and a
 * 65536-entry ring (capped by the memory's page count). Here the defaults are
 * smaller for CI: `dirty_log.memory` 32M (+ 3 pages), `dirty_log.iterations`
 * 16, `dirty_log.interval` 10 (ms), `dirty_log.ring` 1024 entries (small so
 * the ring fills and the full-ring path runs), `dirty_log.seed`. Full size:
 * `--set dirty_log.memory=1G --set dirty_log.iterations=32 --set dirty_log.ring=65536`.
 */
import { Asm } from '../guest/asm.js';
import { Guest } from '../guest/guest.js';
import { decodeUcall, emitUcallSync } from '../guest/ucall.js';
import type { IoExit } from '../exit.js';
import { Kvm } from '../kvm.js';
import type { Vm } from '../vm.js';
import { DirtyRing, dirtyRingSupport, enableDirtyRing, resetDirtyRings } from '../vm/dirty-ring.js';
import { SelftestFailure, show } from './assert.js';
import { firstReason, needs } from './host.js';
import { countSetting, parseSize, sizeSetting } from './settings.js';
import type { SelftestContext, SelftestSuite } from './types.js';

const P = 4096n;
const TEST_SLOT = 1;
const TEST_GPA = 4n << 30n;
/** The control block in the system memslot: iteration, stop flag, write count (u64 each). */
const CONTROL_GPA = 0x40000n;
const MIN_WRITES_PER_ITERATION = 0x100;
/** KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET. */
const MANUAL_PROTECT_ENABLE = 1n;
const INITIALLY_SET = 2n;
/** A guest that makes no write for this long has stopped making progress (a hang guard, not a goal). */
const NO_PROGRESS_MS = 120_000;

type Mode = 'dirty-log' | 'clear-log' | 'dirty-ring';

/**
 * The guest: forever, until the host sets the stop flag, pick a random page
 * (xorshift64 in r15, rejection-sampled below r13 pages), store the current
 * iteration number into its first u64 and count the write; at the stop flag,
 * SYNC(1) and start over. r12 = first page, r10 = next power of two of the
 * page count minus one, r14 = control block.
 */
function program(): Asm {
  const a = new Asm();
  a.label('top');
  a.load('rax', { base: 'r14', disp: 8 }).test('rax', 'rax').jnz('stopped');
  a.mov('rax', 'r15').shl('rax', 13).xor('r15', 'rax');
  a.mov('rax', 'r15').shr('rax', 7).xor('r15', 'rax');
  a.mov('rax', 'r15').shl('rax', 17).xor('r15', 'rax');
  a.mov('rbx', 'r15').shr('rbx', 16).and('rbx', 'r10').cmp('rbx', 'r13').jae('top');
  a.shl('rbx', 12).add('rbx', 'r12');
  a.load('rcx', { base: 'r14' }).store({ base: 'rbx' }, 'rcx');
  a.load('rcx', { base: 'r14', disp: 16 }).inc('rcx').store({ base: 'r14', disp: 16 }, 'rcx');
  a.jmp('top');
  a.label('stopped');
  emitUcallSync(a, 1);
  a.jmp('top');
  return a;
}

/** Resolves after `ms` (the host's collection cadence; nothing depends on it being met). */
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A one-shot signal the vcpu loop and the host hand each other. */
class Gate {
  #waiters: (() => void)[] = [];
  #pending = 0;
  post(): void {
    const w = this.#waiters.shift();
    if (w) w();
    else this.#pending++;
  }
  wait(): Promise<void> {
    if (this.#pending > 0) {
      this.#pending--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** Bit operations on a dirty bitmap's bytes (little-endian words: bit i is bit i&31 of u32 i>>5). */
function testAndClear(bits: Uint32Array, page: number): boolean {
  const w = page >>> 5;
  const m = 1 << (page & 31);
  const was = (bits[w]! & m) !== 0;
  if (was) bits[w] = bits[w]! & ~m;
  return was;
}

function probeVm<T>(fn: (vm: Vm) => T): T | string {
  try {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    return fn(vm);
  } catch (e) {
    return `probing /dev/kvm failed: ${e instanceof Error ? e.message : String(e)}`;
  }
}

const skipFor: Record<Mode, () => string | undefined> = {
  'dirty-log': () => needs.kvm(),
  'clear-log': () =>
    firstReason(needs.kvm, () => {
      const r = probeVm((vm) => vm.checkExtension('MANUAL_DIRTY_LOG_PROTECT2'));
      return typeof r === 'string' ? r : r === 0 ? 'KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is 0 on this kernel' : undefined;
    }),
  'dirty-ring': () =>
    firstReason(needs.kvm, () => {
      const r = probeVm((vm) => dirtyRingSupport(vm));
      return typeof r === 'string' ? r : r.supported ? undefined : r.reason;
    }),
};

async function runMode(ctx: SelftestContext, mode: Mode): Promise<void> {
  const iterations = countSetting(ctx, 'dirty_log.iterations', 16, 100_000);
  const interval = countSetting(ctx, 'dirty_log.interval', 10, 60_000);
  const memory = sizeSetting(ctx, 'dirty_log.memory', 32n << 20n);
  if (memory < 1n << 20n || memory % P !== 0n || memory > 64n << 30n) throw new SelftestFailure('dirty_log.memory must be a multiple of 4 KiB from 1M to 64G');
  const pages = Number(memory / P) + 3; // as upstream: the bitmap's last word is partial
  const seedText = ctx.settings.get('dirty_log.seed');
  const seedValue = seedText === undefined ? BigInt(Math.floor(Math.random() * 2 ** 52)) : parseSize(seedText);
  if (seedValue === undefined || seedValue >= 1n << 64n) throw new SelftestFailure(`setting dirty_log.seed=${seedText}: expected an integer below 2^64`);
  const seed = seedValue | 1n; // xorshift needs a non-zero state
  let mask = 1;
  while (mask < pages) mask *= 2;
  // Upstream: the ring has at most as many entries as the memory has pages.
  const ringEntries = Math.min(countSetting(ctx, 'dirty_log.ring', 1024, 1 << 24), mask === pages ? pages : mask / 2);

  using vm = ctx.kvm.createVm();
  let ring: DirtyRing | undefined;
  if (mode === 'clear-log') {
    const offered = BigInt(vm.checkExtension('MANUAL_DIRTY_LOG_PROTECT2'));
    vm.enableCap('MANUAL_DIRTY_LOG_PROTECT2', [offered & (MANUAL_PROTECT_ENABLE | INITIALLY_SET)]);
  }
  if (mode === 'dirty-ring') enableDirtyRing(vm, ringEntries);
  const size = BigInt(pages) * P;
  const host = vm.allocateMemory(size);
  vm.setMemoryRegion({ slot: TEST_SLOT, guestPhysAddr: TEST_GPA, memory: host, logDirtyPages: true });
  // 4 KiB guest pages over the test memory: one page table per 2 MiB, placed past the first 2 MiB.
  const tables = ((size + (2n << 20n) - 1n) / (2n << 20n) + 16n) * P;
  const systemSize = (((2n << 20n) + tables + (2n << 20n) - 1n) / (2n << 20n)) * (2n << 20n) + (2n << 20n);
  using guest = Guest.create(vm, {
    program: program(),
    systemSize,
    map: [{ gpa: 0n, size: 2n << 20n, pageSize: '2m' }, { gpa: TEST_GPA, size, pageSize: '4k' }],
    regs: { r10: BigInt(mask - 1), r12: TEST_GPA, r13: BigInt(pages), r14: CONTROL_GPA, r15: seed },
  });
  const vcpu = guest.vcpu;
  if (mode === 'dirty-ring') ring = DirtyRing.map(vcpu);
  try {
    const control = new DataView(guest.memory.bytes.buffer, guest.memory.bytes.byteOffset + Number(CONTROL_GPA), 24);
    const setIteration = (n: number): void => control.setBigUint64(0, BigInt(n), true);
    const setStop = (on: boolean): void => control.setBigUint64(8, on ? 1n : 0n, true);
    const writes = (): number => Number(control.getBigUint64(16, true));
    const memWords = new Uint32Array(host.bytes.buffer, host.bytes.byteOffset, host.bytes.byteLength / 4);
    const words = Math.ceil(pages / 64) * 2;
    const bmap = [new BigUint64Array(words / 2), new BigUint64Array(words / 2)] as const;
    const bits = bmap.map((b) => new Uint32Array(b.buffer)) as [Uint32Array, Uint32Array];

    // The vcpu's side: run; at a SYNC (or a full ring) with the stop flag up, report stopped and wait.
    const cont = new Gate();
    const stopped = new Gate();
    let quit = false;
    let stopWanted = false;
    let ringFull = false;
    let ringFullExits = 0;
    let loopError: unknown;
    const loop = (async () => {
      await cont.wait();
      while (!quit) {
        const exit = await vcpu.runAsync();
        if (exit.reason === 'intr') continue;
        const sync = exit.reason === 'io' && decodeUcall(exit as IoExit, vcpu.getRegs())?.kind === 'sync';
        if (!sync && !(mode === 'dirty-ring' && exit.reason === 'dirty-ring-full')) throw new SelftestFailure(`vcpu stopped for ${exit.reason}, expected a SYNC${mode === 'dirty-ring' ? ' or dirty-ring-full' : ''}`);
        if (!sync) {
          ringFull = true;
          ringFullExits++;
        }
        if (stopWanted) {
          stopped.post();
          await cont.wait();
        }
      }
    })().catch((e: unknown) => {
      loopError = e;
      stopped.post();
    });
    const checkLoop = (): void => {
      if (loopError !== undefined) throw loopError;
    };

    let last = -1;
    let prevLast = -1;
    let collections = 0;
    const collect = (into: 0 | 1): void => {
      collections++;
      if (mode === 'dirty-log') {
        vm.getDirtyLog(TEST_SLOT, bmap[into]);
      } else if (mode === 'clear-log') {
        vm.getDirtyLog(TEST_SLOT, bmap[into]);
        vm.clearDirtyLog(TEST_SLOT, 0, pages, bmap[into]);
      } else {
        const got = ring!.harvest();
        for (const g of got) {
          if (g.slot !== TEST_SLOT) throw new SelftestFailure(`dirty ring entry for slot ${g.slot}, expected ${TEST_SLOT}`, { expected: TEST_SLOT, actual: g.slot });
          if (g.offset >= BigInt(pages)) throw new SelftestFailure(`dirty ring entry offset ${g.offset} past the slot's ${pages} pages`);
          const p = Number(g.offset);
          bits[into][p >>> 5] = bits[into][p >>> 5]! | (1 << (p & 31));
          last = p;
        }
        const reset = resetDirtyRings(vm);
        if (reset !== got.length) throw new SelftestFailure(`KVM_RESET_DIRTY_RINGS reset ${reset} entries, ${got.length} were harvested`, { expected: got.length, actual: reset });
      }
    };

    let totalDirty = 0;
    let totalClean = 0;
    let totalWrites = 0;
    const verify = (iteration: number): void => {
      let dirty = 0;
      for (let page = 0; page < pages; page++) {
        const lo = memWords[page * 1024]!;
        const hi = memWords[page * 1024 + 1]!;
        const value = hi * 2 ** 32 + lo;
        const in0 = testAndClear(bits[0], page);
        const in1 = testAndClear(bits[1], page);
        if (in0 || in1) {
          dirty++;
          if (value === iteration) continue;
          if (mode === 'dirty-ring') {
            // The previous iteration's last entry may retire now, with that iteration's number.
            if (page === prevLast && value === iteration - 1) continue;
            // The last entry's write may not have retired: any older number.
            if (page === last && value < iteration) continue;
          } else if (value === 0 && iteration === 1 && in0) {
            // clear-log with INITIALLY_SET: the first log reports every page.
            continue;
          }
          throw new SelftestFailure(`iteration ${iteration}: page ${page} is reported dirty but holds ${value} (last ring entry ${last}, previous ${prevLast})`, { expected: iteration, actual: value });
        } else if (value >= iteration) {
          throw new SelftestFailure(`iteration ${iteration}: page ${page} was written in this iteration (holds ${value}) but the ${mode} collection did not report it`, { expected: `< ${iteration}`, actual: value });
        }
      }
      totalDirty += dirty;
      totalClean += pages - dirty;
    };

    const start = performance.now();
    try {
      for (let iteration = 1; iteration <= iterations; iteration++) {
        const reapAt = Math.floor(Math.random() * interval);
        setIteration(iteration);
        control.setBigUint64(16, 0n, true);
        prevLast = last;
        ringFull = false;
        cont.post();
        let idleSince = performance.now();
        let seen = 0;
        for (let i = 0; i < interval || writes() < MIN_WRITES_PER_ITERATION; i++) {
          await sleep(1);
          checkLoop();
          const w = writes();
          if (w !== seen) {
            seen = w;
            idleSince = performance.now();
          } else if (performance.now() - idleSince > NO_PROGRESS_MS) {
            throw new SelftestFailure(`iteration ${iteration}: the guest made no write for ${NO_PROGRESS_MS / 1000} s (${w} writes so far)`);
          }
          if (i < reapAt) continue;
          // A bitmap collection overwrites the bitmap: once while running. The ring adds up:
          // collect again only when it filled (emptying it each ms would keep it from filling).
          if (i > reapAt && mode !== 'dirty-ring') continue;
          if (i > reapAt && !ringFull) continue;
          collect(0);
        }
        // Stop the vcpu before the last collection, so nothing it writes is left for the next one.
        stopWanted = true;
        setStop(true);
        await stopped.wait();
        checkLoop();
        stopWanted = false;
        setStop(false);
        totalWrites += writes();
        collect(1);
        verify(iteration);
      }
    } finally {
      quit = true;
      if (loopError === undefined) {
        // The vcpu waits for `cont` (stopped) or runs until the next stop; ask for one.
        stopWanted = false;
        setStop(true);
        cont.post();
      }
      await loop;
    }
    checkLoop();
    const seconds = (performance.now() - start) / 1000;
    ctx.note(`${iterations} iterations, ${show(memory)} + 3 pages`);
    ctx.log(
      `${mode}: ${iterations} iterations in ${seconds.toFixed(2)} s; pages checked dirty ${totalDirty}, clean ${totalClean}; ${totalWrites} guest writes; ${collections} collections` +
        (mode === 'dirty-ring' ? `; ring ${ringEntries} entries, ${ringFullExits} ring-full exits` : '') +
        `; seed 0x${seed.toString(16)}`,
    );
    if (totalDirty === 0) throw new SelftestFailure('no page was ever reported dirty: the log reports nothing');
  } finally {
    ring?.close();
  }
}

/** The dirty_log_test port: one case per log mode. */
export const suite: SelftestSuite = {
  name: 'dirty_log',
  description: 'a vcpu writes random pages while the host collects the dirty log (bitmap, bitmap + clear, dirty ring) and checks every written page is reported',
  cases: [
    { name: 'dirty-log: KVM_GET_DIRTY_LOG', skip: skipFor['dirty-log'], run: (ctx) => runMode(ctx, 'dirty-log') },
    { name: 'clear-log: KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG (manual protect)', skip: skipFor['clear-log'], run: (ctx) => runMode(ctx, 'clear-log') },
    { name: 'dirty-ring: KVM_CAP_DIRTY_LOG_RING', skip: skipFor['dirty-ring'], run: (ctx) => runMode(ctx, 'dirty-ring') },
  ],
};
