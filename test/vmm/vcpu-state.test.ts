import { execFileSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { Kvm, KvmError } from '../../lib/index.js';
import { Asm, Guest } from '../../lib/guest/index.js';
import { describeKvm, describeUnless, expectKvmError, kvmUnavailable } from '../support/kvm.js';

const MSR_IA32_TSC = 0x10;

/** Whether the kernel's log (dmesg; root in the lab) has a line containing text. */
function kernelLogHas(text: string): boolean {
  try {
    return execFileSync('dmesg', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes(text);
  } catch {
    return false;
  }
}
const MSR_IA32_SYSENTER_CS = 0x174;
const MSR_IA32_SYSENTER_ESP = 0x175;
const MSR_STAR = 0xc0000081;
const MSR_KERNEL_GS_BASE = 0xc0000102;

function withVcpu(fn: (v: import('../../lib/index.js').Vcpu, vm: import('../../lib/index.js').Vm, kvm: Kvm) => void, irqchip = false): void {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  if (irqchip) vm.createIrqchip();
  using vcpu = vm.createVcpu(0);
  vcpu.setCpuid(kvm.supportedCpuid());
  fn(vcpu, vm, kvm);
}

describeKvm('vcpu state ioctls', () => {
  it('getMsrs/setMsrs round-trip, and a partial set names the first MSR that failed', () => {
    withVcpu((vcpu) => {
      vcpu.setMsrs([{ index: MSR_IA32_SYSENTER_CS, data: 0x10n }, { index: MSR_KERNEL_GS_BASE, data: 0xffff_8880_0000_1000n }]);
      const got = vcpu.getMsrs([MSR_IA32_SYSENTER_CS, MSR_KERNEL_GS_BASE, MSR_IA32_TSC]);
      expect(got.slice(0, 2)).toEqual([{ index: MSR_IA32_SYSENTER_CS, data: 0x10n }, { index: MSR_KERNEL_GS_BASE, data: 0xffff_8880_0000_1000n }]);
      expect(got[2]!.index).toBe(MSR_IA32_TSC);
      // A non-canonical KERNEL_GS_BASE is refused: the set stops there, after one MSR.
      const e = expectKvmError(() => vcpu.setMsrs([{ index: MSR_IA32_SYSENTER_ESP, data: 0x1234n }, { index: MSR_KERNEL_GS_BASE, data: 0x8000_0000_0000_0000n }, { index: MSR_STAR, data: 0n }]), 'EINVAL');
      expect(e.ioctl).toBe('KVM_SET_MSRS');
      expect(e.args).toMatchObject({ msr: '0xc0000102', processed: 1, requested: 3 });
      expect(vcpu.getMsrs([MSR_IA32_SYSENTER_ESP])[0]!.data).toBe(0x1234n);
      expectKvmError(() => vcpu.setMsrs([{ index: 1, data: 0n, extra: 1 } as never]), 'EINVAL');
      expectKvmError(() => vcpu.setMsrs([{ index: MSR_STAR } as never]), 'EINVAL');
      expectKvmError(() => vcpu.getMsrs([2 ** 32]), 'EINVAL');
    });
  });

  it('getFpu/setFpu round-trip typed x87/SSE state', () => {
    withVcpu((vcpu) => {
      const fpu = vcpu.getFpu();
      expect(fpu.fcw).toBe(0x37f); // FNINIT's control word
      expect(fpu.xmm).toHaveLength(16);
      const xmm = [...fpu.xmm];
      xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210n;
      vcpu.setFpu({ xmm, fcw: 0x27f });
      const after = vcpu.getFpu();
      expect(after.xmm[3]).toBe(xmm[3]);
      expect(after.fcw).toBe(0x27f);
      // KVM's FPU ioctls ignore MXCSR both ways (a kernel quirk); XSAVE carries it (next test).
      expectKvmError(() => vcpu.setFpu({ mxcsr: -1 }), 'EINVAL');
      expectKvmError(() => vcpu.setFpu({ xmm: [1n] }), 'EINVAL');
      expectKvmError(() => vcpu.setFpu({ nope: 1 } as never), 'EINVAL');
    });
  });

  it('getXsave/setXsave (XSAVE2 sized) and getXcrs/setXcrs', () => {
    withVcpu((vcpu, vm) => {
      const xs = vcpu.getXsave();
      const size = Math.max(4096, vm.checkExtension('XSAVE2'));
      expect(xs.extended.byteLength).toBe(Math.ceil(size / 8) * 8 - 576);
      expect(xs.mxcsr).toBe(0x1f80);
      const xmm = [...xs.xmm];
      xmm[15] = (1n << 127n) | 5n;
      vcpu.setXsave({ xmm, mxcsr: 0x1fa0, xstateBv: xs.xstateBv | 2n });
      expect(vcpu.getXsave()).toMatchObject({ mxcsr: 0x1fa0 });
      expect(vcpu.getXsave().xmm[15]).toBe(xmm[15]);
      expect(vcpu.getFpu().xmm[15]).toBe(xmm[15]);
      const xcrs = vcpu.getXcrs();
      expect(xcrs[0]).toMatchObject({ xcr: 0 });
      expect(xcrs[0]!.value & 1n).toBe(1n); // x87 is always enabled in XCR0
      vcpu.setXcrs([{ xcr: 0, value: 3n }]);
      expect(vcpu.getXcrs()[0]!.value).toBe(3n);
      expectKvmError(() => vcpu.setXcrs([{ xcr: 0, value: 2n }]), 'EINVAL'); // XCR0 without x87: the kernel refuses
      expectKvmError(() => vcpu.setXcrs([]), 'EINVAL');
    });
  });

  it('getLapic/setLapic with the in-kernel irqchip; without it the kernel says EINVAL', () => {
    withVcpu((vcpu) => {
      const lapic = vcpu.getLapic();
      expect(lapic.version & 0xff).toBeGreaterThanOrEqual(0x10);
      expect(lapic.irr).toHaveLength(8);
      vcpu.setLapic({ tpr: 0x20, svr: 0x1ff, timerDivide: 0xb });
      const after = vcpu.getLapic();
      expect(after).toMatchObject({ tpr: 0x20, svr: 0x1ff, timerDivide: 0xb });
      expectKvmError(() => vcpu.setLapic({ tpr: 2 ** 32 }), 'EINVAL');
    }, true);
    withVcpu((vcpu) => {
      expectKvmError(() => vcpu.getLapic(), 'EINVAL');
    });
  });

  it('getVcpuEvents/setVcpuEvents, getDebugRegs/setDebugRegs, getMpState/setMpState', () => {
    withVcpu((vcpu) => {
      const ev = vcpu.getVcpuEvents();
      expect(ev.exception.pending).toBe(0);
      expect(ev.nmi.pending).toBe(0);
      vcpu.setVcpuEvents({ nmi: { pending: 1 }, flags: 1 /* NMI_PENDING valid */ });
      expect(vcpu.getVcpuEvents().nmi.pending).toBe(1);
      vcpu.setVcpuEvents({ nmi: { pending: 0, masked: 1 }, flags: 1 });
      expect(vcpu.getVcpuEvents().nmi).toMatchObject({ pending: 0, masked: 1 });
      expectKvmError(() => vcpu.setVcpuEvents({ nmi: { pending: 256 } }), 'EINVAL');

      const dr = vcpu.getDebugRegs();
      expect(dr.dr7 & 0x400n).toBe(0x400n);
      vcpu.setDebugRegs({ db: [0x1000n, 0x2000n, 0n, 0n] });
      expect(vcpu.getDebugRegs().db.slice(0, 2)).toEqual([0x1000n, 0x2000n]);

      expect(vcpu.getMpState()).toBe('runnable');
      expectKvmError(() => vcpu.setMpState('nope' as never), 'EINVAL');
    });
    withVcpu((vcpu) => {
      vcpu.setMpState('halted');
      expect(vcpu.getMpState()).toBe('halted');
      vcpu.setMpState('runnable');
      expect(vcpu.getMpState()).toBe('runnable');
    }, true);
  });

  it('getCpuid returns what setCpuid set; getTscKhz/setTscKhz; setGuestDebug validates', () => {
    withVcpu((vcpu, _vm, kvm) => {
      const set = kvm.supportedCpuid();
      const got = vcpu.getCpuid();
      expect(got.length).toBe(set.length);
      expect(got.find((e) => e.function === 0)!.ebx).toBe(set.find((e) => e.function === 0)!.ebx);
      expect(vcpu.getTscKhz()).toBeGreaterThan(100_000);
      expectKvmError(() => vcpu.setTscKhz(0), 'EINVAL');
      vcpu.setGuestDebug({ enable: true, singleStep: true });
      vcpu.setGuestDebug({ enable: false });
      expectKvmError(() => vcpu.setGuestDebug({ enable: false, singleStep: true }), 'EINVAL');
      expectKvmError(() => vcpu.setGuestDebug({ enable: true, bogus: true } as never), 'EINVAL');
    });
  });

  // The lab's sw-protected build has KVM built in: kvm_amd can take the TSC rate at 0.75 s,
  // before the kernel refines its calibration (+390 ppm at 1.89 s in one boot; other boots
  // refine less or downwards), and without TSC scaling it then refuses its own reported
  // rate as "below hardware speed". Where that happens the case is skipped as the known
  // kernel defect only if the kernel's log says so; any other failure fails.
  it('setTscKhz accepts the rate getTscKhz reports', (ctx) => {
    withVcpu((vcpu) => {
      const khz = vcpu.getTscKhz();
      try {
        vcpu.setTscKhz(khz); // setting the host rate needs no scaling
      } catch (e) {
        if (e instanceof KvmError && e.code === 'EINVAL' && process.env.NODE_KVM_LAB_KERNEL === 'sw-protected' && kernelLogHas('TSC rate below hardware speed')) {
          ctx.skip(`kernel defect: KVM_SET_TSC_KHZ refused the rate KVM reported (${khz} kHz): its built-in kvm_amd kept the TSC rate from before the kernel refined it (dmesg: "user requested TSC rate below hardware speed")`);
        }
        throw e;
      }
      expect(vcpu.getTscKhz()).toBe(khz);
    });
  });

  it('nmi, smi and interrupt inject (interrupt only without the in-kernel irqchip); kvmclockCtrl needs a guest kvmclock', () => {
    withVcpu((vcpu, vm) => {
      vcpu.nmi();
      expect(vcpu.getVcpuEvents().nmi.pending).toBe(1);
      if (vm.checkExtension('X86_SMM') > 0) {
        vcpu.smi();
        expect(vcpu.getVcpuEvents().smi.pending).toBe(1);
      } else {
        expectKvmError(() => vcpu.smi(), 'ENOTTY');
      }
      vcpu.interrupt(0x30);
      const ev = vcpu.getVcpuEvents();
      expect(ev.interrupt).toMatchObject({ injected: 1, nr: 0x30 });
      expectKvmError(() => vcpu.interrupt(256), 'EINVAL');
      expectKvmError(() => vcpu.kvmclockCtrl(), 'EINVAL');
    });
    withVcpu((vcpu) => {
      expectKvmError(() => vcpu.interrupt(0x30), 'ENXIO');
    }, true);
  });

  it('translate walks the guest page tables (user, writable identity map)', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = Guest.create(vm, { program: new Asm().hlt() });
    const t = guest.vcpu.translate(0x123456n);
    // KVM always reports usermode 0 on x86 (api.rst leaves it unspecified).
    expect(t).toMatchObject({ physicalAddress: 0x123456n, valid: true, writeable: true });
    const outside = guest.vcpu.translate(0x7f00_0000_0000n);
    expect(outside.valid).toBe(false);
    expectKvmError(() => guest.vcpu.translate(-1), 'EINVAL');
  });

  it('every state ioctl answers EBUSY at once while the vcpu is in KVM_RUN, and ECLOSED after close', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const guest = Guest.create(vm, { program: new Asm().label('spin').jmp('spin') });
    const running = guest.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 10));
    for (const call of [() => guest.vcpu.getFpu(), () => guest.vcpu.getMsrs([0x10]), () => guest.vcpu.nmi(), () => guest.vcpu.getVcpuEvents(), () => guest.vcpu.translate(0)]) {
      expectKvmError(call, 'EBUSY');
    }
    guest.vcpu.kick();
    await running;
    guest.vcpu.getFpu();
    guest.close();
    expectKvmError(() => guest.vcpu.getXcrs(), 'ECLOSED');
  });
});

const nestedReason: string | undefined =
  kvmUnavailable ??
  (() => {
    using kvm = Kvm.open();
    return kvm.checkExtension('NESTED_STATE') > 0 ? undefined : 'KVM_CAP_NESTED_STATE is 0 here (no nested virtualization, e.g. kvm_pvm)';
  })();

describeUnless(nestedReason, 'nested state', () => {
  it('getNestedState/setNestedState round-trip a vcpu outside guest mode', () => {
    withVcpu((vcpu) => {
      const state = vcpu.getNestedState();
      expect(['vmx', 'svm']).toContain(state.format);
      expect(state.flags & 1).toBe(0); // not in guest mode
      vcpu.setNestedState(state);
      expect(vcpu.getNestedState().format).toBe(state.format);
    });
  });
});

describeKvm('nested state absence', () => {
  it('is detected: where KVM_CAP_NESTED_STATE is 0 both calls fail EOPNOTSUPP before the ioctl', () => {
    withVcpu((vcpu, vm) => {
      if (vm.checkExtension('NESTED_STATE') > 0) return;
      expect(nestedReason).toBeDefined();
      const e = expectKvmError(() => vcpu.getNestedState(), 'EOPNOTSUPP');
      expect(e).toBeInstanceOf(KvmError);
      expectKvmError(() => vcpu.setNestedState({ flags: 0, format: 'vmx', data: new BigUint64Array(0) }), 'EOPNOTSUPP');
    });
  });
});
