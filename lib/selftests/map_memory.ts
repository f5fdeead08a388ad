/**
 * The seed's original KVM_MAP_MEMORY selftest flow (the RFC that became
 * KVM_PRE_FAULT_MEMORY), expressed with the final API: a 513-page region at
 * 3 GiB; map its first 2 MiB, then its last page, then the page after it
 * (which must fail: the RFC said EFAULT, the merged ioctl says ENOENT); then
 * a guest reads every page. The RFC's `source` and access flags did not
 * survive review, so they are not exercised.
 */
import type { VmType } from '../constants.js';
import { PreFaultError } from '../prefault/index.js';
import { check, checkEqual } from './assert.js';
import { firstReason, needs } from './host.js';
import { PAGE, regionFixture, runGuestOverRegion, SIZE_2M, TEST_SIZE } from './prefault-common.js';
import type { SelftestContext, SelftestSuite } from './types.js';

const TEST_GPA = 0xc0000000n;

async function run(ctx: SelftestContext, type: VmType, isPrivate = false): Promise<void> {
  using f = regionFixture(ctx.kvm, type, TEST_GPA, { private: isPrivate });
  const first = await f.vcpu.preFaultMemory({ gpa: TEST_GPA, size: SIZE_2M });
  checkEqual(first.bytesMapped, SIZE_2M, 'first 2 MiB mapped');
  ctx.log(`engine ${first.engine}: ${first.reason}`);
  ctx.note(`engine: ${first.engine}`);
  const last = await f.vcpu.preFaultMemory({ gpa: TEST_GPA + SIZE_2M, size: PAGE });
  checkEqual(last.bytesMapped, PAGE, 'last page mapped');
  let failure: unknown;
  try {
    await f.vcpu.preFaultMemory({ gpa: TEST_GPA + TEST_SIZE, size: PAGE });
  } catch (e) {
    failure = e;
  }
  check(failure instanceof PreFaultError, 'mapping the page after the slot must fail', { got: String(failure) });
  checkEqual((failure as PreFaultError).code, 'ENOENT', 'error for the page after the slot');
  checkEqual((failure as PreFaultError).bytesMapped, 0n, 'nothing mapped outside the slot');
  await runGuestOverRegion(f);
}

/** The suite. */
export const suite: SelftestSuite = {
  name: 'map_memory',
  description: "the seed's KVM_MAP_MEMORY test flow with KVM_PRE_FAULT_MEMORY's final API",
  cases: [
    { name: 'default VM, shared memory', skip: needs.kvm, run: (ctx) => run(ctx, 'default') },
    { name: 'sw-protected VM, shared memory', skip: needs.vmType('sw-protected'), run: (ctx) => run(ctx, 'sw-protected') },
    {
      name: 'sw-protected VM, private memory',
      skip: () => firstReason(needs.vmType('sw-protected'), needs.privateMemory, needs.guestMemfd),
      run: (ctx) => run(ctx, 'sw-protected', true),
    },
  ],
};
