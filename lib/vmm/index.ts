/**
 * vmm: a small Linux VMM built on node-kvm's public API (`import { vmm } from
 * 'node-kvm'`). bootLinux() boots a bzImage; the parts (bzImage parsing,
 * boot_params, E820, page tables and entry state, CPUID policy, UART,
 * i8042, port bus, run loop) are exported for VMMs that want to assemble
 * their own. See docs/vmm.md.
 */
export { bootLinux, exitCodeOf, DEFAULT_CMDLINE, EMULATOR_CMDLINE, type BootOptions, type BootResult, type Backing, type PrefaultMode } from './machine.js';
export { parseBzImage, fmtVersion, ENTRY_64_OFFSET, LoadFlags, XLoadFlags, type BzImage, type SetupHeader } from './bzimage.js';
export { buildBootParams, encodeCmdline, BootParamsOffset, BOOT_PARAMS_SIZE, type BootParamsInput } from './boot-params.js';
export { e820Map, ramRegions, encodeE820, E820Type, type E820Entry, type RamRegion } from './e820.js';
export { planLayout, type BootLayout, type LayoutInput } from './layout.js';
export { buildPageTables, buildGdt, entryRegs, entrySregs, BOOT_CS, BOOT_DS } from './entry64.js';
export { guestCpuid, type CpuidPolicyOptions } from './cpuid-policy.js';
export { Uart16550, COM1, type UartSink } from './uart16550.js';
export { I8042 } from './i8042.js';
export { IoBus, dispatchIo, type PortDevice } from './io-bus.js';
export { ConsoleWatcher, type ConsoleEvent } from './console.js';
export { RunLoop, type StopReason, type ExitCounts } from './run-loop.js';
export { buildMpTable, mpTableSize, MPTABLE_ADDR, IOAPIC_ADDR, LAPIC_ADDR, IOAPIC_PINS, type MpTableOptions } from './mptable.js';
export { CmosRtc, CMOS_INDEX_PORT, CMOS_DATA_PORT } from './cmos-rtc.js';
export { runBootBench, bootBenchVariants, summarize, type BootBenchOptions, type BootBenchReport, type BootBenchRow, type BootBenchVariant } from './boot-bench.js';
export { formatBootReport, renderBootChartSvg } from './boot-bench-report.js';
export { bootQemu, qemuArgs, type QemuBootOptions, type QemuBootResult } from './qemu-reference.js';
