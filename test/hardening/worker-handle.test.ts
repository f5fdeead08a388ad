/**
 * Vcpu.workerHandle() / Vcpu.fromWorkerHandle(): a real worker_thread runs a
 * vcpu the main thread owns, with the typed API only. The owner kicks it,
 * closes it (or its Vm) under the worker, and terminates the worker mid-run.
 */
import { pathToFileURL } from 'node:url';
import { expect, it } from 'vitest';
import { Kvm, Vcpu, type Vm } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError, kvmErrorOf } from '../support/kvm.js';
import { childBundle, fdTarget, startWorker, type TestWorker } from './support/child.js';

const spin = (): Asm => new Asm().label('spin').jmp('spin');

/** Waits until the worker's run holds the vcpu: the owner's getRegs answers EBUSY (at once). */
async function untilBusy(vcpu: Vcpu): Promise<void> {
  for (;;) {
    try {
      vcpu.getRegs();
    } catch (e) {
      if ((e as { code?: string }).code === 'EBUSY') return;
      throw e;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function worker(vcpu: Vcpu, steps: string[]): Promise<TestWorker> {
  const bundle = pathToFileURL(await childBundle()).href;
  return startWorker('handle-vcpu.mjs', { bundle, handle: vcpu.workerHandle(), steps });
}

type Step = { step: string; ok?: unknown; code?: string };
const result = (w: TestWorker, step: string): Promise<Step> => w.next<Step>((m) => m.step === step && !('started' in m));

describeKvm('running a Vcpu in a worker_thread through a worker handle', () => {
  it('the worker runs the guest to its exit and reads registers; the owner sees the same state afterwards', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const program = new Asm().label('loop').inc('rbx').decJnz('rcx', 'loop').mov('edx', 0xe9).out('dx', 'eax');
    using guest = Guest.create(vm, { program, regs: { rbx: 0n, rcx: 100000n } });
    const w = await worker(guest.vcpu, ['runToExit', 'regs']);
    expect((await result(w, 'runToExit')).ok).toMatchObject({ reason: 'io', port: 0xe9 });
    expect((await result(w, 'regs')).ok).toBe('100000');
    await w.next((m: { done?: boolean }) => m.done === true);
    expect(await w.exited).toBe(0);
    expect(guest.vcpu.getRegs().rbx).toBe(100000n);
  });

  it("the owner's kick() stops a guest spinning in the worker (sync and async runs); the owner's ioctls and runs are EBUSY meanwhile", async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = Guest.create(vm, { program: spin() });
    const v = guest.vcpu;
    const w = await worker(v, ['run', 'runAsync']);
    for (const step of ['run', 'runAsync']) {
      await untilBusy(v);
      expectKvmError(() => v.setRegs({ rax: 1n }), 'EBUSY');
      expectKvmError(() => v.run(), 'EBUSY');
      v.kick();
      expect(await result(w, step)).toMatchObject({ ok: 'intr' });
    }
    await w.exited;
    // The owner runs it again afterwards.
    v.kick();
    expect(v.run().reason).toBe('intr');
  });

  it('vm.close() on the owner stops the guest in the worker; the worker then gets ECLOSED', async () => {
    using kvm = Kvm.open();
    const vm: Vm = kvm.createVm();
    const guest = Guest.create(vm, { program: spin() });
    const w = await worker(guest.vcpu, ['run', 'run', 'regs']);
    await untilBusy(guest.vcpu);
    vm.close();
    expect(await result(w, 'run')).toMatchObject({ ok: 'intr' });
    expect(await result(w, 'run')).toMatchObject({ code: 'ECLOSED' });
    expect(await result(w, 'regs')).toMatchObject({ code: 'ECLOSED' });
    expect(await w.exited).toBe(0);
  });

  it('worker.terminate() during a sync run returns, and the owner keeps a usable vcpu', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = Guest.create(vm, { program: spin() });
    const w = await worker(guest.vcpu, ['run']);
    await untilBusy(guest.vcpu);
    expect(await w.worker.terminate()).toBe(1);
    // The worker's thread left KVM_RUN: the owner's ioctls work again.
    guest.vcpu.setRegs({ rbx: 9n });
    expect(guest.vcpu.getRegs().rbx).toBe(9n);
    guest.vcpu.kick();
    expect(guest.vcpu.run().reason).toBe('intr');
  });

  it('handles are checked: adopted once, same process only, dead with their owner (whose close() closes an unadopted fd)', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const v = vm.createVcpu(0);
    const h = v.workerHandle();
    expect(fdTarget(h.fd)).toBe(fdTarget(v.fd));
    expect(h.fd).not.toBe(v.fd);
    using adopted = Vcpu.fromWorkerHandle(h);
    expect(adopted.id).toBe(0);
    expect(kvmErrorOf(() => Vcpu.fromWorkerHandle(h)).code).toBe('EBADF');
    expectKvmError(() => Vcpu.fromWorkerHandle({ ...v.workerHandle(), pid: process.pid + 1 }), 'EINVAL');
    expectKvmError(() => Vcpu.fromWorkerHandle({} as never), 'EINVAL');
    expectKvmError(() => Vcpu.fromWorkerHandle(null as never), 'EINVAL');
    expectKvmError(() => adopted.vm, 'EOPNOTSUPP');
    const unadopted = v.workerHandle();
    v.close();
    expect(fdTarget(unadopted.fd)).toBeUndefined();
    expectKvmError(() => Vcpu.fromWorkerHandle(unadopted), 'ECLOSED');
    expectKvmError(() => adopted.getRegs(), 'ECLOSED');
    expectKvmError(() => v.workerHandle(), 'ECLOSED');
  });
});
