/**
 * One repetition of a guest variant, measured through node-kvm: a fresh VM,
 * the region at gpa 4 GiB (slot 1) mapped by the guest with 2 MiB pages,
 * allocation and preparation as the method says, then two guest passes.
 *
 * Layout and boundaries follow scripts/bench/reference.c so Node and C do
 * the same work and time the same spans:
 *
 *   createVm, [alloc: mmap/madvise or create_guest_memfd + mmap],
 *   system region + vcpu (Guest.create), slot 1, stats fds,
 *   [fill: populate / pre-fault], [first pass: KVM_RUN to the DONE OUT],
 *   [second pass: resume to the next DONE OUT]
 *
 * The passes use vcpu.run() (KVM_RUN on the calling thread), so no worker
 * hand-off sits inside them; the ucall is decoded after the clock stops.
 * Preparation uses the library's asynchronous calls (vcpu.preFaultMemory(),
 * HostMemory.populate()): they are what an application awaits, and only they
 * honour `threads` (preFaultMemorySync populates on the calling thread).
 */
import { Guest, touchPagesProgram, decodeUcall, UCALL_PORT } from '../guest/index.js';
import type { GuestMemfd } from '../guest-memfd.js';
import type { Kvm } from '../kvm.js';
import type { HostMemory } from '../memory.js';
import { PreFaultError, type PreFaultOptions, type PreFaultResult } from '../prefault/index.js';
import type { Stats } from '../stats.js';
import type { Vcpu } from '../vcpu.js';
import type { IoExit } from '../exit.js';
import { completeRep, type PreFaultFigures, type RepMetrics } from './metrics.js';
import type { Variant } from './variants.js';
import { registerBenchUserfault } from './userfault.js';
import type { Userfault } from '../userfault.js';

/** Guest-physical address of the measured region (as in reference.c). */
export const REGION_GPA = 1n << 32n;
/** Memslot of the measured region. */
export const REGION_SLOT = 1;
const SIZE_2M = 2n << 20n;

/** A repetition's figures, or why the variant cannot run here. */
export type MeasureOutcome = { ok: true; metrics: RepMetrics } | { ok: false; unavailable: string };

const now = (): bigint => process.hrtime.bigint();
const ns = (from: bigint, to: bigint): number => Number(to - from);

/** A stat as a number, null when the kernel does not have it. */
function stat(s: Stats, name: string): number | null {
  const v = s[name];
  return typeof v === 'bigint' ? Number(v) : null;
}

function delta(after: Stats, before: Stats, name: string): number | null {
  const a = stat(after, name);
  const b = stat(before, name);
  return a === null || b === null ? null : a - b;
}

/** KVM_RUN until the guest's OUT to the ucall port (intr exits are resumed, as in C). */
function runPass(vcpu: Vcpu, pass: string): IoExit {
  for (;;) {
    const exit = vcpu.run();
    if (exit.reason === 'intr') continue;
    if (exit.reason === 'io') {
      const io = exit as IoExit;
      if (io.port === UCALL_PORT && io.direction === 'out') return io;
    }
    throw new Error(`${pass} pass: unexpected exit ${JSON.stringify(exit, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v instanceof Uint8Array ? undefined : v))}`);
  }
}

/** Checks (after the clock stopped) that the OUT was the guest's DONE ucall. */
function expectDone(vcpu: Vcpu, exit: IoExit, pass: string): void {
  const u = decodeUcall(exit, vcpu.getRegs());
  if (u?.kind !== 'done') throw new Error(`${pass} pass ended with ${u?.kind ?? 'a non-ucall OUT'} instead of DONE`);
}

/** MADV_POPULATE_* split like reference.c: `threads` contiguous chunks, each a multiple of 2 MiB, in parallel. */
async function populate(memory: HostMemory, threads: number, write: boolean): Promise<void> {
  const size = memory.size;
  if (threads <= 1) {
    await memory.populate({ write });
    return;
  }
  let per = (size + BigInt(threads) - 1n) / BigInt(threads);
  per = (per + SIZE_2M - 1n) & ~(SIZE_2M - 1n);
  const calls: Promise<void>[] = [];
  for (let off = 0n; off < size && calls.length < threads; off += per) {
    calls.push(memory.populate({ write, offset: off, length: size - off < per ? size - off : per }));
  }
  await Promise.all(calls);
}

function prefaultFigures(r: PreFaultResult): PreFaultFigures {
  return {
    engine: r.engine,
    reason: r.reason,
    calls: r.calls,
    bytesMapped: Number(r.bytesMapped),
    levels: { ...r.levels },
    durationNs: Number(r.durationNs),
    retries: { ...r.retries },
  };
}

/** Whether a pre-fault failure means "this host has no kernel pre-fault". */
function unsupported(e: unknown): e is PreFaultError {
  return e instanceof PreFaultError && (e.code === 'EOPNOTSUPP' || e.code === 'ENOTTY');
}

/** Measures one repetition of a guest variant in a fresh VM. */
export async function measureGuestOnce(kvm: Kvm, v: Variant, rep: number): Promise<MeasureOutcome> {
  if (v.kind !== 'guest') throw new Error(`measureGuestOnce: ${v.id} is not a guest variant`);
  const size = BigInt(v.sizeBytes);
  const write = v.access === 'write';
  const program = touchPagesProgram({ startGva: REGION_GPA, pages: v.pages, write, ucall: true });

  const t0 = now();
  const vm = kvm.createVm();
  const tVm = now();
  let mapping: HostMemory | undefined;
  try {
    // ---- allocation (timed) ----
    let gmem: GuestMemfd | undefined;
    let memory: HostMemory;
    const t1 = now();
    if (v.backing === 'gmem') {
      gmem = vm.createGuestMemfd({ size, flags: ['mmap', 'init-shared'] });
      mapping = gmem.map();
      memory = mapping;
    } else {
      memory = vm.allocateMemory(size, { hugePages: v.backing === 'thp' });
      if (v.backing === 'anon') memory.advise('nohugepage');
    }
    const allocNs = ns(t1, now());

    // ---- fixed costs: system region + vcpu, the region's slot, stats fds ----
    const t2 = now();
    const guest = Guest.create(vm, { program, map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, { gpa: REGION_GPA, size, pageSize: '2m' }] });
    const tGuest = now();
    vm.setMemoryRegion({ slot: REGION_SLOT, guestPhysAddr: REGION_GPA, memory, ...(gmem ? { guestMemfd: gmem, guestMemfdOffset: 0n } : {}) });
    const tSlot = now();
    const vcpu = guest.vcpu;
    vcpu.stats();
    vm.stats();
    const setupNs = ns(t0, tVm) + ns(t2, tGuest) + ns(tSlot, now());
    const slotNs = ns(tGuest, tSlot);

    // ---- populate / pre-fault (timed) ----
    const range = { gpa: REGION_GPA, size };
    let result: PreFaultResult | undefined;
    let userfault: Userfault | undefined;
    const t4 = now();
    try {
      switch (v.method) {
        case 'demand':
          break;
        case 'populate':
          await populate(memory, v.threads, write);
          break;
        case 'software':
          result = await vcpu.preFaultMemory(range, { engine: 'software', threads: v.threads } satisfies PreFaultOptions);
          break;
        case 'auto':
          // node-kvm's automatic choice: engine and threads are the library's defaults.
          result = await vcpu.preFaultMemory(range);
          break;
        case 'kernel':
          result = await vcpu.preFaultMemory(range, { engine: 'kernel' });
          break;
        case 'userfault': {
          const r = registerBenchUserfault(memory, v.backing);
          if ('unavailable' in r) return { ok: false, unavailable: r.unavailable };
          userfault = r;
          break;
        }
        default:
          throw new Error(`unknown method ${String(v.method)}`);
      }
    } catch (e) {
      if (v.method === 'kernel' && unsupported(e)) return { ok: false, unavailable: e.message };
      throw e;
    }
    const fillNs = ns(t4, now());

    // ---- first and second pass (timed) ----
    const s0 = vcpu.stats();
    const t5 = now();
    const exit1 = runPass(vcpu, 'first');
    const firstPassNs = ns(t5, now());
    const s1 = vcpu.stats();
    const vmStats = vm.stats();
    expectDone(vcpu, exit1, 'first');
    const t6 = now();
    const exit2 = runPass(vcpu, 'second');
    const secondPassNs = ns(t6, now());
    const s2 = vcpu.stats();
    expectDone(vcpu, exit2, 'second');
    if (write) checkWritten(memory, v.pages);
    userfault?.close();

    const metrics = completeRep(
      {
        rep,
        allocNs,
        fillNs,
        firstPassNs,
        secondPassNs,
        exitsFirstPass: delta(s1, s0, 'exits'),
        exitsSecondPass: delta(s2, s1, 'exits'),
        pfTaken: delta(s1, s0, 'pf_taken'),
        pages_4k: stat(vmStats, 'pages_4k'),
        pages_2m: stat(vmStats, 'pages_2m'),
        pages_1g: stat(vmStats, 'pages_1g'),
        setupNs,
        slotNs,
        ...(result ? { prefault: prefaultFigures(result) } : {}),
      },
      v.pages,
    );
    return { ok: true, metrics };
  } finally {
    vm.close();
    mapping?.close();
  }
}

/** The guest stores each page's own address in its first u64: check the first and last page. */
function checkWritten(memory: HostMemory, pages: number): void {
  const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset);
  for (const page of [0, pages - 1]) {
    const got = view.getBigUint64(page * 4096, true);
    const want = REGION_GPA + BigInt(page) * 4096n;
    if (got !== want) throw new Error(`guest write missing: page ${page} holds 0x${got.toString(16)}, expected 0x${want.toString(16)}`);
  }
}
