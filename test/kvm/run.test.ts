import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { Asm, emitUcallDone, emitUcallSync, emitUcallAbort, Guest, GuestAbortError, UCALL_PORT } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError } from '../support/kvm.js';

describeKvm('running a 64-bit CPL3 guest', () => {
  it('runs to an OUT whose exit is decoded, and a vcpu stat changes', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const program = new Asm().mov('eax', 0x1234).mov('edx', 0xe9).out('dx', 'eax');
    using guest = Guest.create(vm, { program });
    const before = guest.vcpu.stats();
    const event = guest.runSync();
    expect(event.kind).toBe('exit');
    const exit = (event as { exit: import('../../lib/index.js').VcpuExit }).exit;
    expect(exit).toMatchObject({ reason: 'io', direction: 'out', port: 0xe9, size: 4, count: 1 });
    expect(new DataView((exit as { data: Uint8Array }).data.slice().buffer).getUint32(0, true)).toBe(0x1234);
    const after = guest.vcpu.stats();
    expect(after.exits).toBeGreaterThan(before.exits as bigint);
    expect(after.exits).toBeGreaterThan(before.exits as bigint);
    expect(guest.vcpu.getRegs().rax).toBe(0x1234n);
  });

  it('decodes ucalls: sync with values, done, and abort with its message', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const program = new Asm().mov('rbx', 41).inc('rbx');
    emitUcallSync(program, 'rbx', 7);
    emitUcallDone(program);
    using guest = Guest.create(vm, { program });
    const syncs: bigint[][] = [];
    await guest.runToDone((e) => e.kind === 'sync' && syncs.push(e.args));
    expect(syncs).toEqual([[42n, 7n]]);

    using vm2 = kvm.createVm();
    const bad = new Asm();
    emitUcallAbort(bad, { text: 'x != y' }, 5);
    using g2 = Guest.create(vm2, { program: bad });
    await expect(g2.runToDone()).rejects.toThrow(GuestAbortError);
    expect(UCALL_PORT).toBe(0x1000);
  });

  it('runs on a worker thread while the event loop stays free, and kick() stops a spinning guest', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const program = new Asm().label('spin').jmp('spin');
    using guest = Guest.create(vm, { program });
    const running = guest.vcpu.runAsync();
    let ticks = 0;
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        ticks++;
        if (ticks === 5) {
          clearInterval(t);
          resolve();
        }
      }, 10);
    });
    expect(guest.vcpu.running).toBe(true);
    expectKvmError(() => guest.vcpu.run(), 'EBUSY');
    guest.vcpu.kick();
    expect((await running).reason).toBe('intr');
    expect(ticks).toBe(5);
    expect(guest.vcpu.running).toBe(false);
  });

  it('closing the VM while runAsync is in flight is safe', async () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    const guest = Guest.create(vm, { program: new Asm().label('spin').jmp('spin') });
    const running = guest.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 20));
    vm.close();
    expect((await running).reason).toBe('intr');
    expectKvmError(() => guest.vcpu.getRegs(), 'ECLOSED');
  });

  it('reports registers and special registers, and rejects bad register input', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using vcpu = vm.createVcpu(0);
    vcpu.setRegs({ rax: 5n, rbx: 6 });
    expect(vcpu.getRegs()).toMatchObject({ rax: 5n, rbx: 6n });
    expectKvmError(() => vcpu.setRegs({ rzz: 1n } as never), 'EINVAL');
    expectKvmError(() => vcpu.setRegs({ rax: 'x' } as never), 'EINVAL');
    vcpu.setSregs({ cr8: 0n, cs: { selector: 0x10 } });
    expect(vcpu.getSregs().cs.selector).toBe(0x10);
    expectKvmError(() => vcpu.setSregs({ bogus: 1n } as never), 'EINVAL');
    expectKvmError(() => vm.createVcpu(0), 'EEXIST');
    expectKvmError(() => vcpu.setCpuid('x' as never), 'EINVAL');
  });
});
