/**
 * Right results and the right errors: what vm.softMmu reports after close,
 * register values outside their kernel field, a guest that breaks the ucall
 * protocol, the reasons of formerly bare EINVALs, a path that is not a KVM
 * device, and what is public but must not be written.
 */
import { expect, expectTypeOf, it } from 'vitest';
import { Kvm, KvmError, type KvmErrorCode } from '../../lib/index.js';
import { Asm, Guest, UCALL_PORT, UcallDecodeError } from '../../lib/guest/index.js';
import { describeKvm, expectKvmError, kvmErrorOfAsync } from '../support/kvm.js';

const MiB = 1n << 20n;
const BASE = 4n << 30n;

describeKvm('results after close and for bad values', () => {
  it('after vm.close(), softMmu.lookup() and stats() report no mappings (a reference held from before included)', async () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const memory = vm.allocateMemory(8n * MiB);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
    const vcpu = vm.createVcpu(0);
    await vcpu.preFaultMemory({ gpa: BASE, size: 8n * MiB }, { engine: 'software' });
    const mmu = vm.softMmu;
    expect(mmu.lookup(BASE + MiB)).toMatchObject({ slot: 1 });
    expect(mmu.stats().bytesMapped).toBe(8n * MiB);
    vm.close();
    expect(mmu.lookup(BASE + MiB)).toBeUndefined();
    expect(mmu.stats().bytesMapped).toBe(0n);
    expect(vm.softMmu.lookup(BASE)).toBeUndefined();
    expect(vm.softMmu.stats().bytesMapped).toBe(0n);
    kvm.close();
  });

  it('setRegs/setSregs refuse values outside their field with EINVAL naming it, and change nothing', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using vcpu = vm.createVcpu(0);
    const regs = vcpu.getRegs();
    const sregs = vcpu.getSregs();
    for (const [update, field] of [
      [{ rax: -1n }, 'rax'],
      [{ rbx: (1n << 64n) + 5n }, 'rbx'],
      [{ rip: -1 }, 'rip'],
      [{ rflags: 1.5 }, 'rflags'],
      [{ rax: 1n, r15: 1n << 64n }, 'r15'],
    ] as const) {
      const e = expectKvmError(() => vcpu.setRegs(update as never), 'EINVAL');
      expect(e.message).toContain(field);
      expect(e.args).toMatchObject({ field });
    }
    expect(vcpu.getRegs()).toEqual(regs);
    for (const [update, field] of [
      [{ cs: { selector: 70000 } }, 'cs.selector'],
      [{ ds: { limit: -1 } }, 'ds.limit'],
      [{ tr: { limit: 2 ** 32 } }, 'tr.limit'],
      [{ ss: { type: 256 } }, 'ss.type'],
      [{ gs: { base: -1n } }, 'gs.base'],
      [{ gdt: { limit: 0x10000 } }, 'gdt.limit'],
      [{ idt: { base: 1n << 64n } }, 'idt.base'],
      [{ cr0: -1n }, 'cr0'],
      [{ efer: (1n << 64n) + 5n }, 'efer'],
      [{ interruptBitmap: [0n, 0n, 0n, -1n] }, 'interruptBitmap[3]'],
      [{ interruptBitmap: [0n] }, 'interruptBitmap'],
    ] as const) {
      const e = expectKvmError(() => vcpu.setSregs(update as never), 'EINVAL');
      expect(e.message, field).toContain(field);
    }
    expect(vcpu.getSregs()).toEqual(sregs);
    // In range still works, field by field.
    vcpu.setRegs({ rax: (1n << 64n) - 1n, rbx: 5 });
    expect(vcpu.getRegs()).toMatchObject({ rax: (1n << 64n) - 1n, rbx: 5n });
    vcpu.setSregs({ cs: { selector: 0xffff }, gdt: { limit: 0xffff } as never });
    expect(vcpu.getSregs().cs.selector).toBe(0xffff);
    expect(vcpu.getSregs().cs.base).toBe(sregs.cs.base);
    expect(vcpu.getSregs().gdt.limit).toBe(0xffff);
  });

  it('a guest that breaks the ucall protocol: run() and runToDone() reject with a KvmError subclass with a code', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    // A 1-byte OUT to the ucall port: the protocol wants a 4-byte out dx, eax.
    const g = Guest.create(vm, { program: new Asm().mov('edx', UCALL_PORT).mov('eax', 0).out('dx', 'al') });
    const e = await kvmErrorOfAsync(g.runToDone());
    expect(e).toBeInstanceOf(UcallDecodeError);
    expect(e).toBeInstanceOf(KvmError);
    expect(e.code).toBe('EPROTO');
    expect(e.message).toMatch(/4-byte out/);
    using vm2 = kvm.createVm();
    const g2 = Guest.create(vm2, { program: new Asm().mov('edx', UCALL_PORT).mov('eax', 0xffff_0000).out('dx', 'eax') });
    const e2 = await kvmErrorOfAsync(g2.run());
    expect(e2).toMatchObject({ name: 'UcallDecodeError', code: 'EPROTO' });
  });

  it('bare EINVALs get a reason: a vcpu id past the limit, address-space bits in a slot id', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const limit = vm.checkExtension('MAX_VCPU_ID') || vm.capabilities.maxVcpus;
    const e = expectKvmError(() => vm.createVcpu(limit), 'EINVAL');
    expect(e.message).toMatch(new RegExp(`vcpu id ${limit} is past the limit.*KVM_CAP_MAX_VCPU_ID \\(${limit}\\)`));
    using memory = vm.allocateMemory(2n * MiB);
    const spaces = Math.max(1, vm.checkExtension(118));
    const slot = spaces << 16;
    const e2 = expectKvmError(() => vm.setMemoryRegion({ slot, guestPhysAddr: BASE, memory }), 'EINVAL');
    expect(e2.message).toMatch(/names address space \d+ \(bits 16\+ of the id\)/);
    expect(vm.memorySlots()).toEqual([]);
    console.log(`here: MAX_VCPU_ID ${limit}, address spaces ${spaces}`);
  });

  it("Kvm.open({ path: '/dev/null' }) says it is not a KVM device", () => {
    const e = expectKvmError(() => Kvm.open({ path: '/dev/null' }), 'ENOTTY');
    expect(e.message).toMatch(/^\/dev\/null is not a KVM device/);
    expect(e.ioctl).toBe('KVM_GET_API_VERSION');
    expect(e.args).toMatchObject({ path: '/dev/null' });
  });

  it('Vm.preFaultEngine is read-only; KvmError.code is a union of the codes node-kvm produces', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(2n * MiB);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
    using vcpu = vm.createVcpu(0);
    await vcpu.preFaultMemory({ gpa: BASE, size: 4096n });
    const decided = vm.preFaultEngine;
    expect(decided?.engine).toMatch(/kernel|software/);
    // @ts-expect-error -- not writable
    expect(() => (vm.preFaultEngine = undefined)).toThrow(TypeError);
    expect(() => ((decided as { engine: string }).engine = 'x')).toThrow(TypeError);
    expect(vm.preFaultEngine).toBe(decided);
    expectTypeOf<KvmError['code']>().toEqualTypeOf<KvmErrorCode>();
    expectTypeOf<'EINVAL'>().toMatchTypeOf<KvmErrorCode>();
    expectTypeOf<'ECLOSED'>().toMatchTypeOf<KvmErrorCode>();
    expectTypeOf<'E4242'>().toMatchTypeOf<KvmErrorCode>();
    expectTypeOf<'NOT_A_CODE'>().not.toMatchTypeOf<KvmErrorCode>();
    expectTypeOf<KvmErrorCode>().toMatchTypeOf<string>();
  });
});
