/**
 * Software pre-fault over memory that protect() restricted, and far into a
 * large mapping. It used to fall back to touching the pages itself when
 * MADV_POPULATE_* said EINVAL (what it says for PROT_NONE, and for a write
 * populate of PROT_READ pages): SIGSEGV, the process gone; and past 2 GiB into
 * a mapping the same path threw a RangeError (a 32-bit index). The cases run
 * in child processes, so a regression shows as a signal in the exit status.
 */
import { expect, it } from 'vitest';
import { describeKvm } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

/** Child: one VM, `size` bytes of memory in slot 1 at 4 GiB; runs `body`, prints its JSON. */
const script = (body: string, size = '8n << 20n'): string => `
const lib = await import(BUNDLE);
const { Kvm, KvmError } = lib;
const BASE = 4n << 30n, MiB = 1n << 20n;
const kvm = Kvm.open();
const vm = kvm.createVm();
const memory = vm.allocateMemory(${size}, { noReserve: true });
vm.setMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory });
const vcpu = vm.createVcpu(0);
const outcome = async (fn) => {
  try {
    const r = await fn();
    return { ok: true, bytesMapped: r.bytesMapped };
  } catch (e) {
    return { ok: false, kvmError: e instanceof KvmError, name: e.name, code: e.code, bytesMapped: e.bytesMapped };
  }
};
const out = {};
${body}
vm.close();
kvm.close();
console.log(JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? v + 'n' : v)));
`;

const expectClean = (r: { code: number | null; signal: string | null; stderr: string }): void => {
  expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
};

describeKvm('software pre-fault over protected memory (child processes)', () => {
  for (const fallback of [false, true]) {
    const how = fallback ? 'the touch fallback (a kernel without MADV_POPULATE_*, forced)' : 'MADV_POPULATE_*';
    it(`protect('none') is EFAULT and protect('read') maps read-only, never SIGSEGV: ${how}`, async () => {
      const r = await runNodeChild(
        script(`
${fallback ? 'lib.setMadvisePopulateSupportedForTest(false);' : ''}
out.supported = lib.madvisePopulateSupported();
memory.protect('none', 2n * MiB, 2n * MiB);
memory.protect('read', 4n * MiB, 2n * MiB);
for (const sync of [true, false]) {
  const run = (range) => (sync ? vcpu.preFaultMemorySync(range, { engine: 'software' }) : vcpu.preFaultMemory(range, { engine: 'software' }));
  out[sync + 'none'] = await outcome(() => run({ gpa: BASE + 2n * MiB, size: 2n * MiB }));
  out[sync + 'readOnly'] = await outcome(() => run({ gpa: BASE + 4n * MiB, size: 2n * MiB }));
  out[sync + 'readOnlyLeaf'] = vm.softMmu.lookup(BASE + 4n * MiB);
  out[sync + 'whole'] = await outcome(() => run({ gpa: BASE, size: 8n * MiB }));
  vm.softMmu.zapRange(0n, 8n << 30n);
}
memory.protect('read-write');
out.afterwards = await outcome(() => vcpu.preFaultMemory({ gpa: BASE, size: 8n * MiB }, { engine: 'software' }));
`),
      );
      expectClean(r);
      const o = r.json as Record<string, any>;
      expect(o.supported).toBe(!fallback);
      for (const sync of ['true', 'false']) {
        expect(o[`${sync}none`]).toMatchObject({ ok: false, kvmError: true, code: 'EFAULT', bytesMapped: 0n });
        expect(o[`${sync}readOnly`]).toMatchObject({ ok: true, bytesMapped: 2n << 20n });
        expect(o[`${sync}readOnlyLeaf`]).toMatchObject({ slot: 1, writable: false });
        // The PROT_NONE range stops it (a step that fails reports no progress, as one ioctl does).
        expect(o[`${sync}whole`]).toMatchObject({ ok: false, code: 'EFAULT' });
        expect(o[`${sync}whole`].bytesMapped).toBeLessThan(8n << 20n);
      }
      expect(o.afterwards).toMatchObject({ ok: true, bytesMapped: 8n << 20n });
    });
  }

  it('more than 2 GiB into a mapping: the touch fallback pre-faults there (no 32-bit index)', async () => {
    const r = await runNodeChild(
      script(
        `
lib.setMadvisePopulateSupportedForTest(false);
const gpa = BASE + (5n << 29n); // 2.5 GiB in
out.sync = await outcome(() => vcpu.preFaultMemorySync({ gpa, size: 4n * MiB }, { engine: 'software' }));
out.async = await outcome(() => vcpu.preFaultMemory({ gpa: gpa + 4n * MiB, size: 4n * MiB }, { engine: 'software' }));
out.leaf = vm.softMmu.lookup(gpa + 6n * MiB);
// The touched pages are really there: mincore-free check through a view.
out.byte = memory.view((5n << 29n) + 4096n, 1n)[0];
`,
        '3n << 30n',
      ),
    );
    expectClean(r);
    const o = r.json as Record<string, any>;
    expect(o.sync).toMatchObject({ ok: true, bytesMapped: 4n << 20n });
    expect(o.async).toMatchObject({ ok: true, bytesMapped: 4n << 20n });
    expect(o.leaf).toMatchObject({ slot: 1, writable: true });
    expect(o.byte).toBe(0);
  });
});
