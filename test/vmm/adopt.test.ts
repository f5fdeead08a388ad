import { expect, it } from 'vitest';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { Kvm } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';

describeKvm('adopting raw KVM fds (create_vmfd_from_rawfd / create_vcpu_from_rawfd)', () => {
  it('wraps a VM fd and a vcpu fd made elsewhere, owns them, and refuses fds of other kinds', () => {
    using kvm = Kvm.open();
    const vmFd = native.createVm(kvm.fd, 0);
    const vm = kvm.createVmFromRawFd(vmFd);
    expect(vm.fd).toBe(vmFd);
    const vcpuFd = native.createVcpu(vmFd, 3);
    const vcpu = vm.createVcpuFromRawFd(vcpuFd, 3);
    expect(vcpu.id).toBe(3);
    expect(vcpu.getMpState()).toBe('runnable');
    expectKvmError(() => vm.createVcpuFromRawFd(vcpuFd, 3), 'EEXIST');

    const file = openSync('/proc/self/stat', 'r');
    try {
      expectKvmError(() => kvm.createVmFromRawFd(file), 'ENOTTY');
      expect(() => vm.createVcpuFromRawFd(file, 4)).toThrow();
      expect(fstatSync(file).isFile()).toBe(true); // a refused fd stays the caller's
      expectKvmError(() => vm.createVcpuFromRawFd(vmFd, 5), 'ENOTTY'); // a VM fd is not a vcpu fd
      expectKvmError(() => kvm.createVmFromRawFd(-1), 'EINVAL');
      expectKvmError(() => kvm.createVmFromRawFd(vmFd, { kind: 'x' } as never), 'EINVAL');
    } finally {
      closeSync(file);
    }
    vm.close();
    expect(vcpu.closed).toBe(true);
    expectKvmError(() => vcpu.getMpState(), 'ECLOSED');
  });
});
