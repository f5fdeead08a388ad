/**
 * The guest kit: build and run small x86-64 guests (64-bit, CPL3) from
 * TypeScript. Re-exported from the package entry as `guest`.
 */
export * from './asm.js';
export * from './page-tables.js';
export * from './layout.js';
export * from './ucall.js';
export * from './programs.js';
export * from './guest.js';
export * from './interrupts.js';
