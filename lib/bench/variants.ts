/**
 * The variants a run measures, in the order it measures them, and the C
 * reference run that does the same work as each.
 */
import { defaultThreads } from '../prefault/index.js';
import { formatSize, type Access, type Backing, type BenchOptions, type Method } from './options.js';

/** A floor: host memset of fresh memory (no guest). */
export type FloorMethod = 'memset';

/** What the C reference runs for a variant (scripts/bench/reference.c arguments). */
export interface ReferenceSpec {
  /** Arguments besides --reps/--warmup. */
  args: string[];
  /** Identity of the run: variants with the same key share one C measurement. */
  key: string;
}

/** One thing measured: a guest variant or a floor. */
export interface Variant {
  /** Unique, stable id: "256M write anon populate t2". */
  id: string;
  /** Short label for tables and the chart (size and access left out when the run has only one). */
  label: string;
  kind: 'guest' | 'floor';
  backing: Backing;
  method: Method | FloorMethod;
  /** Populate threads (software, populate; auto: the library default); 1 where threads do not apply. */
  threads: number;
  access: Access;
  sizeBytes: number;
  pages: number;
  /** The C counterpart, or why there is none. */
  reference: ReferenceSpec | { unavailable: string };
}

/** Whether a method takes --threads. */
export function usesThreads(method: Method | FloorMethod): boolean {
  return method === 'populate' || method === 'software';
}

/**
 * The C run doing the same work as a variant:
 * - demand, populate, memset: the same method;
 * - software and auto: the software engine is MADV_POPULATE_WRITE over the
 *   slot's host memory (split over the same number of threads) plus node-kvm's
 *   bookkeeping, so C populate-write with those threads is its reference:
 *   the Node/C ratio is the library's overhead over the bare syscalls;
 * - kernel: KVM_PRE_FAULT_MEMORY in a loop (reported unavailable where the
 *   kernel refuses it).
 */
export function referenceSpec(v: Pick<Variant, 'kind' | 'backing' | 'method' | 'threads' | 'access' | 'sizeBytes'>): ReferenceSpec | { unavailable: string } {
  const size = String(v.sizeBytes);
  let args: string[];
  if (v.kind === 'floor') {
    if (v.backing === 'gmem') return { unavailable: 'the C memset floor takes anon or thp memory' };
    args = ['--memset', '--size', size, '--backing', v.backing];
  } else if (v.method === 'userfault') {
    return { unavailable: 'the C reference has no userfaultfd variant' };
  } else if (v.method === 'demand') {
    args = ['--size', size, '--backing', v.backing, '--method', 'demand', '--access', v.access];
  } else if (v.method === 'kernel') {
    args = ['--size', size, '--backing', v.backing, '--method', 'prefault-kernel', '--access', v.access];
  } else {
    const populateAccess = v.method === 'populate' ? v.access : 'write';
    args = ['--size', size, '--backing', v.backing, '--method', 'populate', '--threads', String(v.threads), '--access', v.access, '--populate-access', populateAccess];
  }
  return { args, key: args.join(' ') };
}

/** Which memset floor stands for a backing's zeroing: 4 KiB pages for anon and guest_memfd, huge pages for THP. */
export function floorBacking(b: Backing): Backing {
  return b === 'thp' ? 'thp' : 'anon';
}

/** Every variant of a run, in measuring order: per size and access, per backing, its floor first. */
export function expandVariants(options: BenchOptions, autoThreads: number = defaultThreads()): Variant[] {
  const out: Variant[] = [];
  const manySizes = options.sizes.length > 1;
  const manyAccess = options.access.length > 1;
  for (const sizeBytes of options.sizes) {
    const floorsDone = new Set<Backing>();
    for (const access of options.access) {
      const prefix = `${manySizes ? `${formatSize(sizeBytes)} ` : ''}${manyAccess ? `${access} ` : ''}`;
      const add = (kind: Variant['kind'], backing: Backing, method: Method | FloorMethod, threads: number): void => {
        const threadsLabel = usesThreads(method) ? ` t${threads}` : method === 'auto' ? ` (t${threads})` : '';
        // A floor is a host memset: it writes, whatever the guest variants do.
        const v = { kind, backing, method, threads, access: kind === 'floor' ? ('write' as const) : access, sizeBytes, pages: sizeBytes / 4096 };
        const body = `${backing} ${method}${threadsLabel}`;
        out.push({
          ...v,
          id: `${formatSize(sizeBytes)} ${kind === 'floor' ? 'floor' : access} ${body}`,
          label: kind === 'floor' ? `${manySizes ? `${formatSize(sizeBytes)} ` : ''}${body}` : `${prefix}${body}`,
          reference: referenceSpec(v),
        });
      };
      for (const backing of options.backings) {
        const floor = floorBacking(backing);
        if (!floorsDone.has(floor)) {
          floorsDone.add(floor);
          add('floor', floor, 'memset', 1);
        }
        for (const method of options.methods) {
          if (usesThreads(method)) for (const t of options.threads) add('guest', backing, method, t);
          else add('guest', backing, method, method === 'auto' ? autoThreads : 1);
        }
      }
    }
  }
  return out;
}
