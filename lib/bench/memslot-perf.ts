/**
 * The memslot-perf benchmark family: the memslot_perf selftest's six
 * workloads (lib/selftests/memslot_perf-workload.ts) run through node-kvm and
 * through the C reference scripts/bench/memslot-perf.c, which makes the same
 * ioctls and madvise calls on the very same guest (node-kvm's guest kit
 * assembles it; the C program loads the system memslot's image). Each test
 * runs for the same time on each side, in one run, and the report gives the
 * time per iteration of both and their ratio. Verification is off on both
 * sides, as in upstream's default (the selftest port checks the values).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Guest } from '../guest/guest.js';
import type { Kvm } from '../kvm.js';
import { memslotPerfGeometry, type MemslotPerfGeometry, type MemslotPerfTest } from '../selftests/memslot_perf-guest.js';
import { memslotPerfGuestOptions, runMemslotPerf, type MemslotPerfResult } from '../selftests/memslot_perf-workload.js';
import { MEMSLOT_TEST_NAMES, type MemslotPerfOptions } from './memslot-perf-options.js';
import { buildScriptPath } from './reference.js';

/** One side of one test: its measurement, or why there is none. */
export type MemslotPerfSide = ({ status: 'ok' } & MemslotPerfResult) | { status: 'failed' | 'skipped'; reason: string };

/** One test on both sides. */
export interface MemslotPerfRow {
  test: MemslotPerfTest;
  node: MemslotPerfSide;
  c: MemslotPerfSide;
  /** The C side's command line. */
  command?: string[];
  /** Node ns per iteration / C ns per iteration. */
  ratio: number | null;
}

/** The family's part of the report. */
export interface MemslotPerfReport {
  options: MemslotPerfOptions;
  /** Test slots used (not counting slot 0). */
  slots: number;
  reference: { status: 'ok'; binary: string } | { status: 'skipped' | 'unavailable'; reason: string };
  rows: MemslotPerfRow[];
}

function exec(file: string, args: readonly string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 << 20, encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (error && typeof error.code !== 'number' ? error.message : '') });
    });
  });
}

/** Builds (when out of date) scripts/bench/memslot-perf.c with build-reference.sh. */
export async function buildMemslotPerfReference(): Promise<{ ok: true; path: string } | { ok: false; reason: string }> {
  const script = buildScriptPath();
  if (!existsSync(script)) return { ok: false, reason: `${script} not found (the C reference ships with the source tree)` };
  const r = await exec('sh', [script, 'memslot-perf'], 120_000);
  const path = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !path || !existsSync(path)) return { ok: false, reason: `building the memslot-perf reference failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}` };
  return { ok: true, path };
}

/** The system memslot of a test as node-kvm's guest kit builds it (page tables, program, TSS), and its cr3. */
export function memslotPerfImage(kvm: Kvm, g: MemslotPerfGeometry): { image: Uint8Array; cr3: bigint } {
  using vm = kvm.createVm();
  using guest = Guest.create(vm, memslotPerfGuestOptions(g));
  return { image: guest.memory.bytes.slice(), cr3: guest.vcpu.getSregs().cr3 };
}

/** memslot-perf.c's arguments for a test (besides --image). */
export function memslotPerfReferenceArgs(g: MemslotPerfGeometry, cr3: bigint, slots: number, seconds: number): string[] {
  const cli = Object.entries(MEMSLOT_TEST_NAMES).find(([, t]) => t === g.test)![0];
  const hex = (v: bigint): string => `0x${v.toString(16)}`;
  return [
    '--test', cli, '--cr3', hex(cr3), '--mem-size', hex(g.memSize), '--test-size', hex(g.testSize), '--chunk-pages', String(g.chunkPages),
    '--move-dest', hex(g.moveDest), '--slots', String(slots), '--seconds', String(seconds), '--min-iterations', '1', '--verify', '0',
  ];
}

async function cSide(binary: string, kvm: Kvm, g: MemslotPerfGeometry, slots: number, seconds: number, dir: string): Promise<{ side: MemslotPerfSide; command: string[] }> {
  const { image, cr3 } = memslotPerfImage(kvm, g);
  const file = join(dir, `${g.test.replace(/ /g, '-')}.img`);
  writeFileSync(file, image);
  const args = ['--image', file, ...memslotPerfReferenceArgs(g, cr3, slots, seconds)];
  const command = [binary, ...args];
  const r = await exec(binary, args, Math.max(120_000, seconds * 20_000));
  if (r.code !== 0) return { side: { status: 'failed', reason: r.stderr.trim() || `exit ${r.code}` }, command };
  const line = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Partial<MemslotPerfResult>;
  const n = (v: unknown): number => (typeof v === 'number' ? v : NaN);
  const iterations = n(line.iterations);
  const runtimeNs = n(line.runtimeNs);
  return {
    side: { status: 'ok', test: g.test, slots: n(line.slots), pagesPerSlot: n(line.pagesPerSlot), iterations, runtimeNs, nsPerIteration: runtimeNs / iterations, slotSetupNs: n(line.slotSetupNs), mmioExits: n(line.mmioExits) },
    command,
  };
}

async function nodeSide(kvm: Kvm, test: MemslotPerfTest, o: MemslotPerfOptions, slots: number): Promise<MemslotPerfSide> {
  try {
    const r = await runMemslotPerf(kvm, { test, slots, scale: o.scale, seconds: o.seconds, minIterations: 1, verify: false });
    return { status: 'ok', ...r };
  } catch (e) {
    return { status: 'failed', reason: e instanceof Error ? e.message : String(e) };
  }
}

/** Progress steps of the family: one per test and side. */
export function memslotPerfSteps(o: MemslotPerfOptions, withC: boolean): number {
  return o.tests.length * (withC ? 2 : 1);
}

/** Runs every test on both sides (C first on odd tests, so neither side always runs on a warmer machine). */
export async function runMemslotPerfBench(kvm: Kvm, o: MemslotPerfOptions, reference: boolean, step: (n: number, label: string) => void): Promise<MemslotPerfReport> {
  const max = kvm.checkExtension('NR_MEMSLOTS');
  const slots = (o.slots === 'max' ? max : Math.min(o.slots, max)) - 1;
  let ref: MemslotPerfReport['reference'];
  if (!reference) ref = { status: 'skipped', reason: '--no-reference' };
  else {
    const b = await buildMemslotPerfReference();
    ref = b.ok ? { status: 'ok', binary: b.path } : { status: 'unavailable', reason: b.reason };
  }
  const dir = mkdtempSync(join(tmpdir(), 'node-kvm-memslot-perf-'));
  const rows: MemslotPerfRow[] = [];
  try {
    for (const [i, test] of o.tests.entries()) {
      const g = memslotPerfGeometry(test, o.scale);
      let node: MemslotPerfSide | undefined;
      let c: MemslotPerfSide = { status: 'skipped', reason: ref.status === 'ok' ? '' : ref.reason };
      let command: string[] | undefined;
      for (const side of i % 2 === 0 ? ['node', 'c'] : ['c', 'node']) {
        if (side === 'node') {
          node = await nodeSide(kvm, test, o, slots);
          step(1, `memslot-perf ${test} (node-kvm)`);
        } else if (ref.status === 'ok') {
          ({ side: c, command } = await cSide(ref.binary, kvm, g, slots, o.seconds, dir));
          step(1, `memslot-perf ${test} (C)`);
        }
      }
      const ratio = node!.status === 'ok' && c.status === 'ok' ? Math.round((node!.nsPerIteration / c.nsPerIteration) * 100) / 100 : null;
      rows.push({ test, node: node!, c, ...(command ? { command } : {}), ratio });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { options: o, slots, reference: ref, rows };
}

function us(ns: number): string {
  const u = ns / 1000;
  return u < 10 ? u.toFixed(2) : u < 1000 ? u.toFixed(1) : Math.round(u).toLocaleString('en-US');
}

/** The family's lines of the text report. */
export function formatMemslotPerfReport(r: MemslotPerfReport): string[] {
  const headers = ['test', 'Node us/iter', 'C us/iter', 'N/C', 'Node iters', 'C iters', 'Node setup ms', 'C setup ms'];
  const side = (s: MemslotPerfSide, f: (x: MemslotPerfResult) => string): string => (s.status === 'ok' ? f(s) : s.status === 'skipped' ? '-' : 'failed');
  const rows = r.rows.map((row) => [
    row.test,
    side(row.node, (x) => us(x.nsPerIteration)),
    side(row.c, (x) => us(x.nsPerIteration)),
    row.ratio?.toFixed(2) ?? '-',
    side(row.node, (x) => String(x.iterations)),
    side(row.c, (x) => String(x.iterations)),
    side(row.node, (x) => (x.slotSetupNs / 1e6).toFixed(1)),
    side(row.c, (x) => (x.slotSetupNs / 1e6).toFixed(1)),
  ]);
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd();
  const failures = r.rows.flatMap((row) => [
    ...(row.node.status === 'failed' ? [`  ${row.test}, node-kvm: ${row.node.reason}`] : []),
    ...(row.c.status === 'failed' ? [`  ${row.test}, C: ${row.c.reason}`] : []),
  ]);
  return [
    `Memslot operations (memslot_perf_test's workloads: ${r.slots + 1} memslots, 1/${r.options.scale} of upstream's sizes,`,
    `${r.options.seconds} s per test and side, guest running): time per iteration of the host loop, node-kvm and C`,
    ...(r.reference.status === 'ok' ? [] : [`C reference: ${r.reference.reason}`]),
    '',
    line(headers),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
    ...(failures.length ? ['failed:', ...failures] : []),
  ];
}
