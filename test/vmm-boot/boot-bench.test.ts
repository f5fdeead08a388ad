import { describe, expect, it } from 'vitest';
import { bootBenchVariants, summarize } from '../../lib/vmm/boot-bench.js';

describe('boot benchmark skeleton', () => {
  it('enumerates every pre-fault mode for every backing and summarises figures', () => {
    expect(bootBenchVariants()).toHaveLength(12);
    expect(bootBenchVariants(['none'], ['thp'])).toEqual([{ prefault: 'none', backing: 'thp' }]);
    expect(summarize([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3 });
    expect(summarize([4, 1, 2, 3]).median).toBe(2.5);
    expect(Number.isNaN(summarize([]).median)).toBe(true);
  });
});
