// KVM_X86_SET_MSR_FILTER: which MSR accesses of the guest KVM handles (the
// rest #GP, or exit to userspace with KVM_CAP_X86_USER_SPACE_MSR's
// KVM_MSR_EXIT_REASON_FILTER). The ranges carry pointers to their bitmaps,
// so the struct is built here around the caller's bytes; the kernel copies
// the bitmaps during the call.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "common.h"
#include "kvm_uapi_vmm.h"

namespace nkvm {
namespace {

// struct kvm_msr_filter_range and struct kvm_msr_filter (api.rst).
struct MsrFilterRange {
  uint32_t flags;  // KVM_MSR_FILTER_READ (1) | KVM_MSR_FILTER_WRITE (2)
  uint32_t nmsrs;
  uint32_t base;
  uint32_t pad;    // the pointer's alignment
  uint64_t bitmap; // user pointer: nmsrs bits, 1 = allowed
};
constexpr size_t kMsrFilterMaxRanges = 16;
struct MsrFilter {
  uint32_t flags;  // KVM_MSR_FILTER_DEFAULT_DENY (1)
  uint32_t pad;
  MsrFilterRange ranges[kMsrFilterMaxRanges];
};
static_assert(sizeof(MsrFilterRange) == 24, "kvm_msr_filter_range is 24 bytes");
static_assert(offsetof(MsrFilterRange, bitmap) == 16, "kvm_msr_filter_range.bitmap at 16");
static_assert(sizeof(MsrFilter) == 392, "kvm_msr_filter is 392 bytes");
static_assert(offsetof(MsrFilter, ranges) == 8, "kvm_msr_filter.ranges at 8");
constexpr unsigned long kSetMsrFilter = _IOW(uapi::kIo, 0xc6, MsrFilter);
static_assert(kSetMsrFilter == 0x4188AEC6, "KVM_X86_SET_MSR_FILTER");

// (vmFd, flags, ranges: Uint32Array [flags, base, nmsrs] * n, bitmaps:
// Uint8Array, range i's ceil(nmsrs / 8) bytes after range i-1's) -> void.
Napi::Value SetMsrFilter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt32(info, 0, "vmFd");
  uint32_t flags = ArgUint32(info, 1, "flags");
  if (info.Length() < 4 || !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw Napi::TypeError::New(env, "ranges must be a Uint32Array");
  }
  Napi::Uint32Array ranges = info[2].As<Napi::Uint32Array>();
  Napi::Uint8Array bitmaps = ArgBytes(info, 3, "bitmaps");
  if (ranges.ElementLength() % 3 != 0 || ranges.ElementLength() / 3 > kMsrFilterMaxRanges) {
    throw Napi::RangeError::New(env, "ranges must hold at most 16 [flags, base, nmsrs] triples");
  }
  MsrFilter filter{};
  filter.flags = flags;
  size_t offset = 0;
  for (size_t i = 0; i < ranges.ElementLength() / 3; i++) {
    MsrFilterRange& r = filter.ranges[i];
    r.flags = ranges[3 * i];
    r.base = ranges[3 * i + 1];
    r.nmsrs = ranges[3 * i + 2];
    size_t bytes = (static_cast<size_t>(r.nmsrs) + 7) / 8;
    if (bytes > bitmaps.ByteLength() - offset) throw Napi::RangeError::New(env, "bitmaps is shorter than the ranges need");
    r.bitmap = bytes == 0 ? 0 : reinterpret_cast<uint64_t>(bitmaps.Data() + offset);
    offset += bytes;
  }
  if (offset != bitmaps.ByteLength()) throw Napi::RangeError::New(env, "bitmaps is longer than the ranges need");
  if (::ioctl(fd, kSetMsrFilter, &filter) < 0) ThrowErrno(env, errno, "ioctl", "KVM_X86_SET_MSR_FILTER");
  return env.Undefined();
}

}  // namespace

void InitVmMsrFilter(Napi::Env env, Napi::Object exports) {
  exports.Set("vmSetMsrFilter", Napi::Function::New(env, SetMsrFilter, "vmSetMsrFilter"));
}

}  // namespace nkvm
