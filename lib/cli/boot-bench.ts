/**
 * `node-kvm bench --boot --kernel FILE --initrd FILE [--boot-prefault LIST]
 * [--boot-backing LIST] [--boot-reps N] [--memory SIZE] [--no-reference]
 * [--json FILE] [--chart FILE.svg]`: the boot benchmark (lib/vmm/boot-bench.ts).
 * Prints a line per finished row on stderr and the table on stdout.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { KvmError } from '../errors.js';
import { bootBenchVariants, runBootBench } from '../vmm/boot-bench.js';
import { formatBootReport, renderBootChartSvg, rowCells } from '../vmm/boot-bench-report.js';
import type { Backing, PrefaultMode } from '../vmm/machine.js';
import { parseMemorySize } from './boot.js';
import type { CliIo } from './main.js';

/** The options `bench --boot` reads (strings as commander gives them). */
export interface RawBootBenchOptions {
  kernel?: string;
  initrd?: string;
  bootPrefault?: string;
  bootBacking?: string;
  bootReps?: string;
  memory?: string;
  marker?: string;
  reference?: boolean;
  json?: string;
  chart?: string;
}

const PREFAULTS = ['none', 'auto', 'kernel', 'software'];
const BACKINGS = ['anon', 'thp', 'gmem'];

function list(text: string, allowed: readonly string[], option: string): string[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = items.find((i) => !allowed.includes(i));
  if (bad !== undefined || items.length === 0) throw new KvmError(`${option}: ${JSON.stringify(bad ?? text)}; expected a list of ${allowed.join(', ')}`, { code: 'EINVAL' });
  return items;
}

function write(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

/** Runs the boot benchmark; returns the exit status (0 ok, 1 no row reached the marker, 2 usage). */
export async function bootBenchCommand(raw: RawBootBenchOptions, io: CliIo): Promise<number> {
  let prefaults: string[];
  let backings: string[];
  let reps: number;
  let memory: number;
  try {
    if (!raw.kernel || !raw.initrd) throw new KvmError('--boot needs --kernel FILE and --initrd FILE (scripts/vmm/build-initramfs.sh builds the test initramfs)', { code: 'EINVAL' });
    prefaults = list(raw.bootPrefault ?? PREFAULTS.join(','), PREFAULTS, '--boot-prefault');
    backings = list(raw.bootBacking ?? BACKINGS.join(','), BACKINGS, '--boot-backing');
    reps = Number(raw.bootReps ?? '3');
    if (!Number.isInteger(reps) || reps < 1 || reps > 100) throw new KvmError(`--boot-reps: ${raw.bootReps} must be an integer from 1 to 100`, { code: 'EINVAL' });
    memory = parseMemorySize(raw.memory ?? '256M');
  } catch (e) {
    io.stderr(`node-kvm bench --boot: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const abort = new AbortController();
  const onSignal = (): void => abort.abort('SIGINT');
  process.once('SIGINT', onSignal);
  const t0 = performance.now();
  try {
    const report = await runBootBench({
      kernelPath: raw.kernel,
      initrdPath: raw.initrd,
      marker: raw.marker ?? 'NODE_KVM_BOOT_MARKER',
      memory,
      reps,
      qemu: raw.reference !== false,
      variants: bootBenchVariants(prefaults as PrefaultMode[], backings as Backing[]),
      signal: abort.signal,
      onBoot: (label, rep, n) => io.stderr(`bench --boot: ${label} ${rep}/${n} (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`),
      // Each finished row at once: a long lab run shows its figures as it goes.
      onRow: (row) => io.stderr(`bench --boot: ${rowCells(row).join(' | ')}${row.failures.length ? ` | failed: ${row.failures[0]!.slice(0, 200)}` : ''}\n`),
    });
    io.stdout(formatBootReport(report));
    if (raw.json) {
      write(raw.json, `${JSON.stringify(report, null, 2)}\n`);
      io.stdout(`JSON: ${raw.json}\n`);
    }
    if (raw.chart) {
      write(raw.chart, renderBootChartSvg(report));
      io.stdout(`Chart: ${raw.chart}\n`);
    }
    return report.rows.some((r) => r.vmm === 'node-kvm' && r.ok > 0) ? 0 : 1;
  } catch (e) {
    io.stderr(`node-kvm bench --boot: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
  }
}
