// /dev/kvm itself: open, API version, capabilities, CPUID, VM creation.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "common.h"
#include "kvm_uapi.h"

namespace nkvm {
namespace {

Napi::Value Open(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "path must be a string");
  std::string path = info[0].As<Napi::String>();
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), errno, "open", "open");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  // close() must not be retried on EINTR on Linux: the fd is gone either way.
  if (::close(fd) < 0 && errno != EINTR) ThrowErrno(info.Env(), errno, "close", "close");
  return info.Env().Undefined();
}

Napi::Value GetApiVersion(const Napi::CallbackInfo& info) {
  int rc = ::ioctl(ArgInt32(info, 0, "fd"), KVM_GET_API_VERSION, 0);
  if (rc < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_API_VERSION");
  return Napi::Number::New(info.Env(), rc);
}

// Works on the system fd and on a VM fd (KVM_CAP_CHECK_EXTENSION_VM).
Napi::Value CheckExtension(const Napi::CallbackInfo& info) {
  int rc = ::ioctl(ArgInt32(info, 0, "fd"), KVM_CHECK_EXTENSION, ArgUint32(info, 1, "cap"));
  if (rc < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_CHECK_EXTENSION");
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value GetVcpuMmapSize(const Napi::CallbackInfo& info) {
  int rc = ::ioctl(ArgInt32(info, 0, "fd"), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (rc < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_VCPU_MMAP_SIZE");
  return Napi::Number::New(info.Env(), rc);
}

// Returns the raw kvm_cpuid_entry2 array; E2BIG tells the caller to ask with
// a larger maxEntries.
Napi::Value GetSupportedCpuid(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  uint32_t max = ArgUint32(info, 1, "maxEntries");
  if (max == 0 || max > 4096) throw Napi::RangeError::New(info.Env(), "maxEntries must be 1..4096");
  std::vector<uint8_t> buf(kCpuid2Header + size_t{max} * sizeof(kvm_cpuid_entry2));
  auto* c = reinterpret_cast<Cpuid2Header*>(buf.data());
  c->nent = max;
  if (::ioctl(fd, kIoctlGetSupportedCpuid, c) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_SUPPORTED_CPUID");
  size_t bytes = size_t{c->nent} * sizeof(kvm_cpuid_entry2);
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), bytes);
  std::copy(buf.begin() + kCpuid2Header, buf.begin() + kCpuid2Header + bytes, out.Data());
  return out;
}

Napi::Value CreateVm(const Napi::CallbackInfo& info) {
  int fd = ::ioctl(ArgInt32(info, 0, "fd"), KVM_CREATE_VM, static_cast<unsigned long>(ArgUint32(info, 1, "type")));
  if (fd < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_CREATE_VM");
  return Napi::Number::New(info.Env(), fd);
}

}  // namespace

void InitSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("getApiVersion", Napi::Function::New(env, GetApiVersion, "getApiVersion"));
  exports.Set("checkExtension", Napi::Function::New(env, CheckExtension, "checkExtension"));
  exports.Set("getVcpuMmapSize", Napi::Function::New(env, GetVcpuMmapSize, "getVcpuMmapSize"));
  exports.Set("getSupportedCpuid", Napi::Function::New(env, GetSupportedCpuid, "getSupportedCpuid"));
  exports.Set("createVm", Napi::Function::New(env, CreateVm, "createVm"));
}

}  // namespace nkvm
