/**
 * The mailbox guest the private-memory tests and the launch flow drive: fill,
 * check, copy and sum, on any KVM (this machine's kvm_pvm included).
 */
import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { bytePattern, MailboxOp } from '../../lib/guest/index.js';
import { mailboxVcpus } from '../../lib/selftests/private_mem_conversions_vcpus.js';
import { describeKvm } from '../support/kvm.js';
import { DATA_GPA, MAILBOX_GPA, mailboxGuest, PAGE } from './support.js';

describeKvm('mailbox guest', () => {
  it('fills, checks (reporting the first mismatch), copies and sums guest memory', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const memory = vm.allocateMemory(4n * PAGE);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: DATA_GPA, memory });
    const { guest, mailbox } = mailboxGuest(vm, 4n * PAGE);
    using _ = guest;
    expect(await mailbox.fill(DATA_GPA, 2n * PAGE, bytePattern(0xaa))).toMatchObject({ status: 0n });
    expect(memory.bytes.subarray(0, 8192).every((b) => b === 0xaa)).toBe(true);
    expect(memory.bytes[8192]).toBe(0);
    expect(await mailbox.check(DATA_GPA, 2n * PAGE, bytePattern(0xaa))).toMatchObject({ status: 0n });
    memory.bytes[4096 + 17] = 0x55;
    const bad = await mailbox.check(DATA_GPA, 2n * PAGE, bytePattern(0xaa));
    expect(bad.status).toBe(DATA_GPA + 4096n + 16n);
    expect(bad.value).toBe(bytePattern(0xaa) & ~(0xffn << 8n) | (0x55n << 8n));
    expect(await mailbox.copy(DATA_GPA + 2n * PAGE, PAGE, DATA_GPA)).toMatchObject({ status: 0n });
    expect(memory.bytes.subarray(8192, 12288).every((b) => b === 0xaa)).toBe(true);
    const words = new BigUint64Array(memory.bytes.buffer, memory.bytes.byteOffset + 12288, 512);
    words.forEach((_, i) => (words[i] = BigInt(i + 1)));
    const sum = await mailbox.sum(DATA_GPA + 3n * PAGE, PAGE);
    expect(sum.value).toBe(BigInt((512 * 513) / 2));
    expect(sum.extra).toBe(words.reduce((x, w) => x ^ w, 0n));
    await expect(mailbox.command(MailboxOp.DONE, 0n, 0n)).rejects.toMatchObject({ code: 'EGUESTEXIT' });
  });

  it('several vcpus, each with its own program copy and mailbox, work on their own regions at once (the multi-vcpu conversions port)', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const count = 4;
    const region = 16n * PAGE;
    const memory = vm.allocateMemory(BigInt(count) * region);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: DATA_GPA, memory });
    const { guest } = mailboxGuest(vm, BigInt(count) * region);
    using _ = guest;
    const all = mailboxVcpus(kvm, guest, count, MAILBOX_GPA);
    try {
      expect(all.mailboxes).toHaveLength(count);
      const fills = all.mailboxes.map((m, i) => m.fill(DATA_GPA + BigInt(i) * region, region, bytePattern(0x10 + i)));
      // Every vcpu's run is outstanding at once: none waited for another.
      expect([...all.running].sort()).toEqual([0, 1, 2, 3]);
      for (const r of await Promise.all(fills)) expect(r.status).toBe(0n);
      expect(all.running.size).toBe(0);
      for (let i = 0; i < count; i++) {
        const bytes = memory.bytes.subarray(i * Number(region), (i + 1) * Number(region));
        expect(bytes.every((b) => b === 0x10 + i), `region ${i}`).toBe(true);
      }
      // Each checks its own region, and finds another's pattern wrong.
      const checks = await Promise.all(all.mailboxes.map((m, i) => m.check(DATA_GPA + BigInt(i) * region, region, bytePattern(0x10 + i))));
      expect(checks.map((c) => c.status)).toEqual([0n, 0n, 0n, 0n]);
      expect((await all.mailboxes[1]!.check(DATA_GPA, PAGE, bytePattern(0x11))).status).toBe(DATA_GPA);
    } finally {
      all.close();
    }
  });
});
