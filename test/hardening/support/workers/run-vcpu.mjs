// Runs a vcpu that the main thread created and owns, by fd, on this worker
// thread: KVM_RUN until an exit other than EINTR, with this worker's own
// mapping of kvm_run to read the exit. The main thread must not close the
// vcpu (or its VM or memory) before this worker has posted its result.
import { createRequire } from 'node:module';
import { parentPort, threadId, workerData } from 'node:worker_threads';

const native = createRequire(import.meta.url)(workerData.addon);
const { fd, mmapSize } = workerData;
const EINTR = 4;
const EAGAIN = 11;
const KVM_EXIT_IO = 2;

const run = new native.Mapping(fd, BigInt(mmapSize), 3 /* PROT_READ|PROT_WRITE */, 1 /* MAP_SHARED */, 0n, 4096n);
const page = new DataView(run.buffer());
let intr = 0;
let result;
const started = process.hrtime.bigint();
parentPort.postMessage({ started: true });
try {
  for (;;) {
    const err = native.run(fd);
    if (err === EINTR || err === EAGAIN) {
      intr++;
      page.setUint8(1, 0); // clear immediate_exit, as Vcpu.run() does after a kick
      if (workerData.stopOnIntr) {
        result = { reason: 'intr' };
        break;
      }
      continue;
    }
    if (err !== 0) {
      result = { errno: err };
      break;
    }
    const reason = page.getUint32(8, true);
    result = { reason, port: reason === KVM_EXIT_IO ? page.getUint16(34, true) : undefined };
    break;
  }
} finally {
  run.unmap();
}
parentPort.postMessage({ ...result, intr, threadId, ms: Number(process.hrtime.bigint() - started) / 1e6 });
