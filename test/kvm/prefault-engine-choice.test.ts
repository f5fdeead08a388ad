/**
 * 'auto' remembers its engine decision per host (and VM type), not per VM:
 * a fresh VM pays no trial call.
 */
import { release } from 'node:os';
import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { hostEngineIdentity } from '../../lib/prefault/engine-choice.js';
import { describeKvm } from '../support/kvm.js';

const GPA = 1n << 30n;
const PAGE = 4096n;

async function autoOnFreshVm(kvm: Kvm) {
  using vm = kvm.createVm();
  const memory = vm.allocateMemory(2n << 20n);
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: GPA, memory });
  const vcpu = vm.createVcpu(0);
  return vcpu.preFaultMemory({ gpa: GPA, size: 2n * PAGE });
}

describeKvm('pre-fault engine decision per host', () => {
  it('a second fresh VM starts with the engine the first settled on: one call for two pages, no one-page trial first', async () => {
    using kvm = Kvm.open();
    const first = await autoOnFreshVm(kvm);
    const second = await autoOnFreshVm(kvm);
    expect(second.engine).toBe(first.engine);
    expect(second.reason).toBe(first.reason);
    expect(second.calls).toBe(1);
  });

  it('keys the decision by kernel and KVM module identity', () => {
    const id = hostEngineIdentity();
    expect(id).toContain(release());
    expect(id).toMatch(/kvm/);
    expect(hostEngineIdentity()).toBe(id);
  });
});
