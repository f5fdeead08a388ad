/**
 * The vcpu execution model: runAsync() on a dedicated native thread per vcpu
 * (libuv's pool stays free), vcpu ioctls answering EBUSY at once while the
 * vcpu is in KVM_RUN, the kick record surviving a pre-fault attempt, and the
 * library's own view of kvm_run surviving ArrayBuffer.prototype.transfer().
 */
import { promises as fsp, readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { expect, it } from 'vitest';
import { Kvm, type Vcpu } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError, kvmErrorOfAsync } from '../support/kvm.js';

const MiB = 1n << 20n;
const spin = (): Asm => new Asm().label('spin').jmp('spin');

/** Resolves after a few turns of the event loop with the vcpu inside KVM_RUN. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 10));
}

describeKvm('runAsync on a dedicated thread per vcpu', () => {
  it('six spinning vcpus leave the thread pool free: fs, zlib, populate and a pre-fault complete; then kick and close stop them', async () => {
    using kvm = Kvm.open();
    const vms = Array.from({ length: 6 }, () => kvm.createVm());
    const guests = vms.map((vm) => Guest.create(vm, { program: spin() }));
    const runs = guests.map((g) => g.vcpu.runAsync());
    await settle();
    expect(guests.every((g) => g.vcpu.running)).toBe(true);

    // Every one of these needs a libuv pool thread (4 by default here).
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(64n * MiB);
    vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0n, memory });
    using vcpu = vm.createVcpu(0);
    const other = vm.allocateMemory(32n * MiB);
    const [file, zipped, , prefault] = await Promise.all([
      fsp.readFile(new URL(import.meta.url)),
      promisify(gzip)(Buffer.alloc(1 << 20, 7)),
      other.populate(),
      vcpu.preFaultMemory({ gpa: 0n, size: 64n * MiB }),
    ]);
    expect(file.length).toBeGreaterThan(0);
    expect(zipped.length).toBeGreaterThan(0);
    expect(prefault.bytesMapped).toBe(64n * MiB);
    expect(guests.every((g) => g.vcpu.running)).toBe(true);

    // Three kicked, three closed with their VM.
    for (const g of guests.slice(0, 3)) g.vcpu.kick();
    for (const v of vms.slice(3)) v.close();
    const exits = await Promise.all(runs);
    expect(exits.map((e) => e.reason)).toEqual(Array(6).fill('intr'));
    for (const g of guests.slice(0, 3)) {
      // The thread is reused: the vcpu runs again and is kicked again.
      const again = g.vcpu.runAsync();
      await settle();
      g.vcpu.kick();
      expect((await again).reason).toBe('intr');
    }
    for (const v of vms) v.close();
  });

  it("each vcpu gets its thread on its first runAsync(); close() (or the Vm's) ends it", async () => {
    // The run threads are named; a VM's kernel threads (kvm-nx-lpage-recovery) show up here too.
    const threads = (): number => readdirSync('/proc/self/task').filter((t) => readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === 'node-kvm-vcpu').length;
    using kvm = Kvm.open();
    const vms = Array.from({ length: 6 }, () => kvm.createVm());
    const guests = vms.map((vm) => Guest.create(vm, { program: new Asm().label('top').mov('edx', 0xe9).out('dx', 'eax').jmp('top') }));
    const before = threads();
    for (const g of guests.slice(0, 4)) expect((await g.vcpu.runAsync()).reason).toBe('io');
    expect(threads()).toBe(before + 4);
    for (const g of guests.slice(0, 2)) await g.vcpu.runAsync(); // reused, not new
    expect(threads()).toBe(before + 4);
    // close() joins the thread, but pthread_join returns when the kernel clears the
    // thread's tid (at mm release), a moment before the task leaves /proc/self/task:
    // the count may lag behind the join by a few microseconds, so poll it briefly.
    guests[0]!.vcpu.close();
    await expect.poll(threads, { timeout: 2000, interval: 5 }).toBe(before + 3);
    for (const vm of vms) vm.close();
    await expect.poll(threads, { timeout: 2000, interval: 5 }).toBe(before);
  });

  it('runs to an OUT on the thread, again and again, with the exit decoded', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = Guest.create(vm, { program: new Asm().label('top').mov('eax', 0x77).mov('edx', 0xe9).out('dx', 'eax').jmp('top') });
    for (let i = 0; i < 200; i++) {
      const exit = await guest.vcpu.runAsync();
      expect(exit).toMatchObject({ reason: 'io', port: 0xe9, direction: 'out' });
    }
    expect(guest.vcpu.getRegs().rax).toBe(0x77n);
  });
});

describeKvm('vcpu ioctls while the vcpu is in KVM_RUN answer EBUSY at once', () => {
  it('getRegs, setRegs, getSregs, setSregs, setCpuid, the first stats() and a pre-fault; kick() and reads of an open stats fd still work', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = Guest.create(vm, { program: spin() });
    using vm2 = kvm.createVm();
    using second = Guest.create(vm2, { program: spin() });
    const v = guest.vcpu;
    second.vcpu.stats(); // opens its stats fd before the run
    const cpuid = kvm.supportedCpuid();
    const runs = [v.runAsync(), second.vcpu.runAsync()];
    await settle();
    // Were any of these to wait on the kernel's vcpu mutex, this test would hang:
    // the guest never exits by itself and the kick below could never run.
    for (const [name, call] of [
      ['getRegs', () => v.getRegs()],
      ['setRegs', () => v.setRegs({ rax: 1n })],
      ['getSregs', () => v.getSregs()],
      ['setSregs', () => v.setSregs({ cr0: v.closed ? 0n : 0x80050033n })],
      ['setCpuid', () => v.setCpuid(cpuid)],
      ['stats', () => v.stats()],
      ['statsDescriptors', () => v.statsDescriptors()],
      ['preFaultMemorySync', () => v.preFaultMemorySync({ gpa: 0n, size: 4096n }, { engine: 'kernel' })],
      ['run', () => v.run()],
    ] as const) {
      const e = expectKvmError(call, 'EBUSY');
      expect(e.args, name).toMatchObject({ vcpu: 0 });
    }
    const asyncBusy = await kvmErrorOfAsync(v.preFaultMemory({ gpa: 0n, size: 4096n }, { engine: 'kernel' }));
    expect(asyncBusy.code).toBe('EBUSY');
    expect((await kvmErrorOfAsync(v.runAsync())).code).toBe('EBUSY');
    // Raw addon calls on the same vcpu refuse too (the busy record is native and process-wide).
    expect(native.preFaultMemory(v.fd, 0n, 4096n, 0n).errno).toBe(16);
    expect(native.run(v.fd)).toBe(16);
    // Allowed while running: reading an already-open stats fd.
    expect(typeof second.vcpu.stats().exits).toBe('bigint');
    v.kick();
    second.vcpu.kick();
    expect((await Promise.all(runs)).map((e) => e.reason)).toEqual(['intr', 'intr']);
    // Out of KVM_RUN, everything works again.
    v.setRegs({ rbx: 5n });
    expect(v.getRegs().rbx).toBe(5n);
    expect(typeof v.stats().exits).toBe('bigint');
  });

  it('a kernel pre-fault attempted during runAsync does not take over the kick record: kick() and vm.close() still stop the guest', async () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    const guest = Guest.create(vm, { program: spin() });
    const v: Vcpu = guest.vcpu;
    let run = v.runAsync();
    await settle();
    for (let i = 0; i < 3; i++) {
      expect(native.preFaultMemory(v.fd, 0n, 4096n, 0n, v.key).errno).toBe(16);
      await native.preFaultMemoryAsync(v.fd, 0n, 4096n, 0n, v.key).then((r) => expect(r.errno).toBe(16));
    }
    v.kick();
    expect((await run).reason).toBe('intr');
    run = v.runAsync();
    await settle();
    expect(native.preFaultMemory(v.fd, 0n, 4096n, 0n, v.key).errno).toBe(16);
    vm.close();
    expect((await run).reason).toBe('intr');
  });
});

const canTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

describeKvm('kvm_run buffers moved away with ArrayBuffer.prototype.transfer()', () => {
  it.skipIf(!canTransfer)('run() still decodes the exit and a kick issued before the run is not lost (Node 22+; Node 20 has no transfer())', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = Guest.create(vm, { program: new Asm().label('top').mov('eax', 0x1234).mov('edx', 0xe9).out('dx', 'eax').jmp('top') });
    const v = guest.vcpu;
    const transfer = (u: Uint8Array): ArrayBuffer => (u.buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer();
    const moved = transfer(v.runState);
    expect(moved.byteLength).toBeGreaterThan(0);
    const exit = v.run();
    expect(exit).toMatchObject({ reason: 'io', port: 0xe9 });
    // The exit's data view can be moved away as well.
    transfer((exit as { data: Uint8Array }).data);
    transfer(v.runState);
    v.kick();
    expect(v.run().reason).toBe('intr');
    expect((await v.runAsync()).reason).toBe('io');
    expect(v.runState.byteLength).toBeGreaterThan(0);
  });

  it('a transfer() of runState is detected as unavailable on Node 20', () => {
    const major = Number(process.versions.node.split('.')[0]);
    expect(canTransfer).toBe(major >= 21);
  });
});
