/** The VM families (one codec per struct family); Vm's methods delegate here. */
export * from './irq.js';
export * from './state.js';
export * from './dirty-log.js';
export * from './device.js';
export * from './msr-filter.js';
