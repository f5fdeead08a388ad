/**
 * The selftests' bounded guest steps (lib/selftests/guest-steps.ts): a vcpu
 * that never leaves KVM_RUN is kicked out when the step's limit passes and
 * the step fails with a GuestStall saying where the guest was; a guest that
 * only reports heartbeats fails the step; an action that throws does not
 * leave the vcpu running.
 */
import { describe, expect, it } from 'vitest';
import { Asm, emitUcallDone, Guest, spinReadProgram } from '../../lib/guest/index.js';
import { Kvm } from '../../lib/kvm.js';
import { SelftestFailure } from '../../lib/selftests/assert.js';
import { GuestStall, nextEvent, runWithin, whileRunning } from '../../lib/selftests/guest-steps.js';
import { kvmUnavailable } from '../support/kvm.js';

const LIMIT_MS = 300;

/** A guest that spins at `loop` forever: no exit ever reaches userspace. */
function spinner(vm: ReturnType<Kvm['createVm']>): { guest: Guest; loop: bigint; end: bigint } {
  const a = new Asm();
  a.label('loop').pause().jmp('loop').label('end');
  const guest = Guest.create(vm, { program: a });
  const labels = a.link(guest.codeGpa).labels;
  return { guest, loop: labels.get('loop')!, end: labels.get('end')! };
}

describe.skipIf(kvmUnavailable !== undefined)('selftest guest steps', () => {
  it('kicks a vcpu still in KVM_RUN at the limit and fails with a GuestStall naming its RIP; the vcpu runs again afterwards', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const { guest, loop, end } = spinner(vm);
    using _ = guest;
    for (let i = 0; i < 2; i++) {
      const start = performance.now();
      const err = await runWithin(guest, LIMIT_MS, 'spinning').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GuestStall);
      const stall = (err as GuestStall).stall;
      expect(performance.now() - start).toBeGreaterThanOrEqual(LIMIT_MS - 1);
      expect(stall.ms).toBeGreaterThanOrEqual(LIMIT_MS - 1);
      expect(stall.rip >= loop && stall.rip < end, `rip 0x${stall.rip.toString(16)}`).toBe(true);
      expect(stall.exception).toBeUndefined();
      expect((err as GuestStall).message).toMatch(/^spinning: the vcpu stayed in KVM_RUN for \d+ ms without an exit to userspace/);
      expect(guest.vcpu.running).toBe(false);
    }
  });

  it('returns an event that comes before the limit, and the next run is not cut short by a stale kick', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const a = new Asm();
    emitUcallDone(a);
    a.label('loop').pause().jmp('loop');
    using guest = Guest.create(vm, { program: a });
    expect((await runWithin(guest, 60_000)).kind).toBe('done');
    // The spin after DONE: this run must last the whole limit, then stall.
    await expect(runWithin(guest, LIMIT_MS)).rejects.toBeInstanceOf(GuestStall);
  });

  it('fails a step whose guest only reports heartbeats once the limit passes, without calling it a stall', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const mem = vm.allocateMemory(2n << 20n);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0xc0000000n, memory: mem });
    using guest = Guest.create(vm, { program: spinReadProgram({ gva: 0xc0000000n, heartbeatIterations: 1000 }) });
    expect((await nextEvent(guest)).kind).toBe('sync'); // the initial read
    const err = await nextEvent(guest, { limitMs: LIMIT_MS, what: 'heartbeats only' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SelftestFailure);
    expect(err).not.toBeInstanceOf(GuestStall);
    expect((err as Error).message).toBe(`heartbeats only: the guest reported nothing new within ${LIMIT_MS} ms`);
  });

  it('does not leave the vcpu running when the action of whileRunning throws', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const { guest } = spinner(vm);
    using _ = guest;
    const boom = new Error('action failed');
    // A limit far beyond the test's timeout: the step must end with the action, not the limit.
    await expect(
      whileRunning(
        guest,
        () => {
          throw boom;
        },
        { limitMs: 3_600_000 },
      ),
    ).rejects.toBe(boom);
    expect(guest.vcpu.running).toBe(false);
  });
});
