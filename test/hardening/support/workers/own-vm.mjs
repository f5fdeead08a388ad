// A worker that owns everything it uses: its own Kvm, VM, memory and vcpu,
// created, run and closed on this thread (the recommended worker pattern).
// It counts `iterations` in rbx and OUTs; it reports the final count.
import { parentPort, threadId, workerData } from 'node:worker_threads';

const { Kvm, guest } = await import(workerData.bundle);
const { iterations } = workerData;
const kvm = Kvm.open();
const vm = kvm.createVm();
try {
  const program = new guest.Asm().label('loop').inc('rbx').decJnz('rcx', 'loop').mov('edx', 0xe9).out('dx', 'eax');
  const g = guest.Guest.create(vm, { program, regs: { rbx: 0n, rcx: BigInt(iterations) } });
  const started = Date.now();
  let intr = 0;
  let exit;
  for (;;) {
    // Sync run: this worker's thread blocks, the main thread's event loop does not.
    exit = g.vcpu.run();
    if (exit.reason !== 'intr') break;
    intr++;
  }
  const regs = g.vcpu.getRegs();
  parentPort.postMessage({ threadId, reason: exit.reason, port: exit.port, count: String(regs.rbx), intr, startedAt: started, endedAt: Date.now() });
} finally {
  vm.close();
  kvm.close();
}
