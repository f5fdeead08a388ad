/**
 * The benchmark's argument handling (sizes, lists, bad values), its variant
 * plan and statistics, and the shape of the JSON report from a tiny run
 * (4M, one repetition, a few variants). No timing assertions.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main, type CliIo } from '../../lib/cli/main.js';
import {
  BenchUsageError, DEFAULTS, formatSize, parseInteger, parseNameList, parseSize, parseSizes, resolveOptions, splitList, BACKINGS,
} from '../../lib/bench/options.js';
import { expandVariants, referenceSpec } from '../../lib/bench/variants.js';
import { median, summarize } from '../../lib/bench/stats.js';
import { completeRep } from '../../lib/bench/metrics.js';
import { formatTable } from '../../lib/bench/report.js';
import { autoCostGoals, type VariantResult } from '../../lib/bench/run.js';
import type { BenchReport } from '../../lib/bench/run.js';
import { describeKvm } from '../support/kvm.js';

const M = 1024 * 1024;
const G = 1024 * M;

function capture(): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return { stdout: (s) => void (out += s), stderr: (s) => void (err += s), exitCode: 0, out: () => out, err: () => err };
}

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BenchUsageError);
    return (e as Error).message;
  }
  throw new Error('expected a BenchUsageError');
}

describe('bench arguments', () => {
  it('parses sizes with binary units', () => {
    expect(parseSize('64M')).toBe(64 * M);
    expect(parseSize('1G')).toBe(G);
    expect(parseSize('1g')).toBe(G);
    expect(parseSize('2MiB')).toBe(2 * M);
    expect(parseSize('512k')).toBe(512 * 1024);
    expect(parseSize('1GB')).toBe(G);
    expect(parseSize(' 4096 ')).toBe(4096);
    expect(formatSize(64 * M)).toBe('64M');
    expect(formatSize(G)).toBe('1G');
    expect(formatSize(1536 * M)).toBe('1536M');
    expect(formatSize(4096)).toBe('4K');
  });

  it('rejects malformed sizes with a message saying what is expected', () => {
    for (const bad of ['', 'M', '1.5G', '-1M', '12Q', '0x10M', '1 G B']) {
      expect(usageError(() => parseSize(bad))).toMatch(/bad size .*expected a whole number with an optional unit/);
    }
  });

  it('checks --sizes: multiples of 2M, at most 4G, sorted and unique', () => {
    expect(parseSizes('1G,64M,64M')).toEqual([64 * M, G]);
    expect(usageError(() => parseSizes('3M'))).toMatch(/--sizes: 3M is not a non-zero multiple of 2M/);
    expect(usageError(() => parseSizes('0'))).toMatch(/not a non-zero multiple of 2M/);
    expect(usageError(() => parseSizes('8G'))).toMatch(/larger than the maximum 4G/);
    expect(usageError(() => parseSizes(',,'))).toMatch(/--sizes needs at least one value/);
  });

  it('parses lists of names in canonical order, and names bad values and the accepted ones', () => {
    expect(splitList(' a, b ,,a ', '--x')).toEqual(['a', 'b']);
    expect(parseNameList('gmem,anon', BACKINGS, '--backing')).toEqual(['anon', 'gmem']);
    const msg = usageError(() => parseNameList('anon,foo,bar', BACKINGS, '--backing'));
    expect(msg).toBe('--backing: unknown values "foo", "bar"; expected one or more of anon, thp, gmem');
    expect(usageError(() => parseNameList('', BACKINGS, '--backing'))).toMatch(/needs at least one value/);
  });

  it('parses integers in range', () => {
    expect(parseInteger('3', '--reps', 1, 10)).toBe(3);
    expect(usageError(() => parseInteger('0', '--reps', 1, 10))).toBe('--reps: 0 is out of range (expected 1..10)');
    expect(usageError(() => parseInteger('2.5', '--reps', 1, 10))).toMatch(/is not a whole number/);
    expect(usageError(() => parseInteger('x', '--warmup', 0, 10))).toMatch(/--warmup: "x" is not a whole number/);
  });

  it('fills in the defaults and checks every option', () => {
    const o = resolveOptions({});
    expect(o).toEqual({
      sizes: [256 * M],
      backings: ['anon', 'thp', 'gmem'],
      methods: ['demand', 'kernel', 'software', 'auto', 'populate'],
      threads: [1, 2],
      access: ['write'],
      reps: 5,
      warmup: 1,
      reference: true,
      wide: false,
      families: ['first-touch', 'exits'],
      exits: { guests: ['out', 'mmio'], modes: ['sync', 'async', 'worker'], vcpus: [1, 2], iterations: 5000 },
    });
    expect(DEFAULTS.sizes).toBe('256M');
    const r = resolveOptions({ sizes: '4M', method: 'auto,demand', threads: '2,1,2', access: 'read,write', reps: '1', warmup: '0', reference: false, json: 'x.json', chart: 'x.svg' });
    expect(r).toMatchObject({ methods: ['demand', 'auto'], threads: [1, 2], access: ['write', 'read'], reps: 1, warmup: 0, reference: false, json: 'x.json', chart: 'x.svg' });
    expect(usageError(() => resolveOptions({ threads: '0' }))).toMatch(/--threads: 0 is out of range/);
    expect(usageError(() => resolveOptions({ method: 'fast' }))).toMatch(/--method: unknown value "fast"/);
    expect(usageError(() => resolveOptions({ access: 'exec' }))).toMatch(/--access: unknown value "exec"; expected one or more of write, read/);
    expect(usageError(() => resolveOptions({ chart: 'chart.png' }))).toMatch(/--chart: "chart.png" must name an .svg file/);
  });
});

describe('bench plan', () => {
  it('expands variants: floors first, threads for populate/software, the library default for auto', () => {
    const vs = expandVariants(resolveOptions({ sizes: '64M', backing: 'anon,thp,gmem', method: 'demand,kernel,software,auto,populate', threads: '1,2' }), 2);
    expect(vs.map((v) => v.label)).toEqual([
      'anon memset', 'anon demand', 'anon kernel', 'anon software t1', 'anon software t2', 'anon auto (t2)', 'anon populate t1', 'anon populate t2',
      'thp memset', 'thp demand', 'thp kernel', 'thp software t1', 'thp software t2', 'thp auto (t2)', 'thp populate t1', 'thp populate t2',
      'gmem demand', 'gmem kernel', 'gmem software t1', 'gmem software t2', 'gmem auto (t2)', 'gmem populate t1', 'gmem populate t2',
    ]);
    expect(new Set(vs.map((v) => v.id)).size).toBe(vs.length);
    expect(vs[1]).toMatchObject({ pages: 16384, sizeBytes: 64 * M, access: 'write', kind: 'guest' });
    const multi = expandVariants(resolveOptions({ sizes: '4M,8M', backing: 'anon', method: 'demand', access: 'write,read' }), 2);
    expect(multi.map((v) => v.label)).toEqual(['4M anon memset', '4M write anon demand', '4M read anon demand', '8M anon memset', '8M write anon demand', '8M read anon demand']);
  });

  it('maps each variant to the C reference doing the same work', () => {
    const base = { kind: 'guest' as const, backing: 'anon' as const, threads: 2, access: 'read' as const, sizeBytes: 4 * M };
    expect(referenceSpec({ ...base, method: 'demand' })).toMatchObject({ args: ['--size', String(4 * M), '--backing', 'anon', '--method', 'demand', '--access', 'read'] });
    expect(referenceSpec({ ...base, method: 'kernel' })).toMatchObject({ args: expect.arrayContaining(['prefault-kernel']) });
    // The software engine populates writable whatever the guest does; populate follows the access.
    expect(referenceSpec({ ...base, method: 'software' })).toMatchObject({ args: expect.arrayContaining(['--threads', '2', '--populate-access', 'write']) });
    expect(referenceSpec({ ...base, method: 'auto' })).toMatchObject({ args: expect.arrayContaining(['--populate-access', 'write']) });
    expect(referenceSpec({ ...base, method: 'populate' })).toMatchObject({ args: expect.arrayContaining(['--populate-access', 'read']) });
    expect(referenceSpec({ ...base, kind: 'floor', method: 'memset', backing: 'thp' })).toMatchObject({ args: ['--memset', '--size', String(4 * M), '--backing', 'thp'] });
    expect(referenceSpec({ ...base, kind: 'floor', method: 'memset', backing: 'gmem' })).toHaveProperty('unavailable');
  });

  it('summarises repetitions', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(summarize([5, null, 1, 3])).toEqual({ median: 3, min: 1, max: 5, n: 3 });
    expect(summarize([null])).toBeNull();
    const rep = completeRep({ rep: 0, allocNs: 100, fillNs: 300, firstPassNs: 600, secondPassNs: 50, exitsFirstPass: 1, exitsSecondPass: 1, pfTaken: 0, pages_4k: 1, pages_2m: 0, pages_1g: 0, setupNs: 1, slotNs: 1 }, 4);
    expect(rep).toMatchObject({ prepNs: 400, totalNsPerPage: 250, prepNsPerPage: 100, firstPassNsPerPage: 150, secondPassNsPerPage: 12.5 });
    // A row with fewer cells (an unavailable variant) spans the columns after the first.
    expect(formatTable(['a', 'bb', 'c'], [['x', '1', '22'], ['long name', 'unavailable: why']])).toBe('a  bb   c\n-  --  --\nx   1  22\nlong name  unavailable: why');
  });
});

describe('auto against the engine it picked', () => {
  const side = (prep: number, total: number, engine?: string) => ({
    status: 'ok' as const,
    reps: [{ prefault: engine ? { engine } : undefined }],
    summary: { prepNs: { median: prep, min: prep * 0.9, max: prep, n: 1 }, totalNsPerPage: { median: total, min: total, max: total, n: 1 } },
  });
  const variant = (method: string, threads: number, node: unknown) =>
    ({ kind: 'guest', backing: 'thp', method, threads, access: 'write', sizeBytes: 256 * M, label: `thp ${method} t${threads}`, node }) as unknown as VariantResult;

  it('compares auto with the explicit variant of the same engine and threads', () => {
    const goals = autoCostGoals([variant('software', 1, side(30, 200)), variant('software', 2, side(33, 180)), variant('auto', 2, side(40, 190, 'software'))]);
    expect(goals).toEqual([
      expect.objectContaining({ engine: 'software', threads: 2, explicit: 'thp software t2', prepRatio: 1.212, totalRatio: 1.056, met: false }),
    ]);
    expect(autoCostGoals([variant('software', 2, side(33, 180)), variant('auto', 2, side(33.3, 181, 'software'))])[0]).toMatchObject({ met: true });
    // No explicit counterpart measured: nothing to compare.
    expect(autoCostGoals([variant('auto', 2, side(40, 190, 'software'))])).toEqual([]);
  });
});

describe('bench command line', () => {
  it('reports bad values as usage errors (exit 2) before touching KVM', async () => {
    for (const [args, message] of [
      [['--sizes', '3M'], '--sizes: 3M is not a non-zero multiple of 2M'],
      [['--sizes', 'lots'], 'bad size "lots"'],
      [['--backing', 'anon,ssd'], '--backing: unknown value "ssd"'],
      [['--reps', '-1'], '--reps: "-1" is not a whole number'],
      [['--threads', '1,x'], '--threads: "x" is not a whole number'],
    ] as const) {
      const io = capture();
      expect(await main(['bench', ...args], io)).toBe(2);
      expect(io.err()).toContain(`node-kvm bench: ${message}`);
      expect(io.out()).toBe('');
    }
  });

  it('lists its options in --help', async () => {
    const io = capture();
    expect(await main(['bench', '--help'], io)).toBe(0);
    for (const o of ['--sizes', '--backing', '--method', '--threads', '--access', '--reps', '--warmup', '--json', '--chart', '--no-reference']) expect(io.out()).toContain(o);
  });
});

describeKvm('bench run (tiny)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'node-kvm-bench-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a table, the JSON report with every repetition, and an SVG chart', async () => {
    const json = join(dir, 'out', 'bench.json');
    const svg = join(dir, 'out', 'bench.svg');
    const io = capture();
    const code = await main(
      ['bench', '--sizes', '4M', '--backing', 'anon,thp', '--method', 'demand,kernel,auto', '--threads', '1', '--reps', '1', '--warmup', '0', '--family', 'first-touch', '--json', json, '--chart', svg],
      io,
    );
    expect(code, io.err()).toBe(0);
    expect(io.out()).toMatch(/^variant +prep ms +1st ms/m);
    expect(io.out()).toContain('anon auto');
    // Results, not our acceptance goals; the table and the lines fit 100 columns.
    expect(io.out()).not.toMatch(/target|not met/i);
    for (const line of io.out().split('\n')) expect(line.length, line).toBeLessThanOrEqual(100);
    expect(io.out()).toMatch(/auto \(pre-fault\) vs demand faulting/);
    // Without a terminal: one progress line per finished variant on stderr.
    expect(io.err().split('\n').filter((l) => /^bench: \d+\/8 /.test(l))).toHaveLength(8);

    const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    expect(report.schema).toBe('node-kvm-bench/1');
    expect(report.options).toMatchObject({ sizes: [4 * M], reps: 1, warmup: 0 });
    expect(report.machine.uname.release).toEqual(expect.any(String));
    expect(report.machine.node).toBe(process.version);
    expect(report.machine.kvmCapabilities.apiVersion).toBe(12);
    expect(Object.keys(report.machine)).toEqual(expect.arrayContaining(['date', 'cpuModel', 'thp', 'kvmCapabilities']));
    expect(typeof report.durationMs).toBe('number');

    const labels = report.variants.map((v) => v.label);
    expect(labels).toEqual(['anon memset', 'anon demand', 'anon kernel', expect.stringMatching(/^anon auto \(t\d+\)$/), 'thp memset', 'thp demand', 'thp kernel', expect.stringMatching(/^thp auto/)]);
    for (const v of report.variants) {
      if (v.method === 'kernel') {
        // Available on a TDP kernel, not under kvm_pvm: either way the shape says which.
        if (v.node.status === 'unavailable') expect(v.node.reason).toMatch(/KVM_PRE_FAULT_MEMORY/);
        else expect(v.node.status).toBe('ok');
        continue;
      }
      expect(v.node.status, v.id).toBe('ok');
      if (v.node.status !== 'ok') continue;
      expect(v.node.reps).toHaveLength(1);
      expect(v.node.warmup).toEqual([]);
      const rep = v.node.reps[0]!;
      expect(v.pages).toBe(1024);
      expect(rep.prepNs).toBeGreaterThan(0);
      expect(v.node.summary.totalNsPerPage).toEqual({ median: rep.totalNsPerPage, min: rep.totalNsPerPage, max: rep.totalNsPerPage, n: 1 });
      if (v.kind === 'guest') {
        expect(rep.firstPassNs).toBeGreaterThan(0);
        expect(rep.secondPassNs).toBeGreaterThan(0);
        expect(rep.exitsFirstPass).toBeGreaterThan(0);
        expect(rep.pages_4k).toEqual(expect.any(Number));
      } else {
        expect(rep.firstPassNs).toBeNull();
      }
      if (v.method === 'auto') {
        expect(rep.prefault).toMatchObject({ engine: expect.any(String), calls: expect.any(Number), levels: { '4k': expect.any(Number), '2m': expect.any(Number), '1g': 0 } });
        expect(rep.prefault!.bytesMapped).toBe(4 * M);
      }
      // The C reference is built with gcc; without it the side says why.
      if (v.c.status === 'ok') {
        expect(v.c.reps).toHaveLength(1);
        expect(v.ratios).toMatchObject({ total: expect.any(Number), prep: expect.any(Number) });
      } else {
        expect(v.c).toMatchObject({ reason: expect.any(String) });
      }
    }
    expect(report.goals.autoVsDemand.map((g) => [g.backing, g.target])).toEqual([['anon', 4], ['thp', 30]]);
    expect(report.goals.autoVsDemand[0]).toMatchObject({ firstPassSpeedup: expect.any(Number), totalSpeedup: expect.any(Number), met: expect.any(Boolean) });
    expect(report.goals.nodeVsC.target).toBe(1.05);
    expect(report.goals.autoVsExplicit.target).toBe(1.02);

    const chart = readFileSync(svg, 'utf8');
    expect(chart.startsWith('<svg')).toBe(true);
    expect(chart).toContain('anon demand');
    expect(chart).toContain('node-kvm first pass');
    expect(Number(/^<svg[^>]* width="(\d+)"/.exec(chart)![1])).toBeLessThanOrEqual(1000);
    for (const m of chart.matchAll(/font-size="(\d+)"/g)) expect(Number(m[1])).toBeGreaterThanOrEqual(11);
  });

  it('--wide prints every column', async () => {
    const io = capture();
    expect(await main(['bench', '--sizes', '2M', '--backing', 'anon', '--method', 'demand', '--reps', '1', '--warmup', '0', '--no-reference', '--wide'], io), io.err()).toBe(0);
    expect(io.out()).toMatch(/^variant +prep ms +1st ms +2nd ms +total ns\/pg +min-max +1st ns\/pg +exits +pf +VM 4k\/2m +pre-fault +C ns\/pg/m);
  });
});
