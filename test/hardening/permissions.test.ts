/**
 * Permissions: opening /dev/kvm without access gives KvmError 'EACCES' whose
 * message says how to get access (the kvm group, a udev rule). Shown by
 * dropping privileges: a child process runs as nobody (uid/gid 65534; Node
 * also drops the supplementary groups) and loads the library from the
 * bundle, which lives in a world-readable folder.
 */
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Kvm } from '../../lib/index.js';
import { describeKvm, describeUnless, expectKvmError } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

/** Child script: Kvm.open(path) as the child's user; prints the error's shape. */
const openAs = (path: string): string => `
const { Kvm, KvmError } = await import(BUNDLE);
try {
  Kvm.open({ path: ${JSON.stringify(path)} }).close();
  console.log(JSON.stringify({ opened: true, uid: process.getuid() }));
} catch (e) {
  console.log(JSON.stringify({ uid: process.getuid(), groups: process.getgroups(), isKvmError: e instanceof KvmError, name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, path: e.args?.path, message: e.message }));
}
`;

interface OpenOutcome {
  opened?: boolean;
  uid: number;
  groups: number[];
  isKvmError: boolean;
  code: string;
  errno: number;
  syscall: string;
  path: string;
  message: string;
}

function expectAccessHint(o: OpenOutcome, path: string): void {
  expect(o).toMatchObject({ uid: NOBODY, isKvmError: true, code: 'EACCES', errno: 13, syscall: 'open', path });
  expect(o.groups).not.toContain(0);
  expect(o.message).toContain(path);
  expect(o.message).toMatch(/group that owns it \(usually 'kvm'\)/);
  expect(o.message).toMatch(/udev rule/);
  expect(o.message).toContain('GROUP="kvm", MODE="0660"');
}

describeUnless(isRoot ? undefined : 'dropping privileges needs root', 'opening /dev/kvm without access', () => {
  it('as nobody: /dev/kvm gives KvmError EACCES with the kvm-group / udev hint', async (ctx) => {
    const mode = statSync('/dev/kvm').mode;
    if ((mode & 0o006) === 0o006) ctx.skip(); // world-accessible /dev/kvm: nobody can open it here
    const r = await runNodeChild(openAs('/dev/kvm'), { spawn: { uid: NOBODY, gid: NOBODY } });
    expect(r.code, r.stderr).toBe(0);
    const o = r.json as OpenOutcome;
    console.log(`as nobody: ${o.code}: ${o.message}`);
    expectAccessHint(o, '/dev/kvm');
  });

  it('as nobody: any root-only device path gives the same error and hint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'node-kvm-perm-'));
    try {
      chmodSync(dir, 0o755);
      const path = join(dir, 'kvm');
      writeFileSync(path, '');
      chmodSync(path, 0o600);
      const r = await runNodeChild(openAs(path), { spawn: { uid: NOBODY, gid: NOBODY } });
      expect(r.code, r.stderr).toBe(0);
      expectAccessHint(r.json as OpenOutcome, path);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeKvm('other open failures carry a hint too', () => {
  it('a missing device: ENOENT says to load the KVM module', () => {
    const e = expectKvmError(() => Kvm.open({ path: '/nonexistent/kvm' }), 'ENOENT', 2);
    expect(e.message).toMatch(/does not exist: load the KVM module/);
    expect(e.syscall).toBe('open');
  });

  it('a path that is not a KVM device: a KvmError (ENOTTY from KVM_GET_API_VERSION), no hint needed', () => {
    const e = expectKvmError(() => Kvm.open({ path: '/dev/null' }), 'ENOTTY');
    expect(e.ioctl).toBe('KVM_GET_API_VERSION');
  });
});
