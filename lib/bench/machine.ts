/** Facts about the machine a benchmark ran on, for the JSON report. */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg, machine, release, totalmem, version } from 'node:os';
import type { Kvm, KvmCapabilities } from '../kvm.js';

/** What the report records about the host. */
export interface MachineFacts {
  date: string;
  /** uname: sysname, release, version, machine. */
  uname: { sysname: string; release: string; version: string; machine: string };
  cpuModel: string | null;
  cpus: number;
  memoryBytes: number;
  node: string;
  /** The bracketed value of /sys/kernel/mm/transparent_hugepage/enabled and defrag. */
  thp: { enabled: string | null; defrag: string | null };
  /** Which module provides /dev/kvm, when one of the known ones is loaded. */
  kvmModule: string | null;
  /** virtio_balloon is loaded: freed memory may go back to the outer hypervisor (see docs/bench.md). */
  virtioBalloon: boolean;
  kvmCapabilities: KvmCapabilities;
  /**
   * 1-, 5- and 15-minute load averages when the run started and ended: other
   * work on the machine (the cores are few) shows up as noise in the figures.
   */
  loadAverage: { start: number[]; end: number[] | null };
}

/** The load averages now, rounded to 0.01. */
export function loadAverage(): number[] {
  return loadavg().map((x) => Math.round(x * 100) / 100);
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function bracketed(path: string): string | null {
  const text = read(path);
  return text ? (/\[([^\]]+)\]/.exec(text)?.[1] ?? text.trim()) : null;
}

/** Collects the facts (Kvm.capabilities() for KVM). */
export function machineFacts(kvm: Kvm): MachineFacts {
  const cpuinfo = read('/proc/cpuinfo') ?? '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? null;
  const kvmModule = ['kvm_pvm', 'kvm_intel', 'kvm_amd'].find((m) => existsSync(`/sys/module/${m}`)) ?? null;
  return {
    date: new Date().toISOString(),
    uname: { sysname: 'Linux', release: release(), version: version(), machine: machine() },
    cpuModel: model,
    cpus: availableParallelism(),
    memoryBytes: totalmem(),
    node: process.version,
    thp: { enabled: bracketed('/sys/kernel/mm/transparent_hugepage/enabled'), defrag: bracketed('/sys/kernel/mm/transparent_hugepage/defrag') },
    kvmModule,
    virtioBalloon: existsSync('/sys/module/virtio_balloon') || existsSync('/sys/bus/virtio/drivers/virtio_balloon'),
    kvmCapabilities: kvm.capabilities(),
    loadAverage: { start: loadAverage(), end: null },
  };
}
