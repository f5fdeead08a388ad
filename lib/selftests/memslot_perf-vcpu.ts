/**
 * The memslot_perf vcpu thread (upstream's vcpu_worker), run in a
 * worker_thread so the guest keeps running, and its MMIO exits keep being
 * answered, while the main thread spins on the sync flag or moves memslots.
 *
 * Gets the vcpu through its worker handle, runs it with vcpu.run(): SYNC(0)
 * means the guest is ready ('ready'), an MMIO exit is checked against what
 * the test allows (only the move-active test, only 8-byte writes inside the
 * moved half) and resumed, DONE ends the thread ('done'). Anything else is
 * reported as 'error'. Before either last message it sets status[0] to 1, so
 * a main thread that is spinning (and so not reading messages) sees the
 * guest has stopped.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { IoExit } from '../exit.js';
import { decodeUcall } from '../guest/ucall.js';
import { Vcpu, type VcpuWorkerHandle } from '../vcpu.js';

/** What the main thread passes in workerData. */
export interface MemslotPerfVcpuData {
  handle: VcpuWorkerHandle;
  /** Int32Array over it: [0] = 1 once the guest stopped (done or failed). */
  status: SharedArrayBuffer;
  /** MMIO writes allowed in [min, max] (the move-active test); none when undefined. */
  mmio?: { min: bigint; max: bigint };
}

/** Messages from the vcpu thread. */
export type MemslotPerfVcpuMessage = { kind: 'ready' } | { kind: 'done'; mmioExits: number } | { kind: 'error'; message: string };

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

function main(): void {
  const port = parentPort;
  if (!port) throw new Error('memslot_perf-vcpu.js must run in a worker_thread');
  const data = workerData as MemslotPerfVcpuData;
  const status = new Int32Array(data.status);
  const finish = (m: MemslotPerfVcpuMessage): void => {
    Atomics.store(status, 0, 1);
    port.postMessage(m);
  };
  let vcpu: Vcpu | undefined;
  try {
    vcpu = Vcpu.fromWorkerHandle(data.handle);
    let mmioExits = 0;
    for (;;) {
      const exit = vcpu.run();
      if (exit.reason === 'intr') continue;
      if (exit.reason === 'mmio') {
        const m = data.mmio;
        if (!m) throw new Error(`unexpected MMIO exit at ${hex(exit.physAddr)}`);
        if (!exit.isWrite) throw new Error(`unexpected MMIO read at ${hex(exit.physAddr)}`);
        if (exit.len !== 8) throw new Error(`unexpected MMIO size ${exit.len} at ${hex(exit.physAddr)}`);
        if (exit.physAddr < m.min || exit.physAddr > m.max) throw new Error(`unexpected MMIO address ${hex(exit.physAddr)} (allowed ${hex(m.min)}-${hex(m.max)})`);
        mmioExits++;
        continue;
      }
      const ucall = exit.reason === 'io' ? decodeUcall(exit as IoExit, vcpu.getRegs()) : undefined;
      if (ucall?.kind === 'sync') {
        if (ucall.args[0] !== 0n) throw new Error(`unexpected sync ucall ${hex(ucall.args[0] ?? 0n)}`);
        port.postMessage({ kind: 'ready' } satisfies MemslotPerfVcpuMessage);
        continue;
      }
      if (ucall?.kind === 'done') {
        finish({ kind: 'done', mmioExits });
        return;
      }
      if (ucall?.kind === 'abort') throw new Error(`guest assertion failed at ${hex(ucall.value)}`);
      throw new Error(`unexpected guest stop: ${exit.reason}`);
    }
  } catch (e) {
    finish({ kind: 'error', message: e instanceof Error ? e.message : String(e) });
  } finally {
    vcpu?.close();
  }
}

main();
