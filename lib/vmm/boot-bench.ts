/**
 * The boot benchmark (`node-kvm bench --boot`): boots the same kernel and
 * initramfs once per pre-fault mode and backing, `reps` times each, and the
 * same kernel and initramfs with QEMU (with and without -mem-prealloc) as the
 * reference. Every figure is taken at the marker (the first line the test
 * initramfs prints): time to it, time in pre-fault, vcpu exits, pf_taken and
 * KVM's mapping levels; median, min and max over the repetitions. It runs
 * only where a boot reaches the marker (the lab, with the in-kernel irqchip).
 */
import { readFileSync } from 'node:fs';
import { bootLinux, DEFAULT_CMDLINE, type Backing, type BootOptions, type BootResult, type PrefaultMode } from './machine.js';
import { bootQemu, qemuAvailable, type QemuBootResult } from './qemu-reference.js';
import { scaledTimeout } from '../time-scale.js';

/** One variant of the benchmark. */
export interface BootBenchVariant {
  /** node-kvm's pre-fault of all RAM before the first KVM_RUN. */
  prefault: PrefaultMode;
  /** Where guest RAM comes from. */
  backing: Backing;
}

/** Median, min and max of one figure. */
export interface Summary {
  median: number;
  min: number;
  max: number;
}

/** The figures of one row, summarised over its successful repetitions. */
export interface BootFigures {
  /** Node-kvm: from the first KVM_RUN to the marker. QEMU: from its spawn to the marker. */
  markerMs: Summary;
  /** From the start (node-kvm: VM creation, load and pre-fault included; QEMU: its spawn) to the marker. */
  totalMs: Summary;
  /** Time in pre-fault (node-kvm only; 0 for QEMU, whose -mem-prealloc is inside totalMs). */
  prefaultMs: Summary;
  /** The guest's /proc/uptime printed after the marker, in seconds. */
  guestUptime: Summary;
  /** KVM's `exits` statistic at the marker, summed over vcpus. */
  exits: Summary;
  /** KVM's `pf_taken` statistic at the marker (page faults KVM handled), summed over vcpus. */
  pfTaken: Summary;
  /** KVM's `pages_4k`/`pages_2m`/`pages_1g` statistics at the marker: guest memory mapped with each page size. */
  pages: { '4k': Summary; '2m': Summary; '1g': Summary };
}

/** One variant's results. */
export interface BootBenchRow extends BootFigures {
  /** 'node-kvm' rows have prefault and backing; 'qemu' rows have memPrealloc. */
  vmm: 'node-kvm' | 'qemu';
  /** The row's name in the table ("node-kvm anon prefault=none", "qemu -enable-kvm -mem-prealloc"). */
  label: string;
  /** node-kvm rows: the pre-fault mode. */
  prefault?: PrefaultMode;
  /** node-kvm rows: the RAM backing. */
  backing?: Backing;
  /** QEMU rows: whether -mem-prealloc was given. */
  memPrealloc?: boolean;
  /** Repetitions asked for. */
  reps: number;
  /** Repetitions that reached the marker. */
  ok: number;
  /** Repetitions that did not reach the marker, with the reason. */
  failures: string[];
  /** Against the QEMU row with the same memory settings (no pre-fault: without -mem-prealloc; pre-fault: with it), medians. */
  vsQemu?: { reference: string; exits: number; totalMs: number; pfTaken: number };
}

/** The whole report. */
export interface BootBenchReport {
  /** The bzImage's path. */
  kernel: string;
  /** The initramfs's path. */
  initrd: string;
  /** Guest RAM in bytes (both VMMs). */
  memory: number;
  /** The kernel command line (both VMMs). */
  cmdline: string;
  /** The console line the figures are taken at. */
  marker: string;
  /** Repetitions per row. */
  reps: number;
  /** When the run started (ISO 8601). */
  startedAt: string;
  /** QEMU's rows first, then node-kvm's. */
  rows: BootBenchRow[];
  /** Why the QEMU reference is missing, when it is. */
  qemuMissing?: string;
}

/** Every pre-fault mode for every backing. */
export function bootBenchVariants(prefaults: readonly PrefaultMode[] = ['none', 'auto', 'kernel', 'software'], backings: readonly Backing[] = ['anon', 'thp', 'gmem']): BootBenchVariant[] {
  return backings.flatMap((backing) => prefaults.map((prefault) => ({ prefault, backing })));
}

/** Median, min and max (NaN for no values). */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN };
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s.at(-1)! };
}

/** One measured boot, reduced to the figures of a row. */
interface Sample {
  markerMs: number;
  totalMs: number;
  prefaultMs: number;
  guestUptime: number | null;
  stats: Record<string, number>;
}

function figures(samples: readonly Sample[]): BootFigures {
  const stat = (f: (s: Sample) => number | null | undefined): Summary => summarize(samples.map(f).filter((x): x is number => typeof x === 'number'));
  return {
    markerMs: stat((s) => s.markerMs),
    totalMs: stat((s) => s.totalMs),
    prefaultMs: stat((s) => s.prefaultMs),
    guestUptime: stat((s) => s.guestUptime),
    exits: stat((s) => s.stats.exits),
    pfTaken: stat((s) => s.stats.pf_taken),
    pages: { '4k': stat((s) => s.stats.pages_4k), '2m': stat((s) => s.stats.pages_2m), '1g': stat((s) => s.stats.pages_1g) },
  };
}

/** A node-kvm boot's figures at the marker (vcpu statistics summed over vcpus). */
export function sampleOf(r: BootResult): Sample | undefined {
  if (r.timings.markerMs === null || !r.atMarker) return undefined;
  const stats: Record<string, number> = { ...r.atMarker.vmStats };
  for (const s of Object.values(r.atMarker.vcpuStats)) for (const [k, v] of Object.entries(s)) stats[k] = (stats[k] ?? 0) + v;
  // The test initramfs prints "kernel R, uptime U I" right after the marker.
  const up = /, uptime (\d+(?:\.\d+)?) /.exec(r.consoleTail);
  return {
    markerMs: r.timings.markerMs,
    totalMs: r.timings.setupMs + r.timings.prefaultMs + r.timings.markerMs,
    prefaultMs: r.timings.prefaultMs,
    guestUptime: up ? Number(up[1]) : null,
    stats,
  };
}

/** Options of {@link runBootBench}. */
export interface BootBenchOptions {
  /** The bzImage to boot. */
  kernelPath: string;
  /** The initramfs (scripts/vmm/build-initramfs.sh). */
  initrdPath: string;
  /** The console line that ends each measurement. */
  marker: string;
  /** Guest RAM in bytes; default 256 MiB. */
  memory?: number;
  /** Kernel command line; default DEFAULT_CMDLINE (which has no_timer_check). */
  cmdline?: string;
  /** node-kvm variants; default every pre-fault mode for every backing. */
  variants?: readonly BootBenchVariant[];
  /** Repetitions per row; default 3. */
  reps?: number;
  /** Run the QEMU reference (default true). */
  qemu?: boolean;
  /** Called before each boot. */
  onBoot?: (label: string, rep: number, reps: number) => void;
  /** Called after each row. */
  onRow?: (row: BootBenchRow) => void;
  /** Stops the run after the current boot (that boot stops at once). */
  signal?: AbortSignal;
  /** Reads a file (the kernel and initrd); default readFileSync. */
  read?: (path: string) => Uint8Array;
}

function labelOf(v: BootBenchVariant): string {
  return `node-kvm ${v.backing} prefault=${v.prefault}`;
}

/** Runs the variants and the QEMU reference; returns the report. */
export async function runBootBench(o: BootBenchOptions): Promise<BootBenchReport> {
  const read = o.read ?? ((p: string) => readFileSync(p));
  const reps = o.reps ?? 3;
  const memory = o.memory ?? 256 * 2 ** 20;
  // Both VMMs get the same command line; DEFAULT_CMDLINE has no_timer_check, which
  // QEMU's guest needs in the nested lab as much as ours ("IO-APIC + timer doesn't work!").
  const cmdline = o.cmdline ?? DEFAULT_CMDLINE;
  const kernel = read(o.kernelPath);
  const initrd = read(o.initrdPath);
  const base: BootOptions = { kernel, initrd, memory, cmdline, marker: o.marker, signal: o.signal };
  const report: BootBenchReport = { kernel: o.kernelPath, initrd: o.initrdPath, memory, cmdline, marker: o.marker, reps, startedAt: new Date().toISOString(), rows: [] };

  const qemuMissing = o.qemu === false ? 'not asked for (--no-reference)' : qemuAvailable();
  if (qemuMissing) report.qemuMissing = qemuMissing;
  else {
    for (const memPrealloc of [false, true]) {
      const label = `qemu -enable-kvm${memPrealloc ? ' -mem-prealloc' : ''}`;
      const samples: Sample[] = [];
      const failures: string[] = [];
      for (let i = 0; i < reps && !o.signal?.aborted; i++) {
        o.onBoot?.(label, i + 1, reps);
        const r: QemuBootResult = await bootQemu({ kernelPath: o.kernelPath, initrdPath: o.initrdPath, cmdline, memory, marker: o.marker, memPrealloc, signal: o.signal });
        if (!r.ok) failures.push(r.reason);
        else {
          if (r.statsMissing && !failures.includes(r.statsMissing)) failures.push(`statistics: ${r.statsMissing}`);
          samples.push({ markerMs: r.markerMs, totalMs: r.markerMs, prefaultMs: 0, guestUptime: r.guestUptime, stats: r.stats });
        }
      }
      const row: BootBenchRow = { vmm: 'qemu', label, memPrealloc, reps, ok: samples.length, failures, ...figures(samples) };
      report.rows.push(row);
      o.onRow?.(row);
    }
  }

  for (const v of o.variants ?? bootBenchVariants()) {
    const label = labelOf(v);
    const samples: Sample[] = [];
    const failures: string[] = [];
    for (let i = 0; i < reps && !o.signal?.aborted; i++) {
      o.onBoot?.(label, i + 1, reps);
      let r: BootResult;
      // A boot whose console stays silent this long is stopped (a stalled guest must not stall the run).
      const stall = new AbortController();
      const silenceMs = scaledTimeout(60_000);
      let watchdog = setTimeout(() => stall.abort('SIGTERM'), silenceMs);
      const output = { write: (): void => void (clearTimeout(watchdog), (watchdog = setTimeout(() => stall.abort('SIGTERM'), silenceMs))) };
      const signal = o.signal ? AbortSignal.any([o.signal, stall.signal]) : stall.signal;
      try {
        r = await bootLinux({ ...base, ...v, output, signal });
        if (stall.signal.aborted) failures.push(`no console output for ${silenceMs / 1000} s: ${r.consoleTail.slice(-200)}`);
      } catch (e) {
        // An unavailable backing (gmem without mmap) fails the same way every time: once is enough.
        failures.push(e instanceof Error ? e.message : String(e));
        break;
      } finally {
        clearTimeout(watchdog);
      }
      if (stall.signal.aborted) continue;
      const s = sampleOf(r);
      if (s && r.exitCode === 0) samples.push(s);
      else failures.push(`${r.stop.kind}${'detail' in r.stop ? `: ${r.stop.detail}` : ''}${s ? '' : ' (no marker)'}`);
    }
    const row: BootBenchRow = { vmm: 'node-kvm', label, prefault: v.prefault, backing: v.backing, reps, ok: samples.length, failures, ...figures(samples) };
    const ref = report.rows.find((q) => q.vmm === 'qemu' && q.memPrealloc === (v.prefault !== 'none') && q.ok > 0);
    if (ref && samples.length > 0) {
      row.vsQemu = { reference: ref.label, exits: row.exits.median / ref.exits.median, totalMs: row.totalMs.median / ref.totalMs.median, pfTaken: row.pfTaken.median / ref.pfTaken.median };
    }
    report.rows.push(row);
    o.onRow?.(row);
  }
  return report;
}
