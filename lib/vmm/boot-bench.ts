/**
 * Skeleton of the boot benchmark (`node-kvm bench --boot`, not wired into the
 * CLI yet): boots the same kernel and initramfs once per pre-fault mode and
 * backing, `reps` times each, and summarises time to the marker, time in
 * pre-fault, vcpu exits, pf_taken and the VM's mapping levels. It runs only
 * where a boot reaches the marker (the lab, with the in-kernel irqchip); the
 * QEMU reference the issue asks for is not here yet.
 */
import { bootLinux, type Backing, type BootOptions, type BootResult, type PrefaultMode } from './machine.js';

/** One variant of the benchmark. */
export interface BootBenchVariant {
  prefault: PrefaultMode;
  backing: Backing;
}

/** Median, min and max of one figure. */
export interface Summary {
  median: number;
  min: number;
  max: number;
}

/** One variant's results. */
export interface BootBenchRow extends BootBenchVariant {
  reps: number;
  markerMs: Summary;
  prefaultMs: Summary;
  exits: Summary;
  pfTaken: Summary;
  pages: { '4k': Summary; '2m': Summary; '1g': Summary };
  /** Reps that did not reach the marker, with the reason. */
  failures: string[];
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

/** Runs the variants; `base` gives kernel, initrd, marker and memory. */
export async function runBootBench(base: BootOptions & { marker: string }, variants: readonly BootBenchVariant[], reps = 3): Promise<BootBenchRow[]> {
  const rows: BootBenchRow[] = [];
  for (const v of variants) {
    const results: BootResult[] = [];
    const failures: string[] = [];
    for (let i = 0; i < reps; i++) {
      const r = await bootLinux({ ...base, ...v, output: undefined, input: undefined });
      if (r.timings.markerMs === null) failures.push(`${r.stop.kind}: ${'detail' in r.stop ? r.stop.detail : ''}`);
      else results.push(r);
    }
    const stat = (f: (r: BootResult) => number): Summary => summarize(results.map(f));
    const vcpuSum = (r: BootResult, name: string): number => Object.values(r.vcpuStats).reduce((n, s) => n + (s[name] ?? 0), 0);
    rows.push({
      ...v,
      reps,
      markerMs: stat((r) => r.timings.markerMs!),
      prefaultMs: stat((r) => r.timings.prefaultMs),
      exits: stat((r) => vcpuSum(r, 'exits')),
      pfTaken: stat((r) => vcpuSum(r, 'pf_taken')),
      pages: { '4k': stat((r) => r.vmStats.pages_4k ?? 0), '2m': stat((r) => r.vmStats.pages_2m ?? 0), '1g': stat((r) => r.vmStats.pages_1g ?? 0) },
      failures,
    });
  }
  return rows;
}
