/**
 * Worker-thread side of the exits benchmark's 'worker' mode: gets a vcpu,
 * warms it up, says 'ready', and on 'go' runs the timed round trips with
 * vcpu.run() on this thread, then reports its own elapsed time.
 *
 * Until node-kvm has a transferable vcpu handle, acquireVcpu() creates a VM
 * of its own with one vcpu in this worker (so N workers are N one-vcpu VMs,
 * where the C reference runs one N-vcpu VM with N threads). With the handle,
 * only acquireVcpu() changes: the main thread creates the VM and passes each
 * worker its vcpu's handle in workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Kvm } from '../kvm.js';
import type { Vcpu } from '../vcpu.js';
import { createExitsVm, EXITS_WARM, roundTripSync, type ExitsGuest } from './exits-guest.js';

/** What the main thread passes in workerData. */
export interface ExitsWorkerData {
  guest: ExitsGuest;
  iterations: number;
}

/** Messages from the worker. */
export type ExitsWorkerMessage = { kind: 'ready' } | { kind: 'done'; elapsedNs: number; latencies: Float64Array } | { kind: 'error'; message: string };

function acquireVcpu(data: ExitsWorkerData): { vcpu: Vcpu; close(): void } {
  const kvm = Kvm.open();
  const made = createExitsVm(kvm, data.guest, 1);
  return {
    vcpu: made.vcpus[0]!,
    close: () => {
      made.close();
      kvm.close();
    },
  };
}

function main(): void {
  const port = parentPort;
  if (!port) throw new Error('exits-worker.js must run in a worker_thread');
  const data = workerData as ExitsWorkerData;
  let held: { vcpu: Vcpu; close(): void } | undefined;
  try {
    held = acquireVcpu(data);
    for (let i = 0; i < EXITS_WARM; i++) roundTripSync(held.vcpu, data.guest);
  } catch (e) {
    held?.close();
    port.postMessage({ kind: 'error', message: e instanceof Error ? e.message : String(e) } satisfies ExitsWorkerMessage);
    return;
  }
  const { vcpu, close } = held;
  port.once('message', () => {
    try {
      const latencies = new Float64Array(data.iterations);
      const hr = process.hrtime.bigint;
      const t0 = hr();
      for (let i = 0; i < data.iterations; i++) {
        const t = hr();
        roundTripSync(vcpu, data.guest);
        latencies[i] = Number(hr() - t);
      }
      const elapsedNs = Number(hr() - t0);
      port.postMessage({ kind: 'done', elapsedNs, latencies } satisfies ExitsWorkerMessage, [latencies.buffer]);
    } catch (e) {
      port.postMessage({ kind: 'error', message: e instanceof Error ? e.message : String(e) } satisfies ExitsWorkerMessage);
    } finally {
      close();
    }
  });
  port.postMessage({ kind: 'ready' } satisfies ExitsWorkerMessage);
}

main();
