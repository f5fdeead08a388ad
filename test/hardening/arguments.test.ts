/**
 * Arguments as an attacker passes them: options objects whose getters close
 * the target and create another object that gets the same fd number,
 * revoked Proxies, throwing getters, unknown (misspelled) keys, and fake
 * HostMemory/GuestMemfd objects. Every entry point reads its arguments once,
 * before it checks that its target is open, so the getter's work is seen by
 * that check (ECLOSED) and the ioctl never lands in the new object; every
 * failure is a KvmError.
 */
import { expect, it } from 'vitest';
import { GuestMemfd, HostMemory, Kvm, KvmError, type Vcpu, type Vm } from '../../lib/index.js';
import { describeKvm, expectKvmError, kvmErrorOf, kvmErrorOfAsync } from '../support/kvm.js';

const MiB = 1n << 20n;
const BASE = 4n << 30n;

/** An object whose `key` getter runs `attack` and then answers `value`. */
function trap<T extends object>(plain: T, key: keyof T, attack: () => void): T {
  const o = { ...plain };
  let fired = false;
  Object.defineProperty(o, key, {
    enumerable: true,
    get() {
      if (!fired) {
        fired = true;
        attack();
      }
      return plain[key];
    },
  });
  return o;
}

function revoked(): object {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
}

const throwing = (): object =>
  new Proxy(
    {},
    {
      get() {
        throw new Error('getter says no');
      },
      ownKeys() {
        return ['size', 'slot'];
      },
      getOwnPropertyDescriptor() {
        return { enumerable: true, configurable: true, value: undefined };
      },
    },
  );

describeKvm('arguments read once, checked, then acted on', () => {
  it('a getter that closes the VM and creates another on the same fd number: ECLOSED, the new VM is untouched', () => {
    using kvm = Kvm.open();
    const attacks: { name: string; fdReused: boolean }[] = [];
    const cases: [string, (vm: Vm, attack: () => void) => unknown][] = [
      ['setMemoryRegion', (vm, a) => vm.setMemoryRegion(trap({ slot: 1, guestPhysAddr: BASE, size: 2n * MiB, userspaceAddr: 0x7f0000000000n }, 'guestPhysAddr', a))],
      ['createGuestMemfd', (vm, a) => vm.createGuestMemfd(trap({ size: 2n * MiB }, 'size', a))],
      ['allocateMemory', (vm, a) => vm.allocateMemory(2n * MiB, trap({ hugePages: false }, 'hugePages', a))],
      ['setMemoryAttributes', (vm, a) => vm.setMemoryAttributes(trap({ guestPhysAddr: BASE, size: 4096n, private: false }, 'size', a))],
    ];
    for (const [name, call] of cases) {
      const vm = kvm.createVm();
      const fd = vm.fd;
      let replacement: Vm | undefined;
      const e = kvmErrorOf(() =>
        call(vm, () => {
          vm.close();
          replacement = kvm.createVm();
        }),
      );
      expect(e.code, `${name}: ${e.message}`).toBe('ECLOSED');
      const fresh = replacement!;
      attacks.push({ name, fdReused: fresh.fd === fd });
      // Nothing reached the new VM: slot 1 is free in the kernel, so a
      // different slot 1 is accepted (the kernel refuses to resize a slot).
      using memory = fresh.allocateMemory(4n * MiB);
      fresh.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
      expect(fresh.memorySlots().map((s) => s.size)).toEqual([4n * MiB]);
      fresh.close();
    }
    console.log(`fd reused by the replacement VM: ${attacks.map((a) => `${a.name} ${a.fdReused}`).join(', ')}`);
    expect(attacks.some((a) => a.fdReused)).toBe(true);
  });

  it('Kvm.createVm: a getter that closes the Kvm is seen by the open check', () => {
    const kvm = Kvm.open();
    const e = kvmErrorOf(() => kvm.createVm(trap({ type: 'default' as const }, 'type', () => kvm.close())));
    expect(e.code).toBe('ECLOSED');
  });

  it('vcpu: setRegs, setSregs, setCpuid and pre-fault with a getter that closes the vcpu and creates another on its fd: ECLOSED, the new vcpu keeps its registers', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const cpuid = kvm.supportedCpuid();
    let id = 0;
    const calls: [string, (v: Vcpu, attack: () => void) => unknown][] = [
      ['setRegs', (v, a) => v.setRegs(trap({ rax: 0x1234n, rip: 0x1000n }, 'rax', a))],
      ['setSregs', (v, a) => v.setSregs(trap({ cr8: 0n }, 'cr8', a))],
      ['setCpuid', (v, a) => v.setCpuid(new Proxy([...cpuid], { get: (t, k, r) => (k === '0' ? (a(), Reflect.get(t, k, r)) : Reflect.get(t, k, r)) }))],
      ['preFaultMemorySync', (v, a) => v.preFaultMemorySync(trap({ gpa: BASE, size: 4096n }, 'size', a))],
    ];
    for (const [name, call] of calls) {
      const vcpu = vm.createVcpu(id++);
      let replacement: Vcpu | undefined;
      const e = kvmErrorOf(() =>
        call(vcpu, () => {
          vcpu.close();
          replacement = vm.createVcpu(id++);
        }),
      );
      expect(e.code, `${name}: ${e.message}`).toBe('ECLOSED');
      expect(replacement!.getRegs().rax, name).toBe(0n);
      replacement!.close();
    }
    const vcpu = vm.createVcpu(id++);
    const e = await kvmErrorOfAsync(vcpu.preFaultMemory({ gpa: BASE, size: 4096n }, trap({ engine: 'software' as const }, 'engine', () => vcpu.close())));
    expect(e.code).toBe('ECLOSED');
  });

  it('unknown option keys are EINVAL naming the key and the accepted ones (a misspelled hugePage)', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const e = expectKvmError(() => HostMemory.allocate(2n * MiB, { hugePage: true } as never), 'EINVAL');
    expect(e.message).toMatch(/unknown option "hugePage"; accepted: hugePages, alignment, noReserve/);
    expect(e.args).toMatchObject({ key: 'hugePage' });
    for (const [what, fn] of [
      ['Kvm.open', () => Kvm.open({ pth: '/dev/kvm' } as never)],
      ['createVm', () => kvm.createVm({ typ: 'default' } as never)],
      ['allocateMemory', () => vm.allocateMemory(4096, { hugePage: true } as never)],
      ['setMemoryRegion', () => vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0, size: 4096, userspaceAddr: 0, readOnly: true } as never)],
      ['createGuestMemfd', () => vm.createGuestMemfd({ size: 4096, flag: [] } as never)],
      ['setRegs', () => vm.createVcpu(9).setRegs({ eax: 1n } as never)],
      ['setSregs', () => vm.createVcpu(10).setSregs({ cs: { selecter: 8 } } as never)],
      ['preFaultMemorySync', () => vm.createVcpu(11).preFaultMemorySync({ gpa: 0, size: 4096 }, { engin: 'software' } as never)],
    ] as const) {
      const err = expectKvmError(fn, 'EINVAL');
      expect(err.message, what).toMatch(/unknown (option|key of \w+) "\w+"; accepted: /);
    }
  });

  it('revoked Proxies and throwing getters are KvmError EINVAL at every entry point that takes an object', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using vcpu = vm.createVcpu(0);
    const memory = vm.allocateMemory(2n * MiB);
    const gmem = vm.createGuestMemfd({ size: 2n * MiB, flags: ['mmap', 'init-shared'] });
    const seen: string[] = [];
    for (const [label, bad] of [['revoked Proxy', revoked], ['throwing getter', throwing]] as const) {
      const calls: [string, () => unknown][] = [
        ['Kvm.open', () => Kvm.open(bad() as never)],
        ['kvm.createVm', () => kvm.createVm(bad() as never)],
        ['kvm.checkExtension', () => kvm.checkExtension(bad() as never)],
        ['vm.checkExtension', () => vm.checkExtension(bad() as never)],
        ['vm.createGuestMemfd', () => vm.createGuestMemfd(bad() as never)],
        ['vm.createGuestMemfd flags', () => vm.createGuestMemfd({ size: 4096, flags: bad() as never })],
        ['vm.allocateMemory', () => vm.allocateMemory(4096, bad() as never)],
        ['vm.allocateMemory size', () => vm.allocateMemory(bad() as never)],
        ['vm.setMemoryRegion', () => vm.setMemoryRegion(bad() as never)],
        ['vm.setMemoryRegion memory', () => vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: bad() as never })],
        ['vm.setMemoryAttributes', () => vm.setMemoryAttributes(bad() as never)],
        ['vm.deleteMemoryRegion', () => vm.deleteMemoryRegion(bad() as never)],
        ['vm.moveMemoryRegion', () => vm.moveMemoryRegion(0, bad() as never)],
        ['vm.createVcpu', () => vm.createVcpu(bad() as never)],
        ['vm.slotAt', () => vm.slotAt(bad() as never)],
        ['vm.memoryAttributesOf', () => vm.memoryAttributesOf(bad() as never, 4096)],
        ['HostMemory.allocate', () => HostMemory.allocate(4096, bad() as never)],
        ['memory.view', () => memory.view(bad() as never, 1)],
        ['memory.advise', () => memory.advise(bad() as never)],
        ['memory.protect', () => memory.protect(bad() as never)],
        ['memory.populateSync', () => memory.populateSync(bad() as never)],
        ['gmem.allocate', () => gmem.allocate(bad() as never, 4096)],
        ['gmem.punchHole', () => gmem.punchHole(0, bad() as never)],
        ['gmem.map', () => gmem.map(bad() as never)],
        ['vcpu.setRegs', () => vcpu.setRegs(bad() as never)],
        ['vcpu.setSregs', () => vcpu.setSregs(bad() as never)],
        ['vcpu.setSregs segment', () => vcpu.setSregs({ cs: bad() } as never)],
        ['vcpu.setCpuid', () => vcpu.setCpuid(bad() as never)],
        ['vcpu.preFaultMemorySync range', () => vcpu.preFaultMemorySync(bad() as never)],
        ['vcpu.preFaultMemorySync options', () => vcpu.preFaultMemorySync({ gpa: BASE, size: 4096 }, bad() as never)],
      ];
      for (const [name, fn] of calls) {
        let thrown: unknown;
        try {
          fn();
        } catch (e) {
          thrown = e;
        }
        expect(thrown, `${label}: ${name}`).toBeInstanceOf(KvmError);
        expect((thrown as KvmError).code, `${label}: ${name}: ${(thrown as Error).message}`).toBe('EINVAL');
        seen.push(name);
      }
      for (const [name, p] of [
        ['memory.populate', () => memory.populate(bad() as never)],
        ['gmem.allocateAsync', () => gmem.allocateAsync(bad() as never, 4096)],
        ['vcpu.preFaultMemory', () => vcpu.preFaultMemory({ gpa: BASE, size: 4096 }, bad() as never)],
      ] as const) {
        let result: Promise<unknown>;
        try {
          result = p();
        } catch (e) {
          throw new Error(`${label}: ${name} threw synchronously: ${String(e)}`);
        }
        const e = await kvmErrorOfAsync(result);
        expect(e.code, `${label}: ${name}`).toBe('EINVAL');
      }
    }
    expect(seen.length).toBe(60);
    memory.close();
  });

  it('fake HostMemory and GuestMemfd objects (the right prototype, no private state) are EINVAL', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const fakeMemory = Object.create(HostMemory.prototype) as HostMemory;
    const fakeGmem = Object.create(GuestMemfd.prototype) as GuestMemfd;
    const real = vm.allocateMemory(2n * MiB);
    const fakes: unknown[] = [fakeMemory, new Proxy(real, {}), { address: real.address, size: real.size, closed: false }];
    for (const memory of fakes) {
      const e = expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory: memory as never }), 'EINVAL');
      expect(e.message).toMatch(/memory must be a HostMemory/);
    }
    const e = expectKvmError(() => vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory: real, guestMemfd: fakeGmem }), 'EINVAL');
    expect(e.message).toMatch(/guestMemfd must be a GuestMemfd/);
    expect(vm.memorySlots()).toEqual([]);
    // A real one cannot be given a planted getter either.
    expect(() => Object.defineProperty(real, 'size', { get: () => 1n << 40n })).toThrow(TypeError);
    expect(HostMemory.isHostMemory(real)).toBe(true);
    expect(HostMemory.isHostMemory(fakeMemory)).toBe(false);
  });
});
