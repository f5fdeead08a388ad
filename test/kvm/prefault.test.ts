/**
 * The pre-fault contract, one scenario table run against every engine this
 * host has (here: software; in the kernel lab: kernel too).
 */
import { expect, it } from 'vitest';
import { Kvm, KvmError, PreFaultAbortError, PreFaultError, type PreFaultEngineName, type PreFaultResult, type Vcpu, type Vm } from '../../lib/index.js';
import { describeKvm, describeUnless, isKvmPvm, kvmErrorOfAsync, preFaultErrorOf } from '../support/kvm.js';
import { engines, inLab, kernelEngineMissing } from '../support/engines.js';

const PAGE = 4096n;
const MiB = 1n << 20n;
/** 2 MiB aligned, well above the system region, like upstream's test slot. */
const BASE = 64n << 30n;
const SLOT_SIZE = 2n * MiB + PAGE; // 513 pages

interface Fixture extends Disposable {
  kvm: Kvm;
  vm: Vm;
  vcpu: Vcpu;
}

function fixture(hugePages = false): Fixture {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const memory = vm.allocateMemory(4n * MiB, { hugePages });
  vm.setMemoryRegion({ slot: 10, guestPhysAddr: BASE, size: SLOT_SIZE, memory });
  const vcpu = vm.createVcpu(0);
  return { kvm, vm, vcpu, [Symbol.dispose]: () => { vm.close(); kvm.close(); } };
}

for (const engine of engines) {
  describeKvm(`pre-fault scenarios, ${engine} engine`, () => {
    it("upstream call 1: (0, 2 MiB) maps everything", async () => {
      using f = fixture();
      const r = await f.vcpu.preFaultMemory({ gpa: BASE, size: 2n * MiB }, { engine });
      expect(r).toMatchObject({ engine, bytesMapped: 2n * MiB, remaining: { gpa: BASE + 2n * MiB, size: 0n } });
      expect(r.calls).toBeGreaterThan(0);
      expect(r.durationNs).toBeGreaterThan(0n);
    });

    it('upstream call 2: (2 MiB, 2 pages) maps the one page inside the slot, then ENOENT', async () => {
      using f = fixture();
      const e = await preFaultErrorOf(f.vcpu.preFaultMemory({ gpa: BASE + 2n * MiB, size: 2n * PAGE }, { engine }));
      expect(e.code).toBe('ENOENT');
      expect(e.errno).toBe(2);
      expect(e.bytesMapped).toBe(PAGE);
      expect(e.remaining).toEqual({ gpa: BASE + 2n * MiB + PAGE, size: PAGE });
      expect(e.args).toMatchObject({ bytesMapped: PAGE, remainingSize: PAGE });
    });

    it('upstream call 3: (513 pages, 1 page) is wholly outside: ENOENT, nothing mapped', async () => {
      using f = fixture();
      const e = await preFaultErrorOf(f.vcpu.preFaultMemory({ gpa: BASE + SLOT_SIZE, size: PAGE }, { engine }));
      expect(e.code).toBe('ENOENT');
      expect(e.bytesMapped).toBe(0n);
      expect(e.remaining).toEqual({ gpa: BASE + SLOT_SIZE, size: PAGE });
    });

    it('a range crossing the slot end maps the part inside, then ENOENT', async () => {
      using f = fixture();
      const e = await preFaultErrorOf(f.vcpu.preFaultMemory({ gpa: BASE + MiB, size: 2n * MiB }, { engine }));
      expect(e.code).toBe('ENOENT');
      expect(e.bytesMapped).toBe(MiB + PAGE);
      expect(e.remaining).toEqual({ gpa: BASE + SLOT_SIZE, size: MiB - PAGE });
    });

    it.each([
      ['unaligned gpa', { gpa: BASE + 1n, size: PAGE }],
      ['unaligned size', { gpa: BASE, size: PAGE + 1n }],
      ['zero size', { gpa: BASE, size: 0n }],
      ['overflow', { gpa: (1n << 64n) - PAGE, size: 2n * PAGE }],
      ['end at 2^64', { gpa: (1n << 64n) - PAGE, size: PAGE }],
      ['non-zero flags', { gpa: BASE, size: PAGE, flags: 1n }],
      ['negative gpa', { gpa: -4096, size: PAGE }],
    ])('%s is EINVAL before any work', async (_name, range) => {
      using f = fixture();
      const e = await kvmErrorOfAsync(f.vcpu.preFaultMemory(range, { engine }));
      expect(e).not.toBeInstanceOf(PreFaultError);
      expect(e.code).toBe('EINVAL');
      expect(e.ioctl).toBe('KVM_PRE_FAULT_MEMORY');
      expect(() => f.vcpu.preFaultMemorySync(range, { engine })).toThrow(KvmError);
    });

    it('an already aborted signal stops before the first step', async () => {
      using f = fixture();
      const e = await preFaultErrorOf(f.vcpu.preFaultMemory({ gpa: BASE, size: 2n * MiB }, { engine, signal: AbortSignal.abort() }));
      expect(e).toBeInstanceOf(PreFaultAbortError);
      expect(e.name).toBe('AbortError');
      expect(e.code).toBe('ABORT_ERR');
      expect(e.result.calls).toBe(0);
      expect(e.bytesMapped).toBe(0n);
    });

    it('aborting in the middle stops between steps with the progress so far', async () => {
      using f = fixture();
      const ac = new AbortController();
      const seen: bigint[] = [];
      const e = await preFaultErrorOf(
        f.vcpu.preFaultMemory(
          { gpa: BASE, size: 2n * MiB },
          { engine, signal: ac.signal, maxStepBytes: 64n * 1024n, onProgress: (done) => { seen.push(done); if (seen.length === 3) ac.abort(); } },
        ),
      );
      expect(e).toBeInstanceOf(PreFaultAbortError);
      expect(e.bytesMapped).toBe(seen[seen.length - 1]);
      expect(e.bytesMapped).toBeGreaterThan(0n);
      expect(e.bytesMapped).toBeLessThan(2n * MiB);
      expect(e.remaining).toEqual({ gpa: BASE + e.bytesMapped, size: 2n * MiB - e.bytesMapped });
    });

    it('reports monotonic progress ending at the total', async () => {
      using f = fixture();
      const seen: [bigint, bigint][] = [];
      await f.vcpu.preFaultMemory({ gpa: BASE, size: SLOT_SIZE }, { engine, maxStepBytes: 256n * 1024n, onProgress: (d, t) => seen.push([d, t]) });
      expect(seen.length).toBeGreaterThan(2);
      for (let i = 1; i < seen.length; i++) expect(seen[i]![0]).toBeGreaterThan(seen[i - 1]![0]);
      expect(seen[seen.length - 1]).toEqual([SLOT_SIZE, SLOT_SIZE]);
    });

    it('the synchronous form gives the same results', () => {
      using f = fixture();
      const r = f.vcpu.preFaultMemorySync({ gpa: BASE, size: 2n * MiB }, { engine });
      expect(r).toMatchObject({ engine, bytesMapped: 2n * MiB });
      try {
        f.vcpu.preFaultMemorySync({ gpa: BASE + 2n * MiB, size: 2n * PAGE }, { engine });
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(PreFaultError);
        expect((e as PreFaultError).bytesMapped).toBe(PAGE);
        expect((e as PreFaultError).code).toBe('ENOENT');
      }
    });

    it('a closed vcpu is ECLOSED', async () => {
      using f = fixture();
      f.vcpu.close();
      const e = await kvmErrorOfAsync(f.vcpu.preFaultMemory({ gpa: BASE, size: PAGE }, { engine }));
      expect(e.code).toBe('ECLOSED');
    });
  });
}

describeUnless(kernelEngineMissing === undefined ? 'the kernel engine works on this host' : undefined, 'pre-fault engine choice without KVM_PRE_FAULT_MEMORY', () => {
  it("'kernel' forced gives a clear EOPNOTSUPP naming the cause", async () => {
    using f = fixture();
    const e = await preFaultErrorOf(f.vcpu.preFaultMemory({ gpa: BASE, size: PAGE }, { engine: 'kernel' }));
    expect(e.code).toBe('EOPNOTSUPP');
    expect(e.errno).toBe(95);
    expect(e.ioctl).toBe('KVM_PRE_FAULT_MEMORY');
    expect(e.bytesMapped).toBe(0n);
    expect(e.message).toMatch(/not supported by this host's KVM/);
    if (isKvmPvm) expect(e.message).toMatch(/kvm_pvm: shadow paging/);
  });

  it("'auto' falls back to the software engine, says why, and remembers it per VM", async () => {
    using f = fixture();
    const r = await f.vcpu.preFaultMemory({ gpa: BASE, size: PAGE });
    expect(r.engine).toBe('software');
    expect(r.reason).toMatch(/PRE_FAULT_MEMORY/);
    expect(f.vm.preFaultEngine?.engine).toBe('software');
    const again = await f.vcpu.preFaultMemory({ gpa: BASE + PAGE, size: PAGE });
    expect(again.reason).toBe(r.reason);
  });
});

describeUnless(inLab ? undefined : 'only in the kernel lab (npm run test:lab)', 'pre-fault engine choice on a TDP kernel', () => {
  it("'auto' uses the kernel engine", async () => {
    using f = fixture();
    const r: PreFaultResult = await f.vcpu.preFaultMemory({ gpa: BASE, size: 2n * MiB });
    expect(r.engine).toBe('kernel' satisfies PreFaultEngineName);
    expect(f.vm.preFaultEngine?.engine).toBe('kernel');
  });
});
