/**
 * The C reference (scripts/bench/reference.c): built with
 * scripts/bench/build-reference.sh (gcc, cached in the user's cache directory:
 * ~/.cache/node-kvm/bench by default), run as
 * a child process per variant, its JSON lines turned into RepMetrics.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { completeRep, type RepMetrics } from './metrics.js';
import type { ReferenceSpec } from './variants.js';

/** The built reference program, or why there is none. */
export type ReferenceBinary = { ok: true; path: string; buildMs: number } | { ok: false; reason: string };

/** A reference run's repetitions, or why the method is unavailable. */
export type ReferenceOutcome = { ok: true; reps: RepMetrics[]; command: string[] } | { ok: false; unavailable: string; command: string[] };

/** scripts/bench/build-reference.sh, from lib/bench (sources) or dist/bench (build): both two levels below the root. */
export function buildScriptPath(): string {
  return fileURLToPath(new URL('../../scripts/bench/build-reference.sh', import.meta.url));
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 64 << 20, encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (error && typeof error.code !== 'number' ? error.message : '') });
    });
  });
}

/** Builds (when out of date) and locates the reference program. */
export async function buildReference(): Promise<ReferenceBinary> {
  const script = buildScriptPath();
  if (!existsSync(script)) return { ok: false, reason: `${script} not found (the C reference ships with the source tree, not the npm package)` };
  const t0 = Date.now();
  const r = await run('sh', [script], 120_000);
  const path = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !path || !existsSync(path)) {
    return { ok: false, reason: `building the C reference failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}` };
  }
  return { ok: true, path, buildMs: Date.now() - t0 };
}

interface ReferenceLine {
  error?: string;
  method?: string;
  rep?: number;
  pages?: number;
  prepNs?: number;
  allocNs?: number;
  fillNs?: number;
  firstPassNs?: number;
  secondPassNs?: number;
  exitsFirstPass?: number | null;
  exitsSecondPass?: number | null;
  pfTaken?: number | null;
  pages_4k?: number | null;
  pages_2m?: number | null;
  pages_1g?: number | null;
  setupNs?: number;
  slotNs?: number;
}

const orNull = (v: number | null | undefined): number | null => (typeof v === 'number' ? v : null);

/** Converts one JSON line of the reference into RepMetrics. */
export function referenceRep(line: ReferenceLine, pages: number): RepMetrics {
  if (typeof line.prepNs !== 'number' || typeof line.rep !== 'number') throw new Error(`C reference line without prepNs/rep: ${JSON.stringify(line)}`);
  const floor = line.method === 'memset';
  return completeRep(
    {
      rep: line.rep,
      // A memset floor reports only its total (mmap + madvise + memset).
      allocNs: floor ? line.prepNs : (line.allocNs ?? 0),
      fillNs: floor ? 0 : (line.fillNs ?? line.prepNs - (line.allocNs ?? 0)),
      firstPassNs: orNull(line.firstPassNs),
      secondPassNs: orNull(line.secondPassNs),
      exitsFirstPass: orNull(line.exitsFirstPass),
      exitsSecondPass: orNull(line.exitsSecondPass),
      pfTaken: orNull(line.pfTaken),
      pages_4k: orNull(line.pages_4k),
      pages_2m: orNull(line.pages_2m),
      pages_1g: orNull(line.pages_1g),
      setupNs: orNull(line.setupNs),
      slotNs: orNull(line.slotNs),
    },
    line.pages ?? pages,
  );
}

/** Runs the reference for one spec: `warmup` unrecorded repetitions, then `reps`. */
export async function runReference(binary: string, spec: ReferenceSpec, pages: number, reps: number, warmup: number): Promise<ReferenceOutcome> {
  const args = [...spec.args, '--reps', String(reps), '--warmup', String(warmup)];
  const command = [binary, ...args];
  const r = await run(binary, args, 30 * 60_000);
  if (r.code !== 0) throw new Error(`C reference failed (${command.join(' ')}): ${r.stderr.trim() || `exit ${r.code}`}`);
  const lines = r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as ReferenceLine);
  const error = lines.find((l) => l.error !== undefined);
  if (error) {
    const what = spec.args.includes('prefault-kernel') ? 'KVM_PRE_FAULT_MEMORY' : 'the C reference';
    return { ok: false, unavailable: `${what} failed with ${error.error}`, command };
  }
  return { ok: true, reps: lines.map((l) => referenceRep(l, pages)), command };
}
