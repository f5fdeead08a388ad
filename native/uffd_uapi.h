// userfaultfd(2) interface, written from Documentation/admin-guide/mm/userfaultfd.rst
// and ioctl_userfaultfd(2). Our own definitions (the distribution's header is from
// 6.1); every struct size and ioctl number is pinned with static_assert.
#pragma once

#include <linux/ioctl.h>

#include <cstdint>

namespace nkvm {

constexpr unsigned kUffdIo = 0xAA;
constexpr uint64_t kUffdApi = 0xAA;

// uffdio_api.features
constexpr uint64_t kUffdFeatureThreadId = 1ull << 8;
constexpr uint64_t kUffdFeatureMinorShmem = 1ull << 10;

// uffdio_register.mode
constexpr uint64_t kUffdRegisterModeMissing = 1;
constexpr uint64_t kUffdRegisterModeMinor = 4;

// uffd_msg.event and pagefault flags
constexpr uint8_t kUffdEventPagefault = 0x12;
constexpr uint64_t kUffdPagefaultFlagWrite = 1ull << 0;
constexpr uint64_t kUffdPagefaultFlagMinor = 1ull << 2;

struct UffdioApi {
  uint64_t api;
  uint64_t features;
  uint64_t ioctls;
};
static_assert(sizeof(UffdioApi) == 24);

struct UffdioRange {
  uint64_t start;
  uint64_t len;
};
static_assert(sizeof(UffdioRange) == 16);

struct UffdioRegister {
  UffdioRange range;
  uint64_t mode;
  uint64_t ioctls;  // out: the ioctls the range supports
};
static_assert(sizeof(UffdioRegister) == 32);

struct UffdioCopy {
  uint64_t dst;
  uint64_t src;
  uint64_t len;
  uint64_t mode;
  int64_t copy;  // out: bytes copied or -errno
};
static_assert(sizeof(UffdioCopy) == 40);

struct UffdioZeropage {
  UffdioRange range;
  uint64_t mode;
  int64_t zeropage;  // out
};
static_assert(sizeof(UffdioZeropage) == 32);

struct UffdioContinue {
  UffdioRange range;
  uint64_t mode;
  int64_t mapped;  // out
};
static_assert(sizeof(UffdioContinue) == 32);

// struct uffd_msg for a page fault; the union is 24 bytes (the largest member).
struct __attribute__((packed)) UffdMsg {
  uint8_t event;
  uint8_t reserved1;
  uint16_t reserved2;
  uint32_t reserved3;
  uint64_t flags;    // pagefault.flags
  uint64_t address;  // pagefault.address
  uint32_t ptid;     // pagefault.feat.ptid (UFFD_FEATURE_THREAD_ID)
  uint32_t pad;
};
static_assert(sizeof(UffdMsg) == 32);

constexpr unsigned long kUffdioApi = _IOWR(kUffdIo, 0x3F, UffdioApi);
constexpr unsigned long kUffdioRegister = _IOWR(kUffdIo, 0x00, UffdioRegister);
constexpr unsigned long kUffdioCopy = _IOWR(kUffdIo, 0x03, UffdioCopy);
constexpr unsigned long kUffdioZeropage = _IOWR(kUffdIo, 0x04, UffdioZeropage);
constexpr unsigned long kUffdioContinue = _IOWR(kUffdIo, 0x07, UffdioContinue);
// /dev/userfaultfd (Linux 6.1+): a userfaultfd for callers without CAP_SYS_PTRACE.
constexpr unsigned long kUserfaultfdIocNew = _IO(kUffdIo, 0x00);
static_assert(kUffdioApi == 0xC018AA3F);
static_assert(kUffdioRegister == 0xC020AA00);
static_assert(kUffdioCopy == 0xC028AA03);
static_assert(kUffdioZeropage == 0xC020AA04);
static_assert(kUffdioContinue == 0xC020AA07);
static_assert(kUserfaultfdIocNew == 0xAA00);

}  // namespace nkvm
