/**
 * `node-kvm selftest [name...] [--list]`: runs the ports of the kernel's KVM
 * selftests (lib/selftests) and prints TAP. Exit code 1 when any case fails
 * or KVM cannot be opened at all (no device, no permission: TAP "Bail out!"
 * with the reason and its hint; skipping every case would turn a CI job
 * green), 2 for a usage error (unknown suite, bad option), else 0. A known
 * kernel bug a case records is `not ok ... # TODO` and does not fail the run.
 */
import type { Command } from 'commander';
import { KvmError } from '../errors.js';
import { loadSuites, suiteNames } from '../selftests/index.js';
import { runCase, skipReason, todoText, type CaseResult } from '../selftests/runner.js';
import { probeHost } from '../selftests/host.js';
import { opt, readArray, readOptions } from '../options.js';
import type { SelftestCase, SelftestSuite } from '../selftests/types.js';
import type { CliIo } from './main.js';
import { TapWriter } from './tap.js';

/** Options of the selftest command. */
export interface SelftestOptions {
  /** List suites and cases (with skip reasons) instead of running them. */
  list?: boolean;
  /** Only cases whose "suite: case" name matches this regular expression. */
  grep?: string;
  /** `key=value` settings passed to the cases. */
  set?: string[];
  /** TAP version line: '13' or '14' (default). */
  tapVersion?: string;
}

/** Loads suites by name; tests pass their own. */
export type SuiteLoader = (names: readonly string[]) => Promise<SelftestSuite[]>;

/** Why KVM cannot be used at all (undefined when it can); tests pass their own. */
export type KvmAvailability = () => string | undefined;

const SELFTEST_OPTIONS = {
  list: opt.boolean,
  grep: opt.string,
  set: (v: unknown, k: string, op: string) => readArray(v, op, k),
  tapVersion: opt.string,
} as const;

/** Runs the selftest command and returns the exit code. */
export async function selftestCommand(
  names: readonly string[],
  selftestOptions: SelftestOptions,
  io: CliIo,
  load: SuiteLoader = loadSuites,
  kvmUnavailable: KvmAvailability = () => probeHost().unavailable,
): Promise<number> {
  const usage = (message: string): number => {
    io.stderr(`node-kvm selftest: ${message}\n`);
    return 2;
  };
  let options: { list?: boolean | undefined; grep?: string | undefined; set?: unknown[] | undefined; tapVersion?: string | undefined };
  try {
    options = readOptions(selftestOptions, 'selftest', SELFTEST_OPTIONS);
  } catch (e) {
    return usage(e instanceof Error ? e.message : String(e));
  }
  const settings = new Map<string, string>();
  for (const item of options.set ?? []) {
    if (typeof item !== 'string') return usage(`--set expects key=value, got ${typeof item}`);
    const eq = item.indexOf('=');
    if (eq <= 0) return usage(`--set expects key=value, got ${JSON.stringify(item)}`);
    settings.set(item.slice(0, eq), item.slice(eq + 1));
  }
  let grep: RegExp | undefined;
  if (options.grep !== undefined) {
    try {
      grep = new RegExp(options.grep);
    } catch (e) {
      return usage(`--grep: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const version = options.tapVersion ?? '14';
  if (version !== '13' && version !== '14') return usage(`--tap-version must be 13 or 14, got ${JSON.stringify(version)}`);

  let suites: SelftestSuite[];
  try {
    suites = await load(names);
  } catch (e) {
    if (e instanceof KvmError && e.code === 'ENOENT') return usage(e.message);
    throw e;
  }
  const selected: [SelftestSuite, SelftestCase[]][] = suites.map((s) => [s, s.cases.filter((c) => !grep || grep.test(`${s.name}: ${c.name}`))]);

  if (options.list) {
    for (const [suite, cases] of selected) {
      io.stdout(`${suite.name}${suite.description ? ` - ${suite.description}` : ''}\n`);
      for (const c of cases) {
        const reason = skipReason(c);
        io.stdout(`  ${c.name}${reason === undefined ? '' : `  [skip: ${reason}]`}\n`);
      }
    }
    return 0;
  }

  const tap = new TapWriter(io.stdout);
  tap.version(version === '13' ? 13 : 14);
  // Without KVM nothing can be tested: that is a failure, not a run of skips.
  const unavailable = kvmUnavailable();
  if (unavailable !== undefined) {
    tap.bailOut(unavailable);
    io.stderr(`node-kvm selftest: ${unavailable}\n`);
    return 1;
  }
  const total = selected.reduce((n, [, cases]) => n + cases.length, 0);
  tap.plan(total, total === 0 ? 'no cases selected' : undefined);
  const counts = { pass: 0, fail: 0, skip: 0, todo: 0 };
  const start = performance.now();
  for (const [suite, cases] of selected) {
    if (cases.length) tap.comment(`${suite.name}${suite.description ? `: ${suite.description}` : ''}`);
    for (const c of cases) {
      const result = await runCase(suite, c, { settings, onLog: (message) => tap.comment(`${c.name}: ${message}`) });
      counts[result.status]++;
      tap.testPoint(toTestPoint(result));
    }
  }
  tap.comment(`tests ${total}`);
  tap.comment(`pass ${counts.pass}`);
  tap.comment(`fail ${counts.fail}`);
  tap.comment(`skipped ${counts.skip}`);
  tap.comment(`todo ${counts.todo} (known kernel bugs and host differences: not ok, do not fail the run)`);
  tap.comment(`duration_ms ${(performance.now() - start).toFixed(0)}`);
  return counts.fail ? 1 : 0;
}

/** A case result as a TAP test point; failures carry what the error says in YAML. */
function toTestPoint(r: CaseResult): Parameters<TapWriter['testPoint']>[0] {
  // Notes (which engine ran) go on the line itself, so an ok is never misread.
  const description = `${r.suite}: ${r.name}${r.notes.length ? ` [${r.notes.join('; ')}]` : ''}`;
  if (r.status === 'skip') return { ok: true, description, skip: r.reason ?? '' };
  if (r.status === 'pass') return { ok: true, description };
  if (r.status === 'todo') return { ok: false, description, todo: r.todos.map(todoText).join('; ') };
  const e = r.error;
  const diagnostics: Record<string, unknown> = { message: e instanceof Error ? e.message : String(e), severity: 'fail' };
  if (e instanceof Error) diagnostics.name = e.name;
  if (e instanceof KvmError) {
    diagnostics.code = e.code;
    if (e.errno) diagnostics.errno = e.errno;
    if (e.ioctl) diagnostics.ioctl = e.ioctl;
    if (Object.keys(e.args).length) diagnostics.args = e.args;
  }
  if (r.todos.length) diagnostics.todos = r.todos.map(todoText);
  diagnostics.duration_ms = Math.round(r.durationMs);
  if (e instanceof Error && e.stack) diagnostics.stack = e.stack.split('\n').slice(1).map((l) => l.trim()).join('\n');
  return { ok: false, description, diagnostics };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Adds `selftest` to the program. */
export function registerSelftest(program: Command, io: CliIo): void {
  program
    .command('selftest')
    .description('run ports of the kernel KVM selftests and print TAP')
    .argument('[name...]', `suites to run (default: all of ${suiteNames().join(', ')})`)
    .option('-l, --list', 'list suites and cases, with the reason a case would be skipped')
    .option('-g, --grep <regexp>', 'only cases whose "suite: case" name matches')
    .option('-s, --set <key=value>', 'a setting for cases that take one, e.g. demand_paging.memory=1G (repeatable)', collect, [])
    .option('--tap-version <n>', 'TAP version to declare: 13 or 14', '14')
    .action(async (names: string[], options: SelftestOptions) => {
      io.exitCode = await selftestCommand(names, options, io);
    });
}
