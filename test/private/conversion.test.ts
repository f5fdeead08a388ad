/**
 * Guests touching private memory on a software-protected VM (the lab's
 * sw-protected kernel): the memory-fault exit as a real kernel reports it, the
 * host-side conversion helper answering it, and memory attributes against what
 * the kernel enforces (the host never sees a private write; converting back
 * with a punch-hole drops the private data).
 */
import { expect, it } from 'vitest';
import { answerMemoryFault, convertMemory, KvmError, type MemoryFaultExit } from '../../lib/index.js';
import { bytePattern, MailboxOp } from '../../lib/guest/index.js';
import { describeUnless } from '../support/kvm.js';
import { DATA_GPA, mailboxGuest, PAGE, privateUnavailable, SIZE_2M, swProtectedVm } from './support.js';

describeUnless(privateUnavailable, 'private memory on a sw-protected VM', () => {
  it('setMemoryAttributes succeeds; memoryAttributesOf and privateRanges follow it', () => {
    using f = swProtectedVm();
    expect(f.vm.capabilities.memoryAttributes).toEqual(['private']);
    f.vm.setMemoryAttributes({ guestPhysAddr: DATA_GPA, size: SIZE_2M, private: true });
    f.vm.setMemoryAttributes({ guestPhysAddr: DATA_GPA + PAGE, size: PAGE, private: false });
    expect(f.vm.privateRanges()).toEqual([{ start: DATA_GPA, end: DATA_GPA + PAGE }, { start: DATA_GPA + 2n * PAGE, end: DATA_GPA + SIZE_2M }]);
    expect(f.vm.memoryAttributesOf(DATA_GPA, PAGE)).toBe('private');
    expect(f.vm.memoryAttributesOf(DATA_GPA + PAGE, PAGE)).toBe('shared');
    expect(f.vm.memoryAttributesOf(DATA_GPA, 3n * PAGE)).toBe('mixed');
    // An unaligned size is refused before the ioctl, with the arguments.
    expect(() => f.vm.setMemoryAttributes({ guestPhysAddr: DATA_GPA, size: 100n, private: true })).toThrow(KvmError);
  });

  it('the kernel enforces the attributes: private writes stay in guest_memfd, shared ones reach the host', async () => {
    using f = swProtectedVm();
    const memory = f.vm.allocateMemory(SIZE_2M);
    const guestMemfd = f.vm.createGuestMemfd({ size: SIZE_2M });
    f.vm.setMemoryRegion({ slot: 1, guestPhysAddr: DATA_GPA, memory, guestMemfd });
    const { guest, mailbox } = mailboxGuest(f.vm, SIZE_2M);
    using _ = guest;
    await mailbox.fill(DATA_GPA, 2n * PAGE, bytePattern(0x5a));
    expect(memory.bytes[0]).toBe(0x5a);
    convertMemory(f.vm, { guestPhysAddr: DATA_GPA, size: PAGE, private: true });
    await mailbox.fill(DATA_GPA, 2n * PAGE, bytePattern(0xa5));
    // Page 0 is private: the host still sees the old shared data; page 1 is shared.
    expect(memory.bytes[0]).toBe(0x5a);
    expect(memory.bytes[4096]).toBe(0xa5);
    expect((await mailbox.check(DATA_GPA, PAGE, bytePattern(0xa5))).status).toBe(0n);
    // Back to shared with a punch: the private data is gone, the shared data is back.
    const r = convertMemory(f.vm, { guestPhysAddr: DATA_GPA, size: PAGE, private: false });
    expect(r.pieces).toEqual([{ slot: 1, guestPhysAddr: DATA_GPA, size: PAGE, guestMemfd: 'punched', sharedDiscarded: false }]);
    expect((await mailbox.check(DATA_GPA, PAGE, bytePattern(0x5a))).status).toBe(0n);
    // Private again after the punch: a fresh (zeroed) guest_memfd page.
    convertMemory(f.vm, { guestPhysAddr: DATA_GPA, size: PAGE, private: true, discardShared: true });
    expect((await mailbox.check(DATA_GPA, PAGE, 0n)).status).toBe(0n);
    expect(memory.bytes[0]).toBe(0);
  });

  it('a private access with no guest_memfd behind it is a memory-fault exit; answerMemoryFault resolves it', async () => {
    using f = swProtectedVm();
    const memory = f.vm.allocateMemory(SIZE_2M);
    f.vm.setMemoryRegion({ slot: 1, guestPhysAddr: DATA_GPA, memory });
    memory.bytes.fill(0x77, 0, 8192);
    f.vm.setMemoryAttributes({ guestPhysAddr: DATA_GPA + PAGE, size: PAGE, private: true });
    const { guest, mailbox } = mailboxGuest(f.vm, SIZE_2M);
    using _ = guest;
    const exits: MemoryFaultExit[] = [];
    let refused: unknown;
    const answer = await mailbox.command(MailboxOp.CHECK, DATA_GPA, 2n * PAGE, bytePattern(0x77), (ev) => {
      if (ev.kind !== 'exit' || ev.exit.reason !== 'memory-fault') return false;
      const exit = ev.exit as MemoryFaultExit;
      exits.push(exit);
      try {
        answerMemoryFault(f.vm, exit);
      } catch (err) {
        refused = err;
      }
      answerMemoryFault(f.vm, exit, { fallback: 'shared' });
      return true;
    });
    // The kernel's exit: private, the page's gpa, one page.
    expect(exits.length).toBe(1);
    expect(exits[0]).toMatchObject({ reason: 'memory-fault', private: true, gpa: DATA_GPA + PAGE, size: PAGE, flags: 8n });
    // Without a guest_memfd the helper cannot make it private: it says so.
    expect(refused).toBeInstanceOf(KvmError);
    expect((refused as KvmError).code).toBe('EFAULT');
    expect((refused as KvmError).message).toMatch(/no guest_memfd/);
    // With the 'shared' fallback the range became shared and the guest read the host's data.
    expect(f.vm.memoryAttributesOf(DATA_GPA, 2n * PAGE)).toBe('shared');
    expect(answer.status).toBe(0n);
  });

  it('convertMemory checks its arguments and the backing before changing anything', () => {
    using f = swProtectedVm();
    const memory = f.vm.allocateMemory(SIZE_2M);
    f.vm.setMemoryRegion({ slot: 1, guestPhysAddr: DATA_GPA, memory });
    expect(() => convertMemory(f.vm, { guestPhysAddr: DATA_GPA + 1n, size: PAGE, private: true })).toThrow(/page aligned/);
    expect(() => convertMemory(f.vm, { guestPhysAddr: DATA_GPA + SIZE_2M, size: PAGE, private: false })).toThrow(/in no memslot/);
    expect(() => convertMemory(f.vm, { guestPhysAddr: DATA_GPA, size: PAGE, private: true })).toThrow(/no guest_memfd/);
    expect(f.vm.privateRanges()).toEqual([]);
  });
});
