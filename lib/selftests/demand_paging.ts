/**
 * Port of the kernel's demand_paging selftest (without userfaultfd): a guest
 * writes one u64 to every page of a region of fresh anonymous memory, so each
 * first touch is a fault KVM resolves on demand. Prints the paging rate in
 * pages per second like upstream, and checks from the host that every page
 * got its write.
 *
 * Settings: `demand_paging.memory` (default 16M), `demand_paging.gpa`
 * (default 4 GiB: above the 32-bit hole, as a real guest's high memory).
 */
import { Guest } from '../guest/guest.js';
import { touchPagesProgram } from '../guest/programs.js';
import type { PageSize, IdentityRange } from '../guest/page-tables.js';
import { KvmError } from '../errors.js';
import { SelftestFailure, show } from './assert.js';
import { sizeSetting } from './settings.js';
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

/** The demand_paging selftest port. */
export const suite: SelftestSuite = {
  name: 'demand_paging',
  description: 'a guest faults in every page of fresh anonymous memory; reports pages/s',
  cases: [
    { name: 'anonymous memory, 4k guest mappings', run: (ctx) => demandPaging(ctx, '4k') },
    { name: 'anonymous memory, 2m guest mappings', run: (ctx) => demandPaging(ctx, '2m') },
  ],
};
