import { describe, expect, it } from 'vitest';
import { bootBenchVariants, summarize, type BootBenchReport, type BootBenchRow } from '../../lib/vmm/boot-bench.js';
import { formatBootReport, renderBootChartSvg } from '../../lib/vmm/boot-bench-report.js';
import { qemuArgs } from '../../lib/vmm/qemu-reference.js';
import { main, type CliIo } from '../../lib/cli/main.js';

const s = (median: number, min = median, max = median): { median: number; min: number; max: number } => ({ median, min, max });

function row(over: Partial<BootBenchRow>): BootBenchRow {
  return {
    vmm: 'node-kvm', label: 'x', reps: 3, ok: 3, failures: [],
    markerMs: s(10_000), totalMs: s(11_000), prefaultMs: s(0), guestUptime: s(4.5),
    exits: s(20_000), pfTaken: s(6000), pages: { '4k': s(6000), '2m': s(0), '1g': s(0) },
    ...over,
  };
}

describe('boot benchmark', () => {
  it('enumerates every pre-fault mode for every backing and summarises figures', () => {
    expect(bootBenchVariants()).toHaveLength(12);
    expect(bootBenchVariants(['none'], ['thp'])).toEqual([{ prefault: 'none', backing: 'thp' }]);
    expect(summarize([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3 });
    expect(summarize([4, 1, 2, 3]).median).toBe(2.5);
    expect(Number.isNaN(summarize([]).median)).toBe(true);
  });

  it('prints the table with ratios against QEMU and the goals, met or not', () => {
    const report: BootBenchReport = {
      kernel: 'k/vmlinuz', initrd: 'i', memory: 256 << 20, cmdline: 'c', marker: 'M', reps: 3, startedAt: '',
      rows: [
        row({ vmm: 'qemu', label: 'qemu -enable-kvm', memPrealloc: false, exits: s(10_000), totalMs: s(10_000) }),
        row({ label: 'node-kvm anon prefault=none', prefault: 'none', backing: 'anon', vsQemu: { reference: 'qemu -enable-kvm', exits: 2, totalMs: 1.1, pfTaken: 1 } }),
        row({ label: 'node-kvm anon prefault=kernel', prefault: 'kernel', backing: 'anon', pfTaken: s(3), ok: 2, failures: ['panic: x'] }),
      ],
    };
    const text = formatBootReport(report);
    expect(text).toContain('| node-kvm anon prefault=none ');
    expect(text).toContain('2.00x');
    expect(text).toContain("exits 2.00x QEMU's (goal <= 1: not met); time 1.10x (goal <= 1.2: met)");
    expect(text).toContain('faults cut 2000.0x vs demand (goal >= 10x: met)');
    expect(text).toContain('1 failed: panic: x');
    const svg = renderBootChartSvg(report);
    expect(svg.match(/<rect /g)).toHaveLength(6);
    expect(svg).toContain('node-kvm anon prefault=kernel');
  });

  it('gives QEMU the same kernel, initrd, command line and memory, -mem-prealloc when asked', () => {
    const a = qemuArgs({ kernelPath: 'K', initrdPath: 'I', cmdline: 'console=ttyS0', memory: 256 << 20, marker: 'M', memPrealloc: true });
    expect(a).toEqual(expect.arrayContaining(['-enable-kvm', '-kernel', 'K', '-initrd', 'I', '-append', 'console=ttyS0', '256M', '-mem-prealloc', 'qemu64']));
    expect(qemuArgs({ kernelPath: 'K', initrdPath: 'I', cmdline: 'c', memory: 64 << 20, marker: 'M', memPrealloc: false })).not.toContain('-mem-prealloc');
  });

  it('node-kvm bench --boot is a usage error (status 2) without its files or with a bad list', async () => {
    const io = (): CliIo & { err: string } => {
      const o = { err: '', exitCode: 0, stdout: () => {}, stderr: (t: string) => void (o.err += t) };
      return o;
    };
    const a = io();
    expect(await main(['bench', '--boot'], a)).toBe(2);
    expect(a.err).toMatch(/--kernel FILE and --initrd FILE/);
    const b = io();
    expect(await main(['bench', '--boot', '--kernel', 'k', '--initrd', 'i', '--boot-backing', 'hugetlb'], b)).toBe(2);
    expect(b.err).toMatch(/--boot-backing.*anon, thp, gmem/);
  });
});
