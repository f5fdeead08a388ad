import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main, type CliIo } from '../../lib/cli/main.js';
import { resolveOptions, BenchUsageError } from '../../lib/bench/options.js';
import { expandExitsVariants, exitsReferenceArgs, exitsWorkerPath } from '../../lib/bench/exits.js';
import type { BenchReport } from '../../lib/bench/run.js';
import { describeKvm } from '../support/kvm.js';

function capture(): CliIo & { out(): string; err(): string } {
  let out = '';
  let err = '';
  return { stdout: (t) => void (out += t), stderr: (t) => void (err += t), exitCode: 0, out: () => out, err: () => err } as CliIo & { out(): string; err(): string };
}

describe('exits family options and plan', () => {
  it('expands guests x vcpus x modes, with the C threads each mode compares with', () => {
    const o = resolveOptions({ family: 'exits', exitVcpus: '2,1', exitIterations: '100' });
    expect(o.families).toEqual(['exits']);
    const vs = expandExitsVariants(o.exits!);
    expect(vs).toHaveLength(12);
    expect(vs.map((v) => [v.id, v.cThreads])).toContainEqual(['exits out sync 2vcpu', 1]);
    expect(vs.map((v) => [v.id, v.cThreads])).toContainEqual(['exits mmio worker 2vcpu', 2]);
    expect(exitsReferenceArgs(vs.find((v) => v.id === 'exits mmio async 2vcpu')!)).toEqual(['--exits', 'mmio', '--vcpus', '2', '--threads', '2', '--iterations', '100']);
    expect(resolveOptions({ family: 'first-touch' }).exits).toBeNull();
    expect(() => resolveOptions({ family: 'exits', exitMode: 'threads' })).toThrow(BenchUsageError);
    expect(() => resolveOptions({ family: 'exit' })).toThrow(/--family: unknown value "exit"/);
    expect(() => resolveOptions({ exitVcpus: '0' })).toThrow(/--exit-vcpus: 0 is out of range/);
  });
});

describeKvm('exits family run (tiny)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-kvm-exits-bench-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('measures every mode on both sides and reports ratios (goals in the JSON)', async () => {
    const json = join(dir, 'exits.json');
    const io = capture();
    const code = await main(['bench', '--family', 'exits', '--exit-iterations', '50', '--reps', '1', '--warmup', '0', '--json', json], io);
    expect(code, io.err()).toBe(0);
    expect(io.out()).toMatch(/^variant +Node ns\/exit +C ns\/exit +N\/C/m);
    // Results on the terminal, goals only in the JSON; the table fits 100 columns.
    expect(io.out()).not.toMatch(/goal|NOT met/i);
    for (const l of io.out().split('\n')) expect(l.length, l).toBeLessThanOrEqual(100);
    const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    expect(report.variants).toEqual([]);
    const variants = report.exits!.variants;
    expect(variants).toHaveLength(12);
    for (const v of variants) {
      // The worker mode needs the compiled worker script (dist/); without it the side says why.
      if (v.mode === 'worker' && !exitsWorkerPath()) {
        expect(v.node).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/worker script/) });
        continue;
      }
      expect(v.node.status, v.id).toBe('ok');
      if (v.node.status !== 'ok') continue;
      expect(v.node.reps[0]).toMatchObject({ exits: 50 * v.vcpus, elapsedNs: expect.any(Number) });
      expect(v.node.reps[0]!.nsPerExit).toBeGreaterThan(0);
      if (v.c.status === 'ok') {
        expect(v.c.reps[0]).toMatchObject({ exits: 50 * v.vcpus });
        expect(v.ratio).toEqual(expect.any(Number));
        expect(v.met).toBe(v.ratio! <= v.target);
      } else {
        expect(v.c).toMatchObject({ reason: expect.any(String) });
      }
    }
  });
});
