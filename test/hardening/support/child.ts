/**
 * Running node-kvm outside vitest's TypeScript pipeline: child processes
 * (leak counting with --expose-gc, dropped privileges) and worker threads load
 * plain JavaScript. childBundle() bundles child-entry.ts (the public API plus
 * the addon) into one ES module under node_modules/.cache, where the
 * `node-gyp-build` require of lib/native.ts still resolves; childEnv() points
 * node-gyp-build at the addon this process loaded (NODE_KVM_PREBUILD), so a
 * child uses the very same build, the sanitized one under test:asan included.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The repository root (test/hardening/support/ is three levels below it). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Where the bundle lives: a package root of its own, inside the repo's node_modules. */
export const BUNDLE_ROOT = join(REPO_ROOT, 'node_modules', '.cache', 'node-kvm-hardening');

let bundlePromise: Promise<string> | undefined;

/**
 * Builds (once per process) and returns the absolute path of the bundle, an
 * ES module exporting everything lib/index.ts does plus `native` and
 * `addonPath`. Written atomically, so test files building it concurrently
 * never see a half-written file.
 */
export function childBundle(): Promise<string> {
  bundlePromise ??= buildBundle();
  return bundlePromise;
}

async function buildBundle(): Promise<string> {
  const out = join(BUNDLE_ROOT, 'lib', 'index.mjs');
  mkdirSync(dirname(out), { recursive: true });
  // node-gyp-build reads the package name from here to honour NODE_KVM_PREBUILD.
  atomicWrite(join(BUNDLE_ROOT, 'package.json'), JSON.stringify({ name: 'node-kvm', private: true, type: 'module' }));
  const input = join(REPO_ROOT, 'test', 'hardening', 'support', 'child-entry.ts');
  let code: string;
  try {
    // rolldown comes with vite (vitest's bundler); it bundles TypeScript in ~0.1 s.
    const { rolldown } = (await import('rolldown')) as typeof import('rolldown');
    const bundle = await rolldown({ input, platform: 'node', transform: { target: 'node20' }, logLevel: 'silent' });
    // One file: dynamic imports (the selftest suites) are inlined.
    const { output } = await bundle.generate({ format: 'esm', codeSplitting: false });
    await bundle.close();
    code = output[0].code;
  } catch (e) {
    throw new Error(`could not bundle ${input} for child processes: ${(e as Error).message}`, { cause: e });
  }
  atomicWrite(out, code);
  return out;
}

function atomicWrite(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, file);
}

/** Environment for children: same addon as this process. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, NODE_KVM_PREBUILD: process.env.NODE_KVM_PREBUILD ?? REPO_ROOT, ...extra };
}

/** Result of runNodeChild(). */
export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line that parses as JSON, if any. */
  json: unknown;
  ms: number;
}

/**
 * Runs `node [nodeArgs] --input-type=module -e <source>` where the source may
 * use `BUNDLE` (the bundle's file URL, as a string literal) to import the
 * library. Resolves when the child exits; kills it after `timeoutMs`.
 */
export async function runNodeChild(
  source: string,
  options: { nodeArgs?: string[]; timeoutMs?: number; spawn?: SpawnOptions; env?: Record<string, string> } = {},
): Promise<ChildResult> {
  const bundle = await childBundle();
  const script = `const BUNDLE = ${JSON.stringify(pathToFileURL(bundle).href)};\n${source}`;
  const started = Date.now();
  return await new Promise<ChildResult>((resolve, reject) => {
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--input-type=module', '-e', script], {
      cwd: '/',
      env: childEnv(options.env),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...options.spawn,
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let json: unknown;
      for (const line of stdout.trim().split('\n').reverse()) {
        try {
          json = JSON.parse(line, (_k, v: unknown) => (typeof v === 'string' && /^-?\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v));
          break;
        } catch {
          // not JSON; keep looking
        }
      }
      resolve({ code, signal, stdout, stderr, json, ms: Date.now() - started });
    });
  });
}

/** Number of open file descriptors of this process. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** What /proc/self/fd/<fd> points to, or undefined when the fd is closed. */
export function fdTarget(fd: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/** Resident set size of this process in KiB. */
export function rssKiB(): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
}

/** The file URL of a worker script next to this file (plain .mjs). */
export function workerUrl(name: string): URL {
  return new URL(`./workers/${name}`, import.meta.url);
}

/** A worker thread on one of the .mjs scripts in ./workers, with its messages queued. */
export interface TestWorker {
  worker: import('node:worker_threads').Worker;
  /** The next message (in order) for which `pred` holds; earlier ones are dropped. */
  next<T = Record<string, unknown>>(pred?: (m: T) => boolean): Promise<T>;
  /** Resolves with the exit code. */
  exited: Promise<number>;
}

/** Starts test/hardening/support/workers/<name> with `workerData`. */
export async function startWorker(name: string, workerData: unknown): Promise<TestWorker> {
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker(workerUrl(name), { workerData, env: childEnv() });
  const queue: unknown[] = [];
  const waiters: { pred: (m: unknown) => boolean; resolve: (m: unknown) => void; reject: (e: unknown) => void }[] = [];
  let failure: unknown;
  const pump = (): void => {
    for (let i = 0; i < waiters.length; i++) {
      const w = waiters[i]!;
      const at = queue.findIndex((m) => w.pred(m));
      if (at >= 0) {
        const [m] = queue.splice(0, at + 1).slice(-1);
        waiters.splice(i--, 1);
        w.resolve(m);
      } else if (failure !== undefined) {
        waiters.splice(i--, 1);
        w.reject(failure);
      }
    }
  };
  worker.on('message', (m) => {
    queue.push(m);
    pump();
  });
  worker.on('error', (e) => {
    failure = e;
    pump();
  });
  const exited = new Promise<number>((resolve) =>
    worker.on('exit', (code) => {
      failure ??= new Error(`worker ${name} exited with code ${code}`);
      pump();
      resolve(code);
    }),
  );
  return {
    worker,
    exited,
    next: <T>(pred: (m: T) => boolean = () => true) =>
      new Promise<T>((resolve, reject) => {
        waiters.push({ pred: pred as (m: unknown) => boolean, resolve: resolve as (m: unknown) => void, reject });
        pump();
      }),
  };
}
