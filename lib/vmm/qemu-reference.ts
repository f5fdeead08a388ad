/**
 * The boot benchmark's reference: the same kernel and initramfs booted by
 * QEMU with KVM (`-enable-kvm -cpu qemu64`), timed from QEMU's spawn to the
 * marker on its serial console. Its KVM figures come from KVM's debugfs
 * directory of QEMU's VM (/sys/kernel/debug/kvm/<pid>-<fd>/: the VM's
 * statistics and the sums of its vcpus'), read the moment the marker
 * appears, so both VMMs are measured up to the same console line. QEMU is
 * then stopped. Runs where debugfs can be mounted (root; the lab).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { scaledTimeout } from '../time-scale.js';

/** How to run the reference. */
export interface QemuBootOptions {
  /** The bzImage (QEMU's -kernel). */
  kernelPath: string;
  /** The initramfs (QEMU's -initrd). */
  initrdPath: string;
  /** The kernel command line (QEMU's -append). */
  cmdline: string;
  /** Guest RAM in bytes. */
  memory: number;
  /** The console line that ends the measurement. */
  marker: string;
  /** `-mem-prealloc`: QEMU touches all guest RAM before the guest starts. */
  memPrealloc: boolean;
  /** The QEMU binary (default qemu-system-x86_64 on PATH). */
  qemu?: string | undefined;
  /** Stops the boot (then the result is a failure). */
  signal?: AbortSignal | undefined;
  /** Gives up when QEMU's console stays silent this long (ms; default 60 s x NODE_KVM_TIMEOUT_SCALE). */
  silenceMs?: number | undefined;
}

/** One QEMU boot. */
export type QemuBootResult =
  | {
      ok: true;
      /** From spawning QEMU to the marker on its console (QEMU's own start-up included). */
      markerMs: number;
      /** The guest's /proc/uptime printed after the marker, in seconds (null when not seen before QEMU was stopped). */
      guestUptime: number | null;
      /** KVM statistics of QEMU's VM at the marker (exits, pf_taken, pages_4k, ...); empty when debugfs was unreadable. */
      stats: Record<string, number>;
      /** Why stats is empty, if it is. */
      statsMissing?: string;
    }
  | { ok: false; reason: string };

/** The statistics read from debugfs. */
export const QEMU_STATS = ['exits', 'io_exits', 'mmio_exits', 'halt_exits', 'pf_taken', 'pf_fixed', 'irq_injections', 'insn_emulation', 'pages_4k', 'pages_2m', 'pages_1g'];

const DEBUGFS = '/sys/kernel/debug';

/** Mounts debugfs when it is not (as root); returns why not when KVM's directory stays absent. */
export function ensureKvmDebugfs(): string | undefined {
  const kvmDir = join(DEBUGFS, 'kvm');
  if (existsSync(kvmDir)) return undefined;
  spawnSync('mount', ['-t', 'debugfs', 'debugfs', DEBUGFS], { stdio: 'ignore' });
  return existsSync(kvmDir) ? undefined : `${kvmDir} is not there (debugfs not mounted and mount -t debugfs failed, or KVM without debugfs)`;
}

/** Reads KVM's debugfs figures of the VMs of process `pid` (summed when it has several). */
export function readKvmDebugfs(pid: number): Record<string, number> {
  const kvmDir = join(DEBUGFS, 'kvm');
  const out: Record<string, number> = {};
  for (const dir of readdirSync(kvmDir).filter((d) => d.startsWith(`${pid}-`))) {
    for (const name of QEMU_STATS) {
      try {
        const v = Number(readFileSync(join(kvmDir, dir, name), 'utf8').trim());
        if (Number.isFinite(v)) out[name] = (out[name] ?? 0) + v;
      } catch {
        // a statistic this kernel does not have
      }
    }
  }
  return out;
}

/** The QEMU command line of the reference. */
export function qemuArgs(o: QemuBootOptions): string[] {
  return [
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-machine', 'pc', '-enable-kvm', '-cpu', 'qemu64', '-smp', '1',
    '-m', `${Math.round(o.memory / 2 ** 20)}M`, ...(o.memPrealloc ? ['-mem-prealloc'] : []),
    '-kernel', o.kernelPath, '-initrd', o.initrdPath, '-append', o.cmdline,
    '-serial', 'stdio',
  ];
}

/** Whether the QEMU binary runs (its reason when not). */
export function qemuAvailable(qemu = 'qemu-system-x86_64'): string | undefined {
  const r = spawnSync(qemu, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : `${qemu} does not run (${r.error?.message ?? r.stderr.trim()}); apt-get install qemu-system-x86`;
}

/** Boots once with QEMU; resolves when the marker was seen (QEMU stopped) or QEMU ended without it. */
export function bootQemu(o: QemuBootOptions): Promise<QemuBootResult> {
  const statsMissing = ensureKvmDebugfs();
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(o.qemu ?? 'qemu-system-x86_64', qemuArgs(o), { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    let err = '';
    let markerMs: number | undefined;
    let stats: Record<string, number> = {};
    let settled = false;
    let silence: NodeJS.Timeout | undefined;
    const finish = (r: QemuBootResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(silence);
      o.signal?.removeEventListener('abort', onAbort);
      if (child.exitCode === null) child.kill('SIGKILL');
      resolve(r);
    };
    const onAbort = (): void => finish({ ok: false, reason: 'aborted' });
    o.signal?.addEventListener('abort', onAbort, { once: true });
    // The uptime line follows the marker within a few guest milliseconds; wait for it a little.
    let uptimeTimer: NodeJS.Timeout | undefined;
    const done = (): void => {
      clearTimeout(uptimeTimer);
      const m = /uptime (\d+(?:\.\d+)?)/.exec(text.slice(text.indexOf(o.marker)));
      finish({ ok: true, markerMs: markerMs!, guestUptime: m ? Number(m[1]) : null, stats, ...(statsMissing ? { statsMissing } : {}) });
    };
    const silenceMs = o.silenceMs ?? scaledTimeout(60_000);
    silence = setTimeout(() => finish({ ok: false, reason: `no console output for ${silenceMs / 1000} s: ${text.slice(-300)}` }), silenceMs);
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (chunk: string) => {
      clearTimeout(silence);
      silence = setTimeout(() => finish({ ok: false, reason: `no console output for ${silenceMs / 1000} s: ${text.slice(-300)}` }), silenceMs);
      text = (text + chunk).slice(-65536);
      if (markerMs === undefined && text.includes(o.marker)) {
        markerMs = performance.now() - t0;
        if (!statsMissing && child.pid !== undefined) stats = readKvmDebugfs(child.pid);
        uptimeTimer = setTimeout(done, 2000);
      }
      if (markerMs !== undefined && /uptime \d+(?:\.\d+)? /.test(text.slice(text.indexOf(o.marker)))) done();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => void (err = (err + chunk).slice(-4096)));
    child.on('error', (e) => finish({ ok: false, reason: e.message }));
    child.on('exit', (code, sig) => {
      if (markerMs !== undefined) done();
      else finish({ ok: false, reason: `qemu ended (${sig ?? `status ${code}`}) before the marker: ${err.trim().split('\n').slice(-2).join(' / ') || text.slice(-300)}` });
    });
  });
}
