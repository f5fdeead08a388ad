/**
 * KVM_RUN's answers as the Vcpu gives them: the errno of a run turned into
 * an exit ('intr', 'memory-fault') or a KvmError, the addon's busy and
 * owner-closed answers, and the kvm_run mapping. Also the process-exit kick:
 * when the main thread exits no vcpu may re-enter KVM_RUN.
 */
import { isMainThread } from 'node:worker_threads';
import { Mm } from '../constants.js';
import { callNative, closedError, errnoError, KvmError, toKvmError, type ErrorArgs } from '../errors.js';
import type { ExitDecoder, VcpuExit } from '../exit.js';
import { native, type NativeMapping } from '../native.js';

const EINTR = 4;
const EAGAIN = 11;
const EBUSY = 16;
/** The addon's answer once the owning Vcpu of a worker's vcpu was closed. */
const ESHUTDOWN = 108;
/** Ioctls the addon registers as long (kicked, exclusive): never inside vcpuExclusive. */
export const LONG_IOCTLS: ReadonlySet<string> = new Set(['KVM_RUN', 'KVM_PRE_FAULT_MEMORY']);

// When the main thread exits (process.exit(), an uncaught exception, the end
// of the program), no vcpu may re-enter KVM_RUN and every one in it is kicked:
// Node then joins its worker threads, which must be able to leave their runs.
if (isMainThread) process.once('exit', () => native.processExiting());

/** Maps the kvm_run page of a vcpu fd. */
export function mapRun(fd: number, id: number, mmapSize: number): NativeMapping {
  return callNative('mmap', { what: 'kvm_run', vcpu: id }, () =>
    new native.Mapping(fd, BigInt(mmapSize), Mm.PROT_READ | Mm.PROT_WRITE, Mm.MAP_SHARED, 0n, 4096n),
  );
}

/** KvmError 'EBUSY': the vcpu is in KVM_RUN (here or on another thread). */
export function busyError(op: string, vcpu: number): KvmError {
  return new KvmError(`Vcpu ${vcpu} is running (${op}): kick it, or wait for its run to return`, {
    code: 'EBUSY',
    ioctl: op.startsWith('KVM_') ? op : undefined,
    syscall: op.startsWith('KVM_') ? 'ioctl' : 'none',
    args: { vcpu },
  });
}

/** The addon's EBUSY/owner-closed answers as KvmError; everything else as callNative does. */
export function toVcpuError(e: unknown, op: string, args: ErrorArgs, vcpu = args.vcpu as number): KvmError {
  const errno = (e as { errno?: unknown } | null)?.errno;
  if (errno === EBUSY && (e as { op?: unknown }).op === '') return busyError(op, vcpu);
  if (errno === ESHUTDOWN) return closedError(`Vcpu ${vcpu}`, op);
  return toKvmError(e, op, args);
}

/**
 * The exit a KVM_RUN that returned `errno` gives: the decoded exit (0), a
 * memory fault (KVM_RUN failing with EFAULT/EHWPOISON is an exit, not an
 * error), 'intr' for EINTR/EAGAIN (clearing kvm_run.immediate_exit in
 * `runPage`), else a KvmError.
 */
export function runResult(errno: number, exits: ExitDecoder, runPage: Uint8Array, vcpu: number): VcpuExit {
  if (errno === 0) return exits.decode();
  const fault = exits.memoryFault(errno);
  if (fault) return fault;
  if (errno === EINTR || errno === EAGAIN) {
    runPage[1] = 0;
    return { reason: 'intr' };
  }
  if (errno === EBUSY) throw busyError('KVM_RUN', vcpu);
  if (errno === ESHUTDOWN) throw closedError(`Vcpu ${vcpu}`, 'KVM_RUN');
  throw errnoError(errno, 'KVM_RUN', { vcpu });
}
