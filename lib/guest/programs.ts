/**
 * Ready-made guest programs for the fault and memslot tests. Each returns an
 * {@link Asm} whose entry point is its first byte (label 'start'); link it at
 * the code address with `asm.assemble(codeGpa)`. They use only registers a
 * ucall does not clobber for their own state (rbx, rcx, r12-r15).
 *
 * @module
 */

import { Asm, type Imm } from './asm.js';
import { emitUcallDone, emitUcallSync } from './ucall.js';

/** Options of {@link touchPagesProgram}. */
export interface TouchPagesOptions {
  /** Guest virtual address of the first access. */
  startGva: Imm;
  /** Number of accesses (pages); 0 goes straight to DONE. */
  pages: Imm;
  /** Bytes between accesses. Default 4096 (one access per 4 KiB page). */
  stride?: Imm;
  /**
   * true: store 8 bytes per page, the value being the address stored to (so the
   * host can check each page's first u64 equals its own address). false: load 8
   * bytes per page and discard them.
   */
  write: boolean;
  /** Report completion with a DONE ucall (the only completion mechanism so far). */
  ucall?: true;
}

function big(v: Imm, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw new TypeError(`${what} must be an integer (safe number or bigint), got ${String(v)}`);
  }
  return BigInt(v);
}

function fitsS32(v: bigint): boolean {
  return v >= -(1n << 31n) && v < 1n << 31n;
}

/**
 * A guest that touches `pages` addresses `startGva + i*stride`, one 8-byte store
 * (or load) each, then does a DONE ucall. Resuming it after DONE runs the whole
 * pass again and reports DONE again, which is how a test measures a second pass
 * over already-mapped memory without resetting registers.
 *
 * ```
 * start: mov rbx, startGva ; mov rcx, pages ; [mov r12, stride]
 *        test rcx, rcx ; jz done
 * loop:  mov [rbx], rbx   (or: mov r13, [rbx])
 *        add rbx, stride  (or: add rbx, r12)
 *        dec rcx ; jnz loop
 * done:  DONE ucall ; jmp start
 * ```
 */
export function touchPagesProgram(opts: TouchPagesOptions): Asm {
  const start = BigInt.asUintN(64, big(opts.startGva, 'startGva'));
  const pages = big(opts.pages, 'pages');
  const stride = big(opts.stride ?? 4096, 'stride');
  if (pages < 0n || pages >= 1n << 64n) throw new RangeError(`pages must be 0..2^64-1, got ${pages}`);
  if (stride < -(1n << 63n) || stride >= 1n << 64n) throw new RangeError(`stride ${stride} does not fit in 64 bits`);
  if (opts.ucall !== undefined && opts.ucall !== true) throw new TypeError('ucall must be true (or omitted)');

  const a = new Asm();
  const strideS = BigInt.asIntN(64, stride);
  a.label('start').mov('rbx', start).mov('rcx', pages);
  // add takes only a sign-extended imm32; wider strides come from a register.
  const strideInReg = !fitsS32(strideS);
  if (strideInReg) a.mov('r12', stride);
  a.test('rcx', 'rcx').jz('done');
  a.label('loop');
  if (opts.write) a.store({ base: 'rbx' }, 'rbx');
  else a.load('r13', { base: 'rbx' });
  if (strideInReg) a.add('rbx', 'r12');
  else a.add('rbx', strideS);
  a.decJnz('rcx', 'loop');
  a.label('done');
  emitUcallDone(a);
  a.jmp('start');
  return a;
}

/** The second SYNC argument of {@link spinReadProgram}: why it reported. */
export const SpinReadReason = {
  /** First read, before the loop starts. */
  INITIAL: 0n,
  /** The value differs from the last one reported. */
  CHANGED: 1n,
  /** `heartbeatIterations` reads passed without a change. */
  HEARTBEAT: 2n,
} as const;

/** Options of {@link spinReadProgram}. */
export interface SpinReadOptions {
  /** Guest virtual address of the u64 to watch (8-byte aligned is customary). */
  gva: Imm;
  /**
   * If set, also report (reason HEARTBEAT) after this many reads without a
   * change, so the host regains control periodically even when nothing changes.
   * Default: never.
   */
  heartbeatIterations?: Imm;
}

/**
 * A guest that reads the u64 at `gva` forever and reports it with a SYNC ucall
 * whenever it differs from the last value reported: args = [value, reason]
 * (see {@link SpinReadReason}). The first SYNC (INITIAL) comes right after the
 * first read, so the host knows the guest runs and what it saw. The loop has a
 * `pause` so a spinning vcpu is cheap for the sibling hyperthread. Meant for
 * moving or deleting a memslot while the guest runs.
 *
 * Registers: rbx = address, r12 = last reported value, r13 = current value,
 * r14 = heartbeat countdown.
 */
export function spinReadProgram(opts: SpinReadOptions): Asm {
  const gva = BigInt.asUintN(64, big(opts.gva, 'gva'));
  const heartbeat = opts.heartbeatIterations === undefined ? undefined : big(opts.heartbeatIterations, 'heartbeatIterations');
  if (heartbeat !== undefined && (heartbeat <= 0n || heartbeat >= 1n << 64n)) {
    throw new RangeError(`heartbeatIterations must be 1..2^64-1, got ${heartbeat}`);
  }

  const a = new Asm();
  a.label('start').mov('rbx', gva);
  a.load('r12', { base: 'rbx' });
  emitUcallSync(a, 'r12', SpinReadReason.INITIAL);
  if (heartbeat !== undefined) a.mov('r14', heartbeat);
  a.label('loop');
  a.load('r13', { base: 'rbx' });
  a.cmp('r13', 'r12').jne('changed');
  if (heartbeat !== undefined) a.decJnz('r14', 'idle').jmp('heartbeat');
  a.label('idle').pause().jmp('loop');

  a.label('changed').mov('r12', 'r13');
  if (heartbeat !== undefined) a.mov('r14', heartbeat);
  emitUcallSync(a, 'r12', SpinReadReason.CHANGED);
  a.jmp('loop');

  if (heartbeat !== undefined) {
    a.label('heartbeat').mov('r14', heartbeat);
    emitUcallSync(a, 'r12', SpinReadReason.HEARTBEAT);
    a.jmp('loop');
  }
  return a;
}
