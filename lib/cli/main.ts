#!/usr/bin/env node
/**
 * The `node-kvm` command: `caps` prints what /dev/kvm supports, `selftest`
 * runs the ports of the kernel's KVM selftests with TAP output. Each
 * subcommand lives in its own module and registers itself on the program.
 *
 * Everything goes through a CliIo so the program can run in-process (tests)
 * as well as from the shell.
 */
import { realpathSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { registerCaps } from './caps.js';
import { registerSelftest } from './selftest.js';
import { registerBench } from './bench.js';
import { registerBoot } from './boot.js';

/** Where a command writes, and the exit code it chose. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Set by a command's action; 0 unless it says otherwise. */
  exitCode: number;
}

/** A CliIo writing to the process's own stdout/stderr. */
export function processIo(): CliIo {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    exitCode: 0,
  };
}

function packageVersion(): string {
  // lib/cli/main.ts and dist/cli/main.js both sit two levels below the package root.
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The commander program with every subcommand registered. */
export function createProgram(io: CliIo): Command {
  const program = new Command('node-kvm')
    .description('Inspect and exercise Linux /dev/kvm through node-kvm')
    .version(packageVersion())
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) })
    .showHelpAfterError();

  registerCaps(program, io);
  registerSelftest(program, io);

  // ---- Subcommands from other modules ------------------------------------
  // `bench` will live in ./bench.ts. To enable it, add at the top of this file
  //   import { registerBench } from './bench.js';
  // and here
  //   registerBench(program);
  // (an action reports its exit code by setting process.exitCode or, to run
  // in-process like the others, by taking `io` and setting io.exitCode).
  registerBench(program, io);
  registerBoot(program, io);
  // -------------------------------------------------------------------------

  return program;
}

/**
 * Runs the command line (`argv` without node and script) and returns the
 * exit code: 0 success, 1 failure (a failed selftest, an error), 2 usage.
 */
export async function main(argv: readonly string[] = process.argv.slice(2), io: CliIo = processIo()): Promise<number> {
  const program = createProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return io.exitCode;
  } catch (e) {
    // --help and --version end up here with exit code 0; commander's own
    // errors (unknown option or command, missing argument) are usage errors.
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    io.stderr(`node-kvm: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/** Whether this module is the script node was started with (also through a bin symlink). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // `node-kvm selftest | head` closes the pipe early: stop quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  process.exitCode = await main();
}
