import { expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { EventFd, Kvm, type MmioExit } from '../../lib/index.js';
import { Asm, emitUcallDone, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError, kvmErrorOfAsync } from '../support/kvm.js';

describeKvm('EventFd', () => {
  it('write adds, read takes the counter (0n when empty), semaphore mode takes 1', () => {
    using e = new EventFd();
    expect(e.read()).toBe(0n);
    e.write();
    e.write(41n);
    expect(e.read()).toBe(42n);
    expect(e.read()).toBe(0n);
    using s = new EventFd({ semaphore: true, initialValue: 2 });
    expect(s.read()).toBe(1n);
    expect(s.read()).toBe(1n);
    expect(s.read()).toBe(0n);
    expectKvmError(() => e.write(0), 'EINVAL');
    expectKvmError(() => e.write(-1n), 'EINVAL');
    e.write((1n << 64n) - 2n);
    expectKvmError(() => e.write(1), 'EAGAIN'); // would overflow the counter
    expectKvmError(() => new EventFd({ initial: 1 } as never), 'EINVAL');
  });

  it('wait() resolves on the event loop when the counter becomes non-zero, without blocking it', async () => {
    using e = new EventFd();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const waiting = e.wait();
    const shared = e.wait();
    await new Promise((r) => setTimeout(r, 20));
    const ticksBefore = ticks;
    expect(ticksBefore).toBeGreaterThan(0);
    e.write(3);
    expect(await waiting).toBe(3n);
    expect(await shared).toBe(3n); // concurrent waits share one read
    clearInterval(timer);
    expect(e.read()).toBe(0n);
    e.write(1);
    expect(await e.wait()).toBe(1n); // already readable: resolves at once
  });

  it('close() while a wait is pending rejects it with ECLOSED, and the fd is closed afterwards', async () => {
    const e = new EventFd();
    const waiting = e.wait();
    e.close();
    const err = await kvmErrorOfAsync(waiting);
    expect(err.code).toBe('ECLOSED');
    expectKvmError(() => e.read(), 'ECLOSED');
    expect((await kvmErrorOfAsync(e.wait())).code).toBe('ECLOSED');
  });

  it('an AbortSignal ends a wait with ABORT_ERR', async () => {
    using e = new EventFd();
    const ac = new AbortController();
    const waiting = e.wait({ signal: ac.signal });
    ac.abort();
    expect((await kvmErrorOfAsync(waiting)).code).toBe('ABORT_ERR');
    // The aborted wait was the only one: the poll is stopped, and a new wait works.
    const again = e.wait();
    e.write(2);
    expect(await again).toBe(2n);
  }, 10_000);

  it('another thread can raise it by fd number (a worker writing the eventfd)', async () => {
    using e = new EventFd();
    const waiting = e.wait();
    const src = `const { workerData } = require('node:worker_threads'); const fs = require('node:fs');
      const b = Buffer.alloc(8); b.writeBigUInt64LE(7n); fs.writeSync(workerData.fd, b);`;
    const w = new Worker(src, { eval: true, workerData: { fd: e.fd } });
    await new Promise((r) => w.once('exit', r));
    expect(await waiting).toBe(7n);
  });

  it('a worker with a wait pending still terminates (the poll is closed by the env cleanup hook)', async () => {
    const src = `const { workerData, parentPort } = require('node:worker_threads');
      const addon = require(workerData.addon);
      const fd = addon.eventfdCreate(0, false);
      addon.eventfdWait(fd).promise.catch(() => {});
      parentPort.postMessage('waiting');`;
    const { addonPath } = await import('../../lib/native.js');
    const w = new Worker(src, { eval: true, workerData: { addon: addonPath() } });
    await new Promise((r) => w.once('message', r));
    // The pending uv_poll keeps the worker's loop alive; terminate() must still end it.
    expect(await w.terminate()).toBe(1);
  });
});

describeKvm('ioeventfd: a guest write signals an EventFd without an exit to userspace', () => {
  it('PIO: OUT to the registered port, then DONE; the first exit is DONE and the EventFd fired', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using doorbell = new EventFd();
    vm.registerIoeventfd({ eventfd: doorbell, addr: 0x600, len: 1, pio: true });
    const program = new Asm().mov('edx', 0x600).mov('eax', 1).out('dx', 'al').out('dx', 'al');
    emitUcallDone(program);
    using guest = Guest.create(vm, { program });
    const rang = doorbell.wait();
    const first = await guest.run();
    expect(first.kind).toBe('done');
    // The vcpu runs on its own thread, so the wait may wake between the two OUTs:
    // what it took plus what is left must be both doorbell writes.
    expect((await rang) + doorbell.read()).toBe(2n);
    // Had either doorbell OUT exited to userspace, run() would have returned that io exit first.
  });

  it('MMIO with datamatch: only the matching value signals', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using hit = new EventFd();
    vm.registerIoeventfd({ eventfd: hit, addr: 0xd000_0000n, len: 4, datamatch: 0x55 });
    const program = new Asm().mov('rbx', 0xd000_0000).mov('eax', 0x54).store({ base: 'rbx' }, 'eax').mov('eax', 0x55).store({ base: 'rbx' }, 'eax');
    emitUcallDone(program);
    using guest = Guest.create(vm, { program });
    const events: string[] = [];
    for (;;) {
      const e = await guest.run();
      if (e.kind === 'exit' && e.exit.reason === 'mmio') {
        events.push(`mmio 0x${(e.exit as MmioExit).physAddr.toString(16)}`);
        continue;
      }
      events.push(e.kind);
      break;
    }
    // The non-matching write exits as MMIO; the matching one is absorbed by the ioeventfd.
    expect(events).toEqual(['mmio 0xd0000000', 'done']);
    expect(hit.read()).toBe(1n);
  });
});
