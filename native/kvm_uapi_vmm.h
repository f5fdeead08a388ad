// Our own definitions of the structs and ioctl numbers of the VMM part of the
// KVM API (interrupts, PIT, clock, dirty log, eventfds, devices, MSRs and the
// vcpu state ioctls), written from Documentation/virt/kvm/api.rst.
//
// Why not <linux/kvm.h>: the distro header (6.1) declares kvm_msrs,
// kvm_msr_list, kvm_irq_routing, kvm_xsave and kvm_cpuid2 with
// __DECLARE_FLEX_ARRAY, which in C++ adds a 1-byte member before the array,
// so sizeof() and the ioctl numbers built from it come out wrong. Every size,
// offset that matters and ioctl number is pinned here with static_assert.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace nkvm {
namespace uapi {

constexpr unsigned kIo = 0xAE;

// ---- system fd ----------------------------------------------------------

// kvm_msr_list: u32 nmsrs, then u32 indices[nmsrs].
struct MsrListHeader {
  uint32_t nmsrs;
};
static_assert(sizeof(MsrListHeader) == 4, "kvm_msr_list header is 4 bytes");

struct MsrEntry {
  uint32_t index;
  uint32_t reserved;
  uint64_t data;
};
static_assert(sizeof(MsrEntry) == 16, "kvm_msr_entry is 16 bytes");

// kvm_msrs: u32 nmsrs, u32 pad, then kvm_msr_entry entries[nmsrs].
struct MsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
static_assert(sizeof(MsrsHeader) == 8, "kvm_msrs header is 8 bytes");

struct Cpuid2Header {
  uint32_t nent;
  uint32_t padding;
};
static_assert(sizeof(Cpuid2Header) == 8, "kvm_cpuid2 header is 8 bytes");
constexpr size_t kCpuidEntrySize = 40;

constexpr unsigned long kGetMsrIndexList = _IOWR(kIo, 0x02, MsrListHeader);
constexpr unsigned long kGetMsrFeatureIndexList = _IOWR(kIo, 0x0a, MsrListHeader);
constexpr unsigned long kGetEmulatedCpuid = _IOWR(kIo, 0x09, Cpuid2Header);
constexpr unsigned long kGetMsrs = _IOWR(kIo, 0x88, MsrsHeader);  // system and vcpu fd
constexpr unsigned long kSetMsrs = _IOW(kIo, 0x89, MsrsHeader);
static_assert(kGetMsrIndexList == 0xC004AE02, "KVM_GET_MSR_INDEX_LIST");
static_assert(kGetMsrFeatureIndexList == 0xC004AE0A, "KVM_GET_MSR_FEATURE_INDEX_LIST");
static_assert(kGetEmulatedCpuid == 0xC008AE09, "KVM_GET_EMULATED_CPUID");
static_assert(kGetMsrs == 0xC008AE88, "KVM_GET_MSRS");
static_assert(kSetMsrs == 0x4008AE89, "KVM_SET_MSRS");

// ---- VM fd: irqchip, PIT, interrupts -----------------------------------

struct IrqLevel {
  uint32_t irq;  // union with s32 status on return of KVM_IRQ_LINE_STATUS
  uint32_t level;
};
static_assert(sizeof(IrqLevel) == 8, "kvm_irq_level is 8 bytes");

struct PicState {
  uint8_t last_irr, irr, imr, isr, priority_add, irq_base, read_reg_select, poll;
  uint8_t special_mask, init_state, auto_eoi, rotate_on_auto_eoi, special_fully_nested_mode, init4, elcr, elcr_mask;
};
static_assert(sizeof(PicState) == 16, "kvm_pic_state is 16 bytes");

constexpr int kIoapicNumPins = 24;
struct IoapicState {
  uint64_t base_address;
  uint32_t ioregsel;
  uint32_t id;
  uint32_t irr;
  uint32_t pad;
  uint64_t redirtbl[kIoapicNumPins];
};
static_assert(sizeof(IoapicState) == 216, "kvm_ioapic_state is 216 bytes");

struct Irqchip {
  uint32_t chip_id;
  uint32_t pad;
  union {
    uint8_t dummy[512];
    PicState pic;
    IoapicState ioapic;
  } chip;
};
static_assert(sizeof(Irqchip) == 520, "kvm_irqchip is 520 bytes");
static_assert(offsetof(Irqchip, chip) == 8, "kvm_irqchip.chip at 8");

struct PitConfig {
  uint32_t flags;
  uint32_t pad[15];
};
static_assert(sizeof(PitConfig) == 64, "kvm_pit_config is 64 bytes");

struct PitChannelState {
  uint32_t count;
  uint16_t latched_count;
  uint8_t count_latched, status_latched, status, read_state, write_state, write_latch, rw_mode, mode, bcd, gate;
  int64_t count_load_time;
};
static_assert(sizeof(PitChannelState) == 24, "kvm_pit_channel_state is 24 bytes");
static_assert(offsetof(PitChannelState, count_load_time) == 16, "count_load_time at 16");

struct PitState2 {
  PitChannelState channels[3];
  uint32_t flags;
  uint32_t reserved[9];
};
static_assert(sizeof(PitState2) == 112, "kvm_pit_state2 is 112 bytes");

struct IrqRoutingHeader {
  uint32_t nr;
  uint32_t flags;
};
static_assert(sizeof(IrqRoutingHeader) == 8, "kvm_irq_routing header is 8 bytes");

struct IrqRoutingEntry {
  uint32_t gsi;
  uint32_t type;
  uint32_t flags;
  uint32_t pad;
  union {
    struct {
      uint32_t irqchip;
      uint32_t pin;
    } irqchip;
    struct {
      uint32_t address_lo;
      uint32_t address_hi;
      uint32_t data;
      uint32_t devid;
    } msi;
    uint32_t pad[8];
  } u;
};
static_assert(sizeof(IrqRoutingEntry) == 48, "kvm_irq_routing_entry is 48 bytes");
static_assert(offsetof(IrqRoutingEntry, u) == 16, "kvm_irq_routing_entry.u at 16");

struct Msi {
  uint32_t address_lo;
  uint32_t address_hi;
  uint32_t data;
  uint32_t flags;
  uint32_t devid;
  uint8_t pad[12];
};
static_assert(sizeof(Msi) == 32, "kvm_msi is 32 bytes");

struct Irqfd {
  uint32_t fd;
  uint32_t gsi;
  uint32_t flags;
  uint32_t resamplefd;
  uint8_t pad[16];
};
static_assert(sizeof(Irqfd) == 32, "kvm_irqfd is 32 bytes");

struct Ioeventfd {
  uint64_t datamatch;
  uint64_t addr;
  uint32_t len;
  int32_t fd;
  uint32_t flags;
  uint8_t pad[36];
};
static_assert(sizeof(Ioeventfd) == 64, "kvm_ioeventfd is 64 bytes");
static_assert(offsetof(Ioeventfd, flags) == 24, "kvm_ioeventfd.flags at 24");

constexpr unsigned long kCreateIrqchip = _IO(kIo, 0x60);
constexpr unsigned long kIrqLine = _IOW(kIo, 0x61, IrqLevel);
constexpr unsigned long kIrqLineStatus = _IOWR(kIo, 0x67, IrqLevel);
constexpr unsigned long kGetIrqchip = _IOWR(kIo, 0x62, Irqchip);
constexpr unsigned long kSetIrqchip = _IOR(kIo, 0x63, Irqchip);
constexpr unsigned long kCreatePit2 = _IOW(kIo, 0x77, PitConfig);
constexpr unsigned long kGetPit2 = _IOR(kIo, 0x9f, PitState2);
constexpr unsigned long kSetPit2 = _IOW(kIo, 0xa0, PitState2);
constexpr unsigned long kSetGsiRouting = _IOW(kIo, 0x6a, IrqRoutingHeader);
constexpr unsigned long kSignalMsi = _IOW(kIo, 0xa5, Msi);
constexpr unsigned long kIrqfd = _IOW(kIo, 0x76, Irqfd);
constexpr unsigned long kIoeventfd = _IOW(kIo, 0x79, Ioeventfd);
static_assert(kCreateIrqchip == 0xAE60, "KVM_CREATE_IRQCHIP");
static_assert(kIrqLine == 0x4008AE61, "KVM_IRQ_LINE");
static_assert(kIrqLineStatus == 0xC008AE67, "KVM_IRQ_LINE_STATUS");
static_assert(kGetIrqchip == 0xC208AE62, "KVM_GET_IRQCHIP");
static_assert(kSetIrqchip == 0x8208AE63, "KVM_SET_IRQCHIP");
static_assert(kCreatePit2 == 0x4040AE77, "KVM_CREATE_PIT2");
static_assert(kGetPit2 == 0x8070AE9F, "KVM_GET_PIT2");
static_assert(kSetPit2 == 0x4070AEA0, "KVM_SET_PIT2");
static_assert(kSetGsiRouting == 0x4008AE6A, "KVM_SET_GSI_ROUTING");
static_assert(kSignalMsi == 0x4020AEA5, "KVM_SIGNAL_MSI");
static_assert(kIrqfd == 0x4020AE76, "KVM_IRQFD");
static_assert(kIoeventfd == 0x4040AE79, "KVM_IOEVENTFD");

// ---- VM fd: addresses, caps, clock, dirty log, coalesced MMIO, devices --

struct EnableCap {
  uint32_t cap;
  uint32_t flags;
  uint64_t args[4];
  uint8_t pad[64];
};
static_assert(sizeof(EnableCap) == 104, "kvm_enable_cap is 104 bytes");

struct ClockData {
  uint64_t clock;
  uint32_t flags;
  uint32_t pad0;
  uint64_t realtime;
  uint64_t host_tsc;
  uint32_t pad[4];
};
static_assert(sizeof(ClockData) == 48, "kvm_clock_data is 48 bytes");

struct DirtyLog {
  uint32_t slot;
  uint32_t padding1;
  uint64_t dirty_bitmap;  // user pointer
};
static_assert(sizeof(DirtyLog) == 16, "kvm_dirty_log is 16 bytes");

struct ClearDirtyLog {
  uint32_t slot;
  uint32_t num_pages;
  uint64_t first_page;
  uint64_t dirty_bitmap;  // user pointer
};
static_assert(sizeof(ClearDirtyLog) == 24, "kvm_clear_dirty_log is 24 bytes");

struct CoalescedMmioZone {
  uint64_t addr;
  uint32_t size;
  uint32_t pio;
};
static_assert(sizeof(CoalescedMmioZone) == 16, "kvm_coalesced_mmio_zone is 16 bytes");

struct CreateDevice {
  uint32_t type;
  uint32_t fd;
  uint32_t flags;
};
static_assert(sizeof(CreateDevice) == 12, "kvm_create_device is 12 bytes");

struct DeviceAttr {
  uint32_t flags;
  uint32_t group;
  uint64_t attr;
  uint64_t addr;  // user pointer to the value
};
static_assert(sizeof(DeviceAttr) == 24, "kvm_device_attr is 24 bytes");

constexpr unsigned long kSetTssAddr = _IO(kIo, 0x47);
constexpr unsigned long kSetIdentityMapAddr = _IOW(kIo, 0x48, uint64_t);
constexpr unsigned long kEnableCap = _IOW(kIo, 0xa3, EnableCap);  // VM and vcpu fd
constexpr unsigned long kGetClock = _IOR(kIo, 0x7c, ClockData);
constexpr unsigned long kSetClock = _IOW(kIo, 0x7b, ClockData);
constexpr unsigned long kGetDirtyLog = _IOW(kIo, 0x42, DirtyLog);
constexpr unsigned long kClearDirtyLog = _IOWR(kIo, 0xc0, ClearDirtyLog);
constexpr unsigned long kRegisterCoalescedMmio = _IOW(kIo, 0x67, CoalescedMmioZone);
constexpr unsigned long kUnregisterCoalescedMmio = _IOW(kIo, 0x68, CoalescedMmioZone);
constexpr unsigned long kSetBootCpuId = _IO(kIo, 0x78);
constexpr unsigned long kCreateDevice = _IOWR(kIo, 0xe0, CreateDevice);
constexpr unsigned long kSetDeviceAttr = _IOW(kIo, 0xe1, DeviceAttr);
constexpr unsigned long kGetDeviceAttr = _IOW(kIo, 0xe2, DeviceAttr);
constexpr unsigned long kHasDeviceAttr = _IOW(kIo, 0xe3, DeviceAttr);
static_assert(kSetTssAddr == 0xAE47, "KVM_SET_TSS_ADDR");
static_assert(kSetIdentityMapAddr == 0x4008AE48, "KVM_SET_IDENTITY_MAP_ADDR");
static_assert(kEnableCap == 0x4068AEA3, "KVM_ENABLE_CAP");
static_assert(kGetClock == 0x8030AE7C, "KVM_GET_CLOCK");
static_assert(kSetClock == 0x4030AE7B, "KVM_SET_CLOCK");
static_assert(kGetDirtyLog == 0x4010AE42, "KVM_GET_DIRTY_LOG");
static_assert(kClearDirtyLog == 0xC018AEC0, "KVM_CLEAR_DIRTY_LOG");
static_assert(kRegisterCoalescedMmio == 0x4010AE67, "KVM_REGISTER_COALESCED_MMIO");
static_assert(kUnregisterCoalescedMmio == 0x4010AE68, "KVM_UNREGISTER_COALESCED_MMIO");
static_assert(kSetBootCpuId == 0xAE78, "KVM_SET_BOOT_CPU_ID");
static_assert(kCreateDevice == 0xC00CAEE0, "KVM_CREATE_DEVICE");
static_assert(kSetDeviceAttr == 0x4018AEE1, "KVM_SET_DEVICE_ATTR");
static_assert(kGetDeviceAttr == 0x4018AEE2, "KVM_GET_DEVICE_ATTR");
static_assert(kHasDeviceAttr == 0x4018AEE3, "KVM_HAS_DEVICE_ATTR");

// ---- vcpu fd: state ------------------------------------------------------

struct Fpu {
  uint8_t fpr[8][16];
  uint16_t fcw;
  uint16_t fsw;
  uint8_t ftwx;
  uint8_t pad1;
  uint16_t last_opcode;
  uint64_t last_ip;
  uint64_t last_dp;
  uint8_t xmm[16][16];
  uint32_t mxcsr;
  uint32_t pad2;
};
static_assert(sizeof(Fpu) == 416, "kvm_fpu is 416 bytes");
static_assert(offsetof(Fpu, last_ip) == 136, "kvm_fpu.last_ip at 136");
static_assert(offsetof(Fpu, xmm) == 152, "kvm_fpu.xmm at 152");

struct LapicState {
  uint8_t regs[1024];
};
static_assert(sizeof(LapicState) == 1024, "kvm_lapic_state is 1024 bytes");

// kvm_xsave: u32 region[1024], then (KVM_GET_XSAVE2 only) more bytes.
struct Xsave {
  uint32_t region[1024];
};
static_assert(sizeof(Xsave) == 4096, "kvm_xsave fixed part is 4096 bytes");

struct Xcr {
  uint32_t xcr;
  uint32_t reserved;
  uint64_t value;
};
struct Xcrs {
  uint32_t nr_xcrs;
  uint32_t flags;
  Xcr xcrs[16];
  uint64_t padding[16];
};
static_assert(sizeof(Xcrs) == 392, "kvm_xcrs is 392 bytes");

struct VcpuEvents {
  uint8_t exception_injected, exception_nr, exception_has_error_code, exception_pending;
  uint32_t exception_error_code;
  uint8_t interrupt_injected, interrupt_nr, interrupt_soft, interrupt_shadow;
  uint8_t nmi_injected, nmi_pending, nmi_masked, nmi_pad;
  uint32_t sipi_vector;
  uint32_t flags;
  uint8_t smi_smm, smi_pending, smi_inside_nmi, smi_latched_init;
  uint8_t triple_fault_pending;
  uint8_t reserved[26];
  uint8_t exception_has_payload;
  uint64_t exception_payload;
};
static_assert(sizeof(VcpuEvents) == 64, "kvm_vcpu_events is 64 bytes");
static_assert(offsetof(VcpuEvents, sipi_vector) == 16, "sipi_vector at 16");
static_assert(offsetof(VcpuEvents, triple_fault_pending) == 28, "triple_fault at 28");
static_assert(offsetof(VcpuEvents, exception_has_payload) == 55, "exception_has_payload at 55");
static_assert(offsetof(VcpuEvents, exception_payload) == 56, "exception_payload at 56");

struct DebugRegs {
  uint64_t db[4];
  uint64_t dr6;
  uint64_t dr7;
  uint64_t flags;
  uint64_t reserved[9];
};
static_assert(sizeof(DebugRegs) == 128, "kvm_debugregs is 128 bytes");

struct MpState {
  uint32_t mp_state;
};
static_assert(sizeof(MpState) == 4, "kvm_mp_state is 4 bytes");

struct GuestDebug {
  uint32_t control;
  uint32_t pad;
  uint64_t debugreg[8];
};
static_assert(sizeof(GuestDebug) == 72, "kvm_guest_debug is 72 bytes");

struct Translation {
  uint64_t linear_address;
  uint64_t physical_address;
  uint8_t valid;
  uint8_t writeable;
  uint8_t usermode;
  uint8_t pad[5];
};
static_assert(sizeof(Translation) == 24, "kvm_translation is 24 bytes");

struct Interrupt {
  uint32_t irq;
};
static_assert(sizeof(Interrupt) == 4, "kvm_interrupt is 4 bytes");

// kvm_nested_state: 8-byte prefix, 120-byte format-specific header, then data.
struct NestedStateHeader {
  uint16_t flags;
  uint16_t format;
  uint32_t size;
  uint8_t hdr[120];
};
static_assert(sizeof(NestedStateHeader) == 128, "kvm_nested_state header is 128 bytes");

constexpr unsigned long kGetFpu = _IOR(kIo, 0x8c, Fpu);
constexpr unsigned long kSetFpu = _IOW(kIo, 0x8d, Fpu);
constexpr unsigned long kGetLapic = _IOR(kIo, 0x8e, LapicState);
constexpr unsigned long kSetLapic = _IOW(kIo, 0x8f, LapicState);
constexpr unsigned long kGetXsave = _IOR(kIo, 0xa4, Xsave);
constexpr unsigned long kSetXsave = _IOW(kIo, 0xa5, Xsave);
constexpr unsigned long kGetXsave2 = _IOR(kIo, 0xcf, Xsave);
constexpr unsigned long kGetXcrs = _IOR(kIo, 0xa6, Xcrs);
constexpr unsigned long kSetXcrs = _IOW(kIo, 0xa7, Xcrs);
constexpr unsigned long kGetVcpuEvents = _IOR(kIo, 0x9f, VcpuEvents);
constexpr unsigned long kSetVcpuEvents = _IOW(kIo, 0xa0, VcpuEvents);
constexpr unsigned long kGetDebugRegs = _IOR(kIo, 0xa1, DebugRegs);
constexpr unsigned long kSetDebugRegs = _IOW(kIo, 0xa2, DebugRegs);
constexpr unsigned long kGetMpState = _IOR(kIo, 0x98, MpState);
constexpr unsigned long kSetMpState = _IOW(kIo, 0x99, MpState);
constexpr unsigned long kSetGuestDebug = _IOW(kIo, 0x9b, GuestDebug);
constexpr unsigned long kTranslate = _IOWR(kIo, 0x85, Translation);
constexpr unsigned long kInterrupt = _IOW(kIo, 0x86, Interrupt);
constexpr unsigned long kNmi = _IO(kIo, 0x9a);
constexpr unsigned long kSmi = _IO(kIo, 0xb7);
constexpr unsigned long kGetCpuid2 = _IOWR(kIo, 0x91, Cpuid2Header);
constexpr unsigned long kGetTscKhz = _IO(kIo, 0xa3);
constexpr unsigned long kSetTscKhz = _IO(kIo, 0xa2);
constexpr unsigned long kKvmclockCtrl = _IO(kIo, 0xad);
constexpr unsigned long kGetNestedState = _IOWR(kIo, 0xbe, NestedStateHeader);
constexpr unsigned long kSetNestedState = _IOW(kIo, 0xbf, NestedStateHeader);
static_assert(kGetFpu == 0x81A0AE8C, "KVM_GET_FPU");
static_assert(kSetFpu == 0x41A0AE8D, "KVM_SET_FPU");
static_assert(kGetLapic == 0x8400AE8E, "KVM_GET_LAPIC");
static_assert(kSetLapic == 0x4400AE8F, "KVM_SET_LAPIC");
static_assert(kGetXsave == 0x9000AEA4, "KVM_GET_XSAVE");
static_assert(kSetXsave == 0x5000AEA5, "KVM_SET_XSAVE");
static_assert(kGetXsave2 == 0x9000AECF, "KVM_GET_XSAVE2");
static_assert(kGetXcrs == 0x8188AEA6, "KVM_GET_XCRS");
static_assert(kSetXcrs == 0x4188AEA7, "KVM_SET_XCRS");
static_assert(kGetVcpuEvents == 0x8040AE9F, "KVM_GET_VCPU_EVENTS");
static_assert(kSetVcpuEvents == 0x4040AEA0, "KVM_SET_VCPU_EVENTS");
static_assert(kGetDebugRegs == 0x8080AEA1, "KVM_GET_DEBUGREGS");
static_assert(kSetDebugRegs == 0x4080AEA2, "KVM_SET_DEBUGREGS");
static_assert(kGetMpState == 0x8004AE98, "KVM_GET_MP_STATE");
static_assert(kSetMpState == 0x4004AE99, "KVM_SET_MP_STATE");
static_assert(kSetGuestDebug == 0x4048AE9B, "KVM_SET_GUEST_DEBUG");
static_assert(kTranslate == 0xC018AE85, "KVM_TRANSLATE");
static_assert(kInterrupt == 0x4004AE86, "KVM_INTERRUPT");
static_assert(kNmi == 0xAE9A, "KVM_NMI");
static_assert(kSmi == 0xAEB7, "KVM_SMI");
static_assert(kGetCpuid2 == 0xC008AE91, "KVM_GET_CPUID2");
static_assert(kGetTscKhz == 0xAEA3, "KVM_GET_TSC_KHZ");
static_assert(kSetTscKhz == 0xAEA2, "KVM_SET_TSC_KHZ");
static_assert(kKvmclockCtrl == 0xAEAD, "KVM_KVMCLOCK_CTRL");
static_assert(kGetNestedState == 0xC080AEBE, "KVM_GET_NESTED_STATE");
static_assert(kSetNestedState == 0x4080AEBF, "KVM_SET_NESTED_STATE");

}  // namespace uapi
}  // namespace nkvm
