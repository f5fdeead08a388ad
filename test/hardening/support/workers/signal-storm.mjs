// Sends SIGUSR2 to the whole process every `intervalMs` until the main thread
// sets flag[0]. A process-directed signal goes to the main thread when it
// does not block it (the kernel prefers the thread-group leader), so this is
// how "a real signal interrupts a synchronous KVM_RUN on the main thread" is
// produced while the main thread is blocked. The main thread must have a
// 'SIGUSR2' listener installed (the default action would end the process).
import { parentPort, workerData } from 'node:worker_threads';

const flag = new Int32Array(workerData.flag);
const { intervalMs = 1 } = workerData;
let sent = 0;
parentPort.postMessage({ ready: true });
while (Atomics.load(flag, 0) === 0) {
  process.kill(process.pid, 'SIGUSR2');
  sent++;
  Atomics.wait(flag, 0, 0, intervalMs);
}
parentPort.postMessage({ sent });
