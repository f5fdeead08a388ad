/**
 * The VMM part of the API (irqchip, PIT, GSI routing, MSI, irqfd/ioeventfd,
 * coalesced MMIO, clock, devices, MSRs, FPU, LAPIC, XSAVE, XCRs, events,
 * debug registers, nested state, sync regs, EventFd, userfault) under the
 * same rules as the rest: a revoked Proxy, a throwing getter or trap, an
 * array whose element throws, a fake or Proxy EventFd/HostMemory is
 * KvmError 'EINVAL' (before: TypeError or the caller's own Error at 180 of
 * 2,164 calls of an outside attack); a getter cannot close an object and
 * slip the ioctl onto a recycled fd number; setCpuid range-checks its fields.
 */
import { openSync, closeSync } from 'node:fs';
import { expect, it } from 'vitest';
import { EventFd, HostMemory, Kvm, KvmError, registerUserfault, type Vcpu, type Vm } from '../../lib/index.js';
import { describeKvm } from '../support/kvm.js';

function hostiles(): Record<string, unknown> {
  const r = Proxy.revocable({}, {});
  r.revoke();
  const getter = {};
  Object.defineProperty(getter, 'x', { enumerable: true, get: () => { throw new Error('getter'); } });
  return {
    revoked: r.proxy,
    traps: new Proxy({}, { ownKeys: () => { throw new Error('ownKeys'); }, get: () => { throw new Error('get'); } }),
    getter,
    elementThrows: new Proxy([1], { get: (t, k) => { if (k === '0') throw new Error('element'); return Reflect.get(t, k); } }),
    fakeEventFd: Object.create(EventFd.prototype),
  };
}

function expectEinval(what: string, fn: () => unknown): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  if (error === undefined) return; // some hostile values are harmless somewhere (an empty update)
  expect(error, `${what}: ${String(error)}`).toBeInstanceOf(KvmError);
}

describeKvm('VMM entry points refuse hostile arguments with KvmError', () => {
  it('every entry point, every hostile value', () => {
    const kvm = Kvm.open();
    const vm: Vm = kvm.createVm();
    vm.createIrqchip();
    const vcpu: Vcpu = vm.createVcpu(0);
    const efd = new EventFd();
    const calls: Record<string, (v: unknown) => unknown> = {
      setIrqchip: (v) => vm.setIrqchip(v as never),
      setIrqchipPic: (v) => vm.setIrqchip({ chip: 'pic-master', pic: v as never }),
      setPit2: (v) => vm.setPit2(v as never),
      setGsiRouting: (v) => vm.setGsiRouting(v as never),
      setGsiRoutingEntry: (v) => vm.setGsiRouting([v as never]),
      signalMsi: (v) => vm.signalMsi(v as never),
      registerIrqfd: (v) => vm.registerIrqfd(v as never),
      registerIrqfdEventfd: (v) => vm.registerIrqfd({ eventfd: v as never, gsi: 5 }),
      registerIoeventfd: (v) => vm.registerIoeventfd(v as never),
      registerIoeventfdEventfd: (v) => vm.registerIoeventfd({ eventfd: v as never, addr: 0x1000, len: 4 }),
      enableCapArgs: (v) => vm.enableCap(0, v as never),
      setClock: (v) => vm.setClock(v as never),
      createDevice: (v) => vm.createDevice('vfio', v as never),
      registerCoalescedMmio: (v) => vm.registerCoalescedMmio(v as never),
      getDirtyLogInto: (v) => vm.getDirtyLog(0, v as never),
      getMsrs: (v) => vcpu.getMsrs(v as never),
      setMsrs: (v) => vcpu.setMsrs(v as never),
      setMsrsEntry: (v) => vcpu.setMsrs([v as never]),
      setFpu: (v) => vcpu.setFpu(v as never),
      setFpuXmm: (v) => vcpu.setFpu({ xmm: v as never }),
      setLapic: (v) => vcpu.setLapic(v as never),
      setXsave: (v) => vcpu.setXsave(v as never),
      setXcrs: (v) => vcpu.setXcrs(v as never),
      setVcpuEvents: (v) => vcpu.setVcpuEvents(v as never),
      setDebugRegs: (v) => vcpu.setDebugRegs(v as never),
      setDebugRegsDb: (v) => vcpu.setDebugRegs({ db: v as never }),
      setGuestDebug: (v) => vcpu.setGuestDebug(v as never),
      setNestedState: (v) => vcpu.setNestedState(v as never),
      vcpuEnableCapArgs: (v) => vcpu.enableCap(0, v as never),
      setSyncRegs: (v) => vcpu.setSyncRegs(v as never),
      setCpuid: (v) => vcpu.setCpuid(v as never),
      setCpuidEntry: (v) => vcpu.setCpuid([v as never]),
      newEventFd: (v) => new EventFd(v as never).close(),
      getMsrFeatures: (v) => kvm.getMsrFeatures(v as never),
      registerUserfaultOptions: (v) => registerUserfault(HostMemory.allocate(1 << 20), v as never).close(),
      registerUserfaultMemory: (v) => registerUserfault(v as never, { mode: 'missing' }).close(),
    };
    let n = 0;
    for (const [name, call] of Object.entries(calls)) {
      for (const [kind, value] of Object.entries(hostiles())) {
        expectEinval(`${name}(${kind})`, () => call(value));
        n++;
      }
    }
    expect(n).toBe(Object.keys(calls).length * 5);
    // The VM is still usable.
    expect(vcpu.getRegs().rip).toBeTypeOf('bigint');
    vm.close();
    efd.close();
    kvm.close();
  });

  it('EventFd.wait() with hostile options rejects with KvmError', async () => {
    const efd = new EventFd();
    for (const [kind, value] of Object.entries(hostiles())) {
      efd.write(1);
      await efd.wait(value as never).then(
        () => undefined,
        (e: unknown) => expect(e, kind).toBeInstanceOf(KvmError),
      );
    }
    efd.close();
  });

  it('a Proxy of a HostMemory is refused by registerUserfault (it used to register the address the Proxy named, then leak)', () => {
    const memory = HostMemory.allocate(1 << 20);
    const other = HostMemory.allocate(1 << 20);
    const proxy = new Proxy(memory, { get: (t, k) => (k === 'address' ? other.address : Reflect.get(t, k, t)) });
    expect(() => registerUserfault(proxy, { mode: 'missing' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    memory.close();
    other.close();
  });
});

describeKvm('a getter cannot recycle an fd number between the check and the ioctl', () => {
  it('Device.setAttr/getAttr/hasAttr read the attribute before the open check', () => {
    const kvm = Kvm.open();
    for (const method of ['setAttr', 'getAttr', 'hasAttr'] as const) {
      const vm = kvm.createVm();
      const dev = vm.createDevice('vfio');
      const number = dev.fd;
      let reused = -1;
      const attribute = {
        get group(): number {
          dev.close();
          reused = openSync('/dev/null', 'r'); // takes the device's fd number
          return 1;
        },
        attr: 1,
      };
      expect(() => dev[method](attribute), method).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
      expect(reused).toBe(number);
      closeSync(reused);
      vm.close();
    }
    kvm.close();
  });

  it('registerIoeventfd reads its options once: a getter cannot swap the EventFd behind the captured fd number', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const first = new EventFd();
    let reads = 0;
    let second: EventFd | undefined;
    vm.registerIoeventfd({
      eventfd: first,
      addr: 0x3000,
      get len(): 4 {
        // A second read used to come after the fd number was captured.
        if (++reads === 2) {
          first.close();
          second = new EventFd();
        }
        return 4;
      },
    });
    expect(reads).toBe(1);
    vm.unregisterIoeventfd({ eventfd: first, addr: 0x3000, len: 4 });
    expect(second).toBeUndefined();
    vm.close();
    first.close();
    kvm.close();
  });

  it('getMsrFeatures reads the indices before it takes the Kvm fd', () => {
    const kvm = Kvm.open();
    const k = Kvm.open();
    let vm: Vm | undefined;
    const indices = new Proxy([0x10a], {
      get: (t, key) => {
        if (key === '0') {
          k.close();
          vm = kvm.createVm(); // the closed Kvm's fd number
        }
        return Reflect.get(t, key);
      },
    });
    expect(() => k.getMsrFeatures(indices)).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
    vm?.close();
    kvm.close();
  });

  it('an EventFd subclass or Proxy cannot name another fd to registerIrqfd: its own fd is used', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    vm.createIrqchip();
    const foreign = new EventFd();
    class Renamed extends EventFd {
      override get fd(): number {
        return foreign.fd;
      }
    }
    const renamed = new Renamed();
    vm.registerIrqfd({ eventfd: renamed, gsi: 7 });
    // The foreign eventfd is still free: registering it elsewhere works (EBUSY if it had been taken).
    vm.registerIrqfd({ eventfd: foreign, gsi: 8 });
    const proxy = new Proxy(new EventFd(), { get: (t, k) => (k === 'fd' ? foreign.fd : Reflect.get(t, k, t)) });
    expect(() => vm.registerIrqfd({ eventfd: proxy, gsi: 9 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    vm.close();
    kvm.close();
  });
});

describeKvm('setCpuid range-checks every field', () => {
  it('values outside u32, non-integers, wrong types and non-object entries are EINVAL naming the field', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const base = kvm.supportedCpuid();
    const cases: [unknown, string][] = [
      [{ ...base[0], eax: -(2 ** 31) - 1 }, 'entries[0].eax'],
      [{ ...base[0], ebx: 2 ** 32 + 5 }, 'entries[0].ebx'],
      [{ ...base[0], ecx: 1.5 }, 'entries[0].ecx'],
      [{ ...base[0], edx: '7' }, 'entries[0].edx'],
      [{ ...base[0], function: 1n << 40n }, 'entries[0].function'],
      [{ ...base[0], index: NaN }, 'entries[0].index'],
      [{ ...base[0], flags: -0.5 }, 'entries[0].flags'],
      [NaN, 'entries[0]'],
      [{ ...base[0], padding: 0 }, 'padding'],
    ];
    for (const [entry, field] of cases) {
      let error: unknown;
      try {
        vcpu.setCpuid([entry as never]);
      } catch (e) {
        error = e;
      }
      expect(error, field).toBeInstanceOf(KvmError);
      expect((error as KvmError).code).toBe('EINVAL');
      expect((error as KvmError).message).toContain(field);
    }
    vcpu.setCpuid(base); // the real table still goes in
    // A negative int32 (what `ecx & ~bit` gives with bit 31 set) is its bit pattern, not an error.
    vcpu.setCpuid(base.map((e, i) => (i === 0 ? { ...e, ecx: e.ecx | 0 } : e)));
    vm.close();
    kvm.close();
  });
});

describeKvm('a BigUint64Array subclass cannot misstate its size to the kernel', () => {
  // Before: getDirtyLog passed the kernel what the subclass's subarray() (or
  // length) claimed, the kernel wrote the slot's whole bitmap past it, and
  // glibc aborted (malloc(): unaligned tcache chunk detected). In a child
  // process, its exit status asserted.
  it('getDirtyLog, clearDirtyLog and setXsave use the real memory of the array', async () => {
    const { runNodeChild } = await import('./support/child.js');
    const r = await runNodeChild(
      `const lib = await import(BUNDLE);
      const kvm = lib.Kvm.open();
      const vm = kvm.createVm();
      const mem = vm.allocateMemory(1 << 30);
      vm.setMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, logDirtyPages: true });
      const words = (1 << 30) / 4096 / 64;
      const out = {};
      class ShortSub extends BigUint64Array { subarray() { return new BigUint64Array(1); } slice() { return new BigUint64Array(1); } }
      class LongLength extends BigUint64Array { get length() { return 1 << 20; } }
      const into = new ShortSub(words);
      out.get = vm.getDirtyLog(0, into).isDirty(0) === false ? 'clean' : 'dirty';
      try { vm.getDirtyLog(0, new LongLength(1)); out.long = 'returned'; } catch (e) { out.long = e.code; }
      const v = vm.createVcpu(0);
      const x = v.getXsave();
      const key = Object.keys(x).find((k) => x[k] instanceof BigUint64Array);
      if (key) { v.setXsave({ [key]: ShortSub.from(x[key]) }); out.xsave = v.getXsave()[key].length === x[key].length ? 'whole' : 'short'; }
      console.log(JSON.stringify(out));`,
      { timeoutMs: 90_000 },
    );
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    expect(r.json).toMatchObject({ get: 'clean', long: 'EINVAL' });
  });
});

describeKvm('look-alike Vm and Vcpu objects are refused', () => {
  it('the VM family, dirty rings and the private-memory helpers brand-check their target', async () => {
    const lib = await import('../../lib/index.js');
    // Each of these used to reach an ioctl or mmap on whatever fd the look-alike named.
    const fakeVm = { fdFor: () => 1, memorySlots: () => [], slotAt: () => undefined, checkExtension: () => 1, enableCap: () => undefined };
    const calls: Record<string, () => unknown> = {
      resetDirtyRings: () => lib.resetDirtyRings(fakeVm as never),
      getIrqchip: () => lib.Vm.prototype.getIrqchip.call(fakeVm as never, 'ioapic'),
      convertMemory: () => lib.convertMemory(fakeVm as never, { guestPhysAddr: 0, size: 4096, private: false }),
      dirtyRingMap: () => lib.DirtyRing.map({ fd: 1, vm: fakeVm, id: 0 } as never),
    };
    for (const [name, call] of Object.entries(calls)) expect(call, name).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const r = Proxy.revocable({}, {});
    r.revoke();
    expect(() => lib.convertMemory(vm, r.proxy as never)).toThrow(KvmError);
    await expect(lib.launchPrivateGuest(vm, r.proxy as never)).rejects.toBeInstanceOf(KvmError);
    vm.close();
    kvm.close();
  });
});
