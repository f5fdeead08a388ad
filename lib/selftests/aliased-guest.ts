/**
 * The guest of upstream's mmu_stress_test (and of max_guest_memory_test, its
 * name before Linux 6.12): many memslots from 4 GiB up that all alias one
 * memfd, so a guest of any size costs the host one slot's worth of memory;
 * vcpus each take an equal share of the whole range and pass over it one
 * 4 KiB page at a time in numbered stages, each ending in SYNC(stage):
 * stage 2 reads, every other stage writes each page's guest address into it.
 */
import { Asm } from '../guest/asm.js';
import { Guest } from '../guest/guest.js';
import { decodeUcall, emitUcallSync, type Ucall } from '../guest/ucall.js';
import type { IoExit, VcpuExit } from '../exit.js';
import type { Kvm } from '../kvm.js';
import type { HostMemory } from '../memory.js';
import { allocateSharedMemory } from '../userfault.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';
import { SelftestFailure, show } from './assert.js';
import { countSetting, sizeSetting } from './settings.js';
import { addSiblingVcpus } from './sibling-vcpus.js';
import type { SelftestContext } from './types.js';

/** Bytes per guest page the vcpus step by. */
export const PAGE = 4096n;
const SIZE_2M = 2n << 20n;
const SIZE_1G = 1n << 30n;
/** Upstream skips the first 4 GiB (slot 0 and the APIC's private slot live below). */
export const START_GPA = 4n << 30n;
/** The first aliasing slot (slot 0 is the guest kit's system region). */
export const FIRST_SLOT = 1;
/** The stage that reads instead of writing. */
export const READ_STAGE = 2;
/** The guest's page write, `mov [rbx], rbx`: a fixed 3 bytes, so a host can step over it. */
export const STORE_BYTES = [0x48, 0x89, 0x1b] as const;

/** Stages forever (rbx = first page, rcx = pages): write, or read in READ_STAGE, then SYNC(stage). */
function program(): Asm {
  const a = new Asm();
  a.mov('r12', 'rbx').mov('r13', 'rcx').mov('r14', 0);
  a.label('pass').mov('rbx', 'r12').mov('rcx', 'r13');
  a.cmp('r14', READ_STAGE).je('read');
  a.label('write').store({ base: 'rbx' }, 'rbx').add('rbx', 4096).decJnz('rcx', 'write');
  a.jmp('synced');
  a.label('read').load('rax', { base: 'rbx' }).add('rbx', 4096).decJnz('rcx', 'read');
  a.label('synced');
  emitUcallSync(a, 'r14');
  a.inc('r14').jmp('pass');
  return a;
}

/** Sizes of an aliased guest, from `<prefix>.memory`, `<prefix>.slot`, `<prefix>.vcpus` or the defaults. */
export interface AliasedGuestShape {
  memory: bigint;
  slotSize: bigint;
  vcpus: number;
}

/** Reads the shape settings under `prefix`. */
export function aliasedShape(ctx: SelftestContext, prefix: string, defaults: AliasedGuestShape): AliasedGuestShape {
  const memory = sizeSetting(ctx, `${prefix}.memory`, defaults.memory);
  const slotSize = sizeSetting(ctx, `${prefix}.slot`, defaults.slotSize);
  const vcpus = countSetting(ctx, `${prefix}.vcpus`, defaults.vcpus, 64);
  if (slotSize === 0n || slotSize % SIZE_2M !== 0n) throw new SelftestFailure(`${prefix}.slot must be a non-zero multiple of 2 MiB`);
  if (memory < slotSize || memory > 64n << 40n) throw new SelftestFailure(`${prefix}.memory must be at least one slot and at most 64T`);
  return { memory, slotSize, vcpus };
}

/** A running layout: the VM's aliasing slots, their memfd, the vcpus and their shares. */
export interface AliasedGuest {
  readonly backing: HostMemory;
  readonly guest: Guest;
  /** All vcpus, guest.vcpu first. */
  readonly vcpus: readonly Vcpu[];
  readonly slots: number;
  /** Bytes of guest memory (slots x slot size). */
  readonly total: bigint;
  /** Bytes each vcpu passes over. */
  readonly perVcpu: bigint;
  readonly slotSize: bigint;
  /** Closes the vcpus and, unless already unmapped, the memfd (the VM is the caller's). */
  close(): void;
}

/** Sets the layout up in `vm` (which must have no memslots yet). */
export function createAliasedGuest(ctx: SelftestContext, vm: Vm, shape: AliasedGuestShape): AliasedGuest {
  const maxSlots = vm.checkExtension('NR_MEMSLOTS');
  if (maxSlots <= FIRST_SLOT) throw new SelftestFailure(`KVM_CAP_NR_MEMSLOTS is ${maxSlots}: KVM is broken`);
  const wanted = shape.memory / shape.slotSize;
  const slots = Number(wanted < BigInt(maxSlots - FIRST_SLOT) ? wanted : BigInt(maxSlots - FIRST_SLOT));
  const total = BigInt(slots) * shape.slotSize;
  const perVcpu = (total / BigInt(shape.vcpus) / PAGE) * PAGE;
  if (perVcpu === 0n) throw new SelftestFailure(`${shape.vcpus} vcpus for ${show(total)}: less than a page each`);
  const backing = allocateSharedMemory(shape.slotSize);
  const vcpus: Vcpu[] = [];
  let guest: Guest | undefined;
  const close = (): void => {
    for (const v of vcpus) v.close();
    if (!backing.closed) backing.close();
  };
  try {
    backing.advise('nohugepage');
    // As upstream: fault the backing in first, so guest faults do not wait on the host's page allocation.
    backing.bytes.fill(0xaa);
    for (let i = 0; i < slots; i++) vm.setMemoryRegion({ slot: FIRST_SLOT + i, guestPhysAddr: START_GPA + BigInt(i) * shape.slotSize, memory: backing });
    // 2 MiB guest pages (the guest kit has no 1 GiB ones): a PD per GiB, past the system region's first 2 MiB.
    const tables = ((total + SIZE_1G - 1n) / SIZE_1G + 8n) * PAGE;
    guest = Guest.create(vm, {
      program: program(),
      systemSize: SIZE_2M + ((tables + SIZE_2M - 1n) / SIZE_2M) * SIZE_2M,
      map: [{ gpa: 0n, size: SIZE_2M, pageSize: '2m' }, { gpa: START_GPA, size: total, pageSize: '2m' }],
      regs: { rbx: START_GPA, rcx: perVcpu / PAGE },
    });
    vcpus.push(guest.vcpu);
    addSiblingVcpus(ctx.kvm, guest, shape.vcpus, (i) => ({ rbx: START_GPA + BigInt(i) * perVcpu, rcx: perVcpu / PAGE }), vcpus);
  } catch (e) {
    close();
    throw e;
  }
  return { backing, guest, vcpus, slots, total, perVcpu, slotSize: shape.slotSize, close };
}

/** A vcpu's stop, described for a failure message. */
export function describeStop(exit: VcpuExit, u: Ucall | undefined): string {
  if (u) return u.kind === 'sync' ? `sync(${u.args.join(', ')})` : u.kind;
  return `${exit.reason}${'physAddr' in exit ? ` at ${show((exit as { physAddr: bigint }).physAddr)}` : ''}`;
}

/** The ucall behind an exit, if it is one. */
export function ucallOf(v: Vcpu, exit: VcpuExit): Ucall | undefined {
  return exit.reason === 'io' ? decodeUcall(exit as IoExit, v.getRegs()) : undefined;
}

/** Runs vcpu `v` to its next stop; it must be SYNC(stage). */
export async function runToStage(v: Vcpu, stage: number): Promise<void> {
  for (;;) {
    const exit = await v.runAsync();
    if (exit.reason === 'intr') continue;
    const u = ucallOf(v, exit);
    if (u?.kind === 'sync' && u.args[0] === BigInt(stage)) return;
    const what = describeStop(exit, u);
    throw new SelftestFailure(`vcpu ${v.id}: stopped for ${what}, expected SYNC(${stage})`, { expected: `sync(${stage})`, actual: what });
  }
}

const CR0_WP = 1n << 16n;

/** Toggles CR0.WP on each vcpu, which makes KVM reset its MMU context (upstream's "reset" step). */
export function toggleWriteProtect(vcpus: readonly Vcpu[]): void {
  for (const v of vcpus) {
    const before = v.getSregs().cr0;
    v.setSregs({ cr0: before ^ CR0_WP });
    if (((v.getSregs().cr0 ^ before) & CR0_WP) === 0n) throw new SelftestFailure(`vcpu ${v.id}: KVM_SET_SREGS did not toggle CR0.WP`);
  }
}

/** Every page of the memfd holds the guest address of one of its aliases that some vcpu wrote. */
export function checkAliasedWrites(g: AliasedGuest): void {
  const view = new DataView(g.backing.bytes.buffer, g.backing.bytes.byteOffset, g.backing.bytes.byteLength);
  const written = g.perVcpu * BigInt(g.vcpus.length);
  // An offset past what the vcpus wrote (their shares round down to pages) has no written alias.
  const end = written < g.slotSize ? written : g.slotSize;
  for (let off = 0n; off < end; off += PAGE) {
    const v = view.getBigUint64(Number(off), true);
    const aliases = v >= START_GPA && v < START_GPA + written && (v - START_GPA) % g.slotSize === off;
    if (!aliases) throw new SelftestFailure(`memfd page at offset ${show(off)} holds ${show(v)}, not the address of a guest page aliasing it`, { actual: show(v) });
  }
}

/**
 * Upstream's ending: delete the even-numbered slots, then unmap the memfd
 * while the odd ones still point at it, so KVM must drop every reference
 * through its MMU notifier. Returns the slots deleted.
 */
export function dropEvenSlotsAndUnmap(vm: Vm, g: AliasedGuest): number {
  let deleted = 0;
  for (let slot = FIRST_SLOT + g.slots - 1; slot >= FIRST_SLOT; slot--) {
    if (slot % 2 !== 0) continue;
    vm.deleteMemoryRegion(slot);
    deleted++;
  }
  g.backing.close();
  return deleted;
}

/**
 * The TAP notes every aliased-guest case carries: its guest page size, and
 * whether this host's KVM offers 1 GiB guest pages at all (PDPE1GB, CPUID
 * 0x80000001 EDX bit 26, in KVM_GET_SUPPORTED_CPUID). Upstream maps its guest
 * with 1 GiB pages without asking, so where KVM lacks them its guest takes a
 * page fault (reserved bit) at its first access.
 */
export function guestPageNotes(ctx: SelftestContext, kvm: Kvm): void {
  ctx.note('guest pages: 2 MiB');
  const ext = kvm.supportedCpuid().find((e) => e.function === 0x8000_0001);
  if (!ext || (ext.edx & (1 << 26)) === 0) ctx.note('KVM offers no 1 GiB guest pages (no PDPE1GB in KVM_GET_SUPPORTED_CPUID)');
}
