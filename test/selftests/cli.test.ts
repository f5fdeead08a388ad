/**
 * The CLI and the selftest plumbing with fake suites: TAP shape for pass,
 * fail and skip, exit codes, --list/--grep/--set, caps, the registry, and the
 * assertion and settings helpers.
 */
import { describe, expect, it } from 'vitest';
import { main, type CliIo } from '../../lib/cli/main.js';
import { selftestCommand } from '../../lib/cli/selftest.js';
import { TapWriter, yamlLines } from '../../lib/cli/tap.js';
import { KvmError } from '../../lib/errors.js';
import { loadSuite, loadSuites, suiteNames, type SelftestSuite } from '../../lib/selftests/index.js';
import { check, checkEqual, expectKvmError, expectOutcome, outcomeOf, SelftestFailure } from '../../lib/selftests/assert.js';
import { parseSize } from '../../lib/selftests/settings.js';
import { expectSigbus, touchInChild } from '../../lib/selftests/child.js';
import { closeSync, ftruncateSync } from 'node:fs';
import { needs } from '../../lib/selftests/host.js';
import { native } from '../../lib/native.js';
import { kvmUnavailable } from '../support/kvm.js';
import { parseTap } from './tap-parse.js';

function capture(): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return { stdout: (s) => void (out += s), stderr: (s) => void (err += s), exitCode: 0, out: () => out, err: () => err };
}

/** Skips a fake case when there is no KVM (the runner skips everything then). */
const fake: SelftestSuite = {
  name: 'fake',
  description: 'a suite with one of each outcome',
  cases: [
    { name: 'passes # with a hash', run: (ctx) => ctx.log(`setting x=${ctx.settings.get('fake.x') ?? 'unset'}`) },
    { name: 'fails', run: () => checkEqual(1n, 2n, 'one vs two') },
    { name: 'skips', skip: () => 'not on this host', run: () => {} },
    { name: 'throws a KvmError', run: () => { throw new KvmError('boom', { code: 'EINVAL', ioctl: 'KVM_X', args: { gpa: 0x1000n, list: [1, 2] } }); } },
  ],
};
const loadFake = async (names: readonly string[]): Promise<SelftestSuite[]> => {
  if (names.some((n) => n !== 'fake')) throw new KvmError('unknown selftest', { code: 'ENOENT' });
  return [fake];
};

describe('TapWriter', () => {
  it('writes version, plan, points, escaped descriptions, skips and YAML', () => {
    const lines: string[] = [];
    const tap = new TapWriter((l) => lines.push(l));
    tap.version(13);
    tap.plan(3);
    tap.comment('two\nlines');
    tap.testPoint({ ok: true, description: 'a # b \\ c' });
    tap.testPoint({ ok: true, description: 'skipped', skip: 'no # device\nhere' });
    tap.testPoint({ ok: false, description: 'bad', diagnostics: { message: 'x: "y"', n: 3, big: 255n, stack: 'at a\nat b', nested: { k: true }, arr: ['p', { q: 1 }], gone: undefined } });
    const text = lines.join('');
    expect(text).toContain('ok 1 - a \\# b \\\\ c\n');
    expect(text).toContain('ok 2 - skipped # SKIP no \\# device here\n');
    expect(text).toContain('# two\n# lines\n');
    expect(text).toContain('  message: "x: \\"y\\""\n  n: 3\n  big: "0xff"\n  stack: |-\n    at a\n    at b\n  nested:\n    k: true\n  arr:\n    - p\n    - "{\\"q\\":1}"\n  ...\n');
    expect(text).not.toContain('gone');
    const parsed = parseTap(text);
    expect(parsed.version).toBe(13);
    expect(parsed.points.map((p) => [p.ok, p.description, p.skip])).toEqual([
      [true, 'a # b \\ c', undefined],
      [true, 'skipped', 'no # device here'],
      [false, 'bad', undefined],
    ]);
  });

  it('renders YAML scalars that would be ambiguous as quoted strings', () => {
    expect(yamlLines({ a: 'yes', b: 'plain text', c: '1.5', d: '', e: [] }, '')).toEqual(['a: "yes"', 'b: plain text', 'c: "1.5"', 'd: ""', 'e: []']);
  });
});

describe('selftest command (fake suites)', () => {
  it('prints TAP for pass, fail and skip; logs as comments; exit code 1', async () => {
    const io = capture();
    const code = await selftestCommand(['fake'], { set: ['fake.x=42'] }, io, loadFake);
    const tap = parseTap(io.out());
    expect(tap.plan).toBe(4);
    if (kvmUnavailable) {
      expect(tap.points.every((p) => p.skip !== undefined)).toBe(true);
      expect(code).toBe(0);
      return;
    }
    expect(code).toBe(1);
    expect(tap.points.map((p) => [p.ok, p.description, p.skip])).toEqual([
      [true, 'fake: passes # with a hash', undefined],
      [false, 'fake: fails', undefined],
      [true, 'fake: skips', 'not on this host'],
      [false, 'fake: throws a KvmError', undefined],
    ]);
    expect(tap.comments).toContain('passes # with a hash: setting x=42');
    expect(tap.points[1]!.yaml).toEqual(expect.arrayContaining(['message: "one vs two: expected 0x2, got 0x1"', 'name: SelftestFailure', 'code: ESELFTEST', 'args:', '  expected: "0x2"', '  actual: "0x1"']));
    expect(tap.points[3]!.yaml).toEqual(expect.arrayContaining(['code: EINVAL', 'errno: 22', 'ioctl: KVM_X', '  gpa: "0x1000"']));
    expect(tap.comments).toEqual(expect.arrayContaining(['tests 4', 'pass 1', 'fail 2', 'skipped 1']));
  });

  it('a known kernel bug is `not ok # TODO` with the kernels, does not fail the run, and is counted; notes go on the line', async () => {
    const todoSuite: SelftestSuite = {
      name: 'fake',
      cases: [
        { name: 'kernel bug', run: (ctx) => ctx.todo('accepts an overflowing binding', ['6.18']) },
        { name: 'noted', run: (ctx) => (ctx.note('engine: software'), ctx.note('engine: software')) },
        { name: 'bug and failure', run: (ctx) => (ctx.todo('x', ['6.1']), checkEqual(1, 2, 'one vs two')) },
      ],
    };
    const io = capture();
    const code = await selftestCommand([], {}, io, async () => [todoSuite]);
    const tap = parseTap(io.out());
    if (kvmUnavailable) return;
    expect(tap.points.map((p) => [p.ok, p.description, p.todo?.replace(/here: .*\)$/, 'here)'), p.notes])).toEqual([
      [false, 'fake: kernel bug', 'accepts an overflowing binding (kernels: 6.18, here)', []],
      [true, 'fake: noted', undefined, ['engine: software']],
      [false, 'fake: bug and failure', undefined, []],
    ]);
    expect(io.out()).toMatch(/^not ok 1 - fake: kernel bug # TODO accepts an overflowing binding \(kernels: 6\.18, here: .+\)$/m);
    expect(tap.points[2]!.yaml).toEqual(expect.arrayContaining([expect.stringMatching(/^ {2}- "?x \(kernels: 6\.1, here: /)]));
    expect(tap.comments).toEqual(expect.arrayContaining(['pass 1', 'fail 1', 'todo 1 (known kernel bugs and host differences: not ok, do not fail the run)']));
    expect(code).toBe(1);
    const onlyTodo = capture();
    expect(await selftestCommand([], { grep: 'kernel bug$' }, onlyTodo, async () => [todoSuite])).toBe(0);
  });

  it('--grep selects cases; nothing selected is a valid empty plan', async () => {
    const io = capture();
    expect(await selftestCommand([], { grep: 'skip' }, io, loadFake)).toBe(0);
    expect(parseTap(io.out()).points.map((p) => p.description)).toEqual(['fake: skips']);
    const none = capture();
    expect(await selftestCommand([], { grep: 'nothing-matches' }, none, loadFake)).toBe(0);
    expect(none.out()).toContain('1..0 # SKIP no cases selected\n');
    expect(parseTap(none.out()).plan).toBe(0);
  });

  it('--list prints suites and cases with skip reasons and runs nothing', async () => {
    const io = capture();
    expect(await selftestCommand([], { list: true, tapVersion: '13' }, io, loadFake)).toBe(0);
    expect(io.out().split('\n')).toEqual(expect.arrayContaining(['fake - a suite with one of each outcome', expect.stringMatching(/^ {2}skips {2}\[skip: .+\]$/)]));
    expect(io.out()).not.toContain('TAP version');
  });

  it('usage errors exit 2 with a message on stderr', async () => {
    for (const [names, options] of [
      [['nope'], {}],
      [[], { set: ['novalue'] }],
      [[], { grep: '(' }],
      [[], { tapVersion: '12' }],
    ] as const) {
      const io = capture();
      expect(await selftestCommand(names, options as never, io, loadFake)).toBe(2);
      expect(io.err()).toMatch(/^node-kvm selftest: /);
      expect(io.out()).toBe('');
    }
  });
});

describe('node-kvm program', () => {
  it('--help exits 0; unknown commands and options exit 2', async () => {
    const help = capture();
    expect(await main(['--help'], help)).toBe(0);
    expect(help.out()).toMatch(/Usage: node-kvm .*\n[\s\S]*caps[\s\S]*selftest/);
    const bad = capture();
    expect(await main(['frobnicate'], bad)).toBe(2);
    expect(bad.err()).toMatch(/unknown command/);
    expect(await main(['selftest', '--bogus'], capture())).toBe(2);
    expect(await main(['selftest', 'no_such_suite'], capture())).toBe(2);
  });

  it('selftest --list names every registered suite', async () => {
    const io = capture();
    expect(await main(['selftest', '--list'], io)).toBe(0);
    for (const name of suiteNames()) expect(io.out()).toMatch(new RegExp(`^${name} - `, 'm'));
  });

  it.skipIf(kvmUnavailable)('caps --json prints Kvm.capabilities(); caps prints aligned text', async () => {
    const json = capture();
    expect(await main(['caps', '--json'], json)).toBe(0);
    const caps = JSON.parse(json.out()) as Record<string, unknown>;
    expect(caps).toMatchObject({ apiVersion: 12, userMemory: true });
    expect(typeof caps.nrMemslots).toBe('number');
    const text = capture();
    expect(await main(['caps'], text)).toBe(0);
    expect(text.out()).toMatch(/^apiVersion +12$/m);
    expect(text.out()).toMatch(/^userMemory +yes$/m);
  });

  it('caps on a missing device exits 1 with the reason', async () => {
    const io = capture();
    expect(await main(['caps', '--device', '/nonexistent/kvm'], io)).toBe(1);
    expect(io.err()).toMatch(/^node-kvm caps: .*ENOENT/);
  });
});

describe('selftest registry and helpers', () => {
  it('loads every suite under its own name, with unique case names', async () => {
    const suites = await loadSuites();
    expect(suites.map((s) => s.name)).toEqual(suiteNames());
    for (const s of suites) {
      const names = s.cases.map((c) => c.name);
      expect(new Set(names).size, s.name).toBe(names.length);
      expect(names.length).toBeGreaterThan(0);
    }
    await expect(loadSuite('nope')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(loadSuite('toString')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('assertions throw SelftestFailure with expected and actual', () => {
    expect(() => check(false, 'nope')).toThrow(SelftestFailure);
    expect(() => checkEqual(3, 4, 'n')).toThrow('n: expected 4, got 3');
    expect(outcomeOf(() => 1)).toBe('OK');
    expect(outcomeOf(() => { throw Object.assign(new Error('x'), { errno: -29 }); })).toBe('ESPIPE');
    expect(outcomeOf(() => { throw new KvmError('x', { code: 'ECLOSED' }); })).toBe('ECLOSED');
    expect(() => outcomeOf(() => { throw new TypeError('bug'); })).toThrow(TypeError);
    expect(expectOutcome(() => { throw Object.assign(new Error('x'), { errno: 22 }); }, ['OK', 'EINVAL'], 'w')).toBe('EINVAL');
    expect(() => expectOutcome(() => 0, 'EINVAL', 'w')).toThrow('w: expected EINVAL, got OK');
    expect(() => expectKvmError(() => 0, 'EINVAL', 'w')).toThrow('but the call succeeded');
    expect(() => expectKvmError(() => { throw new Error('plain'); }, 'EINVAL', 'w')).toThrow('got Error: plain');
  });

  it('parses sizes for --set', () => {
    expect(parseSize('16M')).toBe(16n << 20n);
    expect(parseSize('1g')).toBe(1n << 30n);
    expect(parseSize('2MiB')).toBe(2n << 20n);
    expect(parseSize('0x1000')).toBe(4096n);
    expect(parseSize('4096')).toBe(4096n);
    expect(parseSize('lots')).toBeUndefined();
  });

  it('skip checks never throw and name what is missing', () => {
    for (const check of [needs.kvm, needs.guestMemfd, needs.privateMemory, needs.readonlyMemory, needs.vmType('tdx'), needs.guestMemfdFlags(['mmap'])]) {
      const r = check();
      expect(r === undefined || typeof r === 'string').toBe(true);
    }
    if (!kvmUnavailable) expect(needs.vmType('default')()).toBeUndefined();
    expect(typeof native.pageSize).toBe('number');
  });
});

describe('SIGBUS child helper', () => {
  it('sees a child die of SIGBUS past the end of a memfd, and reports one that survives', () => {
    const fd = native.memfdCreate('selftest-child');
    try {
      ftruncateSync(fd, 4096);
      const past = touchInChild({ fd, length: 8192n, checkBytes: 4096, checkValue: 0, touchOffset: 4096 });
      expectSigbus(past, 'inside ok', 'past the end');
      const inside = touchInChild({ fd, length: 4096n, touchOffset: 100 });
      expect(inside).toMatchObject({ status: 0, signal: null });
      expect(() => expectSigbus(inside, 'inside ok', 'inside')).toThrow(/inside: expected the child to print 'inside ok' and die of SIGBUS; it ended with status 0 after printing \["mapped","inside ok","survived: read 0"\]/);
    } finally {
      closeSync(fd);
    }
  });
});
