/**
 * `node-kvm caps [--json]`: what this host's /dev/kvm supports, as node-kvm
 * decodes it (Kvm.capabilities()).
 */
import type { Command } from 'commander';
import { Kvm, type KvmCapabilities } from '../kvm.js';
import type { CliIo } from './main.js';

/** Options of the caps command. */
export interface CapsOptions {
  json?: boolean;
  device?: string;
}

/** Human-readable capability lines: name, padded, then the value. */
export function formatCapabilities(caps: KvmCapabilities): string {
  const entries = Object.entries(caps) as [string, unknown][];
  const width = Math.max(...entries.map(([k]) => k.length));
  return entries
    .map(([k, v]) => {
      const value = Array.isArray(v) ? (v.length ? v.join(', ') : '(none)') : typeof v === 'boolean' ? (v ? 'yes' : 'no') : String(v);
      return `${k.padEnd(width)}  ${value}`;
    })
    .join('\n');
}

/** Runs the caps command; returns the exit code. */
export function capsCommand(options: CapsOptions, io: CliIo): number {
  let caps: KvmCapabilities;
  try {
    using kvm = Kvm.open(options.device === undefined ? {} : { path: options.device });
    caps = kvm.capabilities();
  } catch (e) {
    io.stderr(`node-kvm caps: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  io.stdout(`${options.json ? JSON.stringify(caps, null, 2) : formatCapabilities(caps)}\n`);
  return 0;
}

/** Adds `caps` to the program. */
export function registerCaps(program: Command, io: CliIo): void {
  program
    .command('caps')
    .description("print what this host's /dev/kvm supports")
    .option('--json', 'print JSON instead of aligned text')
    .option('--device <path>', 'KVM device to open', '/dev/kvm')
    .action((options: CapsOptions) => {
      io.exitCode = capsCommand(options, io);
    });
}
