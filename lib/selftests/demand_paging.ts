/**
 * Port of the kernel's demand_paging selftest. Two families of cases:
 *
 * - kernel demand faulting (no userfaultfd): one vcpu writes one u64 to every
 *   page of fresh anonymous memory, so each first touch is a fault KVM
 *   resolves on demand;
 * - the upstream way, with userfaultfd: several vcpus, each writing every
 *   page of its own slice, every first touch held until a userfaultfd
 *   handler supplies the page: MISSING on anonymous memory (UFFDIO_COPY of a
 *   prototype page filled with 0xab, as upstream), MISSING on THP-backed
 *   memory answered 2 MiB at a time, MINOR on shared memory (the page cache
 *   holds the contents; UFFDIO_CONTINUE maps them), and MISSING answered by
 *   a JS handler.
 *
 * Each prints the paging rate in pages per second like upstream, and checks
 * from the host that every page got its write and (userfaultfd) its
 * contents came from the handler.
 *
 * Settings: `demand_paging.memory` (default 16M; per vcpu for the
 * userfaultfd cases), `demand_paging.vcpus` (default 2), `demand_paging.gpa`
 * (default 4 GiB: above the 32-bit hole, as a real guest's high memory).
 */
import { Asm } from '../guest/asm.js';
import { Guest } from '../guest/guest.js';
import { touchPagesProgram } from '../guest/programs.js';
import { decodeUcall, emitUcallDone } from '../guest/ucall.js';
import type { IoExit } from '../exit.js';
import type { HostMemory } from '../memory.js';
import { allocateSharedMemory, userfaultSupport, type UserfaultOptions } from '../userfault.js';
import type { Vcpu } from '../vcpu.js';
import { firstReason, needs } from './host.js';
import type { PageSize, IdentityRange } from '../guest/page-tables.js';
import { KvmError } from '../errors.js';
import { SelftestFailure, show } from './assert.js';
import { parseSize, sizeSetting } from './settings.js';
import { addSiblingVcpus } from './sibling-vcpus.js';
import type { SelftestContext, SelftestSuite } from './types.js';

const P = 4096n;
const SIZE_2M = 2n << 20n;
const SIZE_1G = 1n << 30n;
const DEFAULT_MEMORY = 16n << 20n;
const DEFAULT_GPA = 4n << 30n;
/** Table space Guest.create has below the code when the system region is 2 MiB. */
const SMALL_TABLE_BYTES = 0x10000n - 0x1000n;

/** Number of 4 KiB page-table pages an identity map of these ranges needs. */
function tablePages(ranges: readonly IdentityRange[]): bigint {
  const pdpts = new Set<bigint>();
  const pds = new Set<bigint>();
  const pts = new Set<bigint>();
  for (const r of ranges) {
    const start = BigInt(r.gpa);
    const end = start + BigInt(r.size);
    for (let a = start; a < end; a += SIZE_2M) {
      pdpts.add(a >> 39n);
      pds.add(a / SIZE_1G);
      if (r.pageSize === '4k') pts.add(a / SIZE_2M);
    }
  }
  return 1n + BigInt(pdpts.size + pds.size + pts.size);
}

/** The vcpu's exit and fault counters, or undefined where binary stats are missing. */
function faultStats(guest: Guest): { exits: bigint; pfTaken: bigint; pfFixed: bigint } | undefined {
  try {
    const s = guest.vcpu.stats();
    const n = (name: string): bigint => {
      const v = s[name];
      return typeof v === 'bigint' ? v : typeof v === 'number' ? BigInt(v) : 0n;
    };
    return { exits: n('exits'), pfTaken: n('pf_taken'), pfFixed: n('pf_fixed') };
  } catch {
    // Informational only: a kernel without KVM_GET_STATS_FD still runs the test.
    return undefined;
  }
}

async function demandPaging(ctx: SelftestContext, pageSize: PageSize): Promise<void> {
  const size = sizeSetting(ctx, 'demand_paging.memory', DEFAULT_MEMORY);
  const gpa = sizeSetting(ctx, 'demand_paging.gpa', DEFAULT_GPA);
  if (size === 0n || size % SIZE_2M !== 0n || gpa % SIZE_2M !== 0n) {
    throw new KvmError('demand_paging.memory and demand_paging.gpa must be multiples of 2 MiB (memory non-zero)', {
      code: 'EINVAL',
      args: { memory: size, gpa },
    });
  }
  const pages = size / P;
  using vm = ctx.kvm.createVm();
  const mem = vm.allocateMemory(size);
  // 4 KiB host pages whatever the system's THP policy, so every page is a fault.
  mem.advise('nohugepage');
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: gpa, memory: mem });

  const map: IdentityRange[] = [
    { gpa: 0n, size: SIZE_2M, pageSize: '2m' },
    { gpa, size, pageSize },
  ];
  // A large 4k-mapped region needs more tables than fit below the code:
  // then grow the system region and let Guest.create put them above 2 MiB.
  const tableBytes = tablePages(map) * P;
  const systemSize = tableBytes <= SMALL_TABLE_BYTES ? SIZE_2M : SIZE_2M + ((tableBytes + SIZE_2M - 1n) / SIZE_2M) * SIZE_2M;
  if (gpa < systemSize) throw new KvmError(`demand_paging.gpa must be at least ${show(systemSize)} (the guest's own memory) for this size`, { code: 'EINVAL', args: { gpa } });
  using guest = Guest.create(vm, { program: touchPagesProgram({ startGva: gpa, pages, write: true }), map, systemSize });

  ctx.log(`guest physical test memory: [${show(gpa)}, ${show(gpa + size)}), ${pages} pages of 4 KiB, guest page size ${pageSize}`);
  const before = faultStats(guest);
  const start = performance.now();
  await guest.runToDone();
  const seconds = (performance.now() - start) / 1000;
  const after = faultStats(guest);
  ctx.log(`total guest execution time: ${seconds.toFixed(6)} s`);
  ctx.log(`overall demand paging rate: ${(Number(pages) / seconds).toFixed(1)} pgs/sec`);
  if (before && after) {
    ctx.log(`vcpu exits: ${after.exits - before.exits}, page faults taken: ${after.pfTaken - before.pfTaken}, fixed: ${after.pfFixed - before.pfFixed}`);
  }

  // The guest stored each page's own address in its first u64.
  const view = new DataView(mem.bytes.buffer, mem.bytes.byteOffset, mem.bytes.byteLength);
  let bad = 0;
  let firstBad = -1n;
  for (let i = 0n; i < pages; i++) {
    if (view.getBigUint64(Number(i * P), true) !== gpa + i * P) {
      if (bad++ === 0) firstBad = i;
    }
  }
  if (bad) {
    throw new SelftestFailure(`${bad} of ${pages} pages lack the guest's write; first is page ${firstBad} (gpa ${show(gpa + firstBad * P)})`, {
      expected: show(gpa + firstBad * P),
      actual: show(view.getBigUint64(Number(firstBad * P), true)),
    });
  }
}

// ---------------------------------------------------------------------------
// The upstream way: userfaultfd, several vcpus.

/** The byte upstream fills its prototype page with. */
const PROTOTYPE_BYTE = 0xab;
const MAX_VCPUS = 8;

/** Backing memory and how its faults are answered. */
type UffdVariant = 'missing' | 'missing-thp' | 'minor-shmem' | 'missing-js';

/** A count setting (decimal), or the fallback. */
function countSetting(ctx: SelftestContext, key: string, fallback: number, max: number): number {
  const text = ctx.settings.get(key);
  if (text === undefined) return fallback;
  const n = parseSize(text);
  if (n === undefined || n < 1n || n > BigInt(max)) throw new KvmError(`setting ${key}=${text}: expected 1..${max}`, { code: 'EINVAL', args: { key, value: text } });
  return Number(n);
}

/** Writes each page's own address into its first u64: rbx = first page, rcx = pages (from the vcpu's registers). */
function slicewriterProgram(): Asm {
  const a = new Asm();
  a.label('start').test('rcx', 'rcx').jz('done');
  a.label('loop').store({ base: 'rbx' }, 'rbx').add('rbx', 4096).decJnz('rcx', 'loop');
  a.label('done');
  emitUcallDone(a);
  a.label('spin').jmp('spin');
  return a;
}

/** Runs a vcpu until its DONE ucall. */
async function runVcpuToDone(vcpu: Vcpu): Promise<void> {
  for (;;) {
    const exit = await vcpu.runAsync();
    if (exit.reason === 'intr') continue;
    if (exit.reason === 'io') {
      const u = decodeUcall(exit as IoExit, vcpu.getRegs());
      if (u?.kind === 'done') return;
    }
    throw new SelftestFailure(`vcpu ${vcpu.id}: unexpected stop ${exit.reason}`, { actual: exit.reason });
  }
}

function uffdSkip(variant: UffdVariant): () => string | undefined {
  return () =>
    firstReason(needs.kvm, () => userfaultSupport().unavailable, () =>
      variant === 'minor-shmem' && !userfaultSupport().minorShmem ? 'userfaultfd has no UFFD_FEATURE_MINOR_SHMEM here (Linux < 5.14)' : undefined,
    );
}

async function uffdDemandPaging(ctx: SelftestContext, variant: UffdVariant): Promise<void> {
  const perVcpu = sizeSetting(ctx, 'demand_paging.memory', DEFAULT_MEMORY / 2n);
  const vcpus = countSetting(ctx, 'demand_paging.vcpus', 2, MAX_VCPUS);
  const gpa = sizeSetting(ctx, 'demand_paging.gpa', DEFAULT_GPA);
  if (perVcpu === 0n || perVcpu % SIZE_2M !== 0n || gpa % SIZE_2M !== 0n) {
    throw new KvmError('demand_paging.memory and demand_paging.gpa must be multiples of 2 MiB (memory non-zero)', { code: 'EINVAL', args: { memory: perVcpu, gpa } });
  }
  const size = perVcpu * BigInt(vcpus);
  const pages = size / P;
  const thp = variant === 'missing-thp';
  const pageSize: PageSize = thp ? '2m' : '4k';
  using vm = ctx.kvm.createVm();

  let memory: HostMemory;
  const prototype = new Uint8Array(Number(thp ? SIZE_2M : P)).fill(PROTOTYPE_BYTE);
  let options: UserfaultOptions;
  if (variant === 'minor-shmem') {
    // The contents are in the page cache already (written through this
    // mapping, whose own page-table entries are then dropped): every guest
    // touch is a MINOR fault that UFFDIO_CONTINUE resolves.
    memory = allocateSharedMemory(size);
    memory.bytes.fill(PROTOTYPE_BYTE);
    memory.advise('dontneed');
    options = { mode: 'minor', source: 'keep' };
  } else {
    memory = vm.allocateMemory(size, { hugePages: thp });
    if (!thp) memory.advise('nohugepage');
    options = variant === 'missing-js' ? { mode: 'missing', handler: () => prototype } : { mode: 'missing', source: fullOf(prototype, size), granule: thp ? '2m' : '4k' };
  }
  try {
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: gpa, memory });
    using uf = memory.registerUserfault(options);
    const map: IdentityRange[] = [
      { gpa: 0n, size: SIZE_2M, pageSize: '2m' },
      { gpa, size, pageSize },
    ];
    const tableBytes = tablePages(map) * P;
    const systemSize = tableBytes <= SMALL_TABLE_BYTES ? SIZE_2M : SIZE_2M + ((tableBytes + SIZE_2M - 1n) / SIZE_2M) * SIZE_2M;
    if (gpa < systemSize) throw new KvmError(`demand_paging.gpa must be at least ${show(systemSize)} for this size`, { code: 'EINVAL', args: { gpa } });
    const slicePages = perVcpu / P;
    using guest = Guest.create(vm, { program: slicewriterProgram(), map, systemSize, regs: { rbx: gpa, rcx: slicePages } });
    const all: Vcpu[] = [guest.vcpu];
    try {
      addSiblingVcpus(ctx.kvm, guest, vcpus, (i) => ({ rbx: gpa + BigInt(i) * perVcpu, rcx: slicePages }), all);
      ctx.log(`${variant}: ${vcpus} vcpus, ${show(perVcpu)} bytes each, ${pages} pages of 4 KiB, guest page size ${pageSize}, userfaultfd ${options.mode}${options.handler ? ' (JS handler)' : ''}${thp ? ' (2 MiB answers)' : ''}`);
      const start = performance.now();
      await Promise.all(all.map(runVcpuToDone));
      const seconds = (performance.now() - start) / 1000;
      const st = uf.stats();
      ctx.log(`total guest execution time: ${seconds.toFixed(6)} s`);
      ctx.log(`overall demand paging rate: ${(Number(pages) / seconds).toFixed(1)} pgs/sec`);
      ctx.log(`userfaults: ${st.faults} (copied ${st.copied}, zeroed ${st.zeroed}, continued ${st.continued}, by JS ${st.jsAnswers}), mean answer ${st.faults ? (Number(st.latencyNs) / Number(st.faults) / 1000).toFixed(1) : '-'} us, max ${(Number(st.maxLatencyNs) / 1000).toFixed(1)} us`);
      if (uf.errors.length) throw uf.errors[0]!;
      const granules = thp ? size / SIZE_2M : pages;
      if (st.faults < granules) throw new SelftestFailure(`expected at least ${granules} userfaults (one per ${thp ? '2 MiB' : 'page'}), saw ${st.faults}`, { expected: granules, actual: st.faults });
    } finally {
      for (const v of all.slice(1)) v.close();
    }
    // Every page: first u64 = its address (the guest's write), the rest the prototype (the handler's).
    const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, memory.bytes.byteLength);
    for (let i = 0n; i < pages; i++) {
      const off = Number(i * P);
      if (view.getBigUint64(off, true) !== gpa + i * P || memory.bytes[off + 8] !== PROTOTYPE_BYTE || memory.bytes[off + 4095] !== PROTOTYPE_BYTE) {
        throw new SelftestFailure(`page ${i} (gpa ${show(gpa + i * P)}) lacks the guest's write or the handler's contents`, {
          expected: `${show(gpa + i * P)} then 0x${PROTOTYPE_BYTE.toString(16)}`,
          actual: `${show(view.getBigUint64(off, true))} then 0x${memory.bytes[off + 8]!.toString(16)}`,
        });
      }
    }
  } finally {
    memory.close();
  }
}

/** `size` bytes of the prototype repeated (the native default copies from it). */
function fullOf(prototype: Uint8Array, size: bigint): Uint8Array {
  const out = new Uint8Array(Number(size));
  out.fill(prototype[0]!);
  return out;
}

/** The demand_paging selftest port. */
export const suite: SelftestSuite = {
  name: 'demand_paging',
  description: 'guests fault in every page of fresh memory, on demand or through userfaultfd; reports pages/s',
  cases: [
    { name: 'anonymous memory, 4k guest mappings', run: (ctx) => demandPaging(ctx, '4k') },
    { name: 'anonymous memory, 2m guest mappings', run: (ctx) => demandPaging(ctx, '2m') },
    { name: 'userfaultfd missing, anonymous, several vcpus', skip: uffdSkip('missing'), run: (ctx) => uffdDemandPaging(ctx, 'missing') },
    { name: 'userfaultfd missing, anonymous THP (2 MiB answers), several vcpus', skip: uffdSkip('missing-thp'), run: (ctx) => uffdDemandPaging(ctx, 'missing-thp') },
    { name: 'userfaultfd minor, shmem, several vcpus', skip: uffdSkip('minor-shmem'), run: (ctx) => uffdDemandPaging(ctx, 'minor-shmem') },
    { name: 'userfaultfd missing, JS handler, several vcpus', skip: uffdSkip('missing-js'), run: (ctx) => uffdDemandPaging(ctx, 'missing-js') },
  ],
};
