/**
 * Leaks: many create/run/close cycles return fds exactly and RSS within slack
 * to their baseline, and objects dropped without close() are reclaimed by
 * the finalizers. Both run in a child process started with --expose-gc (so
 * gc() is available and nothing else in the test runner adds fds), loading
 * the library as a bundle (support/child.ts).
 *
 * NODE_KVM_LEAK_CYCLES=N sets the number of cycles (default 10,000: about
 * 35 s on a 2-core kvm_pvm host; see docs/guarantees.md).
 */
import { expect, it } from 'vitest';
import { describeKvm } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const CYCLES = Number(process.env.NODE_KVM_LEAK_CYCLES ?? 10_000);
/** RSS may grow this much over the run (allocator and JIT noise), in KiB. */
const RSS_SLACK_KIB = 16 * 1024;
/**
 * Under scripts/test-asan.sh, ASan's quarantine keeps up to 256 MiB of freed
 * memory resident by design: RSS says nothing there, fds still must be exact.
 */
const SANITIZED = process.env.NODE_KVM_SANITIZED === '1';
function expectRssBack(base: number, end: number): void {
  if (SANITIZED) console.log(`(sanitized build: RSS ${base} -> ${end} KiB not checked)`);
  else expect(end - base).toBeLessThan(RSS_SLACK_KIB);
}
// A fixed young generation keeps V8 from growing it mid-run (a one-off 16 MiB
// step that would otherwise look like a leak).
const NODE_ARGS = ['--expose-gc', '--min-semi-space-size=16', '--max-semi-space-size=16'];

/** Shared by both child scripts: fd and RSS probes, and a settle that lets finalizers run. */
const PROBES = `
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
const fds = () => readdirSync('/proc/self/fd').length;
// Open fds by what they are ('anon_inode:kvm-vm': 3, ...).
const fdKinds = () => { const kinds = {}; for (const fd of readdirSync('/proc/self/fd')) { let t = '?'; try { t = readlinkSync('/proc/self/fd/' + fd).replace(/\\[\\d+\\]$/, ''); } catch {} kinds[t] = (kinds[t] ?? 0) + 1; } return kinds; };
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Native wrappers and FinalizationRegistry callbacks are released only when
// the event loop turns after a GC: collect, then yield, a few times.
async function settle(rounds = 4) {
  for (let i = 0; i < rounds; i++) { globalThis.gc(); await tick(); await sleep(5); }
}
`;

describeKvm('leaks', () => {
  it(
    `${CYCLES} cycles of VM + guest_memfd + memory + slots + vcpu + run + close: fds exact, RSS within ${RSS_SLACK_KIB >> 10} MiB`,
    async () => {
      const r = await runNodeChild(
        `${PROBES}
const { Kvm, guest } = await import(BUNDLE);
const cycles = Number(process.env.CYCLES);
const program = new guest.Asm().mov('eax', 0x1234).mov('edx', 0xe9).out('dx', 'eax');
async function cycle(i) {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const gmem = vm.createGuestMemfd({ size: 2n << 20n, flags: ['mmap', 'init-shared'] });
  const shared = gmem.map();
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: 4n << 30n, memory: shared, guestMemfd: gmem });
  const g = guest.Guest.create(vm, { program });
  // Every tenth run on a worker thread, the rest on this thread.
  const exit = i % 10 === 0 ? await g.vcpu.runAsync() : g.vcpu.run();
  if (exit.reason !== 'io' || exit.port !== 0xe9) throw new Error('unexpected exit ' + JSON.stringify(exit, (k, v) => typeof v === 'bigint' ? String(v) : v));
  shared.close(); // a guest_memfd mapping is the caller's to close (vm.close() does not)
  vm.close();
  kvm.close();
}
for (let i = 0; i < 300; i++) await cycle(i);
await settle();
const base = { fds: fds(), rss: rss() };
const started = Date.now();
const marks = [];
for (let i = 0; i < cycles; i++) {
  await cycle(i);
  if (i % 100 === 99) await tick();
  if (i % Math.max(1, Math.floor(cycles / 4)) === 0) { await settle(1); marks.push(rss()); }
}
const ms = Date.now() - started;
await settle();
console.log(JSON.stringify({ cycles, ms, base, end: { fds: fds(), rss: rss() }, marks }));
`,
        { nodeArgs: NODE_ARGS, env: { CYCLES: String(CYCLES) }, timeoutMs: 60_000 + CYCLES * 30 },
      );
      expect(r.code, r.stderr).toBe(0);
      const out = r.json as { cycles: number; ms: number; base: { fds: number; rss: number }; end: { fds: number; rss: number }; marks: number[] };
      console.log(
        `leaks: ${out.cycles} cycles in ${(out.ms / 1000).toFixed(1)} s (${(out.ms / Math.max(1, out.cycles)).toFixed(2)} ms/cycle); ` +
          `fds ${out.base.fds} -> ${out.end.fds}; RSS ${out.base.rss} -> ${out.end.rss} KiB (marks ${out.marks.join(', ')})`,
      );
      expect(out.end.fds).toBe(out.base.fds);
      expectRssBack(out.base.rss, out.end.rss);
    },
    120_000 + CYCLES * 30,
  );

  it('objects dropped without close() are reclaimed by finalizers: fds come back to the baseline', async () => {
    const r = await runNodeChild(
      `${PROBES}
const { Kvm, HostMemory } = await import(BUNDLE);
const MiB = 1n << 20n;
const kvm = Kvm.open(); // kept open: what it created must still be collectable
function drop(n) {
  for (let i = 0; i < n; i++) {
    const vm = kvm.createVm();
    vm.createVcpu(0);
    vm.createVcpu(1);
    const gmem = vm.createGuestMemfd({ size: 2n * MiB, flags: ['mmap', 'init-shared'] });
    gmem.map().bytes[0] = 1;
    vm.createGuestMemfd({ size: 2n * MiB });
    vm.allocateMemory(2n * MiB).bytes[4096] = 1;
    vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.allocateMemory(64n * 1024n) });
    vm.stats();
    HostMemory.allocate(64n * 1024n).bytes[0] = 1;
    Kvm.open().createVm();
  }
}
drop(5);
await settle(6);
const base = { fds: fds(), rss: rss(), kinds: fdKinds() };
const rounds = [];
for (let round = 0; round < 4; round++) {
  drop(100);
  const peak = fds();
  let waited = 0;
  while (fds() > base.fds && waited < 100) { await settle(1); waited++; }
  rounds.push({ peak, after: fds(), settles: waited });
}
await settle(6);
console.log(JSON.stringify({ base, rounds, end: { fds: fds(), rss: rss() }, kinds: { base: base.kinds, end: fdKinds() } }));
`,
      { nodeArgs: NODE_ARGS, timeoutMs: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = r.json as { base: { fds: number; rss: number }; rounds: { peak: number; after: number; settles: number }[]; end: { fds: number; rss: number }; kinds: { base: Record<string, number>; end: Record<string, number> } };
    console.log(`finalizers: fds ${out.base.fds} -> ${out.end.fds}; rounds ${JSON.stringify(out.rounds)}; RSS ${out.base.rss} -> ${out.end.rss} KiB`);
    // Each round really held hundreds of fds (VM, 2 vcpus, 2 guest_memfds, stats, Kvm, second VM)...
    for (const round of out.rounds) expect(round.peak - out.base.fds).toBeGreaterThanOrEqual(500);
    // ...and the finalizers gave every one back.
    expect(out.end.fds, `open fds by kind: before ${JSON.stringify(out.kinds.base)}, after ${JSON.stringify(out.kinds.end)}`).toBe(out.base.fds);
    expectRssBack(out.base.rss, out.end.rss);
  });
});
