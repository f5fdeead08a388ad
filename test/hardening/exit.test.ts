/**
 * Process and worker exit always complete, with vcpus running: each case runs
 * in a child process and asserts its exit status. The bound on each child is
 * generous (it only turns a hang into a failure; it is no timing goal):
 * before the fix these children hung forever (KVM_RUN on a libuv pool thread
 * that Node joins at exit; a worker blocked in a sync run that terminate()
 * waits for) or aborted (an async completion throwing while the worker's
 * environment was torn down).
 */
import { expect, it } from 'vitest';
import { runNodeChild, type ChildResult } from './support/child.js';
import { describeKvm } from '../support/kvm.js';

/** Generous: a hang is the failure this bounds, not a slow machine. */
const HANG = 90_000;

// A guest that never exits by itself; `spinner()` gives its vcpu.
const PRELUDE = `
const lib = await import(BUNDLE);
const { Kvm, guest: g } = lib;
const kvm = Kvm.open();
function spinner() {
  const vm = kvm.createVm();
  return g.Guest.create(vm, { program: new g.Asm().label('spin').jmp('spin') }).vcpu;
}
const ready = () => console.log('ready');
`;

// A worker whose code is `body` (eval'd as an ES module, like its parent).
const workerOf = (body: string): string => `
const { Worker } = await import('node:worker_threads');
const worker = new Worker(${JSON.stringify(`
import { parentPort, workerData } from 'node:worker_threads';
const lib = await import(workerData.bundle);
const { Kvm, guest: g } = lib;
const kvm = Kvm.open();
const spinner = () => g.Guest.create(kvm.createVm(), { program: new g.Asm().label('spin').jmp('spin') }).vcpu;
${body}
`)}, { eval: true, workerData: { bundle: BUNDLE } });
`;

async function child(source: string, signalWhenReady?: NodeJS.Signals): Promise<ChildResult> {
  if (!signalWhenReady) return runNodeChild(PRELUDE + source, { timeoutMs: HANG });
  // The child prints 'ready' once its vcpus run; then it gets the signal.
  const { spawn } = await import('node:child_process');
  const { childBundle, childEnv } = await import('./support/child.js');
  const { pathToFileURL } = await import('node:url');
  const script = `const BUNDLE = ${JSON.stringify(pathToFileURL(await childBundle()).href)};\n${PRELUDE}${source}`;
  return await new Promise<ChildResult>((resolve, reject) => {
    const started = Date.now();
    const c = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: '/', env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => c.kill('SIGKILL'), HANG);
    c.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      if (stdout.includes('ready\n') && !c.killed) c.kill(signalWhenReady);
    });
    c.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    c.on('error', reject);
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, json: undefined, ms: Date.now() - started });
    });
  });
}

function expectExit(r: ChildResult, code: number): void {
  expect({ code: r.code, signal: r.signal }, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toEqual({ code, signal: null });
}

describeKvm('exit completes while runAsync() runs guests that never exit', () => {
  const running = `const a = spinner(), b = spinner(); a.runAsync(); b.runAsync(); await new Promise((r) => setTimeout(r, 100));`;

  it('process.exit()', async () => {
    expectExit(await child(`${running} process.exit(7);`), 7);
  });

  it('an uncaught exception', async () => {
    const r = await child(`${running} setTimeout(() => { throw new Error('boom'); });`);
    expectExit(r, 1);
    expect(r.stderr).toContain('boom');
  });

  it('an unhandled rejection', async () => {
    const r = await child(`${running} Promise.reject(new Error('rejected'));`);
    expectExit(r, 1);
    expect(r.stderr).toContain('rejected');
  });

  it('a SIGTERM listener that calls process.exit()', async () => {
    expectExit(await child(`process.on('SIGTERM', () => process.exit(3)); ${running} ready();`, 'SIGTERM'), 3);
  });
});

describeKvm('a worker in a synchronous vcpu.run() of a guest that never exits', () => {
  const inWorker = workerOf(`
  const vcpu = spinner();
  parentPort.postMessage('running');
  for (;;) { const exit = vcpu.run(); if (exit.reason !== 'intr') break; }
  parentPort.postMessage('the run loop ended');
  `);
  const whenRunning = `await new Promise((r) => worker.once('message', r)); console.log('worker running'); await new Promise((r) => setTimeout(r, 300));`;

  it('worker.terminate() returns', async () => {
    const r = await child(`${inWorker} ${whenRunning} const code = await worker.terminate(); console.log(JSON.stringify({ code })); process.exit(0);`);
    expectExit(r, 0);
    expect(r.stdout).toContain('worker running');
    expect(r.stdout).toContain('{"code":1}');
  });

  it('process.exit() on the main thread returns', async () => {
    const r = await child(`${inWorker} ${whenRunning} process.exit(6);`);
    expectExit(r, 6);
    expect(r.stdout).toContain('worker running');
  });

  it('the run is not disturbed by the watchdog while the worker lives: kick() from the worker itself still ends it', async () => {
    const r = await child(
      workerOf(`
      const vcpu = spinner();
      const t0 = Date.now();
      // Nobody kicks for 1 s: the watchdog's kicks must stay invisible, then
      // the main thread kicks through a handle of this vcpu.
      parentPort.postMessage({ handle: vcpu.workerHandle() });
      const exit = vcpu.run();
      parentPort.postMessage({ exit: exit.reason, ms: Date.now() - t0 });
      `) +
        `const { handle } = await new Promise((r) => worker.once('message', r));
         const peer = lib.Vcpu.fromWorkerHandle(handle);
         await new Promise((r) => setTimeout(r, 1000));
         peer.kick();
         const m = await new Promise((r) => worker.once('message', r));
         console.log(JSON.stringify(m));
         peer.close();
         await worker.terminate();`,
    );
    expectExit(r, 0);
    const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { exit: string; ms: number };
    expect(m.exit).toBe('intr');
    expect(m.ms).toBeGreaterThanOrEqual(900);
  });
});

describeKvm('a worker that shuts down while a node-kvm async call is in flight in it does not abort the process', () => {
  const MiB = 1n << 20n;
  const ops: Record<string, string> = {
    'HostMemory populate': `const m = vm.allocateMemory(256n * ${MiB}n); inflight.push(m.populate());`,
    preFaultMemory: `const m = vm.allocateMemory(256n * ${MiB}n); vm.setMemoryRegion({ slot: i, guestPhysAddr: BigInt(i) << 30n, memory: m });
      inflight.push(vm.createVcpu(i).preFaultMemory({ gpa: BigInt(i) << 30n, size: 256n * ${MiB}n }));`,
    'GuestMemfd allocateAsync': `const gm = vm.createGuestMemfd({ size: 256n * ${MiB}n }); inflight.push(gm.allocateAsync(0n, 256n * ${MiB}n));`,
    runAsync: `if (i < 2) inflight.push(spinner().runAsync());`,
  };
  const shutdowns: Record<string, { worker: string; main: string; code: number; signal?: NodeJS.Signals }> = {
    'worker.terminate()': { worker: '', main: `await worker.terminate(); process.exit(0);`, code: 0 },
    'an uncaught exception in the worker': { worker: `setImmediate(() => { throw new Error('worker boom'); });`, main: '', code: 0 },
    'process.exit() in the worker': { worker: `setImmediate(() => process.exit(2));`, main: '', code: 0 },
    'a main-thread SIGTERM listener calling process.exit()': { worker: '', main: `ready();`, code: 4, signal: 'SIGTERM' },
  };
  for (const [op, start] of Object.entries(ops)) {
    for (const [how, s] of Object.entries(shutdowns)) {
      it(`${op}, then ${how}`, async () => {
        const source = `process.on('SIGTERM', () => process.exit(4));` +
          workerOf(`
          const vm = kvm.createVm();
          const inflight = [];
          for (let i = 0; i < 8; i++) { ${start} }
          inflight.forEach((p) => p.catch(() => {}));
          parentPort.postMessage('started');
          ${s.worker}`) +
          `worker.on('error', () => {});
           worker.on('exit', (code) => { console.log(JSON.stringify({ workerExit: code })); setTimeout(() => process.exit(0), 50); });
           await new Promise((r) => worker.once('message', r));
           console.log('worker started');
           ${s.main}`;
        const r = await child(source, s.signal);
        expectExit(r, s.code);
        expect(r.stdout).toContain('worker started');
        expect(r.stderr).not.toContain('Assertion');
      });
    }
  }
});
