/**
 * The system family of {@link Asm}: port I/O (how the test guests talk to
 * the host) and the one-opcode instructions: nop, hlt, pause, ud2, int3, cpuid,
 * rdtsc, mfence.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import { AsmControlFlow } from './control-flow.js';
import { checkPort8 } from './values.js';

/** {@link AsmControlFlow} plus port I/O and the system instructions. Use {@link Asm}. */
export class AsmSystem extends AsmControlFlow {
  // -- port I/O -----------------------------------------------------------------

  /**
   * out port, src: `port` is 'dx' or an 8-bit immediate; `src` is al, ax or
   * eax. At CPL3 this needs IOPL 3 (RFLAGS 0x3002 in our set-up) and then exits to
   * the host as KVM_EXIT_IO. Under kvm_pvm that is not enough: it emulates a
   * CPL3 OUT and checks the I/O permission bitmap of the guest's TSS, so the
   * port must be allowed there too; `Guest` loads a TSS that allows every
   * port, and callers setting up vcpus themselves get one from
   * {@link ioPermissiveTss} (lib/guest/layout.ts). Without it the OUT
   * triple-faults (a 'shutdown' exit).
   */
  out(port: 'dx' | number, src: 'al' | 'ax' | 'eax'): this {
    const size = src === 'al' ? 8 : src === 'ax' ? 16 : src === 'eax' ? 32 : 0;
    if (size === 0) throw guestArgumentError(`out source must be al, ax or eax, got ${String(src)}`);
    const pre = size === 16 ? [0x66] : [];
    const wide = size === 8 ? 0 : 1;
    if (port === 'dx') return this.emit([...pre, 0xee + wide]);
    return this.emit([...pre, 0xe6 + wide, checkPort8(port)]);
  }

  /** in dst, port: `dst` is al, ax or eax; `port` is 'dx' or an 8-bit immediate. The same I/O permission rules as {@link Asm.out}. */
  in(dst: 'al' | 'ax' | 'eax', port: 'dx' | number): this {
    const size = dst === 'al' ? 8 : dst === 'ax' ? 16 : dst === 'eax' ? 32 : 0;
    if (size === 0) throw guestArgumentError(`in destination must be al, ax or eax, got ${String(dst)}`);
    const pre = size === 16 ? [0x66] : [];
    const wide = size === 8 ? 0 : 1;
    if (port === 'dx') return this.emit([...pre, 0xec + wide]);
    return this.emit([...pre, 0xe4 + wide, checkPort8(port)]);
  }

  // -- misc -------------------------------------------------------------------

  /** nop (one byte), `count` times. */
  nop(count = 1): this {
    if (!Number.isInteger(count) || count < 0) throw guestArgumentError(`nop count must be >= 0, got ${count}`);
    return this.emit(new Array<number>(count).fill(0x90));
  }

  /**
   * hlt. Note: at CPL3 hlt raises #GP instead of exiting; guests here leave via
   * port I/O (see ucall). Kept for CPL0 experiments.
   */
  hlt(): this {
    return this.emit([0xf4]);
  }

  /** pause: spin-wait hint, cheap to put in polling loops. */
  pause(): this {
    return this.emit([0xf3, 0x90]);
  }

  /** ud2: guaranteed invalid opcode, a deliberate crash. */
  ud2(): this {
    return this.emit([0x0f, 0x0b]);
  }

  /** int3: breakpoint trap. */
  int3(): this {
    return this.emit([0xcc]);
  }

  /** cpuid (eax/ecx in, eax/ebx/ecx/edx out). */
  cpuid(): this {
    return this.emit([0x0f, 0xa2]);
  }

  /** rdtsc: time stamp counter into edx:eax. */
  rdtsc(): this {
    return this.emit([0x0f, 0x31]);
  }

  /** mfence: full memory barrier. */
  mfence(): this {
    return this.emit([0x0f, 0xae, 0xf0]);
  }
}
