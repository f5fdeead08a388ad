/**
 * The shape of a selftest port: a suite (one upstream KVM selftest) made of
 * named cases. Cases are plain functions so that the same code runs under the
 * `node-kvm selftest` CLI (TAP output) and under vitest (one test per case).
 */
import type { Kvm } from '../kvm.js';

/** What a running case gets from the runner. */
export interface SelftestContext {
  /** An open /dev/kvm, closed by the runner after the case (VMs the case forgot to close go with the process). */
  readonly kvm: Kvm;
  /**
   * A diagnostic line for the person running the test (rates, deviations from
   * upstream). The CLI prints it as a TAP comment; vitest prints it to stdout.
   */
  log(message: string): void;
  /**
   * Free-form `key=value` settings from the command line (`--set`), for cases
   * that have a size or count a user may want to change. Keys are
   * `<suite>.<name>`; every case must work with none given.
   */
  readonly settings: ReadonlyMap<string, string>;
  /**
   * Records a known bug of the kernel (or a documented difference of this
   * host's KVM, such as kvm_pvm's shadow paging) that the case just observed.
   * The case goes on; if nothing else fails it ends as `todo`: TAP prints
   * `not ok N - ... # TODO <what> (kernels: ...)`, which does not fail the
   * run, and the summary counts it. Never use it for node-kvm's own
   * behaviour: that is a pass or a failure.
   *
   * @param what   what the kernel does wrong, in a few words
   * @param kernels the kernels known to have it (e.g. ['6.18']); the runner adds this host's release
   */
  todo(what: string, kernels: readonly string[]): void;
  /**
   * A short fact that belongs on the case's TAP line (e.g. which pre-fault
   * engine ran), so an `ok` is never read as something else. Shown as
   * `ok N - suite: case [note; note]`.
   */
  note(text: string): void;
}

/** One case of a suite. */
export interface SelftestCase {
  /** Unique within its suite; shown in TAP and vitest output. */
  readonly name: string;
  /** Runs the case; throwing (anything) fails it. */
  run(ctx: SelftestContext): void | Promise<void>;
  /**
   * Why the case cannot run on this host, or undefined when it can. Must be
   * cheap and must not throw: vitest calls it while collecting tests.
   */
  readonly skip?: () => string | undefined;
}

/** A port of one upstream selftest. */
export interface SelftestSuite {
  /** The upstream test's name without `_test` ('guest_memfd'); also the registry key. */
  readonly name: string;
  /** One line on what the suite checks. */
  readonly description?: string;
  readonly cases: readonly SelftestCase[];
}
