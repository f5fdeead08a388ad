/**
 * node-kvm: typed bindings for Linux /dev/kvm.
 *
 * Start with Kvm.open(); everything else hangs off the objects it returns.
 */
export { Kvm, type KvmCapabilities, type KvmOpenOptions } from './kvm.js';
export { Vm, type VmOptions, type SetMemoryRegionOptions, type MemoryAttributesOptions, type InvalidationReason } from './vm.js';
export { Vcpu, type RegsUpdate, type SregsUpdate, type VcpuWorkerHandle } from './vcpu.js';
export { GuestMemfd, type GuestMemfdOptions, type GuestMemfdStat, type GuestMemfdMapOptions } from './guest-memfd.js';
export { HostMemory, type AllocateMemoryOptions, type PopulateOptions, type Protection, type MemoryKind } from './memory.js';
export type { MemorySlot } from './memslots.js';
export type { GpaRange } from './attributes.js';
export { KvmError, errnoCode, type KvmErrorInit, type ErrorArgs, type KvmErrorCode, type ErrnoName } from './errors.js';
export { Cap, VM_TYPES, GUEST_MEMFD_FLAGS, MemFlag, ADVICE, type CapName, type VmType, type GuestMemfdFlag, type Advice } from './constants.js';
export type { CpuidEntry } from './cpuid.js';
export type { Regs, Sregs, Segment, DescriptorTable } from './regs.js';
export type { VcpuExit, IoExit, MmioExit, MemoryFaultExit, FailEntryExit, InternalErrorExit, SystemEventExit, IntrExit, OtherExit } from './exit.js';
export type { Stats, StatDescriptor, StatType, StatUnit, StatValue, TypedStats, VmStats, VcpuStats, VmStatTypes, VcpuStatTypes } from './stats.js';
export type {
  VcpuExitReason, HypercallExit, DebugExit, ExceptionExit, TprAccessExit, IoapicEoiExit, IrqWindowOpenExit, RdmsrExit, WrmsrExit,
  MsrExitCause, HypervExit, XenExit, NotifyExit, TdxExit, SimpleExit, UnknownExit, SystemEventType,
} from './exit.js';
export { ExitCode, EXIT_REASONS, SYSTEM_EVENT_TYPES, KVM_RUN_LAYOUT, decodeExit } from './exit.js';
export { PAGE_SIZE, type U64Like } from './int.js';
export { addonPath } from './native.js';
export * as guest from './guest/index.js';
export {
  PreFaultError, PreFaultAbortError, defaultThreads, isShadowPagingHost, EAGAIN_RETRY_LIMIT, EINTR_RETRY_LIMIT,
  type PreFaultRange, type PreFaultOptions, type PreFaultResult, type PreFaultLevels, type PreFaultEngineName, type PreFaultEngineChoice,
} from './prefault/index.js';
export { SoftMmu, type PageLevel, type SoftMmuLeaf, type SoftMmuStats } from './soft-mmu/index.js';
export { EventFd, type EventFdOptions } from './eventfd.js';
export { Device, DEVICE_TYPES, type DeviceType, type DeviceAttrId, type DeviceAttrValue } from './device.js';
export {
  DirtyLog, IRQCHIP_IDS, CLOCK_FLAGS,
  type IrqchipId, type IrqchipState, type PicState, type IoapicState, type PitState, type PitChannelState, type CreatePit2Options,
  MSR_FILTER_MAX_RANGES, MSR_FILTER_MAX_RANGE_MSRS, type MsrFilterOptions, type MsrFilterRange,
  type GsiRoute, type Msi, type IrqfdOptions, type IoeventfdOptions, type ClockData, type CoalescedMmioZone, type CreateDeviceOptions,
} from './vm/index.js';
export {
  LAPIC_REGISTERS, MP_STATES, VCPU_EVENT_VALID, SYNC_REGS, lapicVectorSet,
  type SyncRegs, type SyncRegsKind,
  type MsrEntry, type Fpu, type Xsave, type Xcr, type LapicState, type LapicRegister, type VcpuEvents, type MpState,
  type DebugRegs, type GuestDebugOptions, type Translation, type NestedState, type CoalescedWrite,
} from './vcpu/index.js';
export * as vmm from './vmm/index.js';
export {
  Userfault,
  registerUserfault,
  allocateSharedMemory,
  userfaultSupport,
  type UserfaultMode,
  type UserfaultFault,
  type UserfaultAnswer,
  type UserfaultHandler,
  type UserfaultSource,
  type UserfaultOptions,
  type UserfaultStats,
  type UserfaultSupport,
  type SharedMemoryOptions,
} from './userfault.js';
export { convertMemory, answerMemoryFault, type ConvertMemoryOptions, type ConversionResult, type AnswerMemoryFaultOptions } from './conversion.js';
export { launchPrivateGuest, measureLaunchPages, type LaunchPages, type LaunchMeasurement, type PrivateLaunchOptions, type PrivateLaunch } from './launch.js';
export { timeoutScale, scaledTimeout, TIMEOUT_SCALE_ENV } from './time-scale.js';
export {
  DirtyRing, DIRTY_RING_ENTRY_BYTES, dirtyRingSupport, enableDirtyRing, dirtyRingEntries, resetDirtyRings, type DirtyGfn, type DirtyRingSupport,
} from './vm/dirty-ring.js';
