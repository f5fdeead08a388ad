// vcpu-fd state ioctls (FPU, LAPIC, XSAVE, XCRs, events, debug registers,
// MP state, guest debug, translation, injection, TSC, nested state, CPUID)
// and the MSR ioctls, which also work on the system fd (feature MSRs).
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common.h"
#include "kvm_uapi_vmm.h"
#include "vmm_ioctl.h"

namespace nkvm {
namespace {

using namespace uapi;

const FixedIoctl kVcpuIoctls[] = {
    {"vcpuGetFpu", "KVM_GET_FPU", kGetFpu, sizeof(Fpu), IoctlShape::kGet},
    {"vcpuSetFpu", "KVM_SET_FPU", kSetFpu, sizeof(Fpu), IoctlShape::kSet},
    {"vcpuGetLapic", "KVM_GET_LAPIC", kGetLapic, sizeof(LapicState), IoctlShape::kGet},
    {"vcpuSetLapic", "KVM_SET_LAPIC", kSetLapic, sizeof(LapicState), IoctlShape::kSet},
    {"vcpuGetXsave", "KVM_GET_XSAVE", kGetXsave, sizeof(Xsave), IoctlShape::kGet},
    {"vcpuGetXcrs", "KVM_GET_XCRS", kGetXcrs, sizeof(Xcrs), IoctlShape::kGet},
    {"vcpuSetXcrs", "KVM_SET_XCRS", kSetXcrs, sizeof(Xcrs), IoctlShape::kSet},
    {"vcpuGetVcpuEvents", "KVM_GET_VCPU_EVENTS", kGetVcpuEvents, sizeof(VcpuEvents), IoctlShape::kGet},
    {"vcpuSetVcpuEvents", "KVM_SET_VCPU_EVENTS", kSetVcpuEvents, sizeof(VcpuEvents), IoctlShape::kSet},
    {"vcpuGetDebugRegs", "KVM_GET_DEBUGREGS", kGetDebugRegs, sizeof(DebugRegs), IoctlShape::kGet},
    {"vcpuSetDebugRegs", "KVM_SET_DEBUGREGS", kSetDebugRegs, sizeof(DebugRegs), IoctlShape::kSet},
    {"vcpuGetMpState", "KVM_GET_MP_STATE", kGetMpState, sizeof(MpState), IoctlShape::kGet},
    {"vcpuSetMpState", "KVM_SET_MP_STATE", kSetMpState, sizeof(MpState), IoctlShape::kSet},
    {"vcpuSetGuestDebug", "KVM_SET_GUEST_DEBUG", kSetGuestDebug, sizeof(GuestDebug), IoctlShape::kSet},
    {"vcpuTranslate", "KVM_TRANSLATE", kTranslate, sizeof(Translation), IoctlShape::kInOut},
    {"vcpuInterrupt", "KVM_INTERRUPT", kInterrupt, sizeof(Interrupt), IoctlShape::kSet},
    {"vcpuNmi", "KVM_NMI", kNmi, 0, IoctlShape::kValue},
    {"vcpuSmi", "KVM_SMI", kSmi, 0, IoctlShape::kValue},
    {"vcpuGetTscKhz", "KVM_GET_TSC_KHZ", kGetTscKhz, 0, IoctlShape::kValue},
    {"vcpuSetTscKhz", "KVM_SET_TSC_KHZ", kSetTscKhz, 0, IoctlShape::kValue},
    {"vcpuKvmclockCtrl", "KVM_KVMCLOCK_CTRL", kKvmclockCtrl, 0, IoctlShape::kValue},
};

// (fd, entries: Uint8Array of n * 16-byte kvm_msr_entry) -> number of MSRs
// processed. Get writes the values back into `entries`; on the system fd it
// reads feature MSRs. The count is the kernel's answer: fewer than n means
// entry[count] is the first MSR it refused.
Napi::Value MsrsCall(const Napi::CallbackInfo& info, unsigned long request, const char* op) {
  int fd = ArgInt32(info, 0, "fd");
  Napi::Uint8Array entries = ArgBytes(info, 1, "entries");
  if (entries.ByteLength() % sizeof(MsrEntry) != 0) throw Napi::RangeError::New(info.Env(), "entries must be a whole number of 16-byte kvm_msr_entry");
  size_t n = entries.ByteLength() / sizeof(MsrEntry);
  std::vector<uint64_t> buf((sizeof(MsrsHeader) + entries.ByteLength()) / 8, 0);
  auto* h = reinterpret_cast<MsrsHeader*>(buf.data());
  h->nmsrs = static_cast<uint32_t>(n);
  uint8_t* body = reinterpret_cast<uint8_t*>(buf.data()) + sizeof(MsrsHeader);
  if (n > 0) std::memcpy(body, entries.Data(), entries.ByteLength());
  long rc = ::ioctl(fd, request, buf.data());
  if (rc < 0) ThrowErrno(info.Env(), errno, "ioctl", op);
  if (n > 0) std::memcpy(entries.Data(), body, entries.ByteLength());
  return Napi::Number::New(info.Env(), static_cast<double>(rc));
}

Napi::Value GetMsrs(const Napi::CallbackInfo& info) { return MsrsCall(info, kGetMsrs, "KVM_GET_MSRS"); }
Napi::Value SetMsrs(const Napi::CallbackInfo& info) { return MsrsCall(info, kSetMsrs, "KVM_SET_MSRS"); }

// (fd) -> Uint32Array of MSR indices; asks for the count first (E2BIG).
Napi::Value MsrList(const Napi::CallbackInfo& info, unsigned long request, const char* op) {
  int fd = ArgInt32(info, 0, "fd");
  for (int attempt = 0; attempt < 4; attempt++) {
    MsrListHeader probe{0};
    if (::ioctl(fd, request, &probe) == 0) return Napi::Uint32Array::New(info.Env(), 0);
    if (errno != E2BIG) ThrowErrno(info.Env(), errno, "ioctl", op);
    std::vector<uint32_t> buf(1 + size_t{probe.nmsrs}, 0);
    buf[0] = probe.nmsrs;
    if (::ioctl(fd, request, buf.data()) < 0) {
      if (errno == E2BIG) continue;  // the list grew between the calls
      ThrowErrno(info.Env(), errno, "ioctl", op);
    }
    Napi::Uint32Array out = Napi::Uint32Array::New(info.Env(), buf[0]);
    if (buf[0] > 0) std::memcpy(out.Data(), buf.data() + 1, size_t{buf[0]} * 4);
    return out;
  }
  ThrowErrno(info.Env(), E2BIG, "ioctl", op);
}

Napi::Value MsrIndexList(const Napi::CallbackInfo& info) { return MsrList(info, kGetMsrIndexList, "KVM_GET_MSR_INDEX_LIST"); }
Napi::Value MsrFeatureIndexList(const Napi::CallbackInfo& info) {
  return MsrList(info, kGetMsrFeatureIndexList, "KVM_GET_MSR_FEATURE_INDEX_LIST");
}

// (fd, maxEntries) -> Uint8Array of kvm_cpuid_entry2; E2BIG asks for more.
Napi::Value CpuidCall(const Napi::CallbackInfo& info, unsigned long request, const char* op) {
  int fd = ArgInt32(info, 0, "fd");
  uint32_t max = ArgUint32(info, 1, "maxEntries");
  if (max == 0 || max > 4096) throw Napi::RangeError::New(info.Env(), "maxEntries must be 1..4096");
  std::vector<uint64_t> buf((sizeof(Cpuid2Header) + size_t{max} * kCpuidEntrySize) / 8, 0);
  auto* h = reinterpret_cast<Cpuid2Header*>(buf.data());
  h->nent = max;
  if (::ioctl(fd, request, buf.data()) < 0) ThrowErrno(info.Env(), errno, "ioctl", op);
  size_t bytes = size_t{h->nent} * kCpuidEntrySize;
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), bytes);
  if (bytes > 0) std::memcpy(out.Data(), reinterpret_cast<uint8_t*>(buf.data()) + sizeof(Cpuid2Header), bytes);
  return out;
}

Napi::Value GetEmulatedCpuid(const Napi::CallbackInfo& info) { return CpuidCall(info, kGetEmulatedCpuid, "KVM_GET_EMULATED_CPUID"); }
Napi::Value GetCpuid2(const Napi::CallbackInfo& info) { return CpuidCall(info, kGetCpuid2, "KVM_GET_CPUID2"); }

// (vcpuFd, size) -> Uint8Array(size): KVM_GET_XSAVE2 with the buffer size
// KVM_CAP_XSAVE2 reported (at least 4096).
Napi::Value GetXsave2(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  uint32_t size = ArgUint32(info, 1, "size");
  if (size < sizeof(Xsave) || size > (1u << 20) || size % 8 != 0) throw Napi::RangeError::New(info.Env(), "size must be 4096..1 MiB, a multiple of 8");
  std::vector<uint64_t> buf(size / 8, 0);
  if (::ioctl(fd, kGetXsave2, buf.data()) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_XSAVE2");
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), size);
  std::memcpy(out.Data(), buf.data(), size);
  return out;
}

// (vcpuFd, bytes) -> void: KVM_SET_XSAVE reads as many bytes as
// KVM_CAP_XSAVE2 says (4096 without it); the caller passes that many.
Napi::Value SetXsave(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  Napi::Uint8Array bytes = ArgBytes(info, 1, "bytes");
  if (bytes.ByteLength() < sizeof(Xsave) || bytes.ByteLength() % 8 != 0) throw Napi::RangeError::New(info.Env(), "xsave bytes must be at least 4096, a multiple of 8");
  std::vector<uint64_t> buf(bytes.ByteLength() / 8, 0);
  std::memcpy(buf.data(), bytes.Data(), bytes.ByteLength());
  if (::ioctl(fd, kSetXsave, buf.data()) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_XSAVE");
  return info.Env().Undefined();
}

// (vcpuFd, size) -> Uint8Array: kvm_nested_state with room for `size` bytes
// (KVM_CAP_NESTED_STATE's value); the kernel sets its .size to what it used.
Napi::Value GetNestedState(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  uint32_t size = ArgUint32(info, 1, "size");
  if (size < sizeof(NestedStateHeader) || size > (1u << 20)) throw Napi::RangeError::New(info.Env(), "size must be 128..1 MiB");
  std::vector<uint64_t> buf((size + 7) / 8, 0);
  reinterpret_cast<NestedStateHeader*>(buf.data())->size = size;
  if (::ioctl(fd, kGetNestedState, buf.data()) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_NESTED_STATE");
  uint32_t used = reinterpret_cast<NestedStateHeader*>(buf.data())->size;
  if (used > size || used < sizeof(NestedStateHeader)) used = size;
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), used);
  std::memcpy(out.Data(), buf.data(), used);
  return out;
}

Napi::Value SetNestedState(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  Napi::Uint8Array bytes = ArgBytes(info, 1, "bytes");
  if (bytes.ByteLength() < sizeof(NestedStateHeader)) throw Napi::RangeError::New(info.Env(), "nested state is at least 128 bytes");
  std::vector<uint64_t> buf((bytes.ByteLength() + 7) / 8, 0);
  std::memcpy(buf.data(), bytes.Data(), bytes.ByteLength());
  if (::ioctl(fd, kSetNestedState, buf.data()) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_NESTED_STATE");
  return info.Env().Undefined();
}

}  // namespace

void InitVcpuState(Napi::Env env, Napi::Object exports) {
  RegisterFixedIoctls(env, exports, kVcpuIoctls);
  exports.Set("getMsrs", Napi::Function::New(env, GetMsrs, "getMsrs"));
  exports.Set("setMsrs", Napi::Function::New(env, SetMsrs, "setMsrs"));
  exports.Set("msrIndexList", Napi::Function::New(env, MsrIndexList, "msrIndexList"));
  exports.Set("msrFeatureIndexList", Napi::Function::New(env, MsrFeatureIndexList, "msrFeatureIndexList"));
  exports.Set("getEmulatedCpuid", Napi::Function::New(env, GetEmulatedCpuid, "getEmulatedCpuid"));
  exports.Set("vcpuGetCpuid2", Napi::Function::New(env, GetCpuid2, "vcpuGetCpuid2"));
  exports.Set("vcpuGetXsave2", Napi::Function::New(env, GetXsave2, "vcpuGetXsave2"));
  exports.Set("vcpuSetXsave", Napi::Function::New(env, SetXsave, "vcpuSetXsave"));
  exports.Set("vcpuGetNestedState", Napi::Function::New(env, GetNestedState, "vcpuGetNestedState"));
  exports.Set("vcpuSetNestedState", Napi::Function::New(env, SetNestedState, "vcpuSetNestedState"));
}

}  // namespace nkvm
