/**
 * Shared by the private-memory tests: whether this host has a software-protected
 * VM with private memory (the lab's sw-protected kernel does; this machine's
 * kvm_pvm and Debian's kernels do not), and whether it must (NODE_KVM_LAB_KERNEL
 * names the lab kernel: on sw-protected a skip would hide a regression, so the
 * "nothing skipped" test fails instead).
 */
import { Kvm, type Vm } from '../../lib/index.js';
import { Guest, MailboxDriver, mailboxProgram } from '../../lib/guest/index.js';
import { firstReason, needs } from '../../lib/selftests/host.js';
import { kernelEngineMissing } from '../support/engines.js';

/** The lab kernel the tests run on (set by scripts/test-lab.sh), if any. */
export const labKernel: string | undefined = process.env.NODE_KVM_LAB_KERNEL || undefined;

/** True where private memory must work: the lab's sw-protected kernel. */
export const privateRequired = labKernel === 'sw-protected';

/** Why private memory cannot be tested here: no sw-protected VM type, no PRIVATE attribute, no guest_memfd. */
export const privateUnavailable: string | undefined = firstReason(needs.vmType('sw-protected'), needs.privateMemory, needs.guestMemfd);

/** Why kernel-vs-software comparisons on private memory cannot run here. */
export const privateKernelUnavailable: string | undefined = privateUnavailable ?? kernelEngineMissing;

/** A sw-protected VM (and its Kvm), closed together. */
export function swProtectedVm(): { kvm: Kvm; vm: Vm } & Disposable {
  const kvm = Kvm.open();
  try {
    const vm = kvm.createVm({ type: 'sw-protected' });
    return { kvm, vm, [Symbol.dispose]: () => { vm.close(); kvm.close(); } };
  } catch (e) {
    kvm.close();
    throw e;
  }
}

/** 4 KiB, 1 MiB, 2 MiB. */
export const PAGE = 4096n;
export const MiB = 1n << 20n;
export const SIZE_2M = 2n * MiB;

/** Where the mailbox guests keep their mailbox: shared, in the system slot at gpa 0. */
export const MAILBOX_GPA = 0x40000n;
/** Where the private tests put their data (upstream's BASE_DATA_GPA). */
export const DATA_GPA = 4n << 30n;

/** A mailbox guest on `vm` that identity-maps 0-4 GiB and [DATA_GPA, DATA_GPA + dataSize). */
export function mailboxGuest(vm: Vm, dataSize: bigint): { guest: Guest; mailbox: MailboxDriver } {
  const guest = Guest.create(vm, {
    program: mailboxProgram(MAILBOX_GPA),
    map: [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }, { gpa: DATA_GPA, size: (dataSize + SIZE_2M - 1n) & ~(SIZE_2M - 1n), pageSize: '2m' }],
  });
  return { guest, mailbox: new MailboxDriver(guest, guest.memory, MAILBOX_GPA) };
}
