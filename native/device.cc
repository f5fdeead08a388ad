// KVM devices: KVM_CREATE_DEVICE on the VM fd and the attribute ioctls on
// the device fd. Attribute values travel through a caller-sized buffer (the
// kernel reads or writes kvm_device_attr.addr).
#include <sys/ioctl.h>

#include <cerrno>

#include "common.h"
#include "kvm_uapi_vmm.h"

namespace nkvm {
namespace {

using namespace uapi;

// (vmFd, type, flags) -> device fd (or 0 with KVM_CREATE_DEVICE_TEST).
Napi::Value CreateDeviceCall(const Napi::CallbackInfo& info) {
  CreateDevice d{};
  d.type = ArgUint32(info, 1, "type");
  d.flags = ArgUint32(info, 2, "flags");
  if (::ioctl(ArgInt32(info, 0, "vmFd"), kCreateDevice, &d) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_CREATE_DEVICE");
  return Napi::Number::New(info.Env(), d.fd);
}

DeviceAttr AttrArgs(const Napi::CallbackInfo& info, size_t valueIndex) {
  DeviceAttr a{};
  a.group = ArgUint32(info, 1, "group");
  a.attr = ArgUint64(info, 2, "attr");
  if (info.Length() > valueIndex && !info[valueIndex].IsNull() && !info[valueIndex].IsUndefined()) {
    Napi::Uint8Array value = ArgBytes(info, valueIndex, "value");
    a.addr = value.ByteLength() > 0 ? reinterpret_cast<uint64_t>(value.Data()) : 0;
  }
  return a;
}

// (fd, group, attr: bigint, value: Uint8Array | null) -> void.
Napi::Value SetDeviceAttr(const Napi::CallbackInfo& info) {
  DeviceAttr a = AttrArgs(info, 3);
  if (::ioctl(ArgInt32(info, 0, "fd"), kSetDeviceAttr, &a) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_DEVICE_ATTR");
  return info.Env().Undefined();
}

// (fd, group, attr: bigint, out: Uint8Array) -> void; the kernel fills out.
Napi::Value GetDeviceAttr(const Napi::CallbackInfo& info) {
  DeviceAttr a = AttrArgs(info, 3);
  if (::ioctl(ArgInt32(info, 0, "fd"), kGetDeviceAttr, &a) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_DEVICE_ATTR");
  return info.Env().Undefined();
}

// (fd, group, attr: bigint) -> boolean; ENXIO means "no such attribute".
Napi::Value HasDeviceAttr(const Napi::CallbackInfo& info) {
  DeviceAttr a = AttrArgs(info, 3);
  if (::ioctl(ArgInt32(info, 0, "fd"), kHasDeviceAttr, &a) < 0) {
    if (errno == ENXIO) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), errno, "ioctl", "KVM_HAS_DEVICE_ATTR");
  }
  return Napi::Boolean::New(info.Env(), true);
}

}  // namespace

void InitDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("createDevice", Napi::Function::New(env, CreateDeviceCall, "createDevice"));
  exports.Set("setDeviceAttr", Napi::Function::New(env, SetDeviceAttr, "setDeviceAttr"));
  exports.Set("getDeviceAttr", Napi::Function::New(env, GetDeviceAttr, "getDeviceAttr"));
  exports.Set("hasDeviceAttr", Napi::Function::New(env, HasDeviceAttr, "hasDeviceAttr"));
}

}  // namespace nkvm
