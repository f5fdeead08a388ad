/**
 * The kernel engine populates host pages for write before pre-faulting: a
 * plain KVM_PRE_FAULT_MEMORY faults as a read and maps untouched anonymous
 * memory to the zero page, so a writing guest faults every page again.
 * Runs where the kernel engine works (the kernel lab).
 */
import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { Guest, touchPagesProgram } from '../../lib/guest/index.js';
import { describeUnless } from '../support/kvm.js';
import { kernelEngineMissing } from '../support/engines.js';

const BASE = 4n << 30n;
const SIZE = 16n << 20n;

async function firstPassFaults(populateHost: boolean | 'none'): Promise<bigint> {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  const memory = vm.allocateMemory(SIZE);
  memory.advise('nohugepage');
  vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
  const program = touchPagesProgram({ startGva: BASE, pages: SIZE / 4096n, write: true, ucall: true });
  using g = Guest.create(vm, { program, map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, { gpa: BASE, size: SIZE, pageSize: '2m' }] });
  if (populateHost !== 'none') await g.vcpu.preFaultMemory({ gpa: BASE, size: SIZE }, { engine: 'kernel', populateHost });
  const before = g.vcpu.stats().pf_taken as bigint;
  await g.runToDone();
  return (g.vcpu.stats().pf_taken as bigint) - before;
}

describeUnless(kernelEngineMissing, 'kernel engine: host populate before KVM_PRE_FAULT_MEMORY', () => {
  it('a writing guest takes (almost) no faults after the default pre-fault', async () => {
    const demand = await firstPassFaults('none');
    const plain = await firstPassFaults(false);
    const populated = await firstPassFaults(true);
    console.log(`page faults in the first write pass of 4096 pages: demand ${demand}, plain KVM_PRE_FAULT_MEMORY ${plain}, populate + pre-fault ${populated}`);
    expect(populated * 100n).toBeLessThan(demand);
    expect(plain).toBeGreaterThanOrEqual(demand / 2n); // the zero-page effect this option exists for
  });
});
