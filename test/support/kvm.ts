/**
 * Shared test helpers: whether this machine has a usable /dev/kvm, and an
 * assertion for KvmError shapes.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { describe, expect } from 'vitest';
import { Kvm, KvmError, PreFaultError } from '../../lib/index.js';

/** Why KVM tests cannot run here, or undefined when they can. */
export const kvmUnavailable: string | undefined = (() => {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return undefined;
  } catch (e) {
    return `/dev/kvm is not usable here (${(e as NodeJS.ErrnoException).code}): KVM tests skipped`;
  }
})();

/** Runs fn and returns the KvmError it throws (fails the test otherwise). */
export function kvmErrorOf(fn: () => unknown): KvmError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KvmError);
    return e as KvmError;
  }
  throw new Error('expected a KvmError, but the call succeeded');
}

/** Same as kvmErrorOf for promises. */
export async function kvmErrorOfAsync(p: Promise<unknown>): Promise<KvmError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(KvmError);
    return e as KvmError;
  }
  throw new Error('expected a KvmError, but the call succeeded');
}

/** Asserts fn throws a KvmError with this code (and errno when given). */
export function expectKvmError(fn: () => unknown, code: string, errno?: number): KvmError {
  const e = kvmErrorOf(fn);
  expect(e.code, e.message).toBe(code);
  if (errno !== undefined) expect(e.errno).toBe(errno);
  return e;
}

/** Errno numbers used in assertions. */
export const E = { EBADF: 9, EAGAIN: 11, EEXIST: 17, ENODEV: 19, EINVAL: 22, ESPIPE: 29, EOPNOTSUPP: 95, ENOENT: 2, EACCES: 13 } as const;

/**
 * describe() that, when `reason` is set, skips and says why in the suite's
 * name, so a skip is never silent in the report.
 */
export function describeUnless(reason: string | undefined, name: string, fn: () => void): void {
  if (reason) describe.skip(`${name} [skipped: ${reason}]`, fn);
  else describe(name, fn);
}

/** describe() for suites that need a usable /dev/kvm. */
export function describeKvm(name: string, fn: () => void): void {
  describeUnless(kvmUnavailable, name, fn);
}

/** Whether this host's /dev/kvm is the kvm_pvm (shadow paging) module. */
export const isKvmPvm = existsSync('/sys/module/kvm_pvm');

/** Awaits a pre-fault that must fail and returns its PreFaultError. */
export async function preFaultErrorOf(p: Promise<unknown>): Promise<PreFaultError> {
  const e = await kvmErrorOfAsync(p);
  expect(e).toBeInstanceOf(PreFaultError);
  return e as PreFaultError;
}

/** Why guest_memfd tests cannot run here (no KVM, or a default VM without guest_memfd, as on 6.12). */
export const guestMemfdUnavailable: string | undefined =
  kvmUnavailable ??
  (() => {
    try {
      const kvm = Kvm.open();
      const vm = kvm.createVm();
      try {
        return vm.capabilities.guestMemfd ? undefined : 'guest_memfd is not supported on a default VM here (KVM_CAP_GUEST_MEMFD is 0 on the VM fd)';
      } finally {
        vm.close();
        kvm.close();
      }
    } catch (e) {
      return `cannot probe KVM: ${(e as Error).message}`;
    }
  })();

/** describe() for suites that need guest_memfd. */
export function describeGuestMemfd(name: string, fn: () => void): void {
  describeUnless(guestMemfdUnavailable, name, fn);
}
