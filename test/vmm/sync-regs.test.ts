import { expect, it } from 'vitest';
import { Kvm, type IoExit } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { describeUnless, expectKvmError, kvmUnavailable } from '../support/kvm.js';

const unavailable =
  kvmUnavailable ??
  (() => {
    using kvm = Kvm.open();
    return (kvm.checkExtension(74 /* SYNC_REGS */) & 7) === 7 ? undefined : 'KVM_CAP_SYNC_REGS lacks regs/sregs/events';
  })();

describeUnless(unavailable, 'synchronized registers in kvm_run (KVM_CAP_SYNC_REGS)', () => {
  it('valid regs are filled on exit; dirty regs are loaded on entry', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const program = new Asm().mov('edx', 0xe9).mov('eax', 5).out('dx', 'eax').out('dx', 'eax');
    using guest = Guest.create(vm, { program });
    const vcpu = guest.vcpu;
    vcpu.setSyncValidReg('regs');
    vcpu.setSyncValidReg('sregs');
    vcpu.setSyncValidReg('events');
    const first = (await vcpu.runAsync()) as IoExit;
    expect(first.reason).toBe('io');
    const sync = vcpu.syncRegs();
    expect(sync.regs.rax).toBe(5n);
    expect(sync.regs.rip).toBe(vcpu.getRegs().rip);
    expect(sync.sregs.cs.selector).toBe(0x33);
    expect(sync.events.nmi.pending).toBe(0);
    vcpu.setSyncRegs({ regs: { ...sync.regs, rax: 0x77n } });
    const second = (await vcpu.runAsync()) as IoExit;
    expect(new DataView(second.data.slice().buffer).getUint32(0, true)).toBe(0x77);
    vcpu.clearSyncValidReg('events');
    vcpu.clearSyncDirtyReg('regs');
    vcpu.setSyncDirtyReg('regs');
    vcpu.clearSyncDirtyReg('regs');
    expectKvmError(() => vcpu.setSyncValidReg('fpu' as never), 'EINVAL');
    expectKvmError(() => vcpu.setSyncRegs({ fpu: {} } as never), 'EINVAL');
    expectKvmError(() => vcpu.setSyncRegs({ regs: { rax: 1n } as never }), 'EINVAL');
  });
});
