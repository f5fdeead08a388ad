import { describe, expect, it } from 'vitest';
import { decodeExit, ExitDecoder, KVM_RUN_LAYOUT, type VcpuExit } from '../../lib/exit.js';
import { native } from '../../lib/native.js';

/** A fake kvm_run page with exit_reason `code`, filled by `fill`. */
function fakeRun(code: number, fill: (v: DataView) => void = () => {}): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(12288);
  const view = new DataView(bytes.buffer);
  view.setUint32(8, code, true);
  fill(view);
  return { bytes, view };
}

function leafOffsets(prefix: string, o: object, out: Record<string, number>): Record<string, number> {
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'number') out[prefix + k] = v;
    else leafOffsets(`${prefix}${k}.`, v as object, out);
  }
  return out;
}

describe('kvm_run layout', () => {
  it('matches offsetof() in the C header for every field the header has', () => {
    const c = native.kvmRunLayout();
    const ours = leafOffsets('', KVM_RUN_LAYOUT, {});
    const compared = Object.keys(c);
    expect(compared.length).toBeGreaterThan(60);
    for (const name of compared) expect([name, ours[name]]).toEqual([name, c[name]]);
  });
});

describe('ExitDecoder', () => {
  it('decodes every exit kind from its union fields', () => {
    const d = (code: number, fill?: (v: DataView) => void): VcpuExit => decodeExit(fakeRun(code, fill).bytes);
    expect(d(0, (v) => v.setBigUint64(32, 0x77n, true))).toEqual({ reason: 'unknown', code: 0, hardwareExitReason: 0x77n });
    expect(d(1, (v) => { v.setUint32(32, 14, true); v.setUint32(36, 2, true); })).toEqual({ reason: 'exception', exception: 14, errorCode: 2 });
    const hc = d(3, (v) => { v.setBigUint64(32, 12n, true); v.setBigUint64(40, 1n, true); v.setBigUint64(80, 6n, true); v.setBigUint64(96, 1n, true); });
    expect(hc).toMatchObject({ reason: 'hypercall', nr: 12n, args: [1n, 0n, 0n, 0n, 0n, 6n], flags: 1n, longMode: true });
    expect(d(4, (v) => { v.setUint32(32, 1, true); v.setBigUint64(40, 0x401000n, true); v.setBigUint64(48, 0x4000n, true); v.setBigUint64(56, 0x400n, true); }))
      .toEqual({ reason: 'debug', exception: 1, pc: 0x401000n, dr6: 0x4000n, dr7: 0x400n });
    for (const [code, reason] of [[5, 'hlt'], [8, 'shutdown'], [16, 'nmi'], [11, 'set-tpr'], [31, 'dirty-ring-full'], [32, 'ap-reset-hold'], [33, 'x86-bus-lock']] as const) {
      expect(d(code)).toEqual({ reason, code });
    }
    expect(d(7, (v) => { v.setUint8(12, 1); v.setUint8(13, 1); })).toEqual({ reason: 'irq-window-open', code: 7, readyForInterruptInjection: true, ifFlag: true });
    expect(d(9, (v) => { v.setBigUint64(32, 0x80000021n, true); v.setUint32(40, 1, true); })).toEqual({ reason: 'fail-entry', hardwareEntryFailureReason: 0x80000021n, cpu: 1 });
    expect(d(10)).toEqual({ reason: 'intr' });
    expect(d(12, (v) => { v.setBigUint64(32, 0x1234n, true); v.setUint32(40, 1, true); })).toEqual({ reason: 'tpr-access', rip: 0x1234n, isWrite: true });
    expect(d(17, (v) => { v.setUint32(32, 3, true); v.setUint32(36, 2, true); v.setBigUint64(40, 5n, true); v.setBigUint64(48, 6n, true); }))
      .toEqual({ reason: 'internal-error', suberror: 3, data: [5n, 6n] });
    const emu = d(17, (v) => { v.setUint32(32, 1, true); v.setUint32(36, 3, true); v.setBigUint64(40, 1n, true); v.setUint8(48, 2); v.setUint8(49, 0x0f); v.setUint8(50, 0x0b); });
    expect(emu).toMatchObject({ reason: 'internal-error', suberror: 1, instructionBytes: new Uint8Array([0x0f, 0x0b]) });
    expect(d(24, (v) => { v.setUint32(32, 2, true); v.setUint32(36, 2, true); v.setBigUint64(40, 9n, true); v.setBigUint64(48, 10n, true); }))
      .toEqual({ reason: 'system-event', type: 2, typeName: 'reset', flags: 9n, data: [9n, 10n] });
    expect(d(24, (v) => { v.setUint32(32, 99, true); v.setBigUint64(40, 3n, true); })).toEqual({ reason: 'system-event', type: 99, typeName: 'unknown', flags: 3n, data: [3n] });
    expect(d(26, (v) => v.setUint8(32, 0x31))).toEqual({ reason: 'ioapic-eoi', vector: 0x31 });
    expect(d(27, (v) => { v.setUint32(32, 1, true); v.setUint32(40, 0x40000080, true); v.setBigUint64(48, 1n, true); v.setBigUint64(56, 0x1000n, true); v.setBigUint64(64, 0x2000n, true); }))
      .toEqual({ reason: 'hyperv', type: 'synic', msr: 0x40000080, control: 1n, evtPage: 0x1000n, msgPage: 0x2000n });
    expect(d(27, (v) => { v.setUint32(32, 3, true); v.setUint32(40, 0x400000f1, true); v.setBigUint64(80, 0x5000n, true); }))
      .toMatchObject({ reason: 'hyperv', type: 'syndbg', msr: 0x400000f1, pendingPage: 0x5000n });
    expect(d(27, (v) => v.setUint32(32, 42, true))).toEqual({ reason: 'hyperv', type: 'unknown', typeCode: 42 });
    expect(d(34, (v) => v.setUint32(32, 5, true))).toEqual({ reason: 'xen', type: 'unknown', typeCode: 5 });
    expect(d(37, (v) => v.setUint32(32, 1, true))).toEqual({ reason: 'notify', flags: 1, contextInvalid: true });
    expect(d(39, (v) => { v.setBigUint64(32, 0n, true); v.setBigUint64(40, 0x2000n, true); v.setBigUint64(48, 4096n, true); }))
      .toEqual({ reason: 'memory-fault', flags: 0n, gpa: 0x2000n, size: 4096n, private: false });
    expect(d(40, (v) => { v.setBigUint64(40, 0x10002n, true); v.setBigUint64(56, 0x9000n, true); })).toMatchObject({ reason: 'tdx', nr: 0x10002n, words: [0n, 0x9000n, 0n, 0n, 0n, 0n] });
    expect(d(12345)).toEqual({ reason: 'unknown', code: 12345, hardwareExitReason: 0n });
  });

  it('KVM_RUN failing with EFAULT/EHWPOISON is the memory-fault exit only when kvm_run says KVM_EXIT_MEMORY_FAULT', () => {
    const { bytes, view } = fakeRun(39, (v) => { v.setBigUint64(32, 8n, true); v.setBigUint64(40, 0x5000n, true); v.setBigUint64(48, 0x1000n, true); });
    const d = new ExitDecoder(bytes);
    expect(d.memoryFault(14)).toEqual({ reason: 'memory-fault', flags: 8n, gpa: 0x5000n, size: 0x1000n, private: true });
    expect(d.memoryFault(133)).toMatchObject({ reason: 'memory-fault' });
    expect(d.memoryFault(22)).toBeUndefined();
    expect(d.memoryFault(0)).toBeUndefined();
    // begin() clears exit_reason, so an EFAULT of the next run is not taken for a stale memory fault.
    d.begin();
    expect(d.memoryFault(14)).toBeUndefined();
    view.setUint32(8, 2, true);
    expect(d.memoryFault(14)).toBeUndefined();
  });

  it('io data is a live view at data_offset; mmio data the 8 union bytes', () => {
    const { bytes, view } = fakeRun(2, (v) => { v.setUint8(32, 0); v.setUint8(33, 2); v.setUint16(34, 0x60, true); v.setUint32(36, 3, true); v.setBigUint64(40, 4096n, true); });
    const io = decodeExit(bytes);
    if (io.reason !== 'io') throw new Error('not io');
    expect(io).toMatchObject({ direction: 'in', size: 2, count: 3, port: 0x60 });
    expect(io.data.length).toBe(6);
    io.data[0] = 0xab;
    expect(bytes[4096]).toBe(0xab);
    // A data_offset pointing outside the mapping or into the header gives an empty view, not a throw.
    view.setBigUint64(40, 1n << 40n, true);
    expect((decodeExit(bytes) as { data: Uint8Array }).data.length).toBe(0);
    view.setBigUint64(40, 16n, true);
    expect((decodeExit(bytes) as { data: Uint8Array }).data.length).toBe(0);

    const m = fakeRun(6, (v) => { v.setBigUint64(32, 0xd0000000n, true); v.setUint32(48, 4, true); });
    const mmio = decodeExit(m.bytes);
    if (mmio.reason !== 'mmio') throw new Error('not mmio');
    mmio.data.set([1, 2, 3, 4]);
    expect([...m.bytes.subarray(40, 44)]).toEqual([1, 2, 3, 4]);
  });

  it('MSR replies write data and error into kvm_run, and go stale after the next run', () => {
    const { bytes, view } = fakeRun(29, (v) => { v.setUint32(40, 2, true); v.setUint32(44, 0x4b564d00, true); });
    const decoder = new ExitDecoder(bytes);
    const rd = decoder.decode();
    if (rd.reason !== 'x86-rdmsr') throw new Error('not rdmsr');
    expect(rd).toMatchObject({ index: 0x4b564d00, cause: 'unknown', causeCode: 2 });
    rd.reply(0x1122334455667788n);
    expect(view.getBigUint64(48, true)).toBe(0x1122334455667788n);
    expect(view.getUint8(32)).toBe(0);
    rd.fail();
    expect(view.getUint8(32)).toBe(1);
    expect(() => rd.reply(-1n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => rd.reply(1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    decoder.begin();
    expect(view.getUint32(8, true)).toBe(0);
    expect(() => rd.reply(1n)).toThrow(expect.objectContaining({ code: 'ESTALE' }));
    expect(() => rd.fail()).toThrow(expect.objectContaining({ code: 'ESTALE' }));

    view.setUint32(8, 30, true);
    view.setUint32(40, 4, true);
    view.setBigUint64(48, 0xabcn, true);
    view.setUint8(32, 0);
    const wr = decoder.decode();
    if (wr.reason !== 'x86-wrmsr') throw new Error('not wrmsr');
    expect(wr).toMatchObject({ index: 0x4b564d00, cause: 'filter', data: 0xabcn });
    wr.fail();
    expect(view.getUint8(32)).toBe(1);
  });

  it('hypercall, Hyper-V, Xen and TDX replies land at their offsets', () => {
    const cases: [number, (v: DataView) => void, (e: VcpuExit) => void, number][] = [
      [3, () => {}, (e) => e.reason === 'hypercall' && e.setReturn(7n), 88],
      [27, (v) => v.setUint32(32, 2, true), (e) => e.reason === 'hyperv' && e.type === 'hcall' && e.setResult(7), 48],
      [34, (v) => v.setUint32(32, 1, true), (e) => e.reason === 'xen' && e.type === 'hcall' && e.setResult(7n), 56],
      [40, () => {}, (e) => e.reason === 'tdx' && e.setReturn(7n), 48],
    ];
    for (const [code, fill, reply, offset] of cases) {
      const { bytes, view } = fakeRun(code, fill);
      reply(decodeExit(bytes));
      expect([code, view.getBigUint64(offset, true)]).toEqual([code, 7n]);
    }
  });
});
