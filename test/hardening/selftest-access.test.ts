/**
 * `node-kvm selftest` without access to /dev/kvm used to skip every case and
 * exit 0, turning a CI job green. Failing to open KVM is a failure: TAP
 * "Bail out!" with the reason (and its EACCES hint), exit code 1. Shown by
 * running the selftest command as nobody in a child process; `--list` still
 * lists (exit 0).
 */
import { statSync } from 'node:fs';
import { expect, it } from 'vitest';
import { selftestCommand } from '../../lib/cli/selftest.js';
import type { CliIo } from '../../lib/cli/main.js';
import { describeUnless } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const worldAccessible = (() => {
  try {
    return (statSync('/dev/kvm').mode & 0o006) === 0o006;
  } catch {
    return false;
  }
})();

const runAsNobody = (args: string): string => `
const { selftestCommand } = await import(BUNDLE);
let out = '', err = '';
const io = { stdout: (s) => void (out += s), stderr: (s) => void (err += s), exitCode: 0 };
const code = await selftestCommand([], ${args}, io);
console.log(JSON.stringify({ uid: process.getuid(), code, out, err }));
`;

describeUnless(isRoot && !worldAccessible ? undefined : 'needs root to drop privileges, and a /dev/kvm that nobody cannot open', 'selftest without access to KVM', () => {
  it('as nobody: exit code 1, TAP Bail out! with the EACCES hint, no case reported as skipped', async () => {
    const r = await runNodeChild(runAsNobody('{}'), { spawn: { uid: NOBODY, gid: NOBODY } });
    expect(r.code, r.stderr).toBe(0);
    const o = r.json as { uid: number; code: number; out: string; err: string };
    expect(o.uid).toBe(NOBODY);
    expect(o.code).toBe(1);
    expect(o.out).toMatch(/^TAP version 14\nBail out! \/dev\/kvm is not usable: .*EACCES/m);
    expect(o.out).toMatch(/group that owns it \(usually 'kvm'\)/);
    expect(o.out).not.toMatch(/# SKIP/);
    expect(o.err).toMatch(/EACCES/);
  });

  it('as nobody with --list: lists the cases with the reason they would skip, exit 0', async () => {
    const r = await runNodeChild(runAsNobody('{ list: true }'), { spawn: { uid: NOBODY, gid: NOBODY } });
    const o = r.json as { code: number; out: string };
    expect(o.code).toBe(0);
    expect(o.out).toMatch(/\[skip: \/dev\/kvm is not usable/);
  });
});

it('selftest: an unavailable KVM (injected) bails out before any case runs; unknown options are a usage error', async () => {
  let out = '';
  let err = '';
  const io: CliIo = { stdout: (s) => void (out += s), stderr: (s) => void (err += s), exitCode: 0 };
  let ran = false;
  const load = async () => [{ name: 'x', cases: [{ name: 'y', run: () => void (ran = true) }] }];
  expect(await selftestCommand([], {}, io, load, () => 'no KVM here (ENOENT)')).toBe(1);
  expect(out).toBe('TAP version 14\nBail out! no KVM here (ENOENT)\n');
  expect(err).toMatch(/no KVM here/);
  expect(ran).toBe(false);
  expect(await selftestCommand([], { lisst: true } as never, io, load, () => undefined)).toBe(2);
  expect(err).toMatch(/unknown option "lisst"/);
});
