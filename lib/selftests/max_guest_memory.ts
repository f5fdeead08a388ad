/**
 * Port of the kernel's max_guest_memory_test (until Linux 6.11; since 6.12 the
 * first stages of mmu_stress_test): a large guest made of many memslots that
 * all alias one memfd, so the guest's size costs the host only page tables
 * (and KVM's mappings), not memory. vcpus each write every 4 KiB page of their
 * share of the whole guest range (the page's own guest address), all SYNC,
 * the host toggles CR0.WP on every vcpu (which resets KVM's MMU context), and
 * they write it all again. Then the host deletes the even-numbered slots and
 * unmaps the backing while the odd ones still point at it, so KVM must drop
 * every reference through its MMU notifier, and closes the VM.
 *
 * Checks: each vcpu stops at each stage's SYNC with that stage's number (a
 * lost write fault or a wrong translation shows as any other exit, an MMIO
 * exit say); every page of the backing holds a guest address that aliases it
 * (offset in the memfd = (address - 4 GiB) mod slot size); slot deletion,
 * unmapping and closing succeed.
 *
 * Upstream defaults: 128 GiB of guest memory in 2 GiB slots, 3/4 of the host's
 * CPUs as vcpus, 1 GiB guest pages. Here (2 cores, shadow paging, every first
 * write is a fault): `max_guest_memory.memory` 128M, `max_guest_memory.slot`
 * 16M, `max_guest_memory.vcpus` 2, guest pages of 2 MiB (the guest kit has no
 * 1 GiB pages, and kvm_pvm offers none). Full size: `--set max_guest_memory.memory=128G --set
 * max_guest_memory.slot=2G --set max_guest_memory.vcpus=<3/4 of the CPUs>`
 * (each pass is 33 million page writes: minutes on this host, which made 16G
 * in 64 slots at 2.4-3.8 us per page).
 */
import { show } from './assert.js';
import { aliasedShape, checkAliasedWrites, createAliasedGuest, dropEvenSlotsAndUnmap, guestPageNotes, PAGE, runToStage, toggleWriteProtect } from './aliased-guest.js';
import type { SelftestContext, SelftestSuite } from './types.js';

async function run(ctx: SelftestContext): Promise<void> {
  const shape = aliasedShape(ctx, 'max_guest_memory', { memory: 128n << 20n, slotSize: 16n << 20n, vcpus: 2 });
  using vm = ctx.kvm.createVm();
  const g = createAliasedGuest(ctx, vm, shape);
  try {
    const t0 = performance.now();
    await Promise.all(g.vcpus.map((v) => runToStage(v, 0)));
    const t1 = performance.now();
    toggleWriteProtect(g.vcpus);
    const t2 = performance.now();
    await Promise.all(g.vcpus.map((v) => runToStage(v, 1)));
    const t3 = performance.now();
    const s = (a: number, b: number): string => `${((b - a) / 1000).toFixed(3)} s`;
    ctx.log(`${show(g.total)} of guest memory in ${g.slots} slots aliasing one ${show(g.slotSize)} memfd, ${g.vcpus.length} vcpus: run 1 ${s(t0, t1)}, reset ${s(t1, t2)}, run 2 ${s(t2, t3)} (${(((t3 - t2) * 1e6) / Number(g.total / PAGE)).toFixed(0)} ns per page)`);
    ctx.note(`${show(g.total)} in ${g.slots} slots, ${g.vcpus.length} vcpus`);
    guestPageNotes(ctx, ctx.kvm);
    checkAliasedWrites(g);
    const deleted = dropEvenSlotsAndUnmap(vm, g);
    ctx.log(`deleted ${deleted} even slots and unmapped the memfd under the other ${g.slots - deleted}`);
  } finally {
    g.close();
  }
}

/** The max_guest_memory_test port. */
export const suite: SelftestSuite = {
  name: 'max_guest_memory',
  description: 'a large guest of many memslots aliasing one memfd: vcpus write it all, CR0.WP resets the MMU, they write it again; then slots go and the backing is unmapped under the rest',
  cases: [{ name: 'write all guest memory twice across an MMU reset (many slots, one memfd)', run }],
};
