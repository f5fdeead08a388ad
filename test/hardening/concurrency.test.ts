/**
 * Concurrency: vcpus running in worker threads (the two supported patterns,
 * see docs/guarantees.md), memslots changing while a software pre-fault
 * step runs, and closing things while a run or a pre-fault is in flight.
 */
import { expect, it } from 'vitest';
import { Kvm, KvmError, PreFaultError, type Vm } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { addonPath, native } from '../../lib/native.js';
import { describeKvm, expectKvmError, preFaultErrorOf } from '../support/kvm.js';
import { childBundle, fdTarget, startWorker } from './support/child.js';
import { pathToFileURL } from 'node:url';

const MiB = 1n << 20n;
const BASE = 4n << 30n;
const countingProgram = (): Asm => new Asm().label('loop').inc('rbx').decJnz('rcx', 'loop').mov('edx', 0xe9).out('dx', 'eax');
const spinProgram = (): Asm => new Asm().label('spin').pause().jmp('spin');
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A VM with `size` bytes of anonymous memory in slot 1 at BASE. */
function vmWithSlot(kvm: Kvm, size: bigint): { vm: Vm; memory: ReturnType<Vm['allocateMemory']> } {
  const vm = kvm.createVm();
  const memory = vm.allocateMemory(size);
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
  return { vm, memory };
}

async function settled<T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  try {
    return { value: await p };
  } catch (error) {
    return { error };
  }
}

describeKvm('vcpus in worker threads', () => {
  it('pattern 1: each worker owns its Kvm, VM and vcpu; two guests run to completion concurrently', async () => {
    const bundle = pathToFileURL(await childBundle()).href;
    const iterations = 1_000_000_000;
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    const workers = await Promise.all([0, 1].map(() => startWorker('own-vm.mjs', { bundle, iterations })));
    const results = await Promise.all(workers.map((w) => w.next<{ threadId: number; reason: string; port: number; count: string; startedAt: number; endedAt: number }>()));
    clearInterval(ticker);
    for (const w of workers) expect(await w.exited).toBe(0);
    for (const r of results) expect(r).toMatchObject({ reason: 'io', port: 0xe9, count: String(iterations) });
    expect(new Set(results.map((r) => r.threadId)).size).toBe(2);
    const [a, b] = results as [(typeof results)[0], (typeof results)[0]];
    const overlap = Math.min(a.endedAt, b.endedAt) - Math.max(a.startedAt, b.startedAt);
    console.log(`two workers, own VMs: ${a.endedAt - a.startedAt} ms and ${b.endedAt - b.startedAt} ms of guest time, overlapping ${overlap} ms; main thread ticked ${ticks} times`);
    // The main thread's event loop kept running meanwhile.
    expect(ticks).toBeGreaterThan(0);
  });

  it('pattern 2: one VM, two vcpus created and owned by the main thread, run by fd from two workers', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const counts = [700_000_000n, 900_000_000n] as const;
    using g0 = Guest.create(vm, { program: countingProgram(), regs: { rbx: 0n, rcx: counts[0] } });
    // Second vcpu: same code, page tables and TSS, its own registers.
    using vcpu1 = vm.createVcpu(1);
    vcpu1.setCpuid(kvm.supportedCpuid());
    vcpu1.setSregs(g0.vcpu.getSregs());
    vcpu1.setRegs({ ...g0.vcpu.getRegs(), rbx: 0n, rcx: counts[1] });
    const vcpus = [g0.vcpu, vcpu1];
    const workers = await Promise.all(vcpus.map((v) => startWorker('run-vcpu.mjs', { addon: addonPath(), fd: v.fd, mmapSize: vm.capabilities.vcpuMmapSize })));
    // While they run, the owner can kick one: it returns 'intr' and the worker's loop resumes it.
    await Promise.all(workers.map((w) => w.next((m: { started?: boolean }) => m.started === true)));
    await sleep(20);
    g0.vcpu.kick();
    const results = await Promise.all(workers.map((w) => w.next<{ reason: number; port: number; intr: number; threadId: number }>((m) => 'intr' in m)));
    for (const w of workers) expect(await w.exited).toBe(0);
    // Only now, with both workers done, may the owner read, reuse or close the vcpus.
    for (const [i, r] of results.entries()) {
      expect(r).toMatchObject({ reason: 2, port: 0xe9 });
      expect(vcpus[i]!.getRegs().rbx).toBe(counts[i]);
    }
    console.log(`one VM, two vcpus from two workers: intr exits ${results.map((r) => r.intr).join(' and ')}`);
  });
});

describeKvm('memslot changes during a software pre-fault step', () => {
  it('a slot moved while a step populates gives EAGAIN, then ENOENT with the progress kept', async () => {
    using kvm = Kvm.open();
    const { vm } = vmWithSlot(kvm, 64n * MiB);
    using _vm = vm;
    using vcpu = vm.createVcpu(0);
    const p = vcpu.preFaultMemory({ gpa: BASE, size: 64n * MiB }, { engine: 'software', maxStepBytes: 64n * MiB, threads: 1 });
    setImmediate(() => vm.moveMemoryRegion(1, 8n << 30n));
    const e = await preFaultErrorOf(p);
    expect(e.code).toBe('ENOENT');
    expect(e.result.retries.eagain).toBeGreaterThanOrEqual(1);
    expect(e.bytesMapped).toBe(0n);
    expect(e.remaining).toEqual({ gpa: BASE, size: 64n * MiB });
    expect(vm.softMmu.stats().bytesMapped).toBe(0n);
    // The slot lives at its new address, where a pre-fault works.
    const r = await vcpu.preFaultMemory({ gpa: 8n << 30n, size: 64n * MiB }, { engine: 'software' });
    expect(r.bytesMapped).toBe(64n * MiB);
  });

  it('a slot moved away and back while a step populates gives EAGAIN, then completes', async () => {
    using kvm = Kvm.open();
    const { vm } = vmWithSlot(kvm, 64n * MiB);
    using _vm = vm;
    using vcpu = vm.createVcpu(0);
    const p = vcpu.preFaultMemory({ gpa: BASE, size: 64n * MiB }, { engine: 'software', maxStepBytes: 64n * MiB, threads: 1 });
    setImmediate(() => {
      vm.moveMemoryRegion(1, 8n << 30n);
      vm.moveMemoryRegion(1, BASE);
    });
    const r = await p;
    expect(r.retries.eagain).toBeGreaterThanOrEqual(1);
    expect(r.bytesMapped).toBe(64n * MiB);
    expect(vm.softMmu.stats().bytesMapped).toBe(64n * MiB);
    expect(vm.softMmu.lookup(BASE)).toMatchObject({ slot: 1 });
  });

  it('a slot deleted after a partial pre-fault keeps the progress made (ENOENT for the rest)', async () => {
    using kvm = Kvm.open();
    const { vm } = vmWithSlot(kvm, 64n * MiB);
    using _vm = vm;
    using vcpu = vm.createVcpu(0);
    let deleted = false;
    const p = vcpu.preFaultMemory(
      { gpa: BASE, size: 64n * MiB },
      {
        engine: 'software',
        maxStepBytes: 8n * MiB,
        threads: 1,
        // After the second step, the slot goes away.
        onProgress: (done) => {
          if (done === 16n * MiB && !deleted) {
            deleted = true;
            vm.deleteMemoryRegion(1);
          }
        },
      },
    );
    const e = await preFaultErrorOf(p);
    expect(e.code).toBe('ENOENT');
    expect(e.bytesMapped).toBe(16n * MiB);
    expect(e.remaining).toEqual({ gpa: BASE + 16n * MiB, size: 48n * MiB });
  });
});

describeKvm('closing things while they are in use', () => {
  it('closing a Vcpu while runAsync is in flight: the run ends with intr, the fd is released only after', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const g = Guest.create(vm, { program: spinProgram() });
    const sregs = g.vcpu.getSregs();
    const regs = g.vcpu.getRegs();
    const fd = g.vcpu.fd;
    const running = g.vcpu.runAsync();
    await sleep(20);
    g.vcpu.close();
    // The worker thread is still in KVM_RUN on this fd: it must not be closed (and recycled) yet.
    expect(fdTarget(fd)).toMatch(/kvm-vcpu/);
    expect((await running).reason).toBe('intr');
    expect(fdTarget(fd) ?? '').not.toMatch(/kvm-vcpu/);
    expectKvmError(() => g.vcpu.getRegs(), 'ECLOSED');
    expectKvmError(() => g.vcpu.kick(), 'ECLOSED');
    // The VM is fine: another vcpu runs a program to its OUT.
    const code = 0x18000n;
    g.memory.bytes.set(new Asm().mov('eax', 0x77).mov('edx', 0xe9).out('dx', 'eax').assemble(code), Number(code));
    using vcpu1 = vm.createVcpu(1);
    vcpu1.setCpuid(kvm.supportedCpuid());
    vcpu1.setSregs(sregs);
    vcpu1.setRegs({ ...regs, rip: code });
    expect(vcpu1.run()).toMatchObject({ reason: 'io', port: 0xe9 });
    expect(vcpu1.getRegs().rax).toBe(0x77n);
  });

  it('closing the memory behind a slot while the guest writes to it: KVM_RUN fails cleanly (EFAULT) or goes on, no crash', async () => {
    using kvm = Kvm.open();
    const { vm, memory } = vmWithSlot(kvm, 2n * MiB);
    using _vm = vm;
    const program = new Asm().mov('rbx', BASE + 0x1000n).mov('rax', 0x5a5a5a5a5a5a5a5an).label('l').store({ base: 'rbx' }, 'rax').pause().jmp('l');
    using g = Guest.create(vm, { program, map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, { gpa: BASE, size: 2n * MiB, pageSize: '2m' }] });
    const running = settled(g.vcpu.runAsync());
    await sleep(20);
    expect(memory.bytes[0x1000]).toBe(0x5a);
    const view = memory.bytes;
    memory.close();
    // The run may also go on (e.g. over zero pages left in place of the mapping): kick it after a while.
    const t = setTimeout(() => g.vcpu.kick(), 200);
    const outcome = await running;
    clearTimeout(t);
    // Either an exit or a KvmError (EFAULT here): never a crash.
    if (outcome.error !== undefined) expect(outcome.error).toBeInstanceOf(KvmError);
    console.log(`memory closed mid-run: ${outcome.error ? (outcome.error as KvmError).code : (outcome.value as { reason: string }).reason}`);
    // Not detached (Node may be using it), not dangling: zero pages, which the
    // guest cannot reach (its slot was deleted before the pages went away).
    expect(view.length).toBe(2 * 1024 * 1024);
    expect(view[0x1000]).toBe(0);
  });

  it('after the memory behind a slot is closed, the guest cannot write into memory allocated later at the same address', async () => {
    using kvm = Kvm.open();
    const { vm, memory } = vmWithSlot(kvm, 2n * MiB);
    using _vm = vm;
    const program = new Asm().mov('rbx', BASE + 0x1000n).mov('rax', 0x5a5a5a5a5a5a5a5an).label('l').store({ base: 'rbx' }, 'rax').pause().jmp('l');
    using g = Guest.create(vm, { program, map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, { gpa: BASE, size: 2n * MiB, pageSize: '2m' }] });
    const address = memory.address;
    memory.close();
    // The host reuses the hole for the next mapping of that size (mmap is top-down).
    const later = [vm.allocateMemory(2n * MiB), vm.allocateMemory(2n * MiB)];
    const reused = later.find((m) => m.address === address);
    if (!reused) {
      console.log('the freed range was not reused here: nothing to check');
      return;
    }
    const t = setTimeout(() => g.vcpu.kick(), 30);
    const outcome = await settled(g.vcpu.runAsync());
    clearTimeout(t);
    console.log(`guest after its memory was closed: ${outcome.error ? (outcome.error as KvmError).code : JSON.stringify(outcome.value, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
    // The slot still points at the old host range: the guest's stores land in `reused`
    // (a use-after-free from the guest side) unless closing the memory removed the slot.
    expect(reused.bytes[0x1000], 'guest wrote into host memory allocated after its own was closed').toBe(0);
  });

  it('closing a guest_memfd while a software pre-fault allocates it: the fd is not released (nor recycled) under the worker threads', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const size = 64n * MiB;
    // Without 'init-shared' the host cannot touch the pages: the software engine
    // populates them with fallocate() on the guest_memfd's fd, on pool threads.
    const gmem = vm.createGuestMemfd({ size, flags: ['mmap'] });
    const memory = gmem.map();
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory, guestMemfd: gmem });
    using vcpu = vm.createVcpu(0);
    // Occupy every libuv pool thread with a spinning guest, so the pre-fault's
    // fallocate() calls stay queued while the guest_memfd is closed.
    const poolSize = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    const spinVms = Array.from({ length: poolSize }, () => kvm.createVm());
    const spinGuests = spinVms.map((v) => Guest.create(v, { program: spinProgram() }));
    const spinning = spinGuests.map((g) => g.vcpu.runAsync());
    await sleep(20);
    const fd = gmem.fd;
    const p = settled(vcpu.preFaultMemory({ gpa: BASE, size }, { engine: 'software', threads: 2, maxStepBytes: size }));
    await tick();
    gmem.close();
    memory.close();
    // A new fd now: with the guest_memfd's number free, it would get it, and the queued fallocate() would hit it.
    const victim = native.memfdCreate('node-kvm-victim');
    try {
      const recycled = victim === fd;
      for (const g of spinGuests) g.vcpu.kick();
      await Promise.all(spinning);
      const outcome = await p;
      if (outcome.error !== undefined) expect(outcome.error).toBeInstanceOf(KvmError);
      const blocks = native.fstat(victim).blocks;
      console.log(`guest_memfd closed mid-pre-fault: fd ${fd} recycled by the next open: ${recycled}; victim blocks ${blocks}; pre-fault ${outcome.error ? (outcome.error as KvmError).code : 'ok'}`);
      // The guest_memfd's fd stays open while its fallocate()s are in flight, so the number cannot be reused...
      expect(recycled, 'the guest_memfd fd was closed (and reused) while fallocate() was queued on it').toBe(false);
      // ...and no allocation landed in an unrelated file.
      expect(blocks).toBe(0n);
    } finally {
      native.close(victim);
      for (const v of spinVms) v.close();
    }
    expect(fdTarget(fd) ?? '').not.toMatch(/kvm-gmem/);
  });

  it('closing memory while a software pre-fault populates it: the mapping outlives the in-flight madvise()', async () => {
    using kvm = Kvm.open();
    const { vm, memory } = vmWithSlot(kvm, 64n * MiB);
    using _vm = vm;
    using vcpu = vm.createVcpu(0);
    const p = settled(vcpu.preFaultMemory({ gpa: BASE, size: 64n * MiB }, { engine: 'software', threads: 2, maxStepBytes: 64n * MiB }));
    await tick();
    memory.close();
    const outcome = await p;
    if (outcome.error !== undefined) expect(outcome.error).toBeInstanceOf(KvmError);
    expect(memory.closed).toBe(true);
    expectKvmError(() => memory.bytes, 'ECLOSED');
  });

  it('closing the VM while a software pre-fault runs settles it with a KvmError or success, no crash', async () => {
    using kvm = Kvm.open();
    const { vm } = vmWithSlot(kvm, 64n * MiB);
    const vcpu = vm.createVcpu(0);
    const p = settled(vcpu.preFaultMemory({ gpa: BASE, size: 64n * MiB }, { engine: 'software', threads: 2, maxStepBytes: 16n * MiB }));
    await tick();
    vm.close();
    const outcome = await p;
    if (outcome.error !== undefined) expect(outcome.error).toBeInstanceOf(KvmError);
    expect(vm.closed && vcpu.closed).toBe(true);
  });
});

