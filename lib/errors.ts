/**
 * KvmError: the one error type of node-kvm. Every failure carries a stable
 * string `code` ('EINVAL', 'ENOENT', 'ECLOSED', ...), the numeric `errno`,
 * the `syscall`, the ioctl name when there is one, and the arguments that
 * matter for diagnosing it.
 */
import { constants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
// Where Linux has two names for one number, use the one KVM's docs use.
for (const name of ['EOPNOTSUPP', 'EAGAIN', 'EDEADLK'] as const) {
  const value = (constants.errno as Record<string, number>)[name];
  if (value !== undefined) errnoNames.set(value, name);
}

/** The errno constant's name for a number ('EINVAL' for 22), or 'E<n>'. */
export function errnoCode(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** The errno number for a name, or 0 when the name is ours ('ECLOSED'). */
export function errnoNumber(code: string): number {
  return (constants.errno as Record<string, number>)[code] ?? 0;
}

/** Arguments attached to an error: plain values (bigint allowed). */
export type ErrorArgs = Readonly<Record<string, unknown>>;

/** Options for constructing a KvmError. */
export interface KvmErrorInit {
  /** The stable string code: an errno name ('EINVAL') or one of node-kvm's ('ECLOSED'). */
  code: string;
  /** The errno number; default: the number of `code`, 0 for node-kvm's own codes. */
  errno?: number;
  /** The system call that failed; default 'ioctl' when `ioctl` is given, else 'none'. */
  syscall?: string;
  /** The ioctl's name ('KVM_CREATE_VM') when the failure is an ioctl's. */
  ioctl?: string;
  /** The arguments that matter for diagnosing the failure. */
  args?: ErrorArgs;
  /** The underlying error, kept as `error.cause`. */
  cause?: unknown;
}

/** Every failure of node-kvm is a KvmError or a subclass. */
export class KvmError extends Error {
  /** Stable string code: an errno name ('EINVAL') or one of ours ('ECLOSED', 'ABORT_ERR'). */
  readonly code: string;
  /** The errno the kernel returned (or would return); 0 when none applies. */
  readonly errno: number;
  /** The system call ('ioctl', 'mmap', 'madvise', ...). */
  readonly syscall: string;
  /** The ioctl's name when syscall is 'ioctl' ('KVM_CREATE_VM'). */
  readonly ioctl: string | undefined;
  /** The arguments that matter (range left, slot, offsets, ...). */
  readonly args: ErrorArgs;

  constructor(message: string, init: KvmErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'KvmError';
    this.code = init.code;
    this.errno = init.errno ?? errnoNumber(init.code);
    this.syscall = init.syscall ?? (init.ioctl ? 'ioctl' : 'none');
    this.ioctl = init.ioctl;
    this.args = init.args ?? {};
  }
}

/** Shape of the errors the addon throws for failed syscalls. */
interface NativeErrnoError extends Error {
  errno: number;
  syscall: string;
  op: string;
}

function isNativeErrnoError(e: unknown): e is NativeErrnoError {
  return e instanceof Error && typeof (e as NativeErrnoError).errno === 'number' && typeof (e as NativeErrnoError).op === 'string';
}

/** Builds a KvmError from an errno returned by a syscall. */
export function errnoError(errno: number, op: string, args: ErrorArgs = {}, syscall = 'ioctl', detail?: string): KvmError {
  const code = errnoCode(errno);
  const isIoctl = op.startsWith('KVM_');
  const text = `${op} failed: ${code}${detail ? ` (${detail})` : ''}${formatArgs(args)}`;
  return new KvmError(text, { code, errno, syscall: isIoctl ? 'ioctl' : syscall, ioctl: isIoctl ? op : undefined, args });
}

/** An argument the kernel would refuse, caught before the call. */
export function invalidArgument(op: string, message: string, args: ErrorArgs = {}, code = 'EINVAL'): KvmError {
  const isIoctl = op.startsWith('KVM_');
  return new KvmError(`${op}: ${message}${formatArgs(args)}`, {
    code,
    syscall: isIoctl ? 'ioctl' : op,
    ioctl: isIoctl ? op : undefined,
    args,
  });
}

/** Use of an object after close(). */
export function closedError(what: string, op: string): KvmError {
  return new KvmError(`${what} is closed (${op})`, { code: 'ECLOSED', errno: errnoNumber('EBADF'), syscall: 'none', args: { object: what } });
}

/**
 * Runs a native call and converts its failures: errno errors become KvmError
 * with the given args; TypeError/RangeError from argument conversion become
 * KvmError 'EINVAL' so callers only ever catch one type.
 */
export function callNative<T>(op: string, args: ErrorArgs, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toKvmError(e, op, args);
  }
}

/** Converts anything thrown by the addon into a KvmError. */
export function toKvmError(e: unknown, op: string, args: ErrorArgs): KvmError {
  if (e instanceof KvmError) return e;
  if (isNativeErrnoError(e)) return errnoError(e.errno, e.op || op, args, e.syscall);
  const message = e instanceof Error ? e.message : String(e);
  return invalidArgument(op, message, args);
}

function formatArgs(args: ErrorArgs): string {
  const parts = Object.entries(args)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${formatArg(v)}`);
  return parts.length ? ` [${parts.join(', ')}]` : '';
}

/** One argument for a message; never throws (cyclic objects, null prototypes, symbols). */
function formatArg(v: unknown): string {
  try {
    if (typeof v === 'bigint') return `0x${v.toString(16)}`;
    if (typeof v === 'object' && v !== null) return JSON.stringify(v, bigintJson) ?? Object.prototype.toString.call(v);
    return String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

function bigintJson(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `0x${value.toString(16)}` : value;
}
