/**
 * "ucall": a tiny guest-to-host call protocol over port I/O.
 *
 * The guest loads arguments into registers and executes `out dx, eax` with
 * dx = {@link UCALL_PORT}. At CPL3 with IOPL 3 that exits to the host as
 * KVM_EXIT_IO, where {@link decodeUcall} turns the exit plus the vcpu registers
 * into a typed message. Registers rather than a memory block carry the arguments
 * so a ucall works even when the guest cannot write memory (read-only or
 * unmapped), which is what the fault tests poke at.
 *
 * Encoding of eax: bits 7:0 command ({@link UcallCommand}), bits 15:8 the number
 * of arguments (SYNC and PRINT), bits 31:16 zero. Arguments:
 * - DONE:  none.
 * - SYNC:  up to 4 values in rdi, rsi, r8, r9 (in that order).
 * - ABORT: rdi = guest virtual address of a NUL-terminated message, rsi = a value.
 * - PRINT: rdi = guest virtual address of a NUL-terminated message, up to 3
 *          values in rsi, r8, r9.
 *
 * A ucall clobbers rax, rdx and the argument registers it uses, nothing else;
 * the flags and the stack are untouched.
 *
 * @module
 */

import type { Asm, Imm, Reg64 } from './asm.js';
import { KvmError } from '../errors.js';

/** The I/O port a ucall writes to. */
export const UCALL_PORT = 0x1000;

/** ucall command numbers (eax bits 7:0). */
export const UcallCommand = {
  /** The guest finished successfully. */
  DONE: 1,
  /** A checkpoint with up to 4 values; the host resumes the guest afterwards. */
  SYNC: 2,
  /** The guest detected a failure: message + value. */
  ABORT: 3,
  /** A log message with up to 3 values; the host resumes the guest afterwards. */
  PRINT: 4,
} as const;
/** One of the {@link UcallCommand} numbers. */
export type UcallCommand = (typeof UcallCommand)[keyof typeof UcallCommand];

/** Registers carrying SYNC arguments, in order. */
export const UCALL_SYNC_ARG_REGS = ['rdi', 'rsi', 'r8', 'r9'] as const satisfies readonly Reg64[];
/** Registers carrying PRINT values, in order (rdi holds the message). */
export const UCALL_PRINT_ARG_REGS = ['rsi', 'r8', 'r9'] as const satisfies readonly Reg64[];

/** An argument of a ucall emitter: a 64-bit register's value or a constant. */
export type UcallArg = Reg64 | Imm;

/**
 * Where an ABORT/PRINT message lives: a label in the same program (addressed
 * RIP-relative), a guest virtual address, or text to embed in the code.
 */
export type UcallMessage = string | Imm | { text: string };

const REG64_NAMES: ReadonlySet<string> = new Set([
  'rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
]);

function isImm(x: unknown): x is Imm {
  return typeof x === 'number' || typeof x === 'bigint';
}

function checkArg(x: unknown, i: number): UcallArg {
  if (isImm(x)) return x;
  if (typeof x === 'string' && REG64_NAMES.has(x)) return x as Reg64;
  throw new TypeError(`ucall argument ${i} must be a 64-bit register name or an integer, got ${String(x)}`);
}

/**
 * Load `args` into `dsts` as if all moves happened at once, so that e.g.
 * (rsi, rdi) -> (rdi, rsi) swaps instead of duplicating. Register moves go first
 * (while every source still holds its original value), immediates last. rax is
 * the scratch register for cycles: it is never a destination here, and once only
 * cycles remain no pending move reads it.
 */
function emitParallelMoves(asm: Asm, dsts: readonly Reg64[], args: readonly UcallArg[]): void {
  let moves: { dst: Reg64; src: Reg64 }[] = [];
  const imms: { dst: Reg64; value: Imm }[] = [];
  args.forEach((arg, i) => {
    const dst = dsts[i]!;
    if (isImm(arg)) imms.push({ dst, value: arg });
    else if (arg !== dst) moves.push({ dst, src: arg });
  });
  while (moves.length > 0) {
    const ready = moves.find((m) => !moves.some((o) => o.src === m.dst));
    if (ready !== undefined) {
      asm.mov(ready.dst, ready.src);
      moves = moves.filter((m) => m !== ready);
      continue;
    }
    const blocked = moves[0]!.dst;
    asm.mov('rax', blocked);
    moves = moves.map((m) => (m.src === blocked ? { dst: m.dst, src: 'rax' } : m));
  }
  for (const { dst, value } of imms) asm.mov(dst, value);
}

function emitOut(asm: Asm, eax: number): void {
  asm.mov('edx', UCALL_PORT).mov('eax', eax).out('dx', 'eax');
}

/**
 * Put the message address in rdi. Returns a function that emits what must come
 * after the `out` (the embedded text and a jump over it), or nothing.
 */
function emitMessage(asm: Asm, message: UcallMessage): (() => void) | undefined {
  if (typeof message === 'string') {
    asm.lea('rdi', { label: message });
    return undefined;
  }
  if (isImm(message)) {
    asm.mov('rdi', message);
    return undefined;
  }
  if (typeof message === 'object' && message !== null && typeof message.text === 'string') {
    const text = asm.newLabel('ucall_msg');
    const after = asm.newLabel('ucall_after');
    asm.lea('rdi', { label: text });
    // The string sits inline behind the call; if the host resumes the guest,
    // execution must jump over it rather than run the bytes as code.
    return () => {
      asm.jmp(after).label(text).asciz(message.text).label(after);
    };
  }
  throw new TypeError(`ucall message must be a label name, an address or { text }, got ${String(message)}`);
}

/** Emit a DONE ucall (`mov edx, UCALL_PORT; mov eax, 1; out dx, eax`). Clobbers rax, rdx. */
export function emitUcallDone(asm: Asm): Asm {
  emitOut(asm, UcallCommand.DONE);
  return asm;
}

/**
 * Emit a SYNC ucall with up to four arguments (registers or constants), passed
 * in rdi, rsi, r8, r9. Arguments may name any register, including ones being
 * overwritten (they are read before anything is written) and rax/rdx.
 * Clobbers rax, rdx and the argument registers used.
 */
export function emitUcallSync(asm: Asm, ...args: UcallArg[]): Asm {
  if (args.length > UCALL_SYNC_ARG_REGS.length) {
    throw new RangeError(`a SYNC ucall takes at most ${UCALL_SYNC_ARG_REGS.length} arguments, got ${args.length}`);
  }
  emitParallelMoves(asm, UCALL_SYNC_ARG_REGS, args.map(checkArg));
  emitOut(asm, UcallCommand.SYNC | (args.length << 8));
  return asm;
}

/**
 * Emit an ABORT ucall: rdi = message address (a label in this program, a guest
 * virtual address, or `{ text }` to embed the string in the code), rsi = `value`
 * (a register or a constant, e.g. a line number or the offending value).
 * Clobbers rax, rdx, rdi, rsi. The host is not expected to resume the guest; if
 * it does, execution continues after the call.
 */
export function emitUcallAbort(asm: Asm, message: UcallMessage, value: UcallArg = 0): Asm {
  // rsi first: `value` may be rdi, which the message address overwrites.
  emitParallelMoves(asm, ['rsi'], [checkArg(value, 0)]);
  const tail = emitMessage(asm, message);
  emitOut(asm, UcallCommand.ABORT);
  tail?.();
  return asm;
}

/**
 * Emit a PRINT ucall: rdi = message address (as for ABORT), up to three values
 * in rsi, r8, r9. Clobbers rax, rdx, rdi and the value registers used.
 */
export function emitUcallPrint(asm: Asm, message: UcallMessage, ...values: UcallArg[]): Asm {
  if (values.length > UCALL_PRINT_ARG_REGS.length) {
    throw new RangeError(`a PRINT ucall takes at most ${UCALL_PRINT_ARG_REGS.length} values, got ${values.length}`);
  }
  emitParallelMoves(asm, UCALL_PRINT_ARG_REGS, values.map(checkArg));
  const tail = emitMessage(asm, message);
  emitOut(asm, UcallCommand.PRINT | (values.length << 8));
  tail?.();
  return asm;
}

// ---------------------------------------------------------------------------
// Host side

/** The parts of a KVM_EXIT_IO exit that decoding needs (lib/exit.ts's IoExit fits). */
export interface UcallIo {
  /** I/O port accessed. */
  port: number;
  /** 'out' for a guest write (ucalls are always writes). */
  direction: 'out' | 'in';
  /** Bytes per access (1, 2 or 4). */
  size: number;
  /** The bytes written; if absent, eax is taken from `regs.rax`. */
  data?: Uint8Array;
}

/** The registers a ucall reads (a kvm_regs object fits). */
export interface UcallRegs {
  /** eax (low half) holds the command word when `io.data` is not given. */
  rax: bigint;
  /** SYNC argument 0, or the ABORT/PRINT message address. */
  rdi: bigint;
  /** SYNC argument 1, the ABORT value, or PRINT value 0. */
  rsi: bigint;
  /** SYNC argument 2 or PRINT value 1. */
  r8: bigint;
  /** SYNC argument 3 or PRINT value 2. */
  r9: bigint;
}

/** A decoded ucall. */
export type Ucall =
  | { kind: 'done' }
  | { kind: 'sync'; args: bigint[] }
  | { kind: 'abort'; message: string; messageGva: bigint; value: bigint }
  | { kind: 'print'; message: string; messageGva: bigint; args: bigint[] };

/**
 * A write to {@link UCALL_PORT} that does not follow the protocol: a KvmError
 * with code 'EPROTO' (errno 0: the kernel reported nothing; the guest broke
 * the protocol).
 */
export class UcallDecodeError extends KvmError {
  /** Create the error with a description of what was wrong. */
  constructor(message: string) {
    super(message, { code: 'EPROTO', errno: 0, syscall: 'ucall' });
    this.name = 'UcallDecodeError';
  }
}

function u64(v: bigint): bigint {
  return BigInt.asUintN(64, v);
}

function readMessage(gva: bigint, read: ((gva: bigint) => string) | undefined): string {
  const where = `0x${gva.toString(16)}`;
  if (read === undefined) return `<message at gva ${where}>`;
  try {
    return read(gva);
  } catch (e) {
    // An abort report must not be lost because its text is unreadable.
    return `<unreadable message at gva ${where}: ${e instanceof Error ? e.message : String(e)}>`;
  }
}

/**
 * Decode an I/O exit as a ucall. Returns undefined when the exit is not for
 * {@link UCALL_PORT} (some other device's I/O); throws UcallDecodeError for an
 * access to the port that breaks the protocol (wrong direction or size, unknown
 * command, too many arguments), because silently ignoring it would hide a guest
 * bug.
 *
 * `readGuestString` turns a message address into text (see
 * {@link readGuestCString} for identity-mapped guests); without it the message
 * is a placeholder naming the address.
 */
export function decodeUcall(
  io: UcallIo,
  regs: UcallRegs,
  readGuestString?: (gva: bigint) => string,
): Ucall | undefined {
  if (io.port !== UCALL_PORT) return undefined;
  if (io.direction !== 'out') throw new UcallDecodeError(`ucall port 0x${UCALL_PORT.toString(16)} read by the guest`);
  if (io.size !== 4) throw new UcallDecodeError(`ucall must be a 4-byte out (out dx, eax), got ${io.size} bytes`);
  let eax: number;
  if (io.data !== undefined) {
    if (io.data.byteLength < 4) throw new UcallDecodeError(`ucall data has ${io.data.byteLength} bytes, need 4`);
    eax = new DataView(io.data.buffer, io.data.byteOffset, 4).getUint32(0, true);
  } else {
    eax = Number(regs.rax & 0xffff_ffffn);
  }
  const command = eax & 0xff;
  const count = (eax >>> 8) & 0xff;
  if (eax >>> 16 !== 0) throw new UcallDecodeError(`ucall eax 0x${eax.toString(16)} has reserved bits set`);
  if ((command === UcallCommand.DONE || command === UcallCommand.ABORT) && count !== 0) {
    throw new UcallDecodeError(`ucall command ${command} takes no argument count, eax 0x${eax.toString(16)}`);
  }
  switch (command) {
    case UcallCommand.DONE:
      return { kind: 'done' };
    case UcallCommand.SYNC: {
      if (count > 4) throw new UcallDecodeError(`SYNC ucall with ${count} arguments (max 4)`);
      return { kind: 'sync', args: [regs.rdi, regs.rsi, regs.r8, regs.r9].slice(0, count).map(u64) };
    }
    case UcallCommand.ABORT: {
      const gva = u64(regs.rdi);
      return { kind: 'abort', message: readMessage(gva, readGuestString), messageGva: gva, value: u64(regs.rsi) };
    }
    case UcallCommand.PRINT: {
      if (count > 3) throw new UcallDecodeError(`PRINT ucall with ${count} values (max 3)`);
      const gva = u64(regs.rdi);
      return {
        kind: 'print',
        message: readMessage(gva, readGuestString),
        messageGva: gva,
        args: [regs.rsi, regs.r8, regs.r9].slice(0, count).map(u64),
      };
    }
    default:
      throw new UcallDecodeError(`unknown ucall command ${command} (eax 0x${eax.toString(16)})`);
  }
}

/**
 * Read a NUL-terminated UTF-8 string from a host view of guest memory, for
 * identity-mapped guests where a guest virtual address equals the guest
 * physical one. Stops at `maxBytes` or at the end of `memory` if no NUL comes
 * first. Throws RangeError if `gva` is outside `memory`.
 */
export function readGuestCString(
  memory: Uint8Array,
  memoryGpa: number | bigint,
  gva: bigint,
  maxBytes = 4096,
): string {
  const start = gva - BigInt(memoryGpa);
  if (start < 0n || start >= BigInt(memory.byteLength)) {
    throw new RangeError(`gva 0x${gva.toString(16)} is outside guest memory`);
  }
  const from = Number(start);
  const limit = Math.min(memory.byteLength, from + maxBytes);
  let end = from;
  while (end < limit && memory[end] !== 0) end++;
  return new TextDecoder().decode(memory.subarray(from, end));
}
