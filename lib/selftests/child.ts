/**
 * Touching guest_memfd memory that the kernel refuses to back kills the
 * toucher with SIGBUS, which no JavaScript can catch. Such checks run in a
 * child process: this module spawns Node on a tiny script that maps a
 * guest_memfd (passed as fd 3) with the addon's own Mapping, optionally
 * verifies some bytes, then touches one byte; the parent reads how it died.
 */
import { spawnSync } from 'node:child_process';
import { Mm } from '../constants.js';
import { addonPath } from '../native.js';
import { SelftestFailure } from './assert.js';
import { scaledTimeout } from '../time-scale.js';

/** What the child should do. */
export interface TouchInChildOptions {
  /** The guest_memfd (or any mappable fd); the child sees it as fd 3. */
  fd: number;
  /** Bytes to map shared, read-write, from offset 0. */
  length: bigint;
  /** Before the touch, check that the first `checkBytes` bytes all equal `checkValue`. */
  checkBytes?: number;
  checkValue?: number;
  /** Offset of the byte to read last. */
  touchOffset: number;
}

/** How the child ended. */
export interface ChildOutcome {
  /** Exit status, or null when a signal ended it. */
  status: number | null;
  /** The signal that ended it ('SIGBUS'), or null. */
  signal: NodeJS.Signals | null;
  /** Progress markers the child printed: 'mapped', 'inside ok', 'survived ...'. */
  stdout: string;
  stderr: string;
}

// CommonJS on purpose: `node -e` needs no module resolution, and the addon is
// required by absolute path. Progress goes out with writeSync so it reaches
// the pipe before the process dies.
const CHILD_SCRIPT = `
const { writeSync } = require('node:fs');
const [addon, length, checkBytes, checkValue, touchOffset, prot, flags] = process.argv.slice(1);
const native = require(addon);
const mapping = new native.Mapping(3, BigInt(length), Number(prot), Number(flags), 0n, 4096n);
writeSync(1, 'mapped\\n');
const view = new Uint8Array(mapping.buffer());
for (let i = 0; i < Number(checkBytes); i++) {
  if (view[i] !== Number(checkValue)) { writeSync(1, 'mismatch at ' + i + ': ' + view[i] + '\\n'); process.exit(3); }
}
writeSync(1, 'inside ok\\n');
const value = view[Number(touchOffset)];
writeSync(1, 'survived: read ' + value + '\\n');
process.exit(0);
`;

/**
 * Runs the child and returns how it ended. The shell wrapper turns core dumps
 * off first: SIGBUS dumps core by default, and a test should not litter the
 * working directory or wake a crash reporter.
 */
export function touchInChild(options: TouchInChildOptions): ChildOutcome {
  const args = [
    addonPath(),
    options.length.toString(),
    String(options.checkBytes ?? 0),
    String(options.checkValue ?? 0),
    String(options.touchOffset),
    String(Mm.PROT_READ | Mm.PROT_WRITE),
    String(Mm.MAP_SHARED),
  ];
  const r = spawnSync('/bin/sh', ['-c', 'ulimit -c 0 2>/dev/null; exec "$@"', 'sh', process.execPath, '-e', CHILD_SCRIPT, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', options.fd],
    encoding: 'utf8',
    timeout: scaledTimeout(30_000),
  });
  if (r.error) throw new SelftestFailure(`could not run the child process: ${r.error.message}`);
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts the child got as far as `marker` and then died of SIGBUS. */
export function expectSigbus(outcome: ChildOutcome, marker: string, what: string): void {
  const lines = outcome.stdout.split('\n').filter(Boolean);
  if (!lines.includes(marker) || outcome.signal !== 'SIGBUS') {
    throw new SelftestFailure(
      `${what}: expected the child to print '${marker}' and die of SIGBUS; it ended with ${outcome.signal ?? `status ${outcome.status}`} after printing ${JSON.stringify(lines)}${outcome.stderr ? `, stderr: ${outcome.stderr.trim().slice(0, 500)}` : ''}`,
      { expected: 'SIGBUS', actual: outcome.signal ?? `status ${outcome.status}` },
    );
  }
}
