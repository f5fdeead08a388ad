// Runs a vcpu the main thread owns through Vcpu.fromWorkerHandle(): the
// typed way, no raw addon. workerData: { bundle, handle, steps }; each step
// is posted when it starts ({ step, started: true }) and with its outcome
// ({ step, ok } or { step, code }).
import { parentPort, workerData } from 'node:worker_threads';

const { Vcpu } = await import(workerData.bundle);
const vcpu = Vcpu.fromWorkerHandle(workerData.handle);
const outcome = async (fn) => {
  try {
    return { ok: await fn() };
  } catch (e) {
    return { code: e.code ?? String(e), message: e.message };
  }
};
const steps = {
  run: () => vcpu.run().reason,
  runAsync: async () => (await vcpu.runAsync()).reason,
  runToExit: () => {
    for (let intr = 0; ; intr++) {
      const e = vcpu.run();
      if (e.reason !== 'intr') return { reason: e.reason, port: e.port, intr };
    }
  },
  regs: () => String(vcpu.getRegs().rbx),
  wait: () => new Promise((resolve) => parentPort.once('message', resolve)),
};
for (const step of workerData.steps) {
  parentPort.postMessage({ step, started: true });
  parentPort.postMessage({ step, ...(await outcome(steps[step])) });
}
vcpu.close();
parentPort.postMessage({ done: true });
