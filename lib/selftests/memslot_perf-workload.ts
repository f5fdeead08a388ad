/**
 * The host side of the memslot_perf workloads (upstream memslot_perf_test's
 * prepare_vm, test_execute and test_memslot_*_loop): a VM whose test memory
 * is cut into many memslots, a vcpu thread running the test's guest, and a
 * host loop that unmaps, moves or checks memory while the guest runs, for a
 * given time. The selftest port and the benchmark both run it.
 *
 * One difference from upstream: the slots are windows of one anonymous
 * mapping (memoryOffset) instead of one mapping per slot, so 32k slots do not
 * need 32k mappings; madvise calls are still cut at slot boundaries, so the
 * host makes the same calls. The C reference does the same.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Guest } from '../guest/guest.js';
import type { Kvm } from '../kvm.js';
import type { HostMemory } from '../memory.js';
import type { Vm } from '../vm.js';
import { SelftestFailure } from './assert.js';
import {
  MEM_GPA, MOVE_SIZE, PAGE, SYNC, TEST_GPA, VAL_1, VAL_2,
  memslotPerfGeometry, memslotPerfProgram, pageTableBytes, slotGpa, slotLayout, slotPages,
  type MemslotPerfGeometry, type MemslotPerfTest, type SlotLayout,
} from './memslot_perf-guest.js';
import type { MemslotPerfVcpuData, MemslotPerfVcpuMessage } from './memslot_perf-vcpu.js';

/** What to run. */
export interface MemslotPerfParams {
  test: MemslotPerfTest;
  /** Test slots, not counting slot 0 (upstream: the -s cap minus one). */
  slots: number;
  /** 1 = upstream's sizes; see memslotPerfGeometry(). */
  scale: number;
  /** Run the host loop at least this long (upstream -l, default 5 s)... */
  seconds: number;
  /** ...and at least this many times. */
  minIterations: number;
  /** Check the values the guest wrote before unmapping them (upstream -d). The RW test always checks. */
  verify: boolean;
  /** @internal For tests: treat every MMIO exit as unexpected (what a kernel that exits where it should not looks like). */
  forbidMmio?: boolean;
}

/** What one run measured. */
export interface MemslotPerfResult {
  test: MemslotPerfTest;
  /** Test slots (upstream counts slot 0 too: this + 1). */
  slots: number;
  pagesPerSlot: number;
  iterations: number;
  /** Time of all iterations (upstream's "all iterations"). */
  runtimeNs: number;
  /** runtimeNs / iterations. */
  nsPerIteration: number;
  /** Time to add the test slots (upstream's "slot setup"). */
  slotSetupNs: number;
  /** MMIO exits the vcpu thread answered (the move-active test). */
  mmioExits: number;
}

/** The compiled vcpu thread next to this module, or (running from lib/ sources) the one in dist/. */
export function memslotPerfVcpuScript(): string | undefined {
  for (const rel of ['./memslot_perf-vcpu.js', '../../dist/selftests/memslot_perf-vcpu.js']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** The VM of one test, ready to launch: slots added, memory zeroed, guest loaded. */
export interface MemslotPerfVm {
  vm: Vm;
  guest: Guest;
  memory: HostMemory;
  geometry: MemslotPerfGeometry;
  layout: SlotLayout;
  slotSetupNs: number;
}

/** The system slot's size: 2 MiB, plus room for the 4 KiB page tables of the test memory. */
export function systemSize(g: MemslotPerfGeometry): bigint {
  const twoMiB = 2n << 20n;
  return twoMiB + ((pageTableBytes(g.memSize) + twoMiB - 1n) / twoMiB) * twoMiB;
}

/** The guest kit's options for a test: its program, and identity maps of the system slot (2 MiB) and the test memory (4 KiB pages, as upstream). */
export function memslotPerfGuestOptions(g: MemslotPerfGeometry): Parameters<typeof Guest.create>[1] {
  return {
    program: memslotPerfProgram(g),
    systemSize: systemSize(g),
    map: [
      { gpa: 0n, size: 2n << 20n, pageSize: '2m' },
      { gpa: MEM_GPA, size: g.memSize, pageSize: '4k' },
    ],
  };
}

/** Upstream prepare_vm(): one vcpu, `slots` slots over the memory, memory zeroed (which also faults it in on the host). */
export function prepareMemslotPerfVm(kvm: Kvm, p: Pick<MemslotPerfParams, 'test' | 'slots' | 'scale'>): MemslotPerfVm {
  const geometry = memslotPerfGeometry(p.test, p.scale);
  const layout = slotLayout(geometry.memSize, p.slots);
  if (!layout) throw new SelftestFailure(`${p.slots} slots are too many for ${geometry.memSize / PAGE} pages: every slot needs a page`);
  const vm = kvm.createVm();
  try {
    const guest = Guest.create(vm, memslotPerfGuestOptions(geometry));
    const memory = vm.allocateMemory(geometry.memSize);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < layout.slots; i++) {
      const offset = slotGpa(layout, i) - MEM_GPA;
      vm.setMemoryRegion({ slot: i + 1, guestPhysAddr: MEM_GPA + offset, memory, memoryOffset: offset, size: slotPages(layout, i) * PAGE });
    }
    const slotSetupNs = Number(process.hrtime.bigint() - t0);
    memory.bytes.fill(0);
    return { vm, guest, memory, geometry, layout, slotSetupNs };
  } catch (e) {
    vm.close();
    throw e;
  }
}

/** The host's view of the test memory and its handshake with the guest. */
class HostSide {
  readonly #flags: Int32Array;
  readonly #words: BigUint64Array;
  readonly #status: Int32Array;
  /** The test memory as u32s (little-endian halves of the u64s). */
  readonly u32: Uint32Array;

  constructor(
    readonly t: MemslotPerfVm,
    status: Int32Array,
  ) {
    const b = t.memory.bytes;
    this.#flags = new Int32Array(b.buffer, b.byteOffset, 4);
    this.#words = new BigUint64Array(b.buffer, b.byteOffset, b.byteLength / 8);
    this.u32 = new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    this.#status = status;
  }

  /** Sets a sync-area flag (start, exit). */
  set(field: 'start' | 'exit'): void {
    Atomics.store(this.#flags, SYNC[field] / 4, 1);
  }

  /** The u64 at a guest address of the test memory. */
  read(gpa: bigint): bigint {
    return this.#words[Number(gpa - MEM_GPA) / 8]!;
  }

  write(gpa: bigint, value: bigint): void {
    this.#words[Number(gpa - MEM_GPA) / 8] = value;
  }

  /**
   * Upstream host_perform_sync(): raise the sync flag and spin until the guest
   * clears it. Upstream bounds the wait with alarm(10); here the spin gives up
   * only when the vcpu thread says the guest stopped, so a slow machine is
   * never mistaken for a broken kernel.
   */
  sync(): void {
    const f = this.#flags;
    const i = SYNC.sync / 4;
    Atomics.store(f, i, 1);
    for (let n = 1; Atomics.load(f, i) !== 0; n++) {
      if ((n & 0xfff) === 0 && Atomics.load(this.#status, 0) !== 0) throw new GuestStopped();
    }
  }

  /** Whether the guest stopped (done or failed). */
  stopped(): boolean {
    return Atomics.load(this.#status, 0) !== 0;
  }

  /** Upstream test_memslot_do_unmap(): MADV_DONTNEED over `count` pages from test page `first`, one call per slot piece. */
  unmap(first: bigint, count: bigint): void {
    const { layout, memory } = this.t;
    let page = (TEST_GPA - MEM_GPA) / PAGE + first;
    for (let done = 0n; done < count; ) {
      const slot = Math.min(Number(page / layout.pagesPerSlot), layout.slots - 1);
      const left = slotPages(layout, slot) - (page - BigInt(slot) * layout.pagesPerSlot);
      const n = left < count - done ? left : count - done;
      memory.advise('dontneed', page * PAGE, n * PAGE);
      done += n;
      page += n;
    }
  }

  /** Upstream test_memslot_map_unmap_check(): the guest's value at test page `page`, then cleared. */
  check(verify: boolean, page: bigint, expected: bigint): void {
    if (!verify) return;
    const gpa = TEST_GPA + page * PAGE;
    const got = this.read(gpa);
    if (got !== expected) throw new SelftestFailure(`guest-written value did not read back before unmap at 0x${gpa.toString(16)}: 0x${got.toString(16)}, expected 0x${expected.toString(16)}`);
    this.write(gpa, 0n);
  }
}

/** The spin saw the vcpu thread stop: its message says why. */
class GuestStopped extends Error {}

type Loop = (h: HostSide, verify: boolean) => void;

const mapLoop: Loop = (h, verify) => {
  const pages = h.t.geometry.testSize / PAGE;
  const half = pages / 2n;
  // Unmap the second half while the guest maps the first, then the other way round.
  h.unmap(half, half);
  h.sync();
  h.check(verify, 0n, VAL_1);
  h.check(verify, half - 1n, VAL_1);
  h.unmap(0n, half);
  h.sync();
  h.check(verify, half, VAL_2);
  h.check(verify, pages - 1n, VAL_2);
};

const unmapLoop: Loop = (h, verify) => {
  const pages = h.t.geometry.testSize / PAGE;
  const chunk = h.t.geometry.chunkPages;
  h.sync();
  h.check(verify, 0n, VAL_1);
  for (let p = 0n; p < pages / 2n; p += chunk) h.unmap(p, chunk);
  h.sync();
  h.check(verify, pages / 2n, VAL_2);
  for (let p = pages / 2n; p < pages; p += chunk) h.unmap(p, chunk);
};

const moveLoop: Loop = (h) => {
  const { vm, layout, geometry } = h.t;
  const slot = layout.slots; // the last test slot's id
  vm.moveMemoryRegion(slot, geometry.moveDest);
  vm.moveMemoryRegion(slot, slotGpa(layout, layout.slots - 1));
  if (h.stopped()) throw new GuestStopped();
};

// The RW loop touches every page twice per iteration: 32-bit halves instead
// of BigInt keep the host's own work as cheap as C's u64 accesses.
const VAL_1_LO = Number(VAL_1 & 0xffffffffn);
const VAL_1_HI = Number(VAL_1 >> 32n);
const VAL_2_LO = Number(VAL_2 & 0xffffffffn);
const VAL_2_HI = Number(VAL_2 >> 32n);

const rwLoop: Loop = (h) => {
  const u32 = h.u32;
  const first = Number(TEST_GPA - MEM_GPA) / 4;
  const end = first + Number(h.t.geometry.testSize) / 4;
  const step = Number(PAGE) / 4;
  for (let i = first + step / 2; i < end; i += step) {
    u32[i] = VAL_2_LO;
    u32[i + 1] = VAL_2_HI;
  }
  h.sync();
  for (let i = first; i < end; i += step) {
    if (u32[i] !== VAL_1_LO || u32[i + 1] !== VAL_1_HI) {
      const gpa = MEM_GPA + BigInt(i * 4);
      throw new SelftestFailure(`guest-written value did not read back at 0x${gpa.toString(16)}: 0x${h.read(gpa).toString(16)}, expected 0x${VAL_1.toString(16)}`);
    }
    u32[i] = 0;
    u32[i + 1] = 0;
  }
  h.sync();
};

const LOOPS: Record<MemslotPerfTest, Loop> = {
  map: mapLoop,
  unmap: unmapLoop,
  'unmap chunked': unmapLoop,
  'move active area': moveLoop,
  'move inactive area': moveLoop,
  RW: rwLoop,
};

/** Upstream test_memslot_move_prepare(): the guest's area, and the MMIO writes allowed (active: the half in the moved slot). */
function prepareMove(t: MemslotPerfVm): MemslotPerfVcpuData['mmio'] {
  if (!t.geometry.test.startsWith('move')) return undefined;
  const active = t.geometry.test === 'move active area';
  const src = slotGpa(t.layout, t.layout.slots - 1);
  if (active && slotPages(t.layout, t.layout.slots - 1) * PAGE < MOVE_SIZE / 2n) {
    throw new SelftestFailure(`the last slot has fewer than ${MOVE_SIZE / 2n / 1024n} KiB: use fewer slots`);
  }
  const area = src - (active ? MOVE_SIZE / 2n : MOVE_SIZE);
  if (area < TEST_GPA) throw new SelftestFailure('the move area would start before the test area: use more memory or fewer slots');
  const b = t.memory.bytes;
  new DataView(b.buffer, b.byteOffset).setBigUint64(SYNC.moveArea, area, true);
  return active ? { min: src, max: src + MOVE_SIZE / 2n - 1n } : undefined;
}

function nextMessage(w: Worker): Promise<MemslotPerfVcpuMessage> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      w.off('message', onMessage);
      w.off('error', onError);
      w.off('exit', onExit);
    };
    const onMessage = (m: MemslotPerfVcpuMessage): void => (cleanup(), resolve(m));
    const onError = (e: Error): void => (cleanup(), reject(e));
    const onExit = (code: number): void => (cleanup(), reject(new SelftestFailure(`the vcpu thread exited (${code}) without a word`)));
    w.on('message', onMessage);
    w.on('error', onError);
    w.on('exit', onExit);
  });
}

function vcpuFailure(t: MemslotPerfVm, message: string): SelftestFailure {
  // The guest's RW check reports the address; the value is still there.
  const at = /assertion failed at (0x[0-9a-f]+)/.exec(message);
  if (at) {
    const gpa = BigInt(at[1]!);
    const b = t.memory.bytes;
    const value = new DataView(b.buffer, b.byteOffset).getBigUint64(Number(gpa - MEM_GPA), true);
    return new SelftestFailure(`guest read 0x${value.toString(16)} at 0x${gpa.toString(16)}, where the host wrote 0x${VAL_2.toString(16)}`);
  }
  return new SelftestFailure(`vcpu thread: ${message}`);
}

/** Upstream test_execute(): prepare, launch the vcpu thread, run the host loop for the time asked, stop the guest. */
export async function runMemslotPerf(kvm: Kvm, p: MemslotPerfParams): Promise<MemslotPerfResult> {
  const script = memslotPerfVcpuScript();
  if (!script) throw new SelftestFailure('the memslot_perf vcpu thread is not built (npm run build:ts)');
  const t = prepareMemslotPerfVm(kvm, p);
  using vm = t.vm;
  const mmio = prepareMove(t);
  const status = new SharedArrayBuffer(4);
  const data: MemslotPerfVcpuData = { handle: t.guest.vcpu.workerHandle(), status, ...(mmio && !p.forbidMmio ? { mmio } : {}) };
  const worker = new Worker(script, { workerData: data });
  // The vcpu thread ends by itself after its last message (done or error):
  // it is awaited, never terminated, since terminating a worker that is
  // still closing its vcpu has crashed the process in the lab.
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const host = new HostSide(t, new Int32Array(status));
  const message = nextMessage(worker);
  try {
    const ready = await message;
    if (ready.kind !== 'ready') throw vcpuFailure(t, ready.kind === 'error' ? ready.message : `said ${ready.kind} before ready`);
    const done = nextMessage(worker);
    // A failure the spin sees is explained by the vcpu thread's last message.
    done.catch(() => {});
    const loop = LOOPS[p.test];
    const limit = BigInt(Math.round(p.seconds * 1e9));
    let iterations = 0;
    const t0 = process.hrtime.bigint();
    host.set('start');
    let elapsed = 0n;
    try {
      for (;;) {
        elapsed = process.hrtime.bigint() - t0;
        if (elapsed >= limit && iterations >= p.minIterations) break;
        loop(host, p.verify);
        iterations++;
      }
    } catch (e) {
      if (!(e instanceof GuestStopped)) throw e;
      const m = await done;
      throw vcpuFailure(t, m.kind === 'error' ? m.message : `the guest stopped (${m.kind}) in the middle of the test`);
    }
    host.set('exit');
    const last = await done;
    if (last.kind !== 'done') throw vcpuFailure(t, last.kind === 'error' ? last.message : `said ${last.kind} at the end`);
    const runtimeNs = Number(elapsed);
    return {
      test: p.test,
      slots: t.layout.slots,
      pagesPerSlot: Number(t.layout.pagesPerSlot),
      iterations,
      runtimeNs,
      nsPerIteration: runtimeNs / iterations,
      slotSetupNs: t.slotSetupNs,
      mmioExits: last.mmioExits,
    };
  } finally {
    // However the host side ended, the guest is told to go (start, then exit)
    // and kicked out of KVM_RUN; its thread then reports and ends.
    host.set('start');
    host.set('exit');
    if (!host.stopped()) t.guest.vcpu.kick();
    await exited;
  }
}
