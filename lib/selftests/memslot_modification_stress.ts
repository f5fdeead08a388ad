/**
 * Port of the kernel's memslot_modification_stress_test: vcpus keep writing
 * every page of their test memory while the host adds and deletes another,
 * one-page memslot over and over. Memslot changes make KVM invalidate and
 * rebuild its mappings under the running vcpus; the test passes when every
 * modification succeeds, the vcpus keep making progress (passes over their
 * memory) and each page holds its last write.
 *
 * Settings: `memslot_modification_stress.iterations` (default 1000, as
 * upstream), `memslot_modification_stress.memory` (default 4M per vcpu),
 * `memslot_modification_stress.vcpus` (default 2).
 */
import { Asm } from '../guest/asm.js';
import { Guest } from '../guest/guest.js';
import { decodeUcall, emitUcallDone } from '../guest/ucall.js';
import type { IoExit } from '../exit.js';
import type { Vcpu } from '../vcpu.js';
import { SelftestFailure, show } from './assert.js';
import { parseSize, sizeSetting } from './settings.js';
import { addSiblingVcpus } from './sibling-vcpus.js';
import type { SelftestContext, SelftestSuite } from './types.js';

const P = 4096n;
const SIZE_2M = 2n << 20n;
const GPA = 4n << 30n;
/** Where the added and deleted slot goes: well above the test memory. */
const EXTRA_GPA = 8n << 30n;
const EXTRA_SLOT = 2;

function countSetting(ctx: SelftestContext, key: string, fallback: number): number {
  const text = ctx.settings.get(key);
  if (text === undefined) return fallback;
  const n = parseSize(text);
  if (n === undefined || n < 1n || n > 1_000_000n) throw new SelftestFailure(`setting ${key}=${text}: expected 1..1000000`);
  return Number(n);
}

/** Writes each page's address into it (rbx = first page, rcx = pages), DONE, and again from the top when resumed. */
function program(): Asm {
  const a = new Asm();
  a.label('start').mov('r12', 'rbx').mov('r13', 'rcx');
  a.label('pass').mov('rbx', 'r12').mov('rcx', 'r13');
  a.label('loop').store({ base: 'rbx' }, 'rbx').add('rbx', 4096).decJnz('rcx', 'loop');
  emitUcallDone(a);
  a.jmp('pass');
  return a;
}

async function run(ctx: SelftestContext): Promise<void> {
  const iterations = countSetting(ctx, 'memslot_modification_stress.iterations', 1000);
  const vcpus = countSetting(ctx, 'memslot_modification_stress.vcpus', 2);
  const perVcpu = sizeSetting(ctx, 'memslot_modification_stress.memory', 4n << 20n);
  if (perVcpu === 0n || perVcpu % SIZE_2M !== 0n) throw new SelftestFailure('memslot_modification_stress.memory must be a non-zero multiple of 2 MiB');
  using vm = ctx.kvm.createVm();
  const size = perVcpu * BigInt(vcpus);
  const memory = vm.allocateMemory(size);
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: GPA, memory });
  const extra = vm.allocateMemory(P);
  using guest = Guest.create(vm, { program: program(), map: [{ gpa: 0n, size: SIZE_2M, pageSize: '2m' }, { gpa: GPA, size, pageSize: '4k' }], regs: { rbx: GPA, rcx: perVcpu / P } });
  const all: Vcpu[] = [guest.vcpu];
  let stop = false;
  const passes: number[] = [];
  try {
    addSiblingVcpus(ctx.kvm, guest, vcpus, (i) => ({ rbx: GPA + BigInt(i) * perVcpu, rcx: perVcpu / P }), all);
    // Each vcpu passes over its memory until told to stop (after at least one pass).
    const loops = all.map(async (v, i) => {
      passes[i] = 0;
      for (;;) {
        const exit = await v.runAsync();
        if (exit.reason === 'intr') continue;
        if (exit.reason === 'io' && decodeUcall(exit as IoExit, v.getRegs())?.kind === 'done') {
          passes[i]!++;
          if (stop) return;
          continue;
        }
        throw new SelftestFailure(`vcpu ${v.id}: unexpected stop ${exit.reason} after ${passes[i]} passes`);
      }
    });
    const failed = Promise.race(loops.map((l) => l.then(() => new Promise<never>(() => {}))));
    const start = performance.now();
    const modify = (async () => {
      for (let i = 0; i < iterations; i++) {
        vm.setMemoryRegion({ slot: EXTRA_SLOT, guestPhysAddr: EXTRA_GPA, memory: extra });
        vm.deleteMemoryRegion(EXTRA_SLOT);
        // Let the vcpu loops' completions in now and then.
        if (i % 16 === 15) await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    await Promise.race([modify, failed]);
    const seconds = (performance.now() - start) / 1000;
    stop = true;
    await Promise.all(loops);
    ctx.log(`${iterations} memslot add/delete pairs in ${seconds.toFixed(3)} s (${((seconds / iterations) * 1e6).toFixed(1)} us each) while ${vcpus} vcpus made ${passes.join('+')} passes over ${show(perVcpu)} each`);
  } finally {
    stop = true;
    for (const v of all.slice(1)) v.close();
  }
  const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, memory.bytes.byteLength);
  for (let i = 0n; i < size / P; i++) {
    const got = view.getBigUint64(Number(i * P), true);
    if (got !== GPA + i * P) throw new SelftestFailure(`page ${i}: expected ${show(GPA + i * P)}, got ${show(got)}`);
  }
}

/** The memslot_modification_stress selftest port. */
export const suite: SelftestSuite = {
  name: 'memslot_modification_stress',
  description: 'vcpus write their memory while the host adds and deletes a memslot over and over',
  cases: [{ name: 'add and delete a 1-page memslot under running vcpus', run }],
};
