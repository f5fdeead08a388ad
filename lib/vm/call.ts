/** How the VM family modules issue an ioctl: open check, then callNative. */
import { callNative, invalidArgument, type ErrorArgs } from '../errors.js';
import { describe } from '../int.js';
import { Vm } from '../vm.js';

/** Runs fn with the VM fd (ECLOSED after close), converting failures to KvmError. */
export function callVm<T>(vm: Vm, op: string, args: ErrorArgs, fn: (fd: number) => T): T {
  // A brand check: a look-alike object's fdFor() could name any fd.
  if (!Vm.isVm(vm)) throw invalidArgument(op, `vm must be a Vm, got ${describe(vm)}`);
  const fd = vm.fdFor(op);
  return callNative(op, args, () => fn(fd));
}
