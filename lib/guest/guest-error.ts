/**
 * The guest kit's errors are KvmErrors like the rest of node-kvm: a bad
 * operand, an out-of-range immediate or a page-table layout that does not
 * fit is code 'EINVAL' (no system call involved), so callers catch one type.
 */
import { KvmError, type ErrorArgs } from '../errors.js';

/** A bad argument to the guest kit (assembler, layout, page tables). */
export function guestArgumentError(message: string, args: ErrorArgs = {}): KvmError {
  return new KvmError(message, { code: 'EINVAL', syscall: 'none', args });
}
