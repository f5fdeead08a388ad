/**
 * The largest page the host backing of a slot can give KVM: 2 MiB for
 * anonymous memory that may get transparent huge pages, else 4 KiB. Like
 * KVM, the software engine never maps more than the host does.
 */
import { readFileSync } from 'node:fs';
import type { PageLevel } from '../soft-mmu/index.js';
import type { HostMemory } from '../memory.js';

let thpMode: 'always' | 'madvise' | 'never' | undefined;

/** The system's THP mode ('never' when unknown). */
export function transparentHugePageMode(): 'always' | 'madvise' | 'never' {
  if (thpMode === undefined) {
    try {
      const text = readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
      thpMode = (/\[(always|madvise|never)\]/.exec(text)?.[1] as typeof thpMode) ?? 'never';
    } catch {
      thpMode = 'never';
    }
  }
  return thpMode;
}

/** Host page level available for memory (anonymous THP; guest_memfd folios are 4 KiB here). */
export function hostMaxLevel(memory: HostMemory | undefined): PageLevel {
  if (!memory || memory.kind !== 'anonymous') return '4k';
  const mode = transparentHugePageMode();
  return mode === 'always' || (mode === 'madvise' && memory.hugePages) ? '2m' : '4k';
}
