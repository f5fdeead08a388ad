/**
 * runAsync()'s hand-offs between the JS thread and the vcpu's own thread
 * (native/vcpu_thread.cc) with each combination of its bounded waits: the
 * vcpu thread's spin for the next run (NODE_KVM_SPIN_US) and the event
 * loop's polling (NODE_KVM_POLL_US), default or off. Off forces the
 * sleep/wake paths (condition variable, epoll) on every exit, which a free
 * CPU otherwise skips. Each child runs many exits on one and two vcpus,
 * checks every one, kicks a guest that never exits, and closes a vcpu while
 * it runs; then the process must end by itself (nothing left ref'd).
 */
import { expect, it } from 'vitest';
import { runNodeChild } from '../hardening/support/child.js';
import { describeKvm } from '../support/kvm.js';

const SOURCE = `
const { Kvm, guest: g } = await import(BUNDLE);
const kvm = Kvm.open();
const vm = kvm.createVm();
const outLoop = () => new g.Asm().mov('edx', g.UCALL_PORT).label('l').out('dx', 'eax').inc('eax').jmp('l');
const a = g.Guest.create(vm, { program: outLoop() }).vcpu;
const sregs = a.getSregs(), regs = a.getRegs();
const b = vm.createVcpu(1);
b.setCpuid(kvm.supportedCpuid()); b.setSregs(sregs); b.setRegs(regs);
async function loop(vcpu, n) {
  let seen = 0, last = -1;
  while (seen < n) {
    const exit = await vcpu.runAsync();
    if (exit.reason === 'intr') continue;
    if (exit.reason !== 'io' || exit.port !== g.UCALL_PORT) throw new Error('unexpected exit ' + exit.reason);
    const eax = new DataView(exit.data.buffer, exit.data.byteOffset, 4).getUint32(0, true);
    if (last >= 0 && eax !== last + 1) throw new Error('eax ' + eax + ' after ' + last);
    last = eax; seen++;
    // Now and then the event loop does other work between exits (the loop's poll stops, the thread sleeps).
    if (seen % 97 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  return seen;
}
const one = await loop(a, 600);
const two = await Promise.all([loop(a, 400), loop(b, 400)]);
// A guest that never exits: kick() ends its run.
const spin = g.Guest.create(kvm.createVm(), { program: new g.Asm().label('s').jmp('s') }).vcpu;
const kicked = spin.runAsync();
setTimeout(() => spin.kick(), 20);
const k = await kicked;
// close() while running: the run settles, the thread ends.
const spin2 = g.Guest.create(kvm.createVm(), { program: new g.Asm().label('s').jmp('s') }).vcpu;
const closing = spin2.runAsync().then((e) => e.reason, (e) => e.code);
setTimeout(() => spin2.close(), 20);
const closed = await closing;
console.log(JSON.stringify({ one, two, kicked: k.reason, closed }));
`;

describeKvm('runAsync hand-offs with the bounded waits on and off', () => {
  for (const [spin, poll] of [['100', '200'], ['0', '0'], ['100', '0'], ['0', '200']] as const) {
    it(`NODE_KVM_SPIN_US=${spin} NODE_KVM_POLL_US=${poll}: every exit in order, kick and close while running, then the process ends`, async () => {
      const r = await runNodeChild(SOURCE, { timeoutMs: 120_000, env: { NODE_KVM_SPIN_US: spin, NODE_KVM_POLL_US: poll } });
      expect({ code: r.code, signal: r.signal }, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toEqual({ code: 0, signal: null });
      expect(r.json).toMatchObject({ one: 600, two: [400, 400], kicked: 'intr' });
      expect(['intr', 'ECLOSED']).toContain((r.json as { closed: string }).closed);
    });
  }
});
