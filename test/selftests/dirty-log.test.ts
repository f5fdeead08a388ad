/**
 * The dirty ring API (lib/vm/dirty-ring.ts) against the real /dev/kvm, and the
 * dirty_log_test port at odd sizes. (suites.test.ts runs the port's cases at
 * their defaults.)
 */
import { expect, it } from 'vitest';
import { DirtyRing, Kvm, dirtyRingSupport, enableDirtyRing, resetDirtyRings, type Vm } from '../../lib/index.js';
import { Asm, emitUcallDone, Guest } from '../../lib/guest/index.js';
import { loadSuite, runCase, skipReason } from '../../lib/selftests/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';

const SLOT = 1;
const BASE = 0x4000_0000n;
const PAGES = 300;

/** Stores once into each listed page of the logged slot, then DONE; re-entered, again. */
function writer(pages: readonly number[]): Asm {
  const a = new Asm().label('start');
  for (const p of pages) a.mov('rbx', BASE + BigInt(p) * 4096n).store({ base: 'rbx' }, 'rbx');
  emitUcallDone(a);
  a.jmp('start');
  return a;
}

const ringReason = (() => {
  try {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    return dirtyRingSupport(vm).reason;
  } catch (e) {
    return (e as Error).message;
  }
})();

it('dirtyRingSupport says unsupported, with the reason, when both capabilities are 0', () => {
  const none = { checkExtension: () => 0 } as unknown as Vm;
  expect(dirtyRingSupport(none)).toMatchObject({ supported: false, maxBytes: 0 });
  expect(dirtyRingSupport(none).reason).toMatch(/KVM_CAP_DIRTY_LOG_RING/);
  // Only the acquire/release flavour (arm64-style hosts): that capability enables it.
  const acqRel = { checkExtension: (c: number) => (c === 223 ? 65536 : 0) } as unknown as Vm;
  expect(dirtyRingSupport(acqRel)).toMatchObject({ supported: true, maxBytes: 65536, cap: 223 });
});

describeKvm('dirty ring (KVM_CAP_DIRTY_LOG_RING)', () => {
  it('the dirty_log port skips its dirty-ring case exactly when this kernel lacks the ring', async () => {
    const suite = await loadSuite('dirty_log');
    const ringCase = suite.cases.find((c) => c.name.startsWith('dirty-ring'))!;
    expect(skipReason(ringCase)).toBe(ringReason);
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    expect(dirtyRingSupport(vm).supported).toBe(vm.checkExtension(192) > 0 || vm.checkExtension(223) > 0);
  });

  it.skipIf(ringReason !== undefined)('harvests exactly the pages the guest wrote, in order; reset rearms them', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    enableDirtyRing(vm, 1024);
    const memory = vm.allocateMemory(BigInt(PAGES) * 4096n);
    vm.setMemoryRegion({ slot: SLOT, guestPhysAddr: BASE, memory, logDirtyPages: true });
    memory.bytes.fill(1); // host writes are never logged
    const written = [5, 0, 299, 64, 5];
    using guest = Guest.create(vm, { program: writer(written) });
    using ring = DirtyRing.map(guest.vcpu);
    expect(ring.entries).toBe(1024);
    expect(ring.harvest()).toEqual([]);
    expect((await guest.run()).kind).toBe('done');
    const first = [5, 0, 299, 64].map((p) => ({ slot: SLOT, offset: BigInt(p) }));
    const got = ring.harvest();
    expect(got).toEqual(first); // the second write to page 5 is not a new entry
    expect(ring.fetchIndex).toBe(4);
    expect(ring.harvest()).toEqual([]);
    // KVM_GET_DIRTY_LOG is refused while the ring is on.
    expectKvmError(() => vm.getDirtyLog(SLOT), 'ENXIO');
    // Not reset yet: the pages stay writable, a second pass logs nothing.
    expect((await guest.run()).kind).toBe('done');
    expect(ring.harvest()).toEqual([]);
    expect(resetDirtyRings(vm)).toBe(4);
    expect(resetDirtyRings(vm)).toBe(0);
    expect((await guest.run()).kind).toBe('done');
    expect(ring.harvest()).toEqual(first);
    expect(ring.harvest(0)).toEqual([]);
    expect(resetDirtyRings(vm)).toBe(4);
    ring.close();
    expectKvmError(() => ring.harvest(), 'ECLOSED');
    expectKvmError(() => ring.fetchIndex, 'ECLOSED');
  });

  it.skipIf(ringReason !== undefined)('checks its arguments and the order of use', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    expectKvmError(() => enableDirtyRing(vm, 1000), 'EINVAL'); // not a power of two
    expectKvmError(() => enableDirtyRing(vm, 128), 'EINVAL'); // less than a page
    expectKvmError(() => enableDirtyRing(vm, 1.5), 'EINVAL');
    expectKvmError(() => enableDirtyRing(vm, 1 << 30), 'EINVAL'); // past the capability
    const noRing = vm.createVcpu(0);
    expectKvmError(() => DirtyRing.map(noRing), 'ENODEV');
    // After a vcpu exists KVM refuses to enable the ring.
    expectKvmError(() => enableDirtyRing(vm, 1024), 'EINVAL');
    noRing.close();
    using vm2 = kvm.createVm();
    enableDirtyRing(vm2, 512);
    expectKvmError(() => enableDirtyRing(vm2, 512), 'EEXIST');
    vm2.close();
    expectKvmError(() => resetDirtyRings(vm2), 'ECLOSED');
  });
});

describeKvm('dirty_log port at odd sizes', () => {
  // 1 MiB + 3 pages: 259 pages (not a multiple of 64); a 256-entry ring (one page) fills often.
  const settings = new Map([
    ['dirty_log.memory', '1M'],
    ['dirty_log.iterations', '6'],
    ['dirty_log.ring', '256'],
  ]);
  it('every mode passes or skips with its reason', async () => {
    const suite = await loadSuite('dirty_log');
    for (const c of suite.cases) {
      const reason = skipReason(c);
      if (reason !== undefined) {
        console.log(`[dirty_log: ${c.name}] skipped: ${reason}`);
        continue;
      }
      const result = await runCase(suite, c, { settings, onLog: (m) => console.log(`[dirty_log: ${c.name}] ${m}`) });
      expect({ name: c.name, status: result.status, error: result.error instanceof Error ? result.error.message : undefined }).toEqual({ name: c.name, status: 'pass', error: undefined });
    }
  });

  it('refuses a malformed setting', async () => {
    const suite = await loadSuite('dirty_log');
    const result = await runCase(suite, suite.cases[0]!, { settings: new Map([['dirty_log.memory', '5000']]) });
    expect(result.status).toBe('fail');
  });
});

describeKvm('clearDirtyLog with a bitmap (what dirty_log clear-log relies on)', () => {
  it('re-protects only the pages whose bit is set; the others stay dirty', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.enableCap('MANUAL_DIRTY_LOG_PROTECT2', [1]); // KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    const memory = vm.allocateMemory(BigInt(PAGES) * 4096n);
    vm.setMemoryRegion({ slot: SLOT, guestPhysAddr: BASE, memory, logDirtyPages: true });
    const written = [1, 2, 70, 299];
    using guest = Guest.create(vm, { program: writer(written) });
    expect((await guest.run()).kind).toBe('done');
    expect([...vm.getDirtyLog(SLOT).dirtyPageIndices()]).toEqual(written);
    const pick = new BigUint64Array(5);
    pick[0] = 1n << 2n; // page 2
    pick[1] = 1n << 6n; // page 70
    const before = pick.slice();
    vm.clearDirtyLog(SLOT, 0, PAGES, pick);
    expect(pick).toEqual(before); // the caller's bitmap is not written
    expect([...vm.getDirtyLog(SLOT).dirtyPageIndices()]).toEqual([1, 299]);
    expectKvmError(() => vm.clearDirtyLog(SLOT, 0, PAGES, new BigUint64Array(4)), 'EINVAL'); // 300 pages need 5 words
    expectKvmError(() => vm.clearDirtyLog(SLOT, 0, PAGES, new Uint8Array(40) as never), 'EINVAL');
  });
});
