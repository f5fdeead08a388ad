/** How the VM family modules issue an ioctl: open check, then callNative. */
import { callNative, type ErrorArgs } from '../errors.js';
import type { Vm } from '../vm.js';

/** Runs fn with the VM fd (ECLOSED after close), converting failures to KvmError. */
export function callVm<T>(vm: Vm, op: string, args: ErrorArgs, fn: (fd: number) => T): T {
  const fd = vm.fdFor(op);
  return callNative(op, args, () => fn(fd));
}
