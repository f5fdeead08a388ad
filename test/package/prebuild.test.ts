/**
 * The package as users install it: compiled JS plus a prebuild, no compiler
 * output. Loads through ESM import and through require() (Node >= 20.19).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKvm } from '../support/kvm.js';

const root = resolve(import.meta.dirname, '../..');
let dir = '';

function npm(script: string): void {
  execFileSync('npm', ['run', script], { cwd: root, stdio: 'pipe' });
}

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describeKvm('package loads from its prebuild alone', () => {
  beforeAll(() => {
    if (!existsSync(join(root, 'prebuilds/linux-x64'))) npm('prebuild');
    if (!existsSync(join(root, 'dist/index.js'))) npm('build:ts');
    dir = mkdtempSync(join(tmpdir(), 'node-kvm-prebuild-'));
    const pkg = join(dir, 'node_modules/node-kvm');
    mkdirSync(pkg, { recursive: true });
    for (const f of ['package.json', 'dist', 'prebuilds']) cpSync(join(root, f), join(pkg, f), { recursive: true });
    mkdirSync(join(pkg, 'node_modules'));
    symlinkSync(join(root, 'node_modules/node-gyp-build'), join(pkg, 'node_modules/node-gyp-build'));
  }, 300_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('has no build/ directory to fall back on', () => {
    expect(existsSync(join(dir, 'node_modules/node-kvm/build'))).toBe(false);
  });

  it('imports as ESM and opens /dev/kvm through the prebuild', () => {
    const out = node(['--input-type=module', '-e', "import { Kvm, addonPath } from 'node-kvm'; const k = Kvm.open(); console.log(JSON.stringify({ path: addonPath(), api: k.apiVersion })); k.close()"]);
    const r = JSON.parse(out) as { path: string; api: number };
    expect(r.api).toBe(12);
    expect(r.path).toContain('/prebuilds/linux-x64/');
  });

  it('loads with require() (CommonJS callers on Node >= 20.19)', () => {
    const out = node(['--no-warnings', '-e', "const { Kvm } = require('node-kvm'); const k = Kvm.open(); console.log(k.apiVersion); k.close()"]);
    expect(out.trim()).toBe('12');
  });
});

describeKvm('cmake-js build', () => {
  const addon = join(root, 'build-cmake/Release/node_kvm.node');
  it.skipIf(!existsSync(addon))(`loads the addon built by npm run build:cmake${existsSync(addon) ? '' : ' [skipped: run npm run build:cmake first]'}`, () => {
    const out = execFileSync(process.execPath, ['-e', `const n = require(${JSON.stringify(addon)}); const fd = n.open('/dev/kvm'); console.log(n.getApiVersion(fd)); n.close(fd)`], { encoding: 'utf8' });
    expect(out.trim()).toBe('12');
  });
});
