import { it } from 'vitest';
import { Kvm } from '../../lib/index.js';
it('smoke', () => {
  using kvm = Kvm.open();
  console.log(kvm.capabilities());
  using vm = kvm.createVm();
  const vcpu = vm.createVcpu(0);
  console.log(Object.keys(vcpu.stats()).join(' '));
  console.log(Object.keys(vm.stats()).join(' '));
  console.log(vcpu.getSregs().cr0, vcpu.getRegs().rip);
});
