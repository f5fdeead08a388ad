/**
 * Real kernels for the VMM's tests: Debian's 6.18 bzImage from the lab cache
 * and, when helper-built, a tinyconfig 7.3 bzImage. Each is optional; tests
 * that need one skip with the path they looked for.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

const here = resolve(import.meta.dirname, '../..');

/** Candidate lab caches: $LAB_CACHE, this checkout's, the user cache. */
function caches(): string[] {
  return [process.env.LAB_CACHE, join(here, '.lab-cache'), join(homedir(), '.cache/node-kvm/lab')].filter((p): p is string => !!p);
}

/** Debian's 6.18 bzImage, if a lab cache has it. */
export function debianKernel(): { path: string; bytes: Buffer } | { missing: string } {
  const tried: string[] = [];
  for (const c of caches()) {
    const p = join(c, 'kernels/6.18/vmlinuz');
    tried.push(p);
    if (existsSync(p)) return { path: p, bytes: readFileSync(p) };
  }
  return { missing: `no Debian 6.18 kernel (run npm run lab:setup); looked in ${tried.join(', ')}` };
}

/**
 * A tinyconfig bzImage: the lab's sw-protected 7.x kernel (kernels/sw-protected/vmlinuz)
 * or any file named bzImage under a lab cache's kernels or builds.
 */
export function tinyKernel(): { path: string; bytes: Buffer } | { missing: string } {
  for (const c of caches()) {
    const built = join(c, 'kernels/sw-protected/vmlinuz');
    if (existsSync(built)) return { path: built, bytes: readFileSync(built) };
  }
  for (const c of caches()) {
    for (const sub of ['kernels', 'build', 'builds']) {
      const dir = join(c, sub);
      if (!existsSync(dir)) continue;
      const found = findFile(dir, 'bzImage', 4);
      if (found) return { path: found, bytes: readFileSync(found) };
    }
  }
  return { missing: 'no tinyconfig bzImage built yet (scripts/lab builds it under ~/.cache/node-kvm/lab/kernels/sw-protected)' };
}

function findFile(dir: string, name: string, depth: number): string | undefined {
  if (depth < 0) return undefined;
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const e of entries) if (e.isFile() && e.name === name) return join(dir, e.name);
  for (const e of entries) {
    if (e.isDirectory()) {
      const f = findFile(join(dir, e.name), name, depth - 1);
      if (f) return f;
    }
  }
  return undefined;
}
