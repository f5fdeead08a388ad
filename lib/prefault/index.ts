/** Pre-faulting guest memory: the contract and its two engines. */
export * from './contract.js';
export { preFaultMemory, preFaultMemorySync } from './run.js';
export { EAGAIN_RETRY_LIMIT, EINTR_RETRY_LIMIT } from './loop.js';
export { defaultThreads } from './step.js';
export { isShadowPagingHost } from './engine-choice.js';
