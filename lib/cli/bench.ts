/**
 * `node-kvm bench`: pre-faulting against demand faulting, measured through
 * node-kvm and through the C reference. Prints a table, and optionally writes
 * the JSON report and an SVG chart. See docs/bench.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { renderChartSvg } from '../bench/chart.js';
import { BenchUsageError, DEFAULTS, resolveOptions, type RawBenchOptions } from '../bench/options.js';
import { EXITS_DEFAULTS } from '../bench/exits-options.js';
import { MEMSLOT_PERF_DEFAULTS } from '../bench/memslot-perf-options.js';
import { formatReport } from '../bench/report.js';
import { runBench, type BenchHooks, type VariantResult } from '../bench/run.js';
import type { CliIo } from './main.js';
import { bootBenchCommand, type RawBootBenchOptions } from './boot-bench.js';

function writeFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

function perPage(x: number | undefined): string {
  return x === undefined ? '-' : x < 100 ? x.toFixed(1) : Math.round(x).toLocaleString('en-US');
}

/** The line printed for a finished variant when stderr is not a terminal (CI logs). */
export function variantLine(v: VariantResult, index: number, total: number, elapsedMs: number): string {
  const where = `bench: ${index}/${total} ${v.label}`;
  const secs = `${(elapsedMs / 1000).toFixed(1)} s`;
  if (v.node.status !== 'ok') return `${where}: unavailable (${v.node.reason.split(';')[0]}), ${secs}`;
  const node = perPage(v.node.summary.totalNsPerPage?.median);
  const c = v.c.status === 'ok' ? `, C ${perPage(v.c.summary.totalNsPerPage?.median)}` : '';
  return `${where}: ${node} ns/page${c}, ${secs}`;
}

/**
 * Progress on stderr: a bar when it is a terminal; otherwise a line per
 * finished variant, so a CI log shows the run moving.
 */
function progressHooks(enabled: boolean, io: CliIo): { hooks: BenchHooks; stop(): void } {
  if (!enabled) {
    return {
      hooks: { onVariant: (v, i, n, ms) => io.stderr(`${variantLine(v, i, n, ms)}\n`) },
      stop: () => {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: 'bench [{bar}] {value}/{total} repetitions | {eta_formatted} left | {variant}',
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 20,
      // Few redraws: one can land inside an awaited (timed) preparation.
      fps: 4,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    hooks: {
      onPlan: (total) => {
        bar.start(total, 0, { variant: '' });
        started = true;
      },
      onStep: (done, label) => bar.update(done, { variant: label }),
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** Runs the bench command; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function benchCommand(raw: RawBenchOptions, io: CliIo, progress = process.stderr.isTTY === true): Promise<number> {
  let options;
  try {
    options = resolveOptions(raw);
  } catch (e) {
    if (e instanceof BenchUsageError) {
      io.stderr(`node-kvm bench: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const bar = progressHooks(progress, io);
  let report;
  try {
    report = await runBench(options, bar.hooks);
  } catch (e) {
    bar.stop();
    io.stderr(`node-kvm bench: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  bar.stop();
  io.stdout(formatReport(report, options.wide));
  if (options.json) {
    writeFile(options.json, `${JSON.stringify(report, null, 2)}\n`);
    io.stdout(`JSON: ${options.json}\n`);
  }
  if (options.chart) {
    writeFile(options.chart, renderChartSvg(report));
    io.stdout(`Chart: ${options.chart}\n`);
  }
  return 0;
}

/** Adds `bench` to the program. */
export function registerBench(program: Command, io: CliIo): void {
  program
    .command('bench')
    .description('benchmark guest first touch (pre-faulting vs demand faulting) and exit round trips, with a C reference')
    .option('--sizes <list>', 'region sizes, multiples of 2M (e.g. 64M,256M,1G)', DEFAULTS.sizes)
    .option('--backing <list>', 'anon (4 KiB, nohugepage), thp, gmem (guest_memfd mmap)', DEFAULTS.backing)
    .option('--method <list>', 'demand, kernel (KVM_PRE_FAULT_MEMORY), software, auto, populate', DEFAULTS.method)
    .option('--threads <list>', 'populate threads for populate and software', DEFAULTS.threads)
    .option('--access <list>', 'what the guest does per page: write, read', DEFAULTS.access)
    .option('--reps <n>', 'measured repetitions per variant', DEFAULTS.reps)
    .option('--warmup <n>', 'unrecorded repetitions before them', DEFAULTS.warmup)
    .option('--json <file>', 'write every figure and the machine facts as JSON')
    .option('--chart <file.svg>', 'write a bar chart (SVG, 960 px wide)')
    .option('--wide', 'print every column of the table (the default fits 100 columns)')
    .option('--no-reference', 'do not build and run the C reference')
    .option('--family <list>', 'benchmark families: first-touch, exits, memslot-perf (opt-in)', EXITS_DEFAULTS.family)
    .option('--exit-guest <list>', 'exits: out (OUT loop), mmio (MMIO read answered)', EXITS_DEFAULTS.exitGuest)
    .option('--exit-mode <list>', 'exits: sync (run()), async (runAsync()), worker (run() in a worker_thread)', EXITS_DEFAULTS.exitMode)
    .option('--exit-vcpus <list>', 'exits: vcpu counts', EXITS_DEFAULTS.exitVcpus)
    .option('--exit-iterations <n>', 'exits: timed round trips per vcpu per repetition', EXITS_DEFAULTS.exitIterations)
    .option('--memslot-tests <list>', 'memslot-perf: map, unmap, unmap-chunked, move-active, move-inactive, rw', MEMSLOT_PERF_DEFAULTS.memslotTests)
    .option('--memslot-slots <n>', 'memslot-perf: memslots including slot 0, or max (upstream -s)', MEMSLOT_PERF_DEFAULTS.memslotSlots)
    .option('--memslot-scale <n>', "memslot-perf: upstream's memory sizes divided by 1, 2, 4, 8, 16 or 32", MEMSLOT_PERF_DEFAULTS.memslotScale)
    .option('--memslot-seconds <s>', 'memslot-perf: seconds per test and side (upstream -l)', MEMSLOT_PERF_DEFAULTS.memslotSeconds)
    .option('--boot', 'boot benchmark instead: boot Linux to a marker per pre-fault mode and backing, QEMU as the reference (lib/cli/boot-bench.ts)')
    .option('--kernel <file>', 'boot: the bzImage')
    .option('--initrd <file>', 'boot: the initramfs (scripts/vmm/build-initramfs.sh)')
    .option('--boot-prefault <list>', 'boot: none, auto, kernel, software', 'none,auto,kernel,software')
    .option('--boot-backing <list>', 'boot: anon, thp, gmem', 'anon,thp,gmem')
    .option('--boot-reps <n>', 'boot: repetitions per variant', '3')
    .option('--memory <size>', 'boot: guest RAM', '256M')
    .option('--marker <string>', 'boot: the console line timed', 'NODE_KVM_BOOT_MARKER')
    .action(async (options: RawBenchOptions & RawBootBenchOptions & { boot?: boolean }) => {
      if (options.boot) {
        io.exitCode = await bootBenchCommand(options, io);
        return;
      }
      const { kernel: _k, initrd: _i, bootPrefault: _p, bootBacking: _b, bootReps: _r, memory: _m, marker: _mk, ...rest } = options;
      io.exitCode = await benchCommand(rest, io);
    });
}
