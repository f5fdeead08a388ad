/**
 * worker.terminate() while the worker is making short vcpu ioctls (getRegs,
 * which the addon runs through a JS callback so that KVM_RUN elsewhere can
 * wait for it) must not abort the process. Before the addon was built with
 * NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, the callback's failure in a
 * terminating worker became a Napi::Error that could not be thrown into
 * JavaScript and ended the whole process in std::terminate ("terminate called
 * after throwing an instance of 'Napi::Error'"), as the memslot_perf port's
 * vcpu thread did in the lab. It runs in a child process, so a regression
 * fails the test instead of killing vitest's worker. The crash is a race:
 * without the define, about one run in two of 40 workers crashed here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeKvm } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const WORKER = `
import { parentPort, workerData } from 'node:worker_threads';
const { Vcpu } = await import(workerData.bundle);
const v = Vcpu.fromWorkerHandle(workerData.handle);
v.run();
parentPort.postMessage('done');
for (let i = 0; i < 1000; i++) v.getRegs();
v.close();
`;

const source = (workerFile: string): string => `
const { Kvm, guest } = await import(BUNDLE);
const { Worker } = await import('node:worker_threads');
const kvm = Kvm.open();
for (let i = 0; i < 100; i++) {
  const vm = kvm.createVm();
  const a = new guest.Asm();
  a.label('s');
  guest.emitUcallDone(a);
  a.jmp('s');
  const g = guest.Guest.create(vm, { program: a });
  const w = new Worker(${JSON.stringify(workerFile)}, { execArgv: [], workerData: { bundle: BUNDLE, handle: g.vcpu.workerHandle() } });
  await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  await w.terminate();
  vm.close();
}
kvm.close();
console.log(JSON.stringify({ survived: 100 }));
`;

describeKvm('worker.terminate() during short vcpu ioctls', () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-kvm-terminate-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('100 workers terminated while calling getRegs(): the process survives every one', async () => {
    const workerFile = join(dir, 'worker.mjs');
    writeFileSync(workerFile, WORKER);
    const r = await runNodeChild(source(workerFile), { timeoutMs: 300_000 });
    expect({ code: r.code, signal: r.signal, stderr: r.stderr.includes('terminate called') }, r.stderr).toEqual({ code: 0, signal: null, stderr: false });
    expect(r.json).toEqual({ survived: 100 });
  }, 320_000);
});
