/**
 * `node-kvm boot --kernel FILE [--initrd FILE] [--cmdline STR] [--memory 256M]
 * [--cpus N] [--backing anon|thp|gmem] [--prefault none|auto|kernel|software]
 * [--json FILE]`: boots Linux with node-kvm's VMM (lib/vmm). The guest's
 * console is this process's stdout (and its input stdin, when that is a
 * TTY); the exit status says how the guest ended: 0 for a poweroff or
 * reboot, 1 for a panic or an error, 128 + n when signal n stopped it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { invalidArgument, KvmError } from '../errors.js';
import { bootLinux, type Backing, type BootOptions, type BootResult, type PrefaultMode } from '../vmm/machine.js';
import type { CliIo } from './main.js';

/** The options as commander gives them (strings). */
export interface RawBootOptions {
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memory?: string;
  cpus?: string;
  backing?: string;
  prefault?: string;
  json?: string;
  marker?: string;
  load?: string;
  xsave?: string;
}

/** Validated boot arguments (files not read yet). */
export interface BootArgs {
  kernel: string;
  initrd: string | undefined;
  cmdline: string | undefined;
  memory: number;
  cpus: number;
  backing: Backing;
  prefault: PrefaultMode;
  json: string | undefined;
  marker: string | undefined;
  load: 'bzimage' | 'vmlinux' | undefined;
  xsave: 'none' | 'sse' | 'avx' | undefined;
}

const OP = 'node-kvm boot';
const BACKINGS = ['anon', 'thp', 'gmem'] as const;
const PREFAULTS = ['none', 'auto', 'kernel', 'software'] as const;
const KNOWN = ['kernel', 'initrd', 'cmdline', 'memory', 'cpus', 'backing', 'prefault', 'json', 'marker', 'load', 'xsave'];

/** "256M", "1G", "65536K", "268435456" → bytes; KvmError EINVAL otherwise. */
export function parseMemorySize(text: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(text.trim());
  if (!m) throw invalidArgument(OP, `--memory: ${JSON.stringify(text)} is not a size (e.g. 256M, 1G)`, { memory: text });
  const unit = (m[2] ?? '').charAt(0).toUpperCase();
  const shift = unit === 'K' ? 10 : unit === 'M' ? 20 : unit === 'G' ? 30 : 0;
  const bytes = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(bytes) || bytes % 4096 !== 0 || bytes < 16 * 2 ** 20 || bytes > 2 ** 40) {
    throw invalidArgument(OP, `--memory: ${text} must be a multiple of 4 KiB between 16M and 1024G`, { memory: text });
  }
  return bytes;
}

/** Checks every option before anything is opened; KvmError EINVAL names the bad one. */
export function parseBootArgs(raw: RawBootOptions): BootArgs {
  if (typeof raw !== 'object' || raw === null) throw invalidArgument(OP, 'options must be an object');
  for (const key of Object.keys(raw)) {
    if (!KNOWN.includes(key)) throw invalidArgument(OP, `unknown option ${JSON.stringify(key)}; known: ${KNOWN.join(', ')}`, { option: key });
  }
  if (typeof raw.kernel !== 'string' || raw.kernel === '') throw invalidArgument(OP, '--kernel FILE is required');
  const cpusText = raw.cpus ?? '1';
  if (!/^\d+$/.test(cpusText) || Number(cpusText) < 1 || Number(cpusText) > 255) throw invalidArgument(OP, `--cpus: ${JSON.stringify(cpusText)} must be an integer from 1 to 255`, { cpus: cpusText });
  const backing = raw.backing ?? 'anon';
  if (!(BACKINGS as readonly string[]).includes(backing)) throw invalidArgument(OP, `--backing: ${JSON.stringify(backing)}; expected one of ${BACKINGS.join(', ')}`, { backing });
  const prefault = raw.prefault ?? 'none';
  if (!(PREFAULTS as readonly string[]).includes(prefault)) throw invalidArgument(OP, `--prefault: ${JSON.stringify(prefault)}; expected one of ${PREFAULTS.join(', ')}`, { prefault });
  if (raw.load !== undefined && raw.load !== 'bzimage' && raw.load !== 'vmlinux') throw invalidArgument(OP, `--load: ${JSON.stringify(raw.load)}; expected bzimage or vmlinux`, { load: raw.load });
  if (raw.xsave !== undefined && !['none', 'sse', 'avx'].includes(raw.xsave)) throw invalidArgument(OP, `--xsave: ${JSON.stringify(raw.xsave)}; expected none, sse or avx`, { xsave: raw.xsave });
  if (raw.cmdline !== undefined && !/^[\x20-\x7e]*$/.test(raw.cmdline)) throw invalidArgument(OP, '--cmdline must be printable ASCII');
  return {
    kernel: raw.kernel,
    initrd: raw.initrd,
    cmdline: raw.cmdline,
    memory: parseMemorySize(raw.memory ?? '256M'),
    cpus: Number(cpusText),
    backing: backing as Backing,
    prefault: prefault as PrefaultMode,
    json: raw.json,
    marker: raw.marker,
    load: raw.load as BootArgs['load'],
    xsave: raw.xsave as BootArgs['xsave'],
  };
}

/** One line saying how the boot ended. */
export function describeResult(r: BootResult): string {
  const s = r.stop;
  const how =
    s.kind === 'reboot' ? `reboot (${s.source})` : s.kind === 'poweroff' ? `poweroff (${s.source})` : s.kind === 'signal' ? `stopped by ${s.signal}` : `${s.kind}: ${s.detail}`;
  const exits = Object.values(r.vcpuStats).reduce((n, st) => n + (st.exits ?? 0), 0);
  const marker = r.timings.markerMs === null ? '' : `, marker after ${(r.timings.markerMs / 1000).toFixed(2)} s`;
  return `node-kvm boot: ${how} after ${(r.timings.runMs / 1000).toFixed(2)} s${marker}; ${exits} exits; exit status ${r.exitCode}\n`;
}

/** Runs the boot command; returns the exit status. */
export async function bootCommand(raw: RawBootOptions, io: CliIo): Promise<number> {
  let args: BootArgs;
  let options: BootOptions;
  try {
    args = parseBootArgs(raw);
    options = {
      kernel: readFileSync(args.kernel),
      initrd: args.initrd === undefined ? undefined : readFileSync(args.initrd),
      cmdline: args.cmdline,
      memory: args.memory,
      cpus: args.cpus,
      backing: args.backing,
      prefault: args.prefault,
      marker: args.marker,
      load: args.load,
      xsave: args.xsave,
    };
  } catch (e) {
    io.stderr(`${OP}: ${e instanceof Error ? e.message : String(e)}\n`);
    return e instanceof KvmError && e.code === 'EINVAL' ? 2 : 1;
  }
  const decoder = new TextDecoder('utf-8');
  const abort = new AbortController();
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  const handler = (signal: NodeJS.Signals): void => abort.abort(signal);
  for (const s of signals) process.on(s, handler);
  let result: BootResult;
  try {
    result = await bootLinux({
      ...options,
      output: { write: (bytes) => io.stdout(decoder.decode(bytes, { stream: true })) },
      input: process.stdin.isTTY ? process.stdin : undefined,
      signal: abort.signal,
    });
  } catch (e) {
    io.stderr(`${OP}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    for (const s of signals) process.off(s, handler);
  }
  io.stderr(describeResult(result));
  if (args.json) writeFileSync(args.json, `${JSON.stringify(result, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
  return result.exitCode;
}

/** Adds `boot` to the program. */
export function registerBoot(program: Command, io: CliIo): void {
  program
    .command('boot')
    .description("boot a Linux bzImage with node-kvm's VMM; the guest console is stdout")
    .requiredOption('--kernel <file>', 'bzImage to boot')
    .option('--initrd <file>', 'initramfs to load')
    .option('--cmdline <string>', 'kernel command line (default: serial console, reboot=k, panic=-1, ...)')
    .option('--memory <size>', 'guest RAM, e.g. 256M or 1G', '256M')
    .option('--cpus <n>', 'vcpus (more than one needs the in-kernel irqchip)', '1')
    .option('--backing <kind>', 'guest RAM: anon, thp or gmem', 'anon')
    .option('--prefault <mode>', 'pre-fault guest RAM before the first KVM_RUN: none, auto, kernel or software', 'none')
    .option('--json <file>', 'write the boot report (timings, exits, statistics) as JSON')
    .option('--marker <string>', 'time the first appearance of this string on the console')
    .option('--load <how>', 'bzimage (the kernel decompresses itself) or vmlinux (decompressed on the host); default: vmlinux on kvm_pvm')
    .option('--xsave <state>', 'XSAVE state offered to the guest: none (FXSAVE only), sse or avx; default none')
    .action(async (options: RawBootOptions) => {
      io.exitCode = await bootCommand(options, io);
    });
}
