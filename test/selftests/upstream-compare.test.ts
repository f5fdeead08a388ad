/**
 * The verdict table of `npm run selftest:upstream` (scripts/selftest-upstream/
 * compare.mjs) with stand-in upstream binaries and a given TAP: agreements,
 * a kernel bug the port marks TODO, an explained difference, cases upstream
 * never reached, and an unexplained disagreement, which fails the run.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'node-kvm-upstream-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fakeBinary(name: string, script: string): void {
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${script}\n`);
  chmodSync(file, 0o755);
}

// Fails in its second case, as upstream's assertion output names it.
fakeBinary('a_test', `echo '==== Test Assertion Failure ===='; echo '     1	0x1: test_two at a_test.c:10'; echo '  two went wrong'; exit 254`);
fakeBinary('b_test', `echo '1..0 # SKIP - Requirement not met: cap'; exit 4`);
fakeBinary('c_test', 'exit 0');

const cases = {
  runs: [
    {
      binary: 'a_test',
      args: [],
      cases: [
        { upstream: 'a: one', fn: 'test_one', port: ['p: one'] },
        { upstream: 'a: two', fn: 'test_two', port: ['p: two'] },
        { upstream: 'a: three', fn: 'test_three', port: ['p: three'] },
      ],
    },
    { binary: 'b_test', args: [], cases: [{ upstream: 'b', fn: 'x', port: ['p: b'], explained: { upstream: 'skip', port: 'pass', note: 'engine: software', why: 'software engine' } }] },
    { binary: 'c_test', args: [], cases: [{ upstream: 'c', fn: 'x', port: ['re:^p: c'] }] },
    // Would fail if it ran: left out as slow unless UPSTREAM_SLOW=1.
    { binary: 'a_test', args: [], slow: 'minutes', cases: [{ upstream: 'slow one', fn: 'test_two', port: ['p: one'] }] },
  ],
  unported: ['d_test'],
  portSuites: [],
  portSettings: [],
};

function compare(tap: string, env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } {
  writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases));
  writeFileSync(join(dir, 'port.tap'), tap);
  const r = spawnSync(process.execPath, ['scripts/selftest-upstream/compare.mjs', '--bin', dir, '--cases', join(dir, 'cases.json'), '--tap', join(dir, 'port.tap')], { encoding: 'utf8', env: { ...process.env, UPSTREAM_SLOW: '', ...env } });
  return { status: r.status, out: r.stdout + r.stderr };
}

const GOOD = [
  'TAP version 14',
  '1..5',
  'ok 1 - p: one',
  'not ok 2 - p: two # TODO the kernel accepts it (kernels: 6.18, here: x)',
  'ok 3 - p: three',
  'ok 4 - p: b [engine: software]',
  'ok 5 - p: c1',
  'ok 6 - p: c2 # SKIP not here',
].join('\n');

describe('selftest:upstream verdict table', () => {
  it('agrees, counts the TODO as agreement with an upstream failure, explains the known difference, and passes', () => {
    const { status, out } = compare(GOOD);
    expect(out).toContain('| a: one | pass | p: one | pass | agree |');
    expect(out).toMatch(/\| a: two \| fail: two went wrong \| p: two \| todo \| agree: known bug\/difference \(TODO: the kernel accepts it/);
    expect(out).toContain('| a: three | not run | p: three | pass | not comparable: upstream stopped earlier |');
    expect(out).toContain('| b | skip | p: b [engine: software] | pass | explained: software engine |');
    expect(out).toMatch(/\| c \| pass \| re:\^p: c \(2 cases\) \| pass \| agree \|/);
    expect(out).toContain('| d_test | not run | no port yet | - | no port |');
    expect(out).toContain('| slow one | not run | p: one | pass | not run here: slow: minutes (UPSTREAM_SLOW=1 runs it) |');
    expect(out).toContain('1 slow runs left out');
    expect(out).toContain('0 unexplained disagreements');
    expect(status).toBe(0);
  });

  it('fails on a disagreement the table does not explain (an explanation needs its note)', () => {
    const { status, out } = compare(GOOD.replace('ok 4 - p: b [engine: software]', 'ok 4 - p: b [engine: kernel]').replace('ok 1 - p: one', 'not ok 1 - p: one'));
    expect(out).toContain('| a: one | pass | p: one | fail | DISAGREE: upstream pass, port fail |');
    expect(out).toContain('| b | skip | p: b [engine: kernel] | pass | DISAGREE: upstream skip (SKIP - Requirement not met: cap), port pass |');
    expect(out).toContain('2 unexplained disagreements');
    expect(status).toBe(1);
  });

  it('runs a slow run with UPSTREAM_SLOW=1 (and its failure then disagrees)', () => {
    const { status, out } = compare(GOOD, { UPSTREAM_SLOW: '1' });
    expect(out).toContain('| slow one | fail: two went wrong | p: one | pass | DISAGREE: upstream fail (two went wrong), port pass |');
    expect(status).toBe(1);
  });

  it('a port case missing from the TAP is a disagreement', () => {
    const { status, out } = compare(GOOD.replace('ok 3 - p: three\n', ''));
    expect(out).toContain('| a: three | not run | p: three | missing | port case not found in the TAP |');
    expect(status).toBe(1);
  });
});
