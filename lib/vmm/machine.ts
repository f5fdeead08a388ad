/**
 * bootLinux(): the whole VMM put together on node-kvm's public API. Creates
 * the VM and its RAM (anonymous, THP or guest_memfd), loads the bzImage,
 * initrd, command line, boot_params and the 64-bit entry state, optionally
 * pre-faults guest memory, attaches COM1 and the i8042, runs the vcpus and
 * returns how the guest ended with the figures of the run. Everything it
 * opens is closed before it returns, whatever happens.
 */
import { Kvm, isShadowPagingHost, type HostMemory, type Vcpu, type Vm, type GuestMemfd, type PreFaultEngineChoice } from '../index.js';
import { invalidArgument, KvmError } from '../errors.js';
import { buildBootParams, encodeCmdline } from './boot-params.js';
import { parseBzImage, type BzImage } from './bzimage.js';
import { ConsoleWatcher, type ConsoleEvent, type ConsoleOutput } from './console.js';
import { guestCpuid } from './cpuid-policy.js';
import { e820Map, ramRegions } from './e820.js';
import { buildGdt, buildPageTables, entryRegs, entrySregs } from './entry64.js';
import { I8042, I8042_COMMAND_PORT, I8042_DATA_PORT } from './i8042.js';
import { IoBus } from './io-bus.js';
import { irqLineOf, setUpVcpu, setUpVm } from './kvm-setup.js';
import { BOOT_PARAMS_ADDR, GDT_ADDR, PAGE_TABLES_ADDR, planLayout, type BootLayout } from './layout.js';
import { RunLoop, type ExitCounts, type StopReason } from './run-loop.js';
import { COM1, Uart16550 } from './uart16550.js';
import { decompressPayload, parseVmlinux } from './vmlinux.js';
import { CmosRtc, CMOS_INDEX_PORT } from './cmos-rtc.js';
import { buildMpTable, MPTABLE_ADDR } from './mptable.js';

/** Where guest RAM comes from. */
export type Backing = 'anon' | 'thp' | 'gmem';
/** Whether and how guest RAM is pre-faulted before the first KVM_RUN. */
export type PrefaultMode = 'none' | PreFaultEngineChoice;

/**
 * The command line used when none is given. `no_timer_check`: the kernel's check
 * that the IO-APIC timer ticks is timed against the TSC, and a guest whose vcpu
 * thread is descheduled at that moment panics "IO-APIC + timer doesn't work!"
 * (seen in the nested lab under load, with QEMU as the VMM too).
 */
export const DEFAULT_CMDLINE =
  'console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 no5lvl nomodeset pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable no_timer_check';

/**
 * Added to the default command line on kvm_pvm. There a CPL0 guest's CPUID
 * returns the host's own values whatever KVM_SET_CPUID2 set (measured), so
 * the kernel must be told on its command line to leave alone what KVM's
 * instruction emulator cannot execute (XRSTOR, CMPXCHG16B, BMI2, AVX...).
 */
export const EMULATOR_CMDLINE = 'noxsave clearcpuid=cx16,bmi1,bmi2,avx,avx2,avx512f,fsgsbase,smap,pku,rdpid,xsaveopt';

/** Options of {@link bootLinux}. */
export interface BootOptions {
  /** The bzImage's bytes. */
  kernel: Uint8Array;
  /** An initramfs (cpio, maybe compressed). */
  initrd?: Uint8Array | undefined;
  /** Kernel command line; default {@link DEFAULT_CMDLINE}. */
  cmdline?: string | undefined;
  /** Guest RAM in bytes; default 256 MiB. */
  memory?: number | undefined;
  /** Number of vcpus; default 1. */
  cpus?: number | undefined;
  /** Where guest RAM comes from: 'anon' (anonymous memory, THP off), 'thp' (transparent huge pages asked for), 'gmem' (a mappable guest_memfd, KVM_CREATE_GUEST_MEMFD with mmap and init-shared); default 'anon'. */
  backing?: Backing | undefined;
  /** Pre-fault all RAM before the first KVM_RUN: 'kernel' (KVM_PRE_FAULT_MEMORY), 'software' (node-kvm's engine), 'auto' (the kernel when it works), or 'none' (default: demand faulting). */
  prefault?: PrefaultMode | undefined;
  /** Ask for the in-kernel irqchip and PIT (default true; used when node-kvm has them). */
  irqchip?: boolean | undefined;
  /** Where the guest's console goes (default: nowhere). */
  output?: ConsoleOutput | undefined;
  /** Console input (used when it is a TTY, in raw mode; Ctrl-C stops the guest). */
  input?: NodeJS.ReadStream | undefined;
  /** A string on the console whose first appearance is timed (the test's marker). */
  marker?: string | undefined;
  /** Stops the guest; the result's stop reason is 'signal' with the abort reason. */
  signal?: AbortSignal | undefined;
  /**
   * 'bzimage': the kernel decompresses itself (the boot protocol's way).
   * 'vmlinux': the VMM decompresses the payload on the host and enters the
   * vmlinux directly. Default 'vmlinux' on a kvm_pvm host (the guest
   * decompressor would run for hours in KVM's instruction emulator), else 'bzimage'.
   */
  load?: 'bzimage' | 'vmlinux' | undefined;
  /** CPUID profile (see guestCpuid); default 'emulator' on a kvm_pvm host, else 'host'. */
  cpuidProfile?: 'host' | 'emulator' | undefined;
  /** XSAVE state offered to the guest (see CpuidPolicyOptions.xsave); default 'none': the guest uses FXSAVE. */
  xsave?: 'none' | 'sse' | 'avx' | undefined;
  /** KVM device path. */
  device?: string | undefined;
}

/** What a boot did. */
export interface BootResult {
  /** Why the machine stopped (reboot, poweroff, panic, halted, signal or error, with its source or detail). */
  stop: StopReason;
  /** 0 for a clean poweroff or reboot, 1 otherwise, 128 + n for a signal. */
  exitCode: number;
  /** The booted kernel: its version string from the setup header, boot protocol version and payload compression. */
  kernel: { version: string | undefined; protocol: number; compression: BzImage['compression'] };
  /** Where the kernel, command line and initrd were loaded in guest-physical memory, and the entry RIP used. */
  layout: BootLayout;
  /** The kernel command line the guest got (the default plus, on kvm_pvm, EMULATOR_CMDLINE when none was given). */
  cmdline: string;
  /** Guest RAM in bytes. */
  memory: number;
  /** Number of vcpus created. */
  cpus: number;
  /** The RAM backing used ('anon', 'thp' or 'gmem'). */
  backing: Backing;
  /** The pre-fault mode asked for ('none' when RAM was demand faulted); prefaultResults says what each region got. */
  prefault: PrefaultMode;
  /** The pre-fault engine used and its result, per RAM region. */
  prefaultResults: { engine: string; reason: string; bytesMapped: string }[];
  /** Whether the in-kernel irqchip (PICs, IOAPIC, LAPICs) was asked for and KVM_CREATE_IRQCHIP made it; the PIT (KVM_CREATE_PIT2) is added with it. */
  irqchip: boolean;
  /** The CPUID profile given to KVM_SET_CPUID2: 'host' (KVM_GET_SUPPORTED_CPUID, trimmed by guestCpuid) or 'emulator' (features KVM's emulator cannot run removed). */
  cpuidProfile: 'host' | 'emulator';
  /** The XSAVE state offered to the guest. */
  xsave: 'none' | 'sse' | 'avx';
  /** How the kernel was loaded: 'bzimage' (the guest decompressed itself) or 'vmlinux' (decompressed on the host and entered directly). */
  load: 'bzimage' | 'vmlinux';
  /** Public API the VMM would have used but this node-kvm lacks. */
  missing: string[];
  /** Milliseconds: setup (VM, memory, load), pre-fault, from first KVM_RUN to the marker/first output/end. */
  timings: { setupMs: number; prefaultMs: number; firstOutputMs: number | null; markerMs: number | null; runMs: number };
  /** Console events seen, with the ms since the first KVM_RUN. */
  events: Partial<Record<ConsoleEvent, number>>;
  /** Total bytes the guest wrote to the COM1 UART's transmit register. */
  consoleBytes: number;
  /** The end of the console output. */
  consoleTail: string;
  /** Exit counts by reason, per vcpu id. */
  exits: Record<number, ExitCounts>;
  /** Selected KVM statistics per vcpu (exits, pf_taken, insn_emulation, ...) and of the VM (pages_4k/2m/1g). */
  vcpuStats: Record<number, Record<string, number>>;
  /** Selected VM-wide KVM statistics (KVM_GET_STATS_FD) at the end of the run: pages_4k, pages_2m and pages_1g, the number of guest pages KVM's page tables map at each size. */
  vmStats: Record<string, number>;
  /**
   * The same vcpu and VM statistics read when the marker appeared (null without a marker):
   * what a boot cost up to that line, comparable with a QEMU boot stopped at the same line.
   */
  atMarker: { vcpuStats: Record<number, Record<string, number>>; vmStats: Record<string, number> } | null;
  /** Exits KVM_INTERNAL_ERROR_DELIVERY_EV on the LAPIC page that the run loop ran again. */
  vectoringRetries: number;
  /** Where each vcpu was when the machine stopped (RIP, RFLAGS, CR3; hex), for diagnosis. */
  vcpuState: Record<number, { rip: string; rflags: string; cr3: string } | { error: string }>;
  /** Ports accessed, with counts (top 32), and those no device answered. */
  ports: { port: string; count: number }[];
  /** Ports no device answered (hex strings) with their access counts, most accessed first, top 32. */
  unclaimedPorts: { port: string; count: number }[];
}

const VCPU_STATS = ['exits', 'io_exits', 'mmio_exits', 'halt_exits', 'pf_taken', 'pf_fixed', 'pf_emulate', 'insn_emulation', 'insn_emulation_fail', 'irq_injections', 'signal_exits'];
const VM_STATS = ['pages_4k', 'pages_2m', 'pages_1g'];

const OP = 'vmm.boot';

/** Boots a bzImage; resolves when the guest has stopped and everything is closed. */
export async function bootLinux(options: BootOptions): Promise<BootResult> {
  const memorySize = options.memory ?? 256 * 1024 * 1024;
  const cpus = options.cpus ?? 1;
  const backing = options.backing ?? 'anon';
  const prefault = options.prefault ?? 'none';
  const baseCmdline = options.cmdline ?? (isShadowPagingHost() ? `${DEFAULT_CMDLINE} ${EMULATOR_CMDLINE}` : DEFAULT_CMDLINE);
  // With the default command line the guest is also told the TSC's frequency
  // (tsc_early_khz=, KVM_GET_TSC_KHZ of vcpu 0): its own calibration is timed, and a
  // vcpu thread descheduled meanwhile leaves it without a usable TSC ("could not
  // calculate TSC khz"). Room for the parameter is planned now, the value written later.
  const TSC_PARAM_ROOM = ' tsc_early_khz=4294967295'.length;
  let cmdline = baseCmdline;
  if (!Number.isSafeInteger(memorySize) || memorySize < 16 << 20 || memorySize % 4096 !== 0) throw invalidArgument(OP, 'memory must be a multiple of 4096 of at least 16 MiB', { memory: memorySize });
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255) throw invalidArgument(OP, 'cpus must be an integer in [1, 255]', { cpus });
  if (!['anon', 'thp', 'gmem'].includes(backing)) throw invalidArgument(OP, `backing must be anon, thp or gmem`, { backing });
  if (!['none', 'auto', 'kernel', 'software'].includes(prefault)) throw invalidArgument(OP, 'prefault must be none, auto, kernel or software', { prefault });
  if (options.xsave !== undefined && !['none', 'sse', 'avx'].includes(options.xsave)) throw invalidArgument(OP, 'xsave must be none, sse or avx', { xsave: options.xsave });

  const image = parseBzImage(options.kernel);
  const cmdlineRoom = encodeCmdline(baseCmdline).byteLength - 1 + (options.cmdline === undefined ? TSC_PARAM_ROOM : 0);
  const layout = planLayout({ memorySize, header: image.header, kernelSize: image.kernel.byteLength, cmdlineBytes: cmdlineRoom, initrdSize: options.initrd?.byteLength });

  const load = options.load ?? (isShadowPagingHost() ? 'vmlinux' : 'bzimage');
  if (load !== 'bzimage' && load !== 'vmlinux') throw invalidArgument(OP, "load must be 'bzimage' or 'vmlinux'", { load });
  const t0 = performance.now();
  const vmlinux = load === 'vmlinux' ? parseVmlinux(decompressPayload(image)) : undefined;
  if (vmlinux && vmlinux.end > layout.kernelEnd) throw invalidArgument(OP, 'the vmlinux runs past init_size', { end: vmlinux.end });
  if (vmlinux) layout.entry = vmlinux.entry;
  using kvm = Kvm.open(options.device === undefined ? {} : { path: options.device });
  using vm = kvm.createVm();
  const wantIrqchip = options.irqchip ?? true;
  const vmSetup = setUpVm(vm, { irqchip: wantIrqchip });
  const missing = [...vmSetup.missing];

  // ---- RAM ----
  const regions = ramRegions(memorySize).map((r, slot) => ({ ...r, slot, memory: mapRam(vm, r.size, backing) }));
  for (const r of regions) {
    vm.setMemoryRegion({ slot: r.slot, guestPhysAddr: BigInt(r.gpa), memory: r.memory.memory, ...(r.memory.gmem ? { guestMemfd: r.memory.gmem, guestMemfdOffset: 0n } : {}) });
  }
  const low = regions[0]!.memory.memory;
  const put = (gpa: number, bytes: Uint8Array): void => low.view(BigInt(gpa), BigInt(bytes.byteLength)).set(bytes);
  if (vmlinux) for (const seg of vmlinux.segments) put(seg.paddr, seg.data);
  else put(layout.kernelAddr, image.kernel);
  if (options.initrd && layout.initrd) put(layout.initrd.addr, options.initrd);
  put(BOOT_PARAMS_ADDR, buildBootParams({ image, cmdlineAddr: layout.cmdlineAddr, initrd: layout.initrd, e820: e820Map(memorySize) }));
  put(GDT_ADDR, buildGdt());
  put(PAGE_TABLES_ADDR, buildPageTables());

  // ---- vcpus ----
  const supported = kvm.supportedCpuid();
  if (vmSetup.irqchip) {
    // Processors, IOAPIC and ISA wiring for a guest without ACPI.
    const leaf1 = supported.find((e) => e.function === 1);
    put(MPTABLE_ADDR, buildMpTable({ cpus, cpuSignature: leaf1?.eax ?? 0, cpuFeatures: leaf1?.edx ?? 0 }));
  }
  const cpuidProfile = options.cpuidProfile ?? (isShadowPagingHost() ? 'emulator' : 'host');
  const tscDeadline = vmSetup.irqchip && kvm.checkExtension('TSC_DEADLINE_TIMER') > 0;
  const xsaveOffer = options.xsave ?? 'none';
  const vcpus: Vcpu[] = [];
  for (let id = 0; id < cpus; id++) {
    const vcpu = vm.createVcpu(id);
    vcpus.push(vcpu);
    const cpuid = guestCpuid(supported, { vcpuId: id, cpus, irqchip: vmSetup.irqchip, profile: cpuidProfile, xsave: xsaveOffer, tscDeadline });
    vcpu.setCpuid(cpuid);
    const xsave = ((cpuid.find((e) => e.function === 1)?.ecx ?? 0) & (1 << 26)) !== 0;
    for (const m of setUpVcpu(vcpu, { irqchip: vmSetup.irqchip, xsave })) if (!missing.includes(m)) missing.push(m);
    if (id === 0) {
      // The command line is final once vcpu 0 can say the TSC's frequency.
      const khz = options.cmdline === undefined ? vcpu.getTscKhz() : 0;
      if (khz > 0) cmdline = `${baseCmdline} tsc_early_khz=${khz}`;
      put(layout.cmdlineAddr, encodeCmdline(cmdline));
    }
    if (id === 0) {
      // The boot CPU starts at the 64-bit entry; the others wait for INIT/SIPI
      // in the in-kernel LAPIC (they need the irqchip to be woken).
      vcpu.setSregs(entrySregs());
      vcpu.setRegs(entryRegs(layout.entry));
    }
  }
  if (cpus > 1 && !vmSetup.irqchip) throw invalidArgument(OP, 'more than one vcpu needs the in-kernel irqchip (not available in this node-kvm)', { cpus, missing });
  const setupMs = performance.now() - t0;

  // ---- pre-fault ----
  const prefaultResults: BootResult['prefaultResults'] = [];
  const tp = performance.now();
  if (prefault !== 'none') {
    for (const r of regions) {
      const res = await vcpus[0]!.preFaultMemory({ gpa: BigInt(r.gpa), size: BigInt(r.size) }, { engine: prefault });
      prefaultResults.push({ engine: res.engine, reason: res.reason, bytesMapped: res.bytesMapped.toString() });
    }
  }
  const prefaultMs = performance.now() - tp;

  // ---- devices ----
  let tRun = 0;
  const events: BootResult['events'] = {};
  let firstOutputMs: number | null = null;
  let loop: RunLoop | undefined;
  let atMarker: BootResult['atMarker'] = null;
  const readStats = (): NonNullable<BootResult['atMarker']> => {
    const vcpuStats: BootResult['vcpuStats'] = {};
    for (const v of vcpus) vcpuStats[v.id] = pick(() => v.stats(), VCPU_STATS);
    return { vcpuStats, vmStats: pick(() => vm.stats(), VM_STATS) };
  };
  const watcher = new ConsoleWatcher({
    output: options.output,
    marker: options.marker,
    onEvent: (event) => {
      events[event] = performance.now() - tRun;
      if (event === 'marker') atMarker = readStats();
      if (event === 'power-down') loop?.stop({ kind: 'poweroff', source: 'console' });
      else if (event === 'halt') loop?.stop({ kind: 'halted', detail: 'the kernel halted the system' });
    },
  });
  const irqLine = irqLineOf(vm, vmSetup);
  const uart = new Uart16550({
    write: (bytes) => {
      firstOutputMs ??= performance.now() - tRun;
      watcher.write(bytes);
    },
    irq: irqLine ? (level) => irqLine(COM1.irq, level) : undefined,
  });
  const i8042 = new I8042(() => loop?.stop({ kind: 'reboot', source: 'i8042' }));
  const bus = new IoBus();
  bus.add(COM1.port, 8, 'com1', { read: (o) => uart.read(o), write: (o, _s, v) => uart.write(o, v) });
  bus.add(I8042_DATA_PORT, 1, 'i8042-data', { read: () => i8042.read(I8042_DATA_PORT), write: (_o, _s, v) => i8042.write(I8042_DATA_PORT, v) });
  bus.add(I8042_COMMAND_PORT, 1, 'i8042-command', { read: () => i8042.read(I8042_COMMAND_PORT), write: (_o, _s, v) => i8042.write(I8042_COMMAND_PORT, v) });
  const cmos = new CmosRtc();
  bus.add(CMOS_INDEX_PORT, 2, 'cmos-rtc', { read: (o) => cmos.read(CMOS_INDEX_PORT + o), write: (o, _s, v) => cmos.write(CMOS_INDEX_PORT + o, v) });
  bus.addSilent();
  loop = new RunLoop({ vcpus, bus, irqchip: vmSetup.irqchip, afterExit: () => uart.flush() });

  // ---- input and stopping ----
  const input = options.input;
  const tty = input?.isTTY === true && typeof input.setRawMode === 'function';
  const onData = (chunk: Buffer): void => {
    if (chunk.includes(0x03)) {
      loop?.stop({ kind: 'signal', signal: 'SIGINT' });
      return;
    }
    uart.receive(chunk);
    uart.flush();
  };
  const onAbort = (): void => {
    const reason: unknown = options.signal?.reason;
    loop?.stop({ kind: 'signal', signal: typeof reason === 'string' ? reason : 'abort' });
  };
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (tty) {
    input.setRawMode(true);
    input.on('data', onData);
    input.resume();
  }

  let stop: StopReason;
  tRun = performance.now();
  try {
    stop = await loop.run();
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    if (tty) {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
    }
    uart.flush();
  }
  const runMs = performance.now() - tRun;
  if (watcher.has('panic') && stop.kind === 'reboot') stop = { kind: 'panic', detail: lastMatch(watcher.tail, /Kernel panic - not syncing.*/) };

  const { vcpuStats, vmStats } = readStats();
  const vcpuState: BootResult['vcpuState'] = {};
  for (const v of vcpus) {
    try {
      const r = v.getRegs();
      vcpuState[v.id] = { rip: `0x${r.rip.toString(16)}`, rflags: `0x${r.rflags.toString(16)}`, cr3: `0x${v.getSregs().cr3.toString(16)}` };
    } catch (e) {
      vcpuState[v.id] = { error: e instanceof Error ? e.message : String(e) };
    }
  }
  const sortPorts = (m: Map<number, number>): { port: string; count: number }[] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, 32).map(([p, count]) => ({ port: `0x${p.toString(16)}`, count }));

  return {
    stop,
    exitCode: exitCodeOf(stop),
    kernel: { version: image.header.kernelVersion, protocol: image.header.version, compression: image.compression },
    layout,
    cmdline,
    memory: memorySize,
    cpus,
    backing,
    prefault,
    prefaultResults,
    irqchip: vmSetup.irqchip,
    cpuidProfile,
    xsave: xsaveOffer,
    load,
    missing,
    timings: { setupMs, prefaultMs, firstOutputMs, markerMs: events.marker ?? null, runMs },
    events,
    consoleBytes: watcher.bytes,
    consoleTail: watcher.tail.slice(-4096),
    exits: Object.fromEntries(loop.exits),
    vcpuStats,
    vmStats,
    atMarker,
    vcpuState,
    vectoringRetries: loop.vectoringRetries,
    ports: sortPorts(bus.counts),
    unclaimedPorts: sortPorts(bus.unclaimed),
  };
}

/** The process exit status for a stop reason. */
export function exitCodeOf(stop: StopReason): number {
  switch (stop.kind) {
    case 'reboot':
    case 'poweroff':
      return 0;
    case 'signal':
      return 128 + (stop.signal === 'SIGTERM' ? 15 : stop.signal === 'SIGHUP' ? 1 : 2);
    default:
      return 1;
  }
}

function mapRam(vm: Vm, size: number, backing: Backing): { memory: HostMemory; gmem?: GuestMemfd } {
  if (backing === 'gmem') {
    if (!vm.capabilities.guestMemfd || !vm.guestMemfdFlags.includes('mmap') || !vm.guestMemfdFlags.includes('init-shared')) {
      throw new KvmError("backing 'gmem' needs guest_memfd with the mmap and init-shared flags", { code: 'EOPNOTSUPP', args: { flags: vm.guestMemfdFlags } });
    }
    const gmem = vm.createGuestMemfd({ size: BigInt(size), flags: ['mmap', 'init-shared'] });
    return { memory: gmem.map(), gmem };
  }
  const memory = vm.allocateMemory(BigInt(size), { hugePages: backing === 'thp' });
  if (backing === 'anon') memory.advise('nohugepage');
  return { memory };
}

function pick(read: () => Record<string, unknown>, names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    const all = read();
    for (const n of names) {
      const v = all[n];
      if (typeof v === 'number' || typeof v === 'bigint') out[n] = Number(v);
    }
  } catch {
    // statistics are a report, not a reason to fail the boot
  }
  return out;
}

function lastMatch(text: string, re: RegExp): string {
  return text.match(re)?.[0] ?? 'kernel panic';
}
