/**
 * Vm.createGuestMemfd()'s request (struct kvm_create_guest_memfd): its
 * options read once, then checked against what this VM supports, so a flag
 * the VM lacks fails with the list of the ones it has.
 */
import { invalidArgument } from '../errors.js';
import { guestMemfdFlagMask, guestMemfdFlagNames, type GuestMemfdOptions } from '../guest-memfd.js';
import { PAGE_SIZE } from '../int.js';
import { opt, readOptions } from '../options.js';

/** The ioctl named in errors of Vm.createGuestMemfd(). */
export const GUEST_MEMFD_OP = 'KVM_CREATE_GUEST_MEMFD';

const GUEST_MEMFD_OPTIONS = {
  size: opt.u64,
  flags: ((v, _k, op) => guestMemfdFlagMask(v as never, op)) as (v: unknown, k: string, op: string) => bigint,
} as const;

/** A createGuestMemfd() request as plain values. */
export interface GuestMemfdRequest {
  size: bigint;
  flags: bigint;
}

/** Reads the options once (before the VM's open check). */
export function readGuestMemfdOptions(options: GuestMemfdOptions): GuestMemfdRequest {
  const op = GUEST_MEMFD_OP;
  const o = readOptions(options, op, GUEST_MEMFD_OPTIONS, { required: true });
  if (o.size === undefined) throw invalidArgument(op, 'size is required');
  return { size: o.size, flags: o.flags ?? 0n };
}

/** Checks the request against the VM: guest_memfd support, size, and the flags it accepts (`supported`, raw). */
export function checkGuestMemfdRequest(r: GuestMemfdRequest, guestMemfd: boolean, supported: bigint): void {
  const op = GUEST_MEMFD_OP;
  const { size, flags: mask } = r;
  if (!guestMemfd) throw invalidArgument(op, 'guest_memfd is not supported by this host (KVM_CAP_GUEST_MEMFD is 0)', {}, 'EOPNOTSUPP');
  if (size === 0n || size % PAGE_SIZE !== 0n) throw invalidArgument(op, 'size must be a non-zero multiple of 4096', { size });
  if (size >= 1n << 63n) throw invalidArgument(op, 'size is too large', { size });
  if ((mask & ~supported) !== 0n) {
    const names = guestMemfdFlagNames(supported);
    throw invalidArgument(op, `unsupported guest_memfd flags 0x${(mask & ~supported).toString(16)}; supported: ${names.length ? names.join(', ') : 'none'}`, {
      flags: mask,
      supported,
    });
  }
  if ((mask & 2n) !== 0n && (mask & 1n) === 0n) {
    throw invalidArgument(op, "'init-shared' requires 'mmap'", { flags: mask });
  }
}
