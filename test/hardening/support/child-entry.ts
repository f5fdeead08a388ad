/**
 * Entry of the bundle that child processes and worker threads load (they run
 * plain JavaScript, not vitest's TypeScript pipeline): the public API plus the
 * addon, exactly as the tests see them.
 */
export * from '../../../lib/index.js';
export { native, addonPath } from '../../../lib/native.js';
// Test hooks: forcing the pre-5.14 touch fallback of the software pre-fault engine.
export { setMadvisePopulateSupportedForTest, madvisePopulateSupported } from '../../../lib/memory.js';
// The selftest command, for running it as another user.
export { selftestCommand } from '../../../lib/cli/selftest.js';
