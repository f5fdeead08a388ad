// VM-fd ioctls for addresses, capabilities, the clock, the dirty log,
// coalesced MMIO and the boot CPU.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "common.h"
#include "kvm_uapi_vmm.h"
#include "vmm_ioctl.h"

namespace nkvm {
namespace {

using namespace uapi;

struct IdentityMapAddr {
  uint64_t gpa;
};
static_assert(sizeof(IdentityMapAddr) == 8, "KVM_SET_IDENTITY_MAP_ADDR takes a u64");

const FixedIoctl kStateIoctls[] = {
    {"vmSetTssAddr", "KVM_SET_TSS_ADDR", kSetTssAddr, 0, IoctlShape::kValue},
    {"vmSetIdentityMapAddr", "KVM_SET_IDENTITY_MAP_ADDR", kSetIdentityMapAddr, sizeof(IdentityMapAddr), IoctlShape::kSet},
    // Also valid on a vcpu fd (vcpu capabilities such as KVM_CAP_HYPERV_SYNIC).
    {"enableCap", "KVM_ENABLE_CAP", kEnableCap, sizeof(EnableCap), IoctlShape::kSet},
    {"vmGetClock", "KVM_GET_CLOCK", kGetClock, sizeof(ClockData), IoctlShape::kGet},
    {"vmSetClock", "KVM_SET_CLOCK", kSetClock, sizeof(ClockData), IoctlShape::kSet},
    {"vmRegisterCoalescedMmio", "KVM_REGISTER_COALESCED_MMIO", kRegisterCoalescedMmio, sizeof(CoalescedMmioZone), IoctlShape::kSet},
    {"vmUnregisterCoalescedMmio", "KVM_UNREGISTER_COALESCED_MMIO", kUnregisterCoalescedMmio, sizeof(CoalescedMmioZone), IoctlShape::kSet},
    {"vmSetBootCpuId", "KVM_SET_BOOT_CPU_ID", kSetBootCpuId, 0, IoctlShape::kValue},
};

// (vmFd, slot, bitmap: Uint8Array) -> void. The caller sizes the bitmap to
// the slot (one bit per page, rounded up to 64 bits); the kernel writes it.
Napi::Value GetDirtyLogCall(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vmFd");
  DirtyLog log{};
  log.slot = ArgUint32(info, 1, "slot");
  Napi::Uint8Array bitmap = ArgBytes(info, 2, "bitmap");
  // The kernel writes one bit per page of the slot: a shorter buffer would be overrun.
  uint64_t pages = ArgUint32(info, 3, "pages");
  uint64_t need = (pages + 63) / 64 * 8;
  if (bitmap.ByteLength() == 0 || bitmap.ByteLength() % 8 != 0) throw Napi::RangeError::New(info.Env(), "bitmap must be a non-empty multiple of 8 bytes");
  if (bitmap.ByteLength() < need) throw Napi::RangeError::New(info.Env(), "bitmap is smaller than the slot's pages");
  log.dirty_bitmap = reinterpret_cast<uint64_t>(bitmap.Data());
  if (::ioctl(fd, kGetDirtyLog, &log) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_DIRTY_LOG");
  return info.Env().Undefined();
}

// (vmFd, slot, firstPage: bigint, numPages, bitmap: Uint8Array) -> void.
// Bit i of the bitmap clears (re-protects) page firstPage + i.
Napi::Value ClearDirtyLogCall(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vmFd");
  uapi::ClearDirtyLog c{};
  c.slot = ArgUint32(info, 1, "slot");
  c.first_page = ArgUint64(info, 2, "firstPage");
  c.num_pages = ArgUint32(info, 3, "numPages");
  Napi::Uint8Array bitmap = ArgBytes(info, 4, "bitmap");
  if (bitmap.ByteLength() * 8 < c.num_pages) throw Napi::RangeError::New(info.Env(), "bitmap is smaller than numPages bits");
  c.dirty_bitmap = reinterpret_cast<uint64_t>(bitmap.Data());
  if (::ioctl(fd, kClearDirtyLog, &c) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_CLEAR_DIRTY_LOG");
  return info.Env().Undefined();
}

}  // namespace

void InitVmState(Napi::Env env, Napi::Object exports) {
  RegisterFixedIoctls(env, exports, kStateIoctls);
  exports.Set("vmGetDirtyLog", Napi::Function::New(env, GetDirtyLogCall, "vmGetDirtyLog"));
  exports.Set("vmClearDirtyLog", Napi::Function::New(env, ClearDirtyLogCall, "vmClearDirtyLog"));
}

}  // namespace nkvm
