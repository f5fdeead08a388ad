/**
 * The guests of the exits benchmark and their round trips, shared by the
 * main thread and the worker (lib/bench/exits-worker.ts). The same guests as
 * scripts/bench/reference.c --exits: OUT to the ucall port in a loop, or a
 * 4-byte MMIO read of an identity-mapped address without a memslot, which
 * the host answers. Each exit is answered and the vcpu re-entered at once.
 */
import { Asm, Guest, UCALL_PORT } from '../guest/index.js';
import type { Kvm } from '../kvm.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';

/** Which guest loop. */
export type ExitsGuest = 'out' | 'mmio';

/** Where the MMIO guest reads (as in reference.c). */
export const EXITS_MMIO_GPA = 0xd0000000;
/** Unrecorded round trips per vcpu before the timed ones (as in reference.c). */
export const EXITS_WARM = 200;
const MMIO_GPA_BIG = BigInt(EXITS_MMIO_GPA);
/** The value the host answers an MMIO read with (little-endian bytes of 0x12345678). */
const MMIO_ANSWER = [0x78, 0x56, 0x34, 0x12] as const;

function program(guest: ExitsGuest): Asm {
  const asm = new Asm();
  if (guest === 'out') return asm.mov('edx', UCALL_PORT).label('loop').out('dx', 'eax').jmp('loop');
  return asm.mov('ebx', EXITS_MMIO_GPA).label('loop').load('eax', { base: 'rbx' }).jmp('loop');
}

/** A VM whose vcpus all run the guest loop. */
export interface ExitsVm extends Disposable {
  vm: Vm;
  vcpus: Vcpu[];
  close(): void;
}

/** Creates a VM with `count` vcpus running `guest` (vcpu 1.. copy vcpu 0's state). */
export function createExitsVm(kvm: Kvm, guest: ExitsGuest, count: number): ExitsVm {
  const vm = kvm.createVm();
  try {
    const first = Guest.create(vm, { program: program(guest) });
    const vcpus = [first.vcpu];
    const sregs = first.vcpu.getSregs();
    const regs = first.vcpu.getRegs();
    const cpuid = kvm.supportedCpuid();
    for (let id = 1; id < count; id++) {
      const v = vm.createVcpu(id);
      vcpus.push(v);
      v.setCpuid(cpuid);
      v.setSregs(sregs);
      v.setRegs(regs);
    }
    const close = (): void => {
      for (const v of vcpus) v.close();
      vm.close();
    };
    return { vm, vcpus, close, [Symbol.dispose]: close };
  } catch (e) {
    vm.close();
    throw e;
  }
}

/** Checks and answers one exit; false for an 'intr' (run again). */
function answer(exit: ReturnType<Vcpu['run']>, guest: ExitsGuest): boolean {
  if (guest === 'out') {
    if (exit.reason === 'io' && exit.port === UCALL_PORT && exit.direction === 'out') return true;
  } else if (exit.reason === 'mmio' && !exit.isWrite && exit.physAddr === MMIO_GPA_BIG) {
    const d = exit.data;
    d[0] = MMIO_ANSWER[0];
    d[1] = MMIO_ANSWER[1];
    d[2] = MMIO_ANSWER[2];
    d[3] = MMIO_ANSWER[3];
    return true;
  }
  if (exit.reason === 'intr') return false;
  throw new Error(`exits bench: unexpected exit ${exit.reason}`);
}

/** Percentiles (10, 25, 50) of per-round-trip times, in ns. */
export function latencyPercentiles(lat: Float64Array): { p10Ns: number; p25Ns: number; p50Ns: number } {
  const s = Float64Array.from(lat).sort();
  const at = (p: number): number => s[Math.floor((s.length - 1) * p)] ?? 0;
  return { p10Ns: at(0.1), p25Ns: at(0.25), p50Ns: at(0.5) };
}

/** One round trip with vcpu.run() on the calling thread. */
export function roundTripSync(vcpu: Vcpu, guest: ExitsGuest): void {
  while (!answer(vcpu.run(), guest));
}

/** One round trip with await vcpu.runAsync(). */
export async function roundTripAsync(vcpu: Vcpu, guest: ExitsGuest): Promise<void> {
  while (!answer(await vcpu.runAsync(), guest));
}
