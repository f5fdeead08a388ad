/**
 * Worker handles: the structured-cloneable token that lets a worker_thread
 * run a Vcpu the main thread created (Vcpu.workerHandle() makes it,
 * Vcpu.fromWorkerHandle() adopts it). The addon keeps the process-wide state
 * behind the handle's key: who owns the vcpu, who runs it, whether the owner
 * closed it.
 */
import { callNative, invalidArgument } from '../errors.js';
import { native } from '../native.js';
import { toVcpuError } from './run.js';

/**
 * A structured-cloneable token that lets a worker_thread run a Vcpu the main
 * thread created: post it to the worker and call Vcpu.fromWorkerHandle() there.
 * It holds a duplicate of the vcpu fd, adopted once; the owner's close() closes
 * it if no worker adopted it yet. Valid only inside the process that made it.
 */
export interface VcpuWorkerHandle {
  /** Marks the object as a vcpu handle. */
  readonly kind: 'node-kvm:vcpu';
  /** The vcpu id. */
  readonly id: number;
  /** The process-wide key naming the vcpu (kicks, busy state). */
  readonly key: number;
  /** The duplicate vcpu fd the worker adopts. */
  readonly fd: number;
  /** Size of the kvm_run mapping. */
  readonly mmapSize: number;
  /** The process the handle belongs to. */
  readonly pid: number;
}

/** A handle for vcpu `id` (open, with this fd and key): duplicates the fd for the worker. */
export function makeWorkerHandle(id: number, key: number, vcpuFd: number, mmapSize: number): VcpuWorkerHandle {
  const fd = callNative('workerHandle', { vcpu: id }, () => native.vcpuDupForHandle(key, vcpuFd));
  return { kind: 'node-kvm:vcpu', id, key, fd, mmapSize, pid: process.pid };
}

/**
 * Checks a handle (it must be one of this process's) and adopts its fd in
 * the addon, once. The caller then owns the fd and one reference to the key.
 */
export function adoptWorkerHandle(handle: VcpuWorkerHandle): { id: number; key: number; fd: number; mmapSize: number } {
  const op = 'fromWorkerHandle';
  if (typeof handle !== 'object' || handle === null) throw invalidArgument(op, 'handle must come from vcpu.workerHandle()');
  const { kind, id, key, fd, mmapSize, pid } = handle;
  if (kind !== 'node-kvm:vcpu') throw invalidArgument(op, 'handle must come from vcpu.workerHandle()', { kind: String(kind) });
  for (const [name, v] of [['id', id], ['key', key], ['fd', fd], ['mmapSize', mmapSize]] as const) {
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw invalidArgument(op, `handle.${name} must be a non-negative integer`);
  }
  if (pid !== process.pid) throw invalidArgument(op, 'the handle belongs to another process', { pid });
  try {
    native.vcpuAdopt(key, fd);
  } catch (e) {
    throw toVcpuError(e, op, { vcpu: id });
  }
  return { id, key, fd, mmapSize };
}
