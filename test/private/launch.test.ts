/**
 * The confidential-launch flow on a software-protected VM (lib/launch.ts):
 * initial contents measured in order, converted to private, pre-faulted (the
 * kernel engine in the lab), loaded by the guest's loader, and checked by the
 * guest from private memory the host never mapped. The measurement is checked
 * against an independent computation of the documented chain and shown to
 * depend on contents, gpa and order.
 */
import { createHash } from 'node:crypto';
import { expect, it } from 'vitest';
import { launchPrivateGuest, measureLaunchPages } from '../../lib/index.js';
import { describeUnless } from '../support/kvm.js';
import { inLab } from '../support/engines.js';
import { DATA_GPA, mailboxGuest, MiB, PAGE, privateUnavailable, SIZE_2M, swProtectedVm } from './support.js';

function pages(count: number, seed: number): Uint8Array {
  const data = new Uint8Array(count * 4096);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    data[i] = x & 0xff;
  }
  return data;
}

/** The chain as docs/private-memory.md states it, written out again. */
function referenceDigest(runs: { gpa: bigint; data: Uint8Array }[]): string {
  let d = Buffer.alloc(48);
  for (const r of runs) {
    for (let o = 0; o < r.data.length; o += 4096) {
      const gpa = Buffer.alloc(8);
      gpa.writeBigUInt64LE(r.gpa + BigInt(o));
      d = createHash('sha384').update(d).update(createHash('sha384').update(r.data.subarray(o, o + 4096)).digest()).update(gpa).update(Buffer.from([1])).digest();
    }
  }
  return d.toString('hex');
}

it('the launch measurement is the documented SHA-384 chain and depends on contents, gpa and order', () => {
  const a = { guestPhysAddr: 0x100000n, data: pages(2, 1) };
  const b = { guestPhysAddr: 0x200000n, data: pages(1, 2) };
  const m = measureLaunchPages([a, b]);
  expect(m).toEqual({ algorithm: 'sha384', digest: referenceDigest([{ gpa: a.guestPhysAddr, data: a.data }, { gpa: b.guestPhysAddr, data: b.data }]), pages: 3 });
  expect(measureLaunchPages([b, a]).digest).not.toBe(m.digest);
  expect(measureLaunchPages([{ ...a, guestPhysAddr: 0x101000n }, b]).digest).not.toBe(m.digest);
  const changed = a.data.slice();
  changed[4097] ^= 1;
  expect(measureLaunchPages([{ ...a, data: changed }, b]).digest).not.toBe(m.digest);
  expect(() => measureLaunchPages([{ guestPhysAddr: 1n, data: pages(1, 3) }])).toThrow(/page aligned/);
  expect(() => measureLaunchPages([{ guestPhysAddr: 0n, data: new Uint8Array(100) }])).toThrow(/whole number of pages/);
});

describeUnless(privateUnavailable, 'confidential launch on a sw-protected VM', () => {
  it('populates, converts, pre-faults and runs a guest that checks private contents; reports the measurement', async () => {
    using f = swProtectedVm();
    const dataSize = 4n * MiB;
    const memory = f.vm.allocateMemory(dataSize);
    const guestMemfd = f.vm.createGuestMemfd({ size: dataSize });
    f.vm.setMemoryRegion({ slot: 1, guestPhysAddr: DATA_GPA, size: 3n * MiB, memory, guestMemfd });
    // The staging buffer: shared memory the loader copies from (last MiB).
    const stagingGpa = DATA_GPA + 3n * MiB;
    f.vm.setMemoryRegion({ slot: 2, guestPhysAddr: stagingGpa, size: MiB, memory, memoryOffset: 3n * MiB });
    const { guest, mailbox } = mailboxGuest(f.vm, dataSize);
    using _ = guest;
    const image = [
      { guestPhysAddr: DATA_GPA, data: pages(16, 7) },
      { guestPhysAddr: DATA_GPA + SIZE_2M, data: pages(3, 9) },
    ];
    const launch = await launchPrivateGuest(f.vm, { pages: image, vcpu: guest.vcpu, loader: mailbox, staging: { guestPhysAddr: stagingGpa, memory, offset: 3n * MiB, size: MiB } });
    expect(launch.measurement).toEqual(measureLaunchPages(image));
    expect(launch.measurement.pages).toBe(19);
    expect(launch.bytesLoaded).toBe(19n * PAGE);
    expect(launch.preFaults.map((r) => r.bytesMapped)).toEqual([16n * PAGE, 3n * PAGE]);
    if (inLab) expect(launch.preFaults.every((r) => r.engine === 'kernel')).toBe(true);
    expect(f.vm.privateRanges()).toEqual([{ start: DATA_GPA, end: DATA_GPA + 16n * PAGE }, { start: DATA_GPA + SIZE_2M, end: DATA_GPA + SIZE_2M + 3n * PAGE }]);
    // The guest sees the image in private memory (sum and xor of its u64s match).
    for (const run of image) {
      const words = new BigUint64Array(run.data.buffer, run.data.byteOffset, run.data.length / 8);
      const sum = words.reduce((s, w) => (s + w) & 0xffff_ffff_ffff_ffffn, 0n);
      const xor = words.reduce((s, w) => s ^ w, 0n);
      expect(await mailbox.sum(run.guestPhysAddr, BigInt(run.data.length))).toEqual({ status: 0n, value: sum, extra: xor });
    }
    // The host never saw it: neither its view of the private range nor the wiped staging buffer holds it.
    expect(memory.bytes.subarray(0, 16 * 4096).every((b) => b === 0)).toBe(true);
    expect(memory.bytes.subarray(3 * 1024 * 1024, 3 * 1024 * 1024 + 16 * 4096).every((b) => b === 0)).toBe(true);
  });
});
