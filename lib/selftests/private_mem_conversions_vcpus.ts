/**
 * The vcpus of the multi-vcpu private_mem_conversions port (upstream's -n): vcpu 0
 * is the guest kit's, running the mailbox program with its mailbox at
 * `mailboxGpa`; vcpu i >= 1 runs its own copy of the program, at
 * SIBLING_CODE_GPA + i * 0x1000, with its mailbox at `mailboxGpa + i * 0x100`
 * baked in (upstream hands each vcpu its own base gpa). Each vcpu is run with
 * runAsync (its own thread), so several sit in KVM_RUN while the host works for
 * another; `running` says which runs are outstanding at any moment.
 */
import type { IoExit } from '../exit.js';
import { decodeUcall, Guest, MailboxDriver, mailboxProgram, type GuestEvent, type MailboxRunner } from '../guest/index.js';
import type { Kvm } from '../kvm.js';
import type { Vcpu } from '../vcpu.js';
import { SelftestFailure } from './assert.js';
import { addSiblingVcpus } from './sibling-vcpus.js';

/** Distance between the vcpus' mailboxes (32 bytes each). */
export const MAILBOX_STRIDE = 0x100n;
/** Where vcpu i >= 1's program copy starts: free system memory past the TSS, below the test data. */
export const SIBLING_CODE_GPA = 0x50000n;
const SIBLING_CODE_STRIDE = 0x1000n;

/** The vcpus with their mailboxes. */
export interface MailboxVcpus {
  /** Mailbox i drives vcpu i. */
  mailboxes: MailboxDriver[];
  /** Ids of the vcpus whose run is outstanding right now. */
  running: ReadonlySet<number>;
  /** Closes vcpus 1..count-1 (vcpu 0 is the guest's). */
  close(): void;
}

/** Runs a sibling vcpu of `guest` to its next ucall or exit, as Guest.run() does for the first. */
function siblingRunner(guest: Guest, vcpu: Vcpu): MailboxRunner {
  return {
    run: async (): Promise<GuestEvent> => {
      const exit = await vcpu.runAsync();
      if (exit.reason !== 'io') return { kind: 'exit', exit };
      return decodeUcall(exit as IoExit, vcpu.getRegs(), (gva) => guest.readGuestString(gva)) ?? { kind: 'exit', exit };
    },
  };
}

/**
 * Gives `guest` (created with `mailboxProgram(mailboxGpa)`) `count - 1` sibling
 * vcpus, each running its own mailbox program copy, and a driver per vcpu.
 */
export function mailboxVcpus(kvm: Kvm, guest: Guest, count: number, mailboxGpa: bigint): MailboxVcpus {
  const siblings: Vcpu[] = [];
  const close = (): void => {
    for (const v of siblings.splice(0)) v.close();
  };
  try {
    for (let i = 1; i < count; i++) {
      const at = SIBLING_CODE_GPA + BigInt(i) * SIBLING_CODE_STRIDE;
      const code = mailboxProgram(mailboxGpa + BigInt(i) * MAILBOX_STRIDE).assemble(at);
      if (BigInt(code.length) > SIBLING_CODE_STRIDE) throw new SelftestFailure(`the mailbox program (${code.length} bytes) does not fit its 0x${SIBLING_CODE_STRIDE.toString(16)}-byte slot`);
      guest.memory.bytes.set(code, Number(at));
    }
    addSiblingVcpus(kvm, guest, count, (i) => ({ rip: SIBLING_CODE_GPA + BigInt(i) * SIBLING_CODE_STRIDE }), siblings);
  } catch (e) {
    close();
    throw e;
  }
  const running = new Set<number>();
  const mailboxes = [guest.vcpu, ...siblings].map((vcpu, id) => {
    const runner = id === 0 ? guest : siblingRunner(guest, vcpu);
    const tracked: MailboxRunner = {
      run: async () => {
        running.add(id);
        try {
          return await runner.run();
        } finally {
          running.delete(id);
        }
      },
    };
    return new MailboxDriver(tracked, guest.memory, mailboxGpa + BigInt(id) * MAILBOX_STRIDE);
  });
  return { mailboxes, running, close };
}
