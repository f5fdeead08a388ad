/**
 * The README's example runs as written: the ```js block under "## Example",
 * executed by node as an ES module that imports the package by name.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect, it } from 'vitest';
import { describeKvm } from '../support/kvm.js';

const root = resolve(import.meta.dirname, '../..');

function exampleCode(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Example'));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('README has no ```js block under ## Example');
  return m[1]!;
}

describeKvm('README', () => {
  it('the example runs as written', () => {
    if (!existsSync(join(root, 'dist/index.js'))) execFileSync('npm', ['run', 'build:ts'], { cwd: root, stdio: 'pipe' });
    mkdirSync(join(root, '.cache'), { recursive: true });
    const file = join(root, '.cache/readme-example.mjs');
    writeFileSync(file, exampleCode());
    const out = execFileSync(process.execPath, [file], { cwd: root, encoding: 'utf8' });
    expect(out).toMatch(/KVM API 12/);
    expect(out).toMatch(/engine: 16777216 bytes/);
    expect(out).toMatch(/guest done; vcpu exits so far: \d+/);
  });
});
