/**
 * A runnable x86-64 test guest: one vcpu in 64-bit mode at CPL3 (the only
 * mode that runs natively under kvm_pvm, and that real KVM runs too), with
 * identity page tables, a system memslot for tables/code/stack, and a run loop
 * that decodes ucalls.
 *
 * Layout of the system memslot (default slot 0 at gpa 0, 2 MiB):
 * tables from 0x1000, code at 0x10000, stack below 0x30000, TSS at 0x30000. Guest data lives
 * in memslots the caller adds at or above `systemSize`.
 */
import { KvmError } from '../errors.js';
import { toU64, type U64Like } from '../int.js';
import type { HostMemory } from '../memory.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';
import type { IoExit, VcpuExit } from '../exit.js';
import type { Asm } from './asm.js';
import { DEFAULT_GUEST_LAYOUT, initialRegs, ioPermissiveTss, longModeCpl3Sregs } from './layout.js';
import { buildIdentityPageTables, type IdentityRange } from './page-tables.js';
import { decodeUcall, type Ucall } from './ucall.js';

/** Options of Guest.create(). */
export interface GuestOptions {
  /** The program to run; linked at the code address. */
  program: Asm;
  /**
   * Guest ranges to identity-map (gva = gpa). Default: 0-4 GiB with 2 MiB
   * pages. Use 4k pages to make the guest's own page size 4 KiB (under
   * shadow paging KVM never maps more than the guest does).
   */
  map?: IdentityRange[];
  /** Vcpu id; default 0. */
  vcpuId?: number;
  /** Memslot id of the system region; default 0. */
  systemSlot?: number;
  /** Size of the system region at gpa 0; default 2 MiB (tables get 60 KiB unless larger). */
  systemSize?: U64Like;
  /** Initial general-purpose registers besides rip/rsp/rflags. */
  regs?: Partial<Record<'rax' | 'rbx' | 'rcx' | 'rdx' | 'rsi' | 'rdi' | 'r8' | 'r9' | 'r10' | 'r11' | 'r12' | 'r13' | 'r14' | 'r15', bigint>>;
}

/** One stop of the guest: a ucall, or a vcpu exit that is not one. */
export type GuestEvent = Ucall | { kind: 'exit'; exit: VcpuExit };

/** The guest reported an assertion failure (ABORT ucall). */
export class GuestAbortError extends KvmError {
  constructor(
    /** The message the guest passed with its ABORT ucall. */
    readonly guestMessage: string,
    /** The value the guest passed with it. */
    readonly value: bigint,
  ) {
    super(`guest assertion failed: ${guestMessage} (value 0x${value.toString(16)})`, {
      code: 'EGUESTABORT',
      errno: 0,
      syscall: 'none',
      args: { message: guestMessage, value },
    });
    this.name = 'GuestAbortError';
  }
}

/** The guest stopped for something the caller did not expect. */
export class GuestExitError extends KvmError {
  constructor(
    /** What stopped the guest. */
    readonly event: GuestEvent,
  ) {
    super(`unexpected guest stop: ${describeEvent(event)}`, { code: 'EGUESTEXIT', errno: 0, syscall: 'ioctl', ioctl: 'KVM_RUN', args: { event: describeEvent(event) } });
    this.name = 'GuestExitError';
  }
}

function describeEvent(e: GuestEvent): string {
  if (e.kind !== 'exit') return e.kind;
  const x = e.exit as unknown as Record<string, unknown>;
  return Object.entries(x)
    .filter(([, v]) => !(v instanceof Uint8Array))
    .map(([k, v]) => `${k}=${typeof v === 'bigint' ? `0x${v.toString(16)}` : String(v)}`)
    .join(' ');
}

const TABLES_END = DEFAULT_GUEST_LAYOUT.codeGpa;


/** A vcpu ready to run a program in 64-bit CPL3 mode. */
export class Guest implements Disposable {
  /** The VM the guest runs in. */
  readonly vm: Vm;
  /** The vcpu running the program. */
  readonly vcpu: Vcpu;
  /** The system memory (tables, code, stack) at gpa 0. */
  readonly memory: HostMemory;
  /** Guest address the program was linked at. */
  readonly codeGpa: bigint;

  private constructor(vm: Vm, vcpu: Vcpu, memory: HostMemory, codeGpa: bigint) {
    this.vm = vm;
    this.vcpu = vcpu;
    this.memory = memory;
    this.codeGpa = codeGpa;
  }

  /** Sets up memory, page tables, CPUID and registers for `program`. */
  static create(vm: Vm, options: GuestOptions): Guest {
    const systemSize = toU64(options.systemSize ?? DEFAULT_GUEST_LAYOUT.memorySize, 'systemSize', 'Guest.create');
    const memory = vm.allocateMemory(systemSize);
    vm.setMemoryRegion({ slot: options.systemSlot ?? 0, guestPhysAddr: 0, memory });
    const bytes = memory.bytes;
    const ranges = options.map ?? [{ gpa: 0n, size: 4n << 30n, pageSize: '2m' }];
    // Tables may use the space up to the code, or past the stack when the
    // system region was made larger for many 4 KiB tables.
    const bigTables = systemSize > 0x200000n;
    const tablesGpa = bigTables ? 0x200000n : DEFAULT_GUEST_LAYOUT.tablesGpa;
    const tablesSize = bigTables ? systemSize - 0x200000n : TABLES_END - DEFAULT_GUEST_LAYOUT.tablesGpa;
    const { cr3 } = buildIdentityPageTables({ memory: bytes, memoryGpa: 0n, tablesGpa, tablesSize, ranges });
    const codeGpa = DEFAULT_GUEST_LAYOUT.codeGpa;
    const code = options.program.assemble(codeGpa);
    if (BigInt(code.length) > 0x10000n) throw new KvmError('guest program larger than 64 KiB', { code: 'EINVAL' });
    bytes.set(code, Number(codeGpa));

    const vcpu = vm.createVcpu(options.vcpuId ?? 0);
    try {
      vcpu.setCpuid(vm.kvm.supportedCpuid());
      vcpu.setSregs({ ...longModeCpl3Sregs({ cr3 }), tr: ioPermissiveTss(bytes) });
      vcpu.setRegs({ ...options.regs, ...initialRegs({ rip: codeGpa, rsp: DEFAULT_GUEST_LAYOUT.stackTop }) });
    } catch (e) {
      vcpu.close();
      throw e;
    }
    return new Guest(vm, vcpu, memory, codeGpa);
  }

  /** Runs until the next ucall or non-ucall exit, on a worker thread. */
  async run(): Promise<GuestEvent> {
    return this.#decode(await this.vcpu.runAsync());
  }

  /** run() on the calling thread. */
  runSync(): GuestEvent {
    return this.#decode(this.vcpu.run());
  }

  /**
   * Runs until DONE, passing every SYNC/PRINT to `onEvent` (default: ignore).
   * Throws GuestAbortError on ABORT and GuestExitError on any other stop.
   */
  async runToDone(onEvent: (e: GuestEvent) => void = () => {}): Promise<void> {
    for (;;) {
      const e = await this.run();
      if (this.#settle(e, onEvent)) return;
    }
  }

  /** runToDone() on the calling thread. */
  runToDoneSync(onEvent: (e: GuestEvent) => void = () => {}): void {
    for (;;) {
      if (this.#settle(this.runSync(), onEvent)) return;
    }
  }

  /** Reads a NUL-terminated string at an identity-mapped guest address. */
  readGuestString(gva: bigint): string {
    const slot = this.vm.slotAt(gva);
    if (!slot?.memory) throw new KvmError(`no host memory behind gva 0x${gva.toString(16)}`, { code: 'EFAULT' });
    const bytes = slot.memory.bytes;
    let i = Number(gva - slot.guestPhysAddr + slot.memoryOffset);
    const start = i;
    while (i < bytes.length && bytes[i] !== 0 && i - start < 4096) i++;
    return new TextDecoder().decode(bytes.subarray(start, i));
  }

  /** Closes the vcpu (memory and slots belong to the VM). */
  close(): void {
    this.vcpu.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #settle(e: GuestEvent, onEvent: (e: GuestEvent) => void): boolean {
    if (e.kind === 'done') return true;
    if (e.kind === 'abort') throw new GuestAbortError(e.message, e.value);
    if (e.kind === 'sync' || e.kind === 'print') {
      onEvent(e);
      return false;
    }
    if (e.exit.reason === 'intr') return false;
    throw new GuestExitError(e);
  }

  #decode(exit: VcpuExit): GuestEvent {
    if (exit.reason !== 'io') return { kind: 'exit', exit };
    const regs = this.vcpu.getRegs();
    const ucall = decodeUcall(exit as IoExit, regs, (gva) => this.readGuestString(gva));
    return ucall ?? { kind: 'exit', exit };
  }
}
