/**
 * A guest that runs memory commands the host leaves in a mailbox: fill a range
 * with a 64-bit pattern, check that a range holds one, copy a range, sum a range.
 * The host writes one command, runs the vcpu, and gets a SYNC ucall with the result.
 * Used by the private-memory ports (the guest's own accesses are what counts:
 * the host cannot see private memory) and by the launch flow (the loader and the
 * checker). Sizes are multiples of 8; accesses are 8-byte loads and stores.
 *
 * Mailbox layout (little-endian u64s at `mailboxGpa`, which must be identity
 * mapped and shared): op, a, b, c. Ops and their SYNC answers:
 * - FILL  (a = gpa, b = bytes, c = pattern)       -> SYNC(FILL, 0)
 * - CHECK (a = gpa, b = bytes, c = pattern)       -> SYNC(CHECK, 0) or SYNC(CHECK, gpa of the first mismatch, value found)
 * - COPY  (a = dst, b = bytes, c = src)           -> SYNC(COPY, 0)
 * - SUM   (a = gpa, b = bytes)                    -> SYNC(SUM, 0, sum of the u64s mod 2^64, xor of them)
 * - DONE                                          -> DONE
 */
import { Asm } from './asm.js';
import { emitUcallDone, emitUcallSync } from './ucall.js';
import type { Guest, GuestEvent } from './guest.js';
import type { HostMemory } from '../memory.js';
import { KvmError } from '../errors.js';

/** Mailbox commands. */
export const MailboxOp = { FILL: 1n, CHECK: 2n, COPY: 3n, SUM: 4n, DONE: 5n } as const;

/** The guest program; the mailbox address is baked in. */
export function mailboxProgram(mailboxGpa: bigint): Asm {
  const a = new Asm({ branches: 'near' });
  a.label('start').mov('r12', mailboxGpa);
  a.label('top');
  a.load('r13', { base: 'r12' });
  a.load('rbx', { base: 'r12', disp: 8 });
  a.load('rcx', { base: 'r12', disp: 16 });
  a.load('r14', { base: 'r12', disp: 24 });
  a.shr('rcx', 3);
  a.cmp('r13', Number(MailboxOp.FILL)).je('fill');
  a.cmp('r13', Number(MailboxOp.CHECK)).je('check');
  a.cmp('r13', Number(MailboxOp.COPY)).je('copy');
  a.cmp('r13', Number(MailboxOp.SUM)).je('sum');
  emitUcallDone(a);
  a.jmp('top');

  a.label('fill').test('rcx', 'rcx').jz('fill_done');
  a.label('fill_loop').store({ base: 'rbx' }, 'r14').add('rbx', 8).decJnz('rcx', 'fill_loop');
  a.label('fill_done');
  emitUcallSync(a, MailboxOp.FILL, 0);
  a.jmp('top');

  a.label('check').test('rcx', 'rcx').jz('check_ok');
  a.label('check_loop').load('r15', { base: 'rbx' }).cmp('r15', 'r14').jne('check_bad').add('rbx', 8).decJnz('rcx', 'check_loop');
  a.label('check_ok');
  emitUcallSync(a, MailboxOp.CHECK, 0);
  a.jmp('top');
  a.label('check_bad');
  emitUcallSync(a, MailboxOp.CHECK, 'rbx', 'r15');
  a.jmp('top');

  // copy: rbx = dst, r14 = src
  a.label('copy').test('rcx', 'rcx').jz('copy_done');
  a.label('copy_loop').load('r15', { base: 'r14' }).store({ base: 'rbx' }, 'r15').add('rbx', 8).add('r14', 8).decJnz('rcx', 'copy_loop');
  a.label('copy_done');
  emitUcallSync(a, MailboxOp.COPY, 0);
  a.jmp('top');

  // sum: r14 = sum, r13 = xor
  a.label('sum').mov('r14', 0).mov('r13', 0).test('rcx', 'rcx').jz('sum_done');
  a.label('sum_loop').load('r15', { base: 'rbx' }).add('r14', 'r15').xor('r13', 'r15').add('rbx', 8).decJnz('rcx', 'sum_loop');
  a.label('sum_done');
  emitUcallSync(a, MailboxOp.SUM, 0, 'r14', 'r13');
  a.jmp('top');
  return a;
}

/** Handles a stop that is not the answer; true to run on. */
export type StopHandler = (e: GuestEvent) => Promise<boolean> | boolean;

/** What runs the mailbox program to its next stop: a Guest, or a runner of one of its sibling vcpus. */
export type MailboxRunner = Pick<Guest, 'run'>;

/** What a command answered. */
export interface MailboxAnswer {
  /** 0 on success; for CHECK the gpa of the first mismatch. */
  status: bigint;
  /** CHECK: the value found at the mismatch; SUM: the sum. */
  value: bigint;
  /** SUM: the xor. */
  extra: bigint;
}

/**
 * Host side of the mailbox guest: writes a command, runs the vcpu to its SYNC and
 * returns the answer. Any other stop (an exit, an abort) is returned as the
 * guest event so the caller can handle it (a memory-fault exit, say) and call
 * `resume()`.
 */
export class MailboxDriver {
  readonly #guest: MailboxRunner;
  readonly #view: DataView;

  /**
   * `memory` is the shared host memory holding the mailbox at `offset`; `guest`
   * is what runs the mailbox program (a Guest, or any runner of another vcpu of
   * its VM, each with its own mailbox).
   */
  constructor(guest: MailboxRunner, memory: HostMemory, offset: bigint) {
    this.#guest = guest;
    const bytes = memory.bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset + Number(offset), 32);
  }

  /** Writes the command and runs the guest until it answers (`onStop` as for resume()). */
  async command(op: bigint, a: bigint, b: bigint, c = 0n, onStop?: StopHandler): Promise<MailboxAnswer> {
    this.#view.setBigUint64(0, op, true);
    this.#view.setBigUint64(8, a, true);
    this.#view.setBigUint64(16, b, true);
    this.#view.setBigUint64(24, c, true);
    return this.resume(op, onStop);
  }

  /**
   * Runs until the answer to `op`. A stop that is not the answer throws a
   * KvmError 'EGUESTEXIT' carrying it (`args.event`) unless `onStop` handles it
   * (returns true to run on: a VMM answering a memory-fault exit).
   */
  async resume(op: bigint, onStop?: StopHandler): Promise<MailboxAnswer> {
    for (;;) {
      const e = await this.#guest.run();
      if (e.kind === 'sync' && e.args[0] === op) return { status: e.args[1] ?? 0n, value: e.args[2] ?? 0n, extra: e.args[3] ?? 0n };
      if (e.kind === 'exit' && e.exit.reason === 'intr') continue;
      if (onStop && (await onStop(e))) continue;
      throw new KvmError(`mailbox guest: expected the answer to op ${op}, got ${describe(e)}`, { code: 'EGUESTEXIT', args: { op, event: describe(e) } });
    }
  }

  /** FILL and wait. */
  fill(gpa: bigint, size: bigint, pattern: bigint): Promise<MailboxAnswer> {
    return this.command(MailboxOp.FILL, gpa, size, pattern);
  }

  /** CHECK and wait. */
  check(gpa: bigint, size: bigint, pattern: bigint): Promise<MailboxAnswer> {
    return this.command(MailboxOp.CHECK, gpa, size, pattern);
  }

  /** COPY and wait. */
  copy(dst: bigint, size: bigint, src: bigint): Promise<MailboxAnswer> {
    return this.command(MailboxOp.COPY, dst, size, src);
  }

  /** SUM and wait. */
  sum(gpa: bigint, size: bigint): Promise<MailboxAnswer> {
    return this.command(MailboxOp.SUM, gpa, size);
  }
}

/** A byte repeated over a u64 (upstream's patterns are bytes). */
export function bytePattern(byte: number): bigint {
  return BigInt(byte & 0xff) * 0x0101_0101_0101_0101n;
}

function describe(e: GuestEvent): string {
  if (e.kind === 'exit') {
    const x = e.exit as unknown as Record<string, unknown>;
    return Object.entries(x).filter(([, v]) => !(v instanceof Uint8Array)).map(([k, v]) => `${k}=${typeof v === 'bigint' ? `0x${v.toString(16)}` : String(v)}`).join(' ');
  }
  if (e.kind === 'sync') return `sync(${e.args.map((x) => `0x${x.toString(16)}`).join(', ')})`;
  if (e.kind === 'abort') return `abort: ${e.message}`;
  return e.kind;
}
