// Kernel interface definitions newer than the distribution's <linux/kvm.h> (6.1).
// Written from the documented ABI (Documentation/virt/kvm/api.rst); every struct
// size and ioctl number is pinned with static_assert so a layout mistake fails
// the build instead of corrupting an ioctl argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <linux/ioctl.h>
#include <linux/kvm.h>

namespace nkvm {

constexpr unsigned kKvmIo = 0xAE;

// Capabilities added after 6.1.
constexpr int kCapUserMemory2 = 231;
constexpr int kCapMemoryFaultInfo = 232;
constexpr int kCapMemoryAttributes = 233;
constexpr int kCapGuestMemfd = 234;
constexpr int kCapVmTypes = 235;
constexpr int kCapPreFaultMemory = 236;
constexpr int kCapGuestMemfdFlags = 244;

// Memslot flags.
constexpr uint32_t kMemGuestMemfd = 1u << 2;

// Memory attributes.
constexpr uint64_t kMemoryAttributePrivate = 1ull << 3;

// KVM_EXIT_MEMORY_FAULT and its flag.
constexpr uint32_t kExitMemoryFault = 39;
constexpr uint64_t kMemoryExitFlagPrivate = 1ull << 3;

struct UserspaceMemoryRegion2 {
  uint32_t slot;
  uint32_t flags;
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t guest_memfd_offset;
  uint32_t guest_memfd;
  uint32_t pad1;
  uint64_t pad2[14];
};
static_assert(sizeof(UserspaceMemoryRegion2) == 160, "kvm_userspace_memory_region2 is 160 bytes");
static_assert(offsetof(UserspaceMemoryRegion2, guest_memfd) == 40, "guest_memfd at 40");

struct CreateGuestMemfdArgs {
  uint64_t size;
  uint64_t flags;
  uint64_t reserved[6];
};
static_assert(sizeof(CreateGuestMemfdArgs) == 64, "kvm_create_guest_memfd is 64 bytes");

struct PreFaultMemory {
  uint64_t gpa;
  uint64_t size;
  uint64_t flags;
  uint64_t padding[5];
};
static_assert(sizeof(PreFaultMemory) == 64, "kvm_pre_fault_memory is 64 bytes");

struct MemoryAttributes {
  uint64_t address;
  uint64_t size;
  uint64_t attributes;
  uint64_t flags;
};
static_assert(sizeof(MemoryAttributes) == 32, "kvm_memory_attributes is 32 bytes");

// Binary statistics (KVM_GET_STATS_FD); defined here so the layout the addon
// reads is ours, not whichever header the build machine has.
struct StatsHeader {
  uint32_t flags;
  uint32_t name_size;
  uint32_t num_desc;
  uint32_t id_offset;
  uint32_t desc_offset;
  uint32_t data_offset;
};
static_assert(sizeof(StatsHeader) == 24, "kvm_stats_header is 24 bytes");

struct StatsDesc {
  uint32_t flags;
  int16_t exponent;
  uint16_t size;
  uint32_t offset;
  uint32_t bucket_size;
  // followed by name[name_size]
};
static_assert(sizeof(StatsDesc) == 16, "kvm_stats_desc fixed part is 16 bytes");

// The memory_fault member of kvm_run's exit union (at offset 32).
struct RunMemoryFault {
  uint64_t flags;
  uint64_t gpa;
  uint64_t size;
};
static_assert(sizeof(RunMemoryFault) == 24, "kvm_run.memory_fault is 24 bytes");
static_assert(offsetof(struct kvm_run, mmio) == 32, "kvm_run exit union at 32");
static_assert(offsetof(struct kvm_run, immediate_exit) == 1, "immediate_exit at 1");
static_assert(offsetof(struct kvm_run, exit_reason) == 8, "exit_reason at 8");
static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs is 144 bytes");
static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs is 312 bytes");
static_assert(sizeof(struct kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2 is 40 bytes");
// The distro header declares kvm_cpuid2.entries with __DECLARE_FLEX_ARRAY,
// which in C++ puts a 1-byte empty struct before the array and moves it to
// offset 12. The kernel expects the entries at offset 8, so use our own header.
struct Cpuid2Header {
  uint32_t nent;
  uint32_t padding;
};
static_assert(sizeof(Cpuid2Header) == 8, "kvm_cpuid2 header is 8 bytes");
constexpr size_t kCpuid2Header = sizeof(Cpuid2Header);
// The size is part of an ioctl number, so the distro's KVM_GET_SUPPORTED_CPUID
// and KVM_SET_CPUID2 are wrong in C++ too.
constexpr unsigned long kIoctlGetSupportedCpuid = _IOWR(kKvmIo, 0x05, Cpuid2Header);
constexpr unsigned long kIoctlSetCpuid2 = _IOW(kKvmIo, 0x90, Cpuid2Header);
static_assert(kIoctlGetSupportedCpuid == 0xC008AE05, "KVM_GET_SUPPORTED_CPUID");
static_assert(kIoctlSetCpuid2 == 0x4008AE90, "KVM_SET_CPUID2");
static_assert(sizeof(struct kvm_userspace_memory_region) == 32, "kvm_userspace_memory_region is 32 bytes");

constexpr unsigned long kIoctlSetUserMemoryRegion2 = _IOW(kKvmIo, 0x49, UserspaceMemoryRegion2);
constexpr unsigned long kIoctlSetMemoryAttributes = _IOW(kKvmIo, 0xd2, MemoryAttributes);
constexpr unsigned long kIoctlCreateGuestMemfd = _IOWR(kKvmIo, 0xd4, CreateGuestMemfdArgs);
constexpr unsigned long kIoctlPreFaultMemory = _IOWR(kKvmIo, 0xd5, PreFaultMemory);
constexpr unsigned long kIoctlGetStatsFd = _IO(kKvmIo, 0xce);

static_assert(kIoctlSetUserMemoryRegion2 == 0x40A0AE49, "KVM_SET_USER_MEMORY_REGION2");
static_assert(kIoctlSetMemoryAttributes == 0x4020AED2, "KVM_SET_MEMORY_ATTRIBUTES");
static_assert(kIoctlCreateGuestMemfd == 0xC040AED4, "KVM_CREATE_GUEST_MEMFD");
static_assert(kIoctlPreFaultMemory == 0xC040AED5, "KVM_PRE_FAULT_MEMORY");
static_assert(kIoctlGetStatsFd == 0xAECE, "KVM_GET_STATS_FD");

}  // namespace nkvm
