/**
 * Port of the kernel's mmu_stress_test (called max_guest_memory_test before
 * Linux 6.12), its memory-protection stages: vcpus write every page of their
 * slice of shared (memfd) memory, the host makes the memory read-only with
 * mprotect and the next guest write must fail KVM_RUN with EFAULT, then the
 * host makes it writable again and the guest finishes. Upstream also spreads
 * the memfd over many memslots up to a large guest size; here it is one slot
 * (`mmu_stress.memory`, default 16M; `mmu_stress.vcpus`, default 2).
 *
 * kvm_pvm reports a guest write to read-only host memory as an MMIO exit,
 * not EFAULT: a known difference (TODO there).
 */
import { Asm } from '../guest/asm.js';
import { Guest } from '../guest/guest.js';
import { decodeUcall, emitUcallDone } from '../guest/ucall.js';
import type { IoExit, MmioExit } from '../exit.js';
import { KvmError } from '../errors.js';
import { allocateSharedMemory } from '../userfault.js';
import type { Vcpu } from '../vcpu.js';
import { SelftestFailure, show } from './assert.js';
import { isKvmPvm } from './host.js';
import { parseSize, sizeSetting } from './settings.js';
import { addSiblingVcpus } from './sibling-vcpus.js';
import type { SelftestContext, SelftestSuite } from './types.js';

const P = 4096n;
const SIZE_2M = 2n << 20n;
const GPA = 4n << 30n;

/** One pass: write each page's address into it (rbx = first, rcx = pages), DONE; the next run starts a new pass. */
function program(): Asm {
  const a = new Asm();
  a.mov('r12', 'rbx').mov('r13', 'rcx');
  a.label('pass').mov('rbx', 'r12').mov('rcx', 'r13');
  a.label('loop').store({ base: 'rbx' }, 'rbx').add('rbx', 4096).decJnz('rcx', 'loop');
  emitUcallDone(a);
  a.jmp('pass');
  return a;
}

type Stop = { kind: 'done' } | { kind: 'efault' } | { kind: 'mmio-write'; gpa: bigint };

async function runOnce(v: Vcpu): Promise<Stop> {
  for (;;) {
    let exit;
    try {
      exit = await v.runAsync();
    } catch (e) {
      if (e instanceof KvmError && e.code === 'EFAULT') return { kind: 'efault' };
      throw e;
    }
    if (exit.reason === 'intr') continue;
    if (exit.reason === 'io' && decodeUcall(exit as IoExit, v.getRegs())?.kind === 'done') return { kind: 'done' };
    if (exit.reason === 'mmio' && (exit as MmioExit).isWrite) return { kind: 'mmio-write', gpa: (exit as MmioExit).physAddr };
    if (exit.reason === 'memory-fault') return { kind: 'efault' };
    throw new SelftestFailure(`vcpu ${v.id}: unexpected stop ${exit.reason}`);
  }
}

async function run(ctx: SelftestContext): Promise<void> {
  const perVcpu = sizeSetting(ctx, 'mmu_stress.memory', 16n << 20n) / 2n;
  const vcpusText = ctx.settings.get('mmu_stress.vcpus');
  const vcpus = vcpusText === undefined ? 2 : Number(parseSize(vcpusText) ?? 0n);
  if (perVcpu === 0n || perVcpu % SIZE_2M !== 0n || vcpus < 1 || vcpus > 8) throw new SelftestFailure('mmu_stress.memory must be a multiple of 4 MiB, mmu_stress.vcpus 1..8');
  const size = perVcpu * BigInt(vcpus);
  using vm = ctx.kvm.createVm();
  const memory = allocateSharedMemory(size);
  try {
    memory.advise('nohugepage');
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: GPA, memory });
    using guest = Guest.create(vm, { program: program(), map: [{ gpa: 0n, size: SIZE_2M, pageSize: '2m' }, { gpa: GPA, size, pageSize: '4k' }], regs: { rbx: GPA, rcx: perVcpu / P } });
    const all: Vcpu[] = [guest.vcpu];
    try {
      addSiblingVcpus(ctx.kvm, guest, vcpus, (i) => ({ rbx: GPA + BigInt(i) * perVcpu, rcx: perVcpu / P }), all);
      const stage = async (what: string, want: Stop['kind'][]): Promise<Stop[]> => {
        const stops = await Promise.all(all.map(runOnce));
        stops.forEach((s, i) => {
          if (!want.includes(s.kind)) throw new SelftestFailure(`${what}: vcpu ${i} ${s.kind === 'mmio-write' ? `exited MMIO write at ${show(s.gpa)}` : s.kind}, expected ${want.join(' or ')}`, { expected: want.join('|'), actual: s.kind });
        });
        return stops;
      };
      // Stages 1 and 2: fault everything in, then a pass over mapped memory.
      await stage('first write pass', ['done']);
      await stage('second write pass', ['done']);
      // Stage 3: read-only host memory; the next write fails.
      memory.protect('read');
      const ro = await stage('write to read-only memory', isKvmPvm() ? ['efault', 'mmio-write'] : ['efault']);
      const mmio = ro.filter((s) => s.kind === 'mmio-write').length;
      if (mmio) {
        ctx.log(`kvm_pvm: ${mmio} of ${vcpus} vcpus saw an MMIO write exit instead of EFAULT`);
        ctx.todo('kvm_pvm: a guest write to mprotect(PROT_READ) host memory exits as KVM_EXIT_MMIO, not KVM_RUN failing with EFAULT', ['6.18 kvm_pvm']);
      }
      // A vcpu that got EFAULT retries the same write, and fails again while read-only.
      const again = await Promise.all(all.map((v, i) => (ro[i]!.kind === 'efault' ? runOnce(v) : Promise.resolve({ kind: 'efault' } as Stop))));
      if (again.some((s) => s.kind === 'done')) throw new SelftestFailure('a vcpu finished its pass while the memory was read-only');
      // Stage 4: writable again: every vcpu completes its pass.
      memory.protect('read-write');
      await stage('write pass after mprotect(PROT_READ|PROT_WRITE)', ['done']);
      ctx.log(`${vcpus} vcpus x ${show(perVcpu)}: EFAULT on read-only (${vcpus - mmio} vcpus), completed after restoring write access`);
    } finally {
      for (const v of all.slice(1)) v.close();
    }
    const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, memory.bytes.byteLength);
    for (let i = 0n; i < size / P; i++) {
      if (view.getBigUint64(Number(i * P), true) !== GPA + i * P) throw new SelftestFailure(`page ${i} lacks the guest's write`);
    }
  } finally {
    memory.close();
  }
}

/** The mmu_stress selftest port (its mprotect stages). */
export const suite: SelftestSuite = {
  name: 'mmu_stress',
  description: 'vcpus write shared memory; mprotect(PROT_READ) makes the next write fail with EFAULT; writable again, they finish',
  cases: [{ name: 'write, read-only EFAULT, writable again (2 vcpus, memfd)', run }],
};
