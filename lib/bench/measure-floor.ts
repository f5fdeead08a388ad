/**
 * The zeroing floor, measured through node-kvm: fresh host memory of the
 * region's size, filled from the host. The Node twin of `reference --memset`:
 * allocation (mmap + madvise) and the fill are timed together, as in C.
 */
import { HostMemory } from '../memory.js';
import { completeRep, type RepMetrics } from './metrics.js';
import type { Variant } from './variants.js';

/** One repetition of a memset floor. */
export function measureFloorOnce(v: Variant, rep: number): RepMetrics {
  if (v.kind !== 'floor' || v.backing === 'gmem') throw new Error(`measureFloorOnce: ${v.id} is not an anon/thp floor`);
  const t0 = process.hrtime.bigint();
  const memory = HostMemory.allocate(BigInt(v.sizeBytes), { hugePages: v.backing === 'thp' });
  try {
    if (v.backing === 'anon') memory.advise('nohugepage');
    // TypedArray fill of a byte value is a memset in V8.
    memory.bytes.fill(0xff);
    const allocNs = Number(process.hrtime.bigint() - t0);
    return completeRep(
      {
        rep,
        allocNs,
        fillNs: 0,
        firstPassNs: null,
        secondPassNs: null,
        exitsFirstPass: null,
        exitsSecondPass: null,
        pfTaken: null,
        pages_4k: null,
        pages_2m: null,
        pages_1g: null,
        setupNs: null,
        slotNs: null,
      },
      v.pages,
    );
  } finally {
    memory.close();
  }
}
