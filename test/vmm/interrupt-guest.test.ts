import { expect, it } from 'vitest';
import { EventFd, Kvm, type Vm } from '../../lib/index.js';
import { Asm, emitCountingHandler, emitSti, emitUcallAbort, emitUcallDone, emitUcallSync, Guest, installUserIdt, type GuestEvent } from '../../lib/guest/index.js';
import { describeKvm, isKvmPvm } from '../support/kvm.js';

const VECTOR = 0x40;
const GSI = 17; // an IOAPIC-only pin: the PICs see GSIs 0-15
const COUNTER = 0x42000n;
/** The guest gives up after this many heartbeats without an interrupt (a count, not a time). */
const HEARTBEATS = 200;

/**
 * Starts with RFLAGS.IF set by the host (STI at CPL3 faults under kvm_pvm:
 * its IOPL 3 is virtual), reports SYNC(1) (the host then raises the interrupt),
 * spins until the handler bumped the counter, reporting SYNC(2) every 2^20
 * spins, then DONE with the counter. ABORT after too many heartbeats.
 */
function program(heartbeats = HEARTBEATS, eoi = true): Asm {
  const a = new Asm();
  emitUcallSync(a, 1);
  a.mov('r12', heartbeats);
  a.label('beat').mov('r13', 1 << 20);
  a.label('spin').mov('rbx', COUNTER).load('rax', { base: 'rbx' }).test('rax', 'rax').jnz('got');
  a.pause().decJnz('r13', 'spin');
  emitUcallSync(a, 2);
  a.decJnz('r12', 'beat');
  emitUcallAbort(a, { text: 'no interrupt arrived' });
  a.label('got');
  emitUcallDone(a);
  emitCountingHandler(a, 'handler', COUNTER, eoi);
  return a;
}

/** A CPL3 guest on a VM with the in-kernel irqchip, IOAPIC pin GSI routed to VECTOR on LAPIC 0. */
function interruptGuest(vm: Vm, heartbeats = HEARTBEATS, irqchip = true): Guest {
  if (irqchip) vm.createIrqchip();
  const asm = program(heartbeats, irqchip);
  const guest = Guest.create(vm, { program: asm });
  const handler = asm.link(guest.codeGpa).labels.get('handler')!;
  installUserIdt(guest.vcpu, guest.memory, new Map([[VECTOR, handler]]));
  guest.vcpu.setRegs({ rflags: 0x3202n }); // IF = 1
  if (!irqchip) return guest;
  guest.vcpu.setLapic({ svr: 0x1ff, tpr: 0, lvtLint0: 0x10000, lvtLint1: 0x10000 }); // enabled; LINTs masked
  const ioapic = vm.getIrqchip('ioapic');
  if (ioapic.chip !== 'ioapic') throw new Error('expected the IOAPIC');
  const redirtbl = [...ioapic.ioapic.redirtbl];
  redirtbl[GSI] = BigInt(VECTOR); // fixed, physical, edge, active high, unmasked, destination APIC 0
  vm.setIrqchip({ chip: 'ioapic', ioapic: { ...ioapic.ioapic, redirtbl } });
  return guest;
}

/** Runs to DONE, calling raise() at SYNC(1); returns the stops seen. */
async function runRaising(guest: Guest, raise: () => void): Promise<string[]> {
  const stops: string[] = [];
  for (;;) {
    const e: GuestEvent = await guest.run();
    if (e.kind === 'sync' && e.args[0] === 1n) {
      stops.push('ready');
      raise();
      continue;
    }
    if (e.kind === 'sync' && e.args[0] === 2n) {
      if (stops.at(-1) !== 'heartbeat') stops.push('heartbeat');
      continue;
    }
    if (e.kind === 'abort') {
      stops.push(`abort: ${e.message}`);
      return stops;
    }
    if (e.kind === 'done') {
      stops.push('done');
      return stops;
    }
    stops.push(e.kind === 'exit' ? `exit ${e.exit.reason}` : e.kind);
    return stops;
  }
}

describeKvm('interrupts reach a CPL3 guest through the in-kernel irqchip', () => {
  it('irqLine: an edge on an IOAPIC pin runs the guest handler once', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = interruptGuest(vm);
    const stops = await runRaising(guest, () => {
      vm.irqLine(GSI, true);
      vm.irqLine(GSI, false);
    });
    expect(stops.filter((s) => s !== 'heartbeat')).toEqual(['ready', 'done']);
    expect(new DataView(guest.memory.bytes.buffer, guest.memory.bytes.byteOffset).getBigUint64(Number(COUNTER), true)).toBe(1n);
  });

  it('irqfd: writing the EventFd raises the GSI and runs the handler', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = interruptGuest(vm);
    using irq = new EventFd();
    vm.registerIrqfd({ eventfd: irq, gsi: GSI });
    const stops = await runRaising(guest, () => irq.write(1));
    expect(stops.filter((s) => s !== 'heartbeat')).toEqual(['ready', 'done']);
    expect(new DataView(guest.memory.bytes.buffer, guest.memory.bytes.byteOffset).getBigUint64(Number(COUNTER), true)).toBe(1n);
  });
});

describeKvm('interrupt delivery checks that can fail', () => {
  it('with nothing raised the guest gives up (ABORT after its heartbeats): the check above is not vacuous', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = interruptGuest(vm, 2);
    const stops = await runRaising(guest, () => {});
    expect(stops).toEqual(['ready', 'heartbeat', 'abort: no interrupt arrived']);
  });

  it('a masked IOAPIC pin delivers nothing', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = interruptGuest(vm, 2);
    const io = vm.getIrqchip('ioapic');
    if (io.chip !== 'ioapic') throw new Error('expected the IOAPIC');
    const redirtbl = [...io.ioapic.redirtbl];
    redirtbl[GSI] = BigInt(VECTOR) | (1n << 16n);
    vm.setIrqchip({ chip: 'ioapic', ioapic: { ...io.ioapic, redirtbl } });
    const stops = await runRaising(guest, () => {
      vm.irqLine(GSI, true);
      vm.irqLine(GSI, false);
    });
    expect(stops.at(-1)).toBe('abort: no interrupt arrived');
  });
});

describeKvm('KVM_INTERRUPT without the in-kernel irqchip', () => {
  it('vcpu.interrupt(vector) runs the guest handler for that vector', async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using guest = interruptGuest(vm, HEARTBEATS, false);
    const stops = await runRaising(guest, () => guest.vcpu.interrupt(VECTOR));
    expect(stops.filter((s) => s !== 'heartbeat')).toEqual(['ready', 'done']);
    expect(new DataView(guest.memory.bytes.buffer, guest.memory.bytes.byteOffset).getBigUint64(Number(COUNTER), true)).toBe(1n);
  });
});

describeKvm('STI at CPL3 (why the tests set RFLAGS.IF from the host)', () => {
  it(`${isKvmPvm ? 'kvm_pvm raises #GP' : 'real KVM allows it with IOPL 3'}`, async () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const a = new Asm();
    emitSti(a);
    emitUcallSync(a, 1);
    emitUcallDone(a);
    a.label('gp');
    emitUcallSync(a, 13);
    emitUcallDone(a);
    using guest = Guest.create(vm, { program: a });
    installUserIdt(guest.vcpu, guest.memory, new Map([[13, a.link(guest.codeGpa).labels.get('gp')!]]));
    const e = await guest.run();
    expect(e.kind).toBe('sync');
    // kvm_pvm runs the guest at hardware CPL3 with a virtual IOPL: STI traps and is reflected as #GP.
    expect(e.kind === 'sync' && e.args[0]).toBe(isKvmPvm ? 13n : 1n);
  });
});
