/**
 * The registry of selftest ports, by suite name. Suites load lazily so the
 * CLI starts fast and a broken suite only affects runs that ask for it.
 *
 * To add a suite: write lib/selftests/<name>.ts exporting `suite` (a
 * SelftestSuite whose name is <name>) and add one line to SUITE_LOADERS.
 */
import { KvmError } from '../errors.js';
import type { SelftestSuite } from './types.js';

/** A suite module: exports its suite as `suite`. */
export interface SuiteModule {
  suite: SelftestSuite;
}

/** Suite name -> module loader, in the order runs list them. */
const SUITE_LOADERS: Readonly<Record<string, () => Promise<SuiteModule>>> = {
  guest_memfd: () => import('./guest_memfd.js'),
  set_memory_region: () => import('./set_memory_region.js'),
  demand_paging: () => import('./demand_paging.js'),
  pre_fault_memory: () => import('./pre_fault_memory.js'),
  map_memory: () => import('./map_memory.js'),
  memslot_modification_stress: () => import('./memslot_modification_stress.js'),
  mmu_stress: () => import('./mmu_stress.js'),
  memslot_perf: () => import('./memslot_perf.js'),
  private_mem_kvm_exits: () => import('./private_mem_kvm_exits.js'),
  private_mem_conversions: () => import('./private_mem_conversions.js'),
  dirty_log: () => import('./dirty_log.js'),
  max_guest_memory: () => import('./max_guest_memory.js'),
};

/** Names of the registered suites, in run order. */
export function suiteNames(): string[] {
  return Object.keys(SUITE_LOADERS);
}

/** Loads one suite; throws KvmError 'ENOENT' for a name that is not registered. */
export async function loadSuite(name: string): Promise<SelftestSuite> {
  const loader = Object.hasOwn(SUITE_LOADERS, name) ? SUITE_LOADERS[name] : undefined;
  if (!loader) {
    throw new KvmError(`unknown selftest ${JSON.stringify(name)}; known: ${suiteNames().join(', ')}`, { code: 'ENOENT', args: { name } });
  }
  const { suite } = await loader();
  // The registry key is what users type; a module that names itself
  // differently would make --list and the run disagree.
  if (suite.name !== name) throw new KvmError(`selftest module for ${JSON.stringify(name)} names its suite ${JSON.stringify(suite.name)}`, { code: 'EINVAL' });
  return suite;
}

/** Loads the named suites (all when none are named), in registry order for "all". */
export async function loadSuites(names: readonly string[] = []): Promise<SelftestSuite[]> {
  const wanted = names.length ? names : suiteNames();
  return Promise.all(wanted.map((n) => loadSuite(n)));
}

export type { SelftestCase, SelftestContext, SelftestSuite } from './types.js';
export { runCase, runSuites, skipReason, type CaseResult, type RunOptions } from './runner.js';
export { SelftestFailure } from './assert.js';
