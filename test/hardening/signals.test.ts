/**
 * Signals: EINTR during KVM_RUN loses no progress, whatever interrupts it
 * (vcpu.kick(), the addon's raw interrupt signal, real process signals), and
 * the run resumes after each 'intr'; kick() stops a guest spinning forever,
 * from the event loop and from another thread; a software-engine pre-fault
 * under a signal storm completes with nothing lost.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Kvm, type Vcpu, type Vm } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { addonPath, native } from '../../lib/native.js';
import { describeKvm } from '../support/kvm.js';
import { rssKiB, startWorker } from './support/child.js';

/** Guest loop iterations: about 0.3-0.5 s of guest time on this host's CPUs. */
const N = 1_500_000_000n;
const MiB = 1n << 20n;

/** Counts in rbx from 0 and rcx down from `n`, then OUTs to 0xe9: rbx + rcx is n (n + 1 between the two instructions). */
const countingProgram = (): Asm => new Asm().label('loop').inc('rbx').decJnz('rcx', 'loop').mov('edx', 0xe9).out('dx', 'eax');
const spinProgram = (): Asm => new Asm().label('spin').pause().jmp('spin');

function countingGuest(vm: Vm, n: bigint): Guest {
  return Guest.create(vm, { program: countingProgram(), regs: { rbx: 0n, rcx: n } });
}

/** Checks the loop invariant at an interruption: nothing counted twice or lost. */
function expectConsistent(vcpu: Vcpu, n: bigint, last: bigint): bigint {
  const { rbx, rcx } = vcpu.getRegs();
  expect(rbx + rcx === n || rbx + rcx === n + 1n, `rbx ${rbx} + rcx ${rcx} vs ${n}`).toBe(true);
  expect(rbx).toBeGreaterThanOrEqual(last);
  return rbx;
}

let sigusr2 = 0;
const onSigusr2 = (): void => {
  sigusr2++;
};

describeKvm('signals and EINTR', () => {
  beforeAll(() => {
    // The signal-storm worker sends SIGUSR2 to the process: without a listener its default action ends the process.
    process.on('SIGUSR2', onSigusr2);
  });
  afterAll(async () => {
    await new Promise((r) => setTimeout(r, 50)); // let any signal still in flight land on the listener
    process.off('SIGUSR2', onSigusr2);
  });

  it('runAsync interrupted over and over by kick() and raw signals: the count is exact and each run resumes', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using g = countingGuest(vm, N);
    const vcpu = g.vcpu;
    let kicks = 0;
    let raw = 0;
    let signalled = 0;
    // Alternate the two interrupt sources every millisecond: kick() sets
    // immediate_exit and signals the worker thread; native.interrupt() only
    // sends the signal (a real signal, SIGRTMIN+3, to the thread in KVM_RUN).
    const timer = setInterval(() => {
      if (!vcpu.running) return;
      if ((kicks + raw) % 2 === 0) {
        kicks++;
        vcpu.kick();
      } else {
        raw++;
        if (native.interrupt(vcpu.fd)) signalled++;
      }
    }, 1);
    let intr = 0;
    let last = 0n;
    let exit;
    try {
      for (;;) {
        exit = await vcpu.runAsync();
        if (exit.reason !== 'intr') break;
        intr++;
        last = expectConsistent(vcpu, N, last);
      }
    } finally {
      clearInterval(timer);
    }
    expect(exit).toMatchObject({ reason: 'io', port: 0xe9 });
    const regs = vcpu.getRegs();
    expect(regs.rbx).toBe(N);
    expect(regs.rcx).toBe(0n);
    console.log(`EINTR/runAsync: ${intr} 'intr' exits from ${kicks} kicks and ${raw} raw signals (${signalled} reached a thread in KVM_RUN)`);
    expect(intr).toBeGreaterThanOrEqual(5);
    expect(signalled).toBeGreaterThan(0);
  });

  it('real process signals (SIGUSR2 from another thread) interrupt a synchronous run on the main thread: nothing lost', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using g = countingGuest(vm, N);
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const storm = await startWorker('signal-storm.mjs', { flag: flag.buffer, intervalMs: 1 });
    await storm.next((m: { ready?: boolean }) => m.ready === true);
    const before = sigusr2;
    let intr = 0;
    let last = 0n;
    let exit;
    try {
      for (;;) {
        // Blocks the main thread: the signals land here, in KVM_RUN.
        exit = g.vcpu.run();
        if (exit.reason !== 'intr') break;
        intr++;
        last = expectConsistent(g.vcpu, N, last);
      }
    } finally {
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    }
    const { sent } = await storm.next<{ sent: number }>((m) => typeof m.sent === 'number');
    await storm.exited;
    await new Promise((r) => setTimeout(r, 20)); // the listener runs once the event loop turns
    expect(exit).toMatchObject({ reason: 'io', port: 0xe9 });
    expect(g.vcpu.getRegs().rbx).toBe(N);
    console.log(`EINTR/sync run: ${sent} SIGUSR2 sent, ${intr} 'intr' exits, ${sigusr2 - before} handled by the listener`);
    expect(intr).toBeGreaterThan(0);
    expect(sigusr2 - before).toBeGreaterThan(0);
  });

  it('process signals while runAsync runs on a pool thread do not disturb it', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using g = countingGuest(vm, N / 3n);
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const storm = await startWorker('signal-storm.mjs', { flag: flag.buffer, intervalMs: 1 });
    await storm.next((m: { ready?: boolean }) => m.ready === true);
    let exit;
    try {
      do exit = await g.vcpu.runAsync();
      while (exit.reason === 'intr');
    } finally {
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    }
    await storm.exited;
    expect(exit).toMatchObject({ reason: 'io', port: 0xe9 });
    expect(g.vcpu.getRegs().rbx).toBe(N / 3n);
  });

  it('kick() from a timer stops a guest spinning forever, and the vcpu runs on afterwards', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using g = Guest.create(vm, { program: spinProgram() });
    for (let round = 0; round < 3; round++) {
      const t = setTimeout(() => g.vcpu.kick(), 20);
      const exit = await g.vcpu.runAsync();
      clearTimeout(t);
      expect(exit.reason).toBe('intr');
      expect(g.vcpu.running).toBe(false);
      // immediate_exit was cleared: the next run really runs (and spins) until kicked again.
      expect(g.vcpu.runState[1]).toBe(0);
    }
    // A kick before the run is not lost: the next KVM_RUN returns at once.
    g.vcpu.kick();
    const started = Date.now();
    expect(g.vcpu.run().reason).toBe('intr');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('kick() from another thread: a worker maps kvm_run, sets immediate_exit and calls interrupt(fd)', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using g = Guest.create(vm, { program: spinProgram() });
    const data = { addon: addonPath(), fd: g.vcpu.fd, mmapSize: vm.capabilities.vcpuMmapSize };
    // 1) The guest is already in KVM_RUN when the worker kicks.
    const running = g.vcpu.runAsync();
    const kicker = await startWorker('kick-vcpu.mjs', { ...data, delayMs: 30 });
    const { signalled } = await kicker.next<{ signalled: boolean }>();
    expect((await running).reason).toBe('intr');
    expect(await kicker.exited).toBe(0);
    // 2) The worker kicks before the run starts: immediate_exit makes the next run return at once.
    const early = await startWorker('kick-vcpu.mjs', { ...data, interrupt: false });
    await early.next();
    await early.exited;
    expect((await g.vcpu.runAsync()).reason).toBe('intr');
    // 3) A vcpu run by fd on a worker thread is kicked by its owner's vcpu.kick().
    const runner = await startWorker('run-vcpu.mjs', { ...data, stopOnIntr: true });
    await runner.next((m: { started?: boolean }) => m.started === true);
    await new Promise((r) => setTimeout(r, 30));
    g.vcpu.kick();
    const result = await runner.next<{ reason?: string; intr: number }>((m) => 'intr' in m);
    await runner.exited;
    expect(result).toMatchObject({ reason: 'intr', intr: 1 });
    console.log(`kick from a worker: signalled a thread in KVM_RUN: ${signalled}`);
  });

  it('software-engine pre-fault under a signal storm: everything is mapped and populated, nothing lost', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const size = 256n * MiB;
    const base = 4n << 30n;
    const memory = vm.allocateMemory(size);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: base, memory });
    using vcpu = vm.createVcpu(0);
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const storm = await startWorker('signal-storm.mjs', { flag: flag.buffer, intervalMs: 1 });
    await storm.next((m: { ready?: boolean }) => m.ready === true);
    // Raw signals at the vcpu too (they reach a thread only if one is in a vcpu ioctl).
    const poke = setInterval(() => vcpu.interruptIoctl(), 1);
    const rssBefore = rssKiB();
    let asyncResult;
    let syncResult;
    try {
      asyncResult = await vcpu.preFaultMemory({ gpa: base, size: size / 2n }, { engine: 'software', threads: 2, maxStepBytes: 8n * MiB });
      // The synchronous engine runs madvise() on the main thread: the storm's signals land there.
      syncResult = vcpu.preFaultMemorySync({ gpa: base + size / 2n, size: size / 2n }, { engine: 'software', maxStepBytes: 8n * MiB });
    } finally {
      clearInterval(poke);
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    }
    const { sent } = await storm.next<{ sent: number }>((m) => typeof m.sent === 'number');
    await storm.exited;
    for (const r of [asyncResult, syncResult]) {
      expect(r.bytesMapped).toBe(size / 2n);
      expect(r.remaining.size).toBe(0n);
    }
    expect(vm.softMmu.stats().bytesMapped).toBe(size);
    expect(vm.softMmu.lookup(base + size - 4096n)).toMatchObject({ slot: 1, writable: true });
    // Populated for real: the pages are resident.
    expect(rssKiB() - rssBefore).toBeGreaterThanOrEqual(Number((size * 9n) / 10n / 1024n));
    console.log(`pre-fault under ${sent} SIGUSR2: retries eintr ${asyncResult.retries.eintr + syncResult.retries.eintr}, calls ${asyncResult.calls + syncResult.calls}`);
  });
});
