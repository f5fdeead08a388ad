/**
 * A worker that alone uses node-kvm (the main thread never loads the addon)
 * and is terminated: Node dlclose()s an addon with its last environment, and
 * before the addon pinned itself (RTLD_NODELETE, native/addon.cc) the
 * worker's loop then called the eventfd wait's close callback, and the
 * watchdog thread of a synchronous run kept executing, in unmapped code:
 * SIGSEGV (exit 139 in 3 of 3 runs of each case). Each case runs in a child
 * process whose main thread imports nothing of node-kvm; its exit status is
 * asserted. The bound only turns a hang into a failure.
 */
import { expect, it } from 'vitest';
import { runNodeChild, type ChildResult } from './support/child.js';
import { describeKvm } from '../support/kvm.js';

const HANG = 90_000;

// The main thread starts a worker running `body` (node-kvm imported there only),
// waits for its message, terminates it, and lives on for a while.
const terminateWorker = (body: string): string => `
const { Worker } = await import('node:worker_threads');
const worker = new Worker(${JSON.stringify(`
import { parentPort, workerData } from 'node:worker_threads';
const lib = await import(workerData.bundle);
const kvm = lib.Kvm.open();
const spinner = () => lib.guest.Guest.create(kvm.createVm(), { program: new lib.guest.Asm().label('spin').jmp('spin') }).vcpu;
${body}
`)}, { eval: true, workerData: { bundle: BUNDLE } });
await new Promise((r) => worker.once('message', r));
await new Promise((r) => setTimeout(r, 200));
const code = await worker.terminate();
await new Promise((r) => setTimeout(r, 500));
console.log(JSON.stringify({ terminated: code, alive: true }));
`;

function expectClean(r: ChildResult): void {
  expect({ code: r.code, signal: r.signal }, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toEqual({ code: 0, signal: null });
  expect(r.json).toEqual({ terminated: 1, alive: true });
}

describeKvm('a worker that alone loaded node-kvm is terminated', () => {
  it('with an EventFd wait pending (its uv_poll closes after the worker env is gone)', async () => {
    expectClean(await runNodeChild(terminateWorker(`new lib.EventFd().wait(); parentPort.postMessage('waiting');`), { timeoutMs: HANG }));
  });

  it('in a synchronous run() of a guest that never exits (the watchdog thread lives on)', async () => {
    expectClean(await runNodeChild(terminateWorker(`const v = spinner(); parentPort.postMessage('running'); for (;;) if (v.run().reason !== 'intr') break;`), { timeoutMs: HANG }));
  });

  it('with runAsync() in flight (the vcpu thread lives on)', async () => {
    expectClean(await runNodeChild(terminateWorker(`spinner().runAsync(); parentPort.postMessage('running');`), { timeoutMs: HANG }));
  });

  it('with a populate() blocked on a fault its userfault handler never answers', async () => {
    // Before: Node waited for the stuck thread-pool populate before running any
    // cleanup hook, and only the handler could answer: terminate() never
    // returned. Now the serving thread asks every 100 ms whether JS can still
    // answer and, once the worker is terminating, answers with the default.
    expectClean(
      await runNodeChild(
        terminateWorker(`const m = lib.HostMemory.allocate(1 << 20);
        lib.registerUserfault(m, { mode: 'missing', handler: () => new Promise(() => {}) });
        m.populate().catch(() => {});
        parentPort.postMessage('faulting');`),
        { timeoutMs: HANG },
      ),
    );
  });
});
