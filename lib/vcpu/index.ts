/** The vcpu state families (one codec per struct family); Vcpu's methods delegate here. */
export * from './msrs.js';
export * from './fpu.js';
export * from './lapic.js';
export * from './events.js';
export * from './control.js';
export * from './sync-regs.js';
