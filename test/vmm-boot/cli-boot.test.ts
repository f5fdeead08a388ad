import { describe, expect, it } from 'vitest';
import { main, type CliIo } from '../../lib/cli/main.js';
import { describeResult, parseBootArgs, parseMemorySize } from '../../lib/cli/boot.js';
import { kvmErrorOf } from '../support/kvm.js';

function io(): CliIo & { out: string; err: string } {
  const o = { out: '', err: '', exitCode: 0, stdout: (t: string) => void (o.out += t), stderr: (t: string) => void (o.err += t) };
  return o;
}

describe('node-kvm boot arguments', () => {
  it('parses sizes with K, M, G suffixes', () => {
    expect(parseMemorySize('256M')).toBe(256 * 2 ** 20);
    expect(parseMemorySize('1G')).toBe(2 ** 30);
    expect(parseMemorySize('65536K')).toBe(64 * 2 ** 20);
    expect(parseMemorySize('512MiB')).toBe(512 * 2 ** 20);
    expect(parseMemorySize(String(32 * 2 ** 20))).toBe(32 * 2 ** 20);
    for (const bad of ['', 'lots', '1.5G', '-1M', '8M', '100001', '2048G']) {
      const e = kvmErrorOf(() => parseMemorySize(bad));
      expect(e.code).toBe('EINVAL');
      expect(e.message).toMatch(/--memory/);
    }
  });

  it('gives the defaults and checks every option with EINVAL naming it', () => {
    expect(parseBootArgs({ kernel: 'k' })).toMatchObject({ kernel: 'k', memory: 256 * 2 ** 20, cpus: 1, backing: 'anon', prefault: 'none' });
    const cases: [Record<string, string>, RegExp][] = [
      [{}, /--kernel/],
      [{ kernel: 'k', cpus: '0' }, /--cpus/],
      [{ kernel: 'k', cpus: 'two' }, /--cpus/],
      [{ kernel: 'k', backing: 'hugetlb' }, /--backing.*anon, thp, gmem/],
      [{ kernel: 'k', prefault: 'eager' }, /--prefault.*none, auto, kernel, software/],
      [{ kernel: 'k', load: 'elf' }, /--load/],
      [{ kernel: 'k', xsave: 'avx512' }, /--xsave.*none, sse or avx/],
      [{ kernel: 'k', cmdline: 'caf\u00e9' }, /--cmdline/],
      [{ kernel: 'k', speed: 'fast' }, /unknown option "speed"/],
    ];
    for (const [raw, message] of cases) {
      const e = kvmErrorOf(() => parseBootArgs(raw));
      expect(e.code).toBe('EINVAL');
      expect(e.message).toMatch(message);
    }
  });

  it('is a usage error (status 2) before anything is opened', async () => {
    const o = io();
    expect(await main(['boot', '--kernel', '/nonexistent', '--prefault', 'eager'], o)).toBe(2);
    expect(o.err).toMatch(/--prefault/);
    const o2 = io();
    expect(await main(['boot'], o2)).toBe(2);
    expect(o2.err).toMatch(/--kernel/);
  });

  it('fails with status 1 for an unreadable kernel and 2 for a file that is not a bzImage', async () => {
    const o = io();
    expect(await main(['boot', '--kernel', '/nonexistent/bzImage'], o)).toBe(1);
    expect(o.err).toMatch(/ENOENT/);
    const o2 = io();
    expect(await main(['boot', '--kernel', '/etc/hostname'], o2)).toBe(1);
    expect(o2.err).toMatch(/bzImage/);
  });

  it('describes how a boot ended in one line', () => {
    const line = describeResult({
      stop: { kind: 'reboot', source: 'i8042' },
      exitCode: 0,
      timings: { setupMs: 1, prefaultMs: 0, firstOutputMs: 5, markerMs: 2500, runMs: 3000 },
      vcpuStats: { 0: { exits: 7 }, 1: { exits: 3 } },
    } as unknown as Parameters<typeof describeResult>[0]);
    expect(line).toBe('node-kvm boot: reboot (i8042) after 3.00 s, marker after 2.50 s; 10 exits; exit status 0\n');
  });
});
