/**
 * Taking ownership of KVM fds made elsewhere (passed over a unix socket,
 * inherited from a parent): the bodies of Kvm.createVmFromRawFd() and
 * Vm.createVcpuFromRawFd(). The fd is checked to be what it claims (a VM fd
 * answers KVM_CHECK_EXTENSION, a vcpu fd KVM_GET_REGS) and is then owned:
 * closed with the object. node-kvm knows only the memslots and vcpus set up
 * through it, so a VM adopted with slots already in place starts with an
 * empty slot table (setMemoryRegion on an existing slot id is then checked
 * against nothing).
 */
import { VM_TYPES, type VmType } from '../constants.js';
import { callNative, invalidArgument } from '../errors.js';
import { describe } from '../int.js';
import type { Kvm } from '../kvm.js';
import { native } from '../native.js';
import { Vm } from '../vm.js';
import { readOptions, toUint } from './struct.js';

function rawFd(fd: unknown, op: string): number {
  const n = toUint(fd, 31, 'fd', op);
  return n;
}

/** Wraps a VM fd (of `type`, default 'default') as a Vm owned by this Kvm. */
export function createVmFromRawFd(kvm: Kvm, fd: number, options: { type?: VmType } = {}): Vm {
  const op = 'createVmFromRawFd';
  const o = readOptions(options, op, ['type']);
  const type = o.type ?? 'default';
  if (typeof type !== 'string' || !Object.hasOwn(VM_TYPES, type)) throw invalidArgument(op, `unknown VM type ${describe(type)}`);
  const n = rawFd(fd, op);
  // KVM_CHECK_EXTENSION answers on a VM fd; anything else (a file, a vcpu fd) fails.
  callNative('KVM_CHECK_EXTENSION', { fd: n, what: 'VM fd check' }, () => native.checkExtension(n, 0));
  return Vm.fromFd(kvm, n, type as VmType, kvm.capabilities());
}
