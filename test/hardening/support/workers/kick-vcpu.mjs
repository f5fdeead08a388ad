// Kicks a vcpu that another thread owns, knowing only its fd (the Vcpu object
// cannot cross threads). The pattern:
//   1. map the vcpu's kvm_run page here too (MAP_SHARED: the same page),
//   2. set kvm_run.immediate_exit = 1, so a KVM_RUN that has not started yet
//      returns at once (EINTR) instead of the signal being lost,
//   3. native.interrupt(fd): signals whichever thread of the process is blocked
//      in KVM_RUN on that fd (the addon's registry is process-wide),
//   4. unmap before telling the owner, who may then close the vcpu.
// The owner must keep the vcpu open until this worker is done (fd numbers are
// recycled: a kick on a closed fd could reach an unrelated vcpu).
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';

const native = createRequire(import.meta.url)(workerData.addon);
const { fd, mmapSize, delayMs = 0, interrupt = true } = workerData;
const PROT_READ_WRITE = 3;
const MAP_SHARED = 1;

if (delayMs > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, delayMs);
const run = new native.Mapping(fd, BigInt(mmapSize), PROT_READ_WRITE, MAP_SHARED, 0n, 4096n);
let signalled = false;
try {
  new Uint8Array(run.buffer())[1] = 1; // kvm_run.immediate_exit
  if (interrupt) signalled = native.interrupt(fd);
} finally {
  run.unmap();
}
parentPort.postMessage({ signalled });
