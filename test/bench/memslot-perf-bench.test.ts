/**
 * The memslot-perf bench family: opt-in (the default families leave it out),
 * its options, the C reference's arguments, and a tiny run through the CLI
 * that measures every test on both sides in one run.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main, type CliIo } from '../../lib/cli/main.js';
import { resolveOptions, BenchUsageError } from '../../lib/bench/options.js';
import { memslotPerfReferenceArgs } from '../../lib/bench/memslot-perf.js';
import { memslotPerfGeometry } from '../../lib/selftests/memslot_perf-guest.js';
import type { BenchReport } from '../../lib/bench/run.js';
import { describeKvm } from '../support/kvm.js';

function capture(): CliIo & { out(): string; err(): string } {
  let out = '';
  let err = '';
  return { stdout: (t) => void (out += t), stderr: (t) => void (err += t), exitCode: 0, out: () => out, err: () => err } as CliIo & { out(): string; err(): string };
}

describe('memslot-perf family options', () => {
  it('is opt-in: the default run (npm run bench) leaves it out', () => {
    expect(resolveOptions({}).families).toEqual(['first-touch', 'exits']);
    expect(resolveOptions({}).memslotPerf).toBeUndefined();
  });

  it('parses its options and refuses bad ones', () => {
    const o = resolveOptions({ family: 'memslot-perf', memslotTests: 'rw,map', memslotSlots: 'max', memslotScale: '16', memslotSeconds: '0.5' });
    expect(o.families).toEqual(['memslot-perf']);
    expect(o.memslotPerf).toEqual({ tests: ['map', 'RW'], slots: 'max', scale: 16, seconds: 0.5 });
    expect(resolveOptions({ family: 'memslot-perf' }).memslotPerf).toMatchObject({ slots: 257, scale: 8, seconds: 1 });
    expect(() => resolveOptions({ family: 'memslot-perf', memslotTests: 'remap' })).toThrow(/--memslot-tests: unknown value "remap"/);
    expect(() => resolveOptions({ family: 'memslot-perf', memslotScale: '3' })).toThrow(BenchUsageError);
    expect(() => resolveOptions({ family: 'memslot-perf', memslotSlots: '1' })).toThrow(/--memslot-slots/);
    expect(() => resolveOptions({ family: 'memslot-perf', memslotSeconds: 'soon' })).toThrow(/--memslot-seconds/);
  });

  it('gives the C reference the geometry the Node side uses', () => {
    const g = memslotPerfGeometry('unmap chunked', 8);
    expect(memslotPerfReferenceArgs(g, 0x200000n, 256, 1)).toEqual([
      '--test', 'unmap-chunked', '--cr3', '0x200000', '--mem-size', '0x1010000', '--test-size', '0x1000000', '--chunk-pages', '512',
      '--move-dest', '0x14010000', '--slots', '256', '--seconds', '1', '--min-iterations', '1', '--verify', '0',
    ]);
  });
});

describeKvm('memslot-perf family run (tiny)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-kvm-memslot-bench-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('measures every test on both sides in one run and prints time per iteration and N/C', async () => {
    const json = join(dir, 'memslot.json');
    const io = capture();
    const code = await main(['bench', '--family', 'memslot-perf', '--memslot-slots', '33', '--memslot-scale', '32', '--memslot-seconds', '0', '--json', json], io);
    expect(code, io.err()).toBe(0);
    expect(io.out()).toMatch(/^test +Node us\/iter +C us\/iter +N\/C/m);
    for (const l of io.out().split('\n')) expect(l.length, l).toBeLessThanOrEqual(100);
    const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    expect(report.variants).toEqual([]);
    const r = report.memslotPerf!;
    expect(r.slots).toBe(32);
    expect(r.rows.map((row) => row.test)).toEqual(['map', 'unmap', 'unmap chunked', 'move active area', 'move inactive area', 'RW']);
    for (const row of r.rows) {
      expect(row.node, row.test).toMatchObject({ status: 'ok', slots: 32, iterations: expect.any(Number) });
      if (row.node.status === 'ok') expect(row.node.nsPerIteration).toBeGreaterThan(0);
      if (r.reference.status === 'ok') {
        expect(row.c, row.test).toMatchObject({ status: 'ok', slots: 32, pagesPerSlot: row.node.status === 'ok' ? row.node.pagesPerSlot : -1 });
        expect(row.ratio).toEqual(expect.any(Number));
      }
    }
  });
});
