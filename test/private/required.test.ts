/**
 * Private memory must not skip where it exists: on the lab's sw-protected kernel
 * (NODE_KVM_LAB_KERNEL=sw-protected, set by scripts/test-lab.sh) every private
 * test and selftest case runs; elsewhere the absence is detected and named.
 */
import { expect, it } from 'vitest';
import { Kvm, KvmError } from '../../lib/index.js';
import { loadSuites, skipReason } from '../../lib/selftests/index.js';
import { kvmUnavailable } from '../support/kvm.js';
import { labKernel, privateKernelUnavailable, privateRequired, privateUnavailable } from './support.js';

const suites = await loadSuites();
/** The selftest cases that need a sw-protected VM: the private_mem ports and every case naming it or private memory. */
const privateCases = suites.flatMap((s) => s.cases.filter((c) => /^private_mem_/.test(s.name) || /private memory|sw-protected/.test(c.name)).map((c) => ({ key: `${s.name}: ${c.name}`, c })));

it.runIf(privateRequired)(`on the lab's sw-protected kernel nothing private is skipped (kernel: ${labKernel ?? 'none'})`, () => {
  expect(privateUnavailable).toBeUndefined();
  expect(privateKernelUnavailable).toBeUndefined();
  expect(privateCases.length).toBeGreaterThanOrEqual(15);
  expect(privateCases.map(({ key, c }) => [key, skipReason(c)]).filter(([, r]) => r !== undefined)).toEqual([]);
});

it("private_mem_conversions has upstream's shapes: 1, 2 and 4 vcpus, 1 and 2 memslots", () => {
  const names = suites.find((s) => s.name === 'private_mem_conversions')!.cases.map((c) => c.name);
  for (const vcpus of ['2 vcpus', '4 vcpus']) for (const slots of ['1 memslot', '2 memslots']) expect(names).toContain(`${vcpus}, ${slots}, 4 KiB backing`);
  expect(names).toContain('1 vcpu, 1 memslot, THP backing');
});

it.runIf(!privateRequired && kvmUnavailable === undefined)('where private memory is missing, the absence is detected and named', () => {
  using kvm = Kvm.open();
  const caps = kvm.capabilities();
  if (caps.vmTypes.includes('sw-protected') && caps.memoryAttributes.includes('private')) {
    // A kernel with private memory outside the lab: nothing to detect.
    expect(privateUnavailable).toBeUndefined();
    return;
  }
  expect(privateUnavailable).toMatch(/sw-protected|PRIVATE|guest_memfd/);
  for (const { key, c } of privateCases) expect(skipReason(c), key).toBeDefined();
  if (!caps.vmTypes.includes('sw-protected')) {
    let error: unknown;
    try {
      kvm.createVm({ type: 'sw-protected' }).close();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KvmError);
  }
});
