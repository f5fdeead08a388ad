#include "vmm_ioctl.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace nkvm {
namespace {

Napi::Value CallFixed(const Napi::CallbackInfo& info) {
  const auto* e = static_cast<const FixedIoctl*>(info.Data());
  Napi::Env env = info.Env();
  int fd = ArgInt32(info, 0, "fd");
  if (e->shape == IoctlShape::kValue) {
    double v = 0;
    if (info.Length() > 1) {
      if (!info[1].IsNumber()) throw Napi::TypeError::New(env, "value must be a number");
      v = info[1].As<Napi::Number>().DoubleValue();
      if (!(v >= 0) || v > 9007199254740991.0 || v != static_cast<double>(static_cast<unsigned long>(v))) {
        throw Napi::RangeError::New(env, "value must be a non-negative integer");
      }
    }
    long rc = ::ioctl(fd, e->request, static_cast<unsigned long>(v));
    if (rc < 0) ThrowErrno(env, errno, "ioctl", e->op);
    return Napi::Number::New(env, static_cast<double>(rc));
  }
  // 8-byte aligned scratch for the struct (a Uint8Array may sit at any offset).
  std::vector<uint64_t> buf((e->size + 7) / 8, 0);
  if (e->shape != IoctlShape::kGet) {
    Napi::Uint8Array in = ArgBytes(info, 1, "bytes");
    if (in.ByteLength() != e->size) {
      throw Napi::RangeError::New(env, std::string(e->op) + " needs exactly " + std::to_string(e->size) + " bytes");
    }
    std::memcpy(buf.data(), in.Data(), e->size);
  }
  long rc = ::ioctl(fd, e->request, buf.data());
  if (rc < 0) ThrowErrno(env, errno, "ioctl", e->op);
  if (e->shape == IoctlShape::kSet) return Napi::Number::New(env, static_cast<double>(rc));
  Napi::Uint8Array out = Napi::Uint8Array::New(env, e->size);
  std::memcpy(out.Data(), buf.data(), e->size);
  return out;
}

}  // namespace

void RegisterFixedIoctls(Napi::Env env, Napi::Object exports, const FixedIoctl* table, size_t count) {
  for (size_t i = 0; i < count; i++) {
    const FixedIoctl* e = &table[i];
    exports.Set(e->js, Napi::Function::New(env, CallFixed, e->js, const_cast<FixedIoctl*>(e)));
  }
}

}  // namespace nkvm
