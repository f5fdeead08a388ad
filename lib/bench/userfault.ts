/**
 * The benchmark's userfaultfd variant (method 'userfault'): the region's
 * first touches are MISSING userfaults that node-kvm's native thread answers
 * with UFFDIO_ZEROPAGE (THP: 2 MiB at a time), so the first pass measures
 * userfaultfd demand paging beside kernel demand faulting and pre-faulting.
 * The zero answer is what a lazily restored snapshot costs at the least:
 * copying real contents adds a memcpy per page.
 */
import type { HostMemory } from '../memory.js';
import { userfaultSupport, type Userfault } from '../userfault.js';
import type { Backing } from './options.js';

/** Registers the region for userfaultfd, or says why the variant cannot run. */
export function registerBenchUserfault(memory: HostMemory, backing: Backing): Userfault | { unavailable: string } {
  const unavailable = userfaultSupport().unavailable;
  if (unavailable) return { unavailable };
  if (backing === 'gmem') return { unavailable: 'userfaultfd MISSING needs anonymous memory (guest_memfd has no userfaultfd mode on this kernel)' };
  return memory.registerUserfault({ mode: 'missing', source: 'zero', granule: backing === 'thp' ? '2m' : '4k' });
}
