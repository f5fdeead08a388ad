/**
 * vm.setMsrFilter() (KVM_X86_SET_MSR_FILTER) against the real /dev/kvm: a
 * denied RDMSR of an MSR KVM knows exits to userspace with cause 'filter'
 * (KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER), and once the
 * filter is removed the same RDMSR is KVM's again. The guest runs at CPL0,
 * i.e. in KVM's instruction emulator under kvm_pvm, where RDMSR is handled.
 */
import { expect, it } from 'vitest';
import { Kvm, MSR_FILTER_MAX_RANGES } from '../../lib/index.js';
import { Asm, Guest, UCALL_PORT } from '../../lib/guest/index.js';
import { nextExit as next, reportedValue as reported } from '../support/exits.js';
import { describeKvm, expectKvmError, kvmUnavailable } from '../support/kvm.js';

const KVM_CAP_X86_USER_SPACE_MSR = 188;
const KVM_CAP_X86_MSR_FILTER = 189;
const KVM_MSR_EXIT_REASON_FILTER = 4;
/** IA32_TSC: an MSR KVM always handles. */
const MSR_TSC = 0x10;

const filterMissing =
  kvmUnavailable ??
  ((): string | undefined => {
    using kvm = Kvm.open();
    return kvm.checkExtension(KVM_CAP_X86_MSR_FILTER) > 0 ? undefined : 'KVM_CAP_X86_MSR_FILTER is 0 on this kernel';
  })();

describeKvm('vm.setMsrFilter (KVM_X86_SET_MSR_FILTER)', () => {
  it.skipIf(filterMissing !== undefined)(`a filtered RDMSR exits with cause 'filter'; without the filter KVM answers it${filterMissing ? ` [skipped: ${filterMissing}]` : ''}`, () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.enableCap(KVM_CAP_X86_USER_SPACE_MSR, [KVM_MSR_EXIT_REASON_FILTER]);
    // Deny reads of IA32_TSC only (its range allows nothing); everything else stays KVM's.
    vm.setMsrFilter({ defaultAction: 'allow', ranges: [{ base: MSR_TSC, count: 8, read: true, write: false, allow: [MSR_TSC + 1] }] });
    const program = new Asm()
      .mov('ecx', MSR_TSC)
      .bytes([0x0f, 0x32]) // rdmsr: filtered, so userspace answers
      .mov('edx', UCALL_PORT)
      .out('dx', 'eax')
      .mov('ecx', MSR_TSC)
      .bytes([0x0f, 0x32]) // rdmsr again, after the filter is gone
      .mov('edx', UCALL_PORT)
      .out('dx', 'eax')
      .hlt();
    using guest = Guest.create(vm, { program });
    guest.vcpu.setSregs({ cs: { selector: 0x8, dpl: 0 }, ss: { selector: 0x10, dpl: 0 }, ds: { selector: 0x10, dpl: 0 }, es: { selector: 0x10, dpl: 0 } });
    const rd = next(guest.vcpu);
    if (rd.reason !== 'x86-rdmsr') throw new Error(`expected x86-rdmsr, got ${JSON.stringify(rd)}`);
    expect(rd).toMatchObject({ index: MSR_TSC, cause: 'filter', causeCode: KVM_MSR_EXIT_REASON_FILTER });
    rd.reply(0x5eed_1234n);
    expect(reported(guest.vcpu)).toBe(0x5eed_1234);
    vm.setMsrFilter(); // removed: default allow, no ranges
    const exit = next(guest.vcpu);
    expect(exit.reason).toBe('io'); // KVM read the TSC itself: no x86-rdmsr exit
  });

  it.skipIf(filterMissing !== undefined)('a deny-by-default filter with allowed ranges and write-only ranges is accepted', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.setMsrFilter({
      defaultAction: 'deny',
      ranges: [
        { base: 0, count: 0x2000, allow: [0x10, 0x1b, 0x1fff] },
        { base: 0xc0000000, count: 0x2000, write: false, read: true, allow: [0xc0000080] },
        { base: 0xc0000000, count: 1, read: false },
      ],
    });
    vm.setMsrFilter({ defaultAction: 'allow' });
  });

  it('absence is detected: where KVM_CAP_X86_MSR_FILTER is 0 the ioctl is refused', () => {
    // This host has the capability (kvm_pvm on 6.18: 1); the check says so, so the tests above are not skipped silently.
    if (kvmUnavailable) return;
    using kvm = Kvm.open();
    const cap = kvm.checkExtension(KVM_CAP_X86_MSR_FILTER);
    if (cap > 0) {
      expect(filterMissing).toBeUndefined();
    } else {
      using vm = kvm.createVm();
      expect(() => vm.setMsrFilter()).toThrow(expect.objectContaining({ ioctl: 'KVM_X86_SET_MSR_FILTER' }));
    }
  });

  it('checks every argument before the ioctl', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const bad: unknown[] = [
      { defaultAction: 'maybe' },
      { colour: 1 },
      { ranges: [{ base: 0 }] },
      { ranges: [{ base: 0, count: 0 }] },
      { ranges: [{ base: 0, count: 0x3001 }] },
      { ranges: [{ base: 0xffffffff, count: 2 }] },
      { ranges: [{ base: 0, count: 8, read: false, write: false }] },
      { ranges: [{ base: 0x10, count: 8, allow: [0x18] }] },
      { ranges: [{ base: 0x10, count: 8, allow: [-1] }] },
      { ranges: Array.from({ length: MSR_FILTER_MAX_RANGES + 1 }, (_, i) => ({ base: i * 8, count: 8 })) },
      'deny',
    ];
    for (const options of bad) {
      const e = expectKvmError(() => vm.setMsrFilter(options as never), 'EINVAL');
      expect(e.ioctl).toBe('KVM_X86_SET_MSR_FILTER');
      expect(e.message).not.toMatch(/invalid argument/i); // our check's message: refused before the kernel saw it
    }
    vm.close();
    expectKvmError(() => vm.setMsrFilter(), 'ECLOSED');
  });
});
