/**
 * The mmu_stress and max_guest_memory ports (their shared guest:
 * lib/selftests/aliased-guest.ts) at shapes other than their defaults
 * (suites.test.ts runs those), and their settings' checks.
 */
import { expect, it } from 'vitest';
import { Asm } from '../../lib/guest/asm.js';
import { STORE_BYTES } from '../../lib/selftests/aliased-guest.js';
import { loadSuite, runCase } from '../../lib/selftests/index.js';
import { describeKvm } from '../support/kvm.js';

it("the 3 bytes mmu_stress steps over are the guest's page store", () => {
  const code = new Asm().store({ base: 'rbx' }, 'rbx').assemble(0n);
  expect([...code]).toEqual([...STORE_BYTES]);
});

describeKvm('aliased-guest ports at other shapes', () => {
  it('mmu_stress with 3 vcpus over 5 slots (a share that is not a slot multiple)', async () => {
    const suite = await loadSuite('mmu_stress');
    const settings = new Map([['mmu_stress.memory', '10M'], ['mmu_stress.slot', '2M'], ['mmu_stress.vcpus', '3']]);
    const result = await runCase(suite, suite.cases[0]!, { settings, onLog: (m) => console.log(`[mmu_stress] ${m}`) });
    expect(result.status, result.error instanceof Error ? result.error.message : '').toMatch(/^(pass|todo)$/);
  });

  it('max_guest_memory with 1 vcpu and 1 slot, and with 3 vcpus over 3 slots', async () => {
    const suite = await loadSuite('max_guest_memory');
    for (const [memory, slot, vcpus] of [['4M', '4M', '1'], ['12M', '4M', '3'], ['2M', '2M', '3']] as const) {
      const settings = new Map([['max_guest_memory.memory', memory], ['max_guest_memory.slot', slot], ['max_guest_memory.vcpus', vcpus]]);
      const result = await runCase(suite, suite.cases[0]!, { settings, onLog: (m) => console.log(`[max_guest_memory] ${m}`) });
      expect({ memory, vcpus, status: result.status, error: result.error instanceof Error ? result.error.message : undefined }).toEqual({ memory, vcpus, status: 'pass', error: undefined });
    }
  });

  it('refuses malformed shapes', async () => {
    const suite = await loadSuite('max_guest_memory');
    for (const [key, value] of [['max_guest_memory.slot', '3M'], ['max_guest_memory.memory', '1M'], ['max_guest_memory.vcpus', '0'], ['max_guest_memory.vcpus', 'many']] as const) {
      const result = await runCase(suite, suite.cases[0]!, { settings: new Map([[key, value]]) });
      expect({ key, value, status: result.status }).toEqual({ key, value, status: 'fail' });
    }
  });
});
