/**
 * A small typed x86-64 assembler for the test guests this project runs.
 *
 * It covers what a guest needs to loop over memory and talk to the host over
 * port I/O: moves, loads and stores with full [base + index*scale + disp]
 * addressing, integer ALU operations, shifts, branches to labels and raw data.
 * It is deliberately not a general assembler: there are no 'ah'..'bh' registers,
 * no SSE, and no 16/32-bit code modes. Every instruction is encoded eagerly except
 * branches, whose width (rel8 or rel32) is chosen when the program is linked.
 *
 * The class is built in layers, one file per idea under ./asm/: the program
 * core (labels, data, linking; program.ts) and the instruction families on top
 * of it (moves.ts, arithmetic.ts, control-flow.ts, system.ts), with the
 * encoder (encoding.ts) and linker (link.ts) as plain functions.
 *
 * @module
 */
import { AsmSystem } from './asm/system.js';
import type { AsmOptions } from './asm/program.js';

export * from './asm/operands.js';
export type { AsmOptions } from './asm/program.js';
export type { LinkedProgram } from './asm/link.js';

/**
 * A builder for x86-64 machine code. Instruction methods append to the program
 * and return `this` so calls chain; {@link Asm.link} / {@link Asm.assemble}
 * resolve labels for a given load address.
 *
 * Intel operand order throughout: destination first.
 */
export class Asm extends AsmSystem {
  /** Create an empty program. */
  constructor(options: AsmOptions = {}) {
    super(options);
  }
}
