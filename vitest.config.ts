import { defineConfig } from 'vitest/config';
import { scaledTimeout } from './lib/time-scale.js';

// The kernel lab exports NODE_KVM_TIMEOUT_SCALE (how slow the emulation runs at boot):
// a busy machine makes tests slow, not failed.
const timeout = scaledTimeout(60_000);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // KVM tests create VMs and guest memory; two cores, so keep files in a
    // few forked processes and give slow kernel calls room.
    pool: 'forks',
    testTimeout: timeout,
    hookTimeout: timeout,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
