// VM-fd ioctls: memslots, memory attributes, guest_memfd, vcpus, stats fd.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "common.h"
#include "kvm_uapi.h"

namespace nkvm {
namespace {

Napi::Value SetUserMemoryRegion(const Napi::CallbackInfo& info) {
  kvm_userspace_memory_region r{};
  r.slot = ArgUint32(info, 1, "slot");
  r.flags = ArgUint32(info, 2, "flags");
  r.guest_phys_addr = ArgUint64(info, 3, "guestPhysAddr");
  r.memory_size = ArgUint64(info, 4, "memorySize");
  r.userspace_addr = ArgUint64(info, 5, "userspaceAddr");
  if (::ioctl(ArgInt32(info, 0, "vmFd"), KVM_SET_USER_MEMORY_REGION, &r) < 0) {
    ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_USER_MEMORY_REGION");
  }
  return info.Env().Undefined();
}

Napi::Value SetUserMemoryRegion2(const Napi::CallbackInfo& info) {
  UserspaceMemoryRegion2 r{};
  r.slot = ArgUint32(info, 1, "slot");
  r.flags = ArgUint32(info, 2, "flags");
  r.guest_phys_addr = ArgUint64(info, 3, "guestPhysAddr");
  r.memory_size = ArgUint64(info, 4, "memorySize");
  r.userspace_addr = ArgUint64(info, 5, "userspaceAddr");
  r.guest_memfd_offset = ArgUint64(info, 6, "guestMemfdOffset");
  r.guest_memfd = static_cast<uint32_t>(ArgInt32(info, 7, "guestMemfd"));
  if (::ioctl(ArgInt32(info, 0, "vmFd"), kIoctlSetUserMemoryRegion2, &r) < 0) {
    ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_USER_MEMORY_REGION2");
  }
  return info.Env().Undefined();
}

Napi::Value SetMemoryAttributes(const Napi::CallbackInfo& info) {
  MemoryAttributes a{};
  a.address = ArgUint64(info, 1, "address");
  a.size = ArgUint64(info, 2, "size");
  a.attributes = ArgUint64(info, 3, "attributes");
  a.flags = ArgUint64(info, 4, "flags");
  if (::ioctl(ArgInt32(info, 0, "vmFd"), kIoctlSetMemoryAttributes, &a) < 0) {
    ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_MEMORY_ATTRIBUTES");
  }
  return info.Env().Undefined();
}

Napi::Value CreateGuestMemfd(const Napi::CallbackInfo& info) {
  CreateGuestMemfdArgs g{};
  g.size = ArgUint64(info, 1, "size");
  g.flags = ArgUint64(info, 2, "flags");
  int fd = ::ioctl(ArgInt32(info, 0, "vmFd"), kIoctlCreateGuestMemfd, &g);
  if (fd < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_CREATE_GUEST_MEMFD");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value CreateVcpu(const Napi::CallbackInfo& info) {
  int fd = ::ioctl(ArgInt32(info, 0, "vmFd"), KVM_CREATE_VCPU, static_cast<unsigned long>(ArgUint32(info, 1, "id")));
  if (fd < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_CREATE_VCPU");
  return Napi::Number::New(info.Env(), fd);
}

// Works on VM and vcpu fds.
Napi::Value GetStatsFd(const Napi::CallbackInfo& info) {
  int fd = ::ioctl(ArgInt32(info, 0, "fd"), kIoctlGetStatsFd, 0);
  if (fd < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_GET_STATS_FD");
  return Napi::Number::New(info.Env(), fd);
}

}  // namespace

void InitVm(Napi::Env env, Napi::Object exports) {
  exports.Set("setUserMemoryRegion", Napi::Function::New(env, SetUserMemoryRegion, "setUserMemoryRegion"));
  exports.Set("setUserMemoryRegion2", Napi::Function::New(env, SetUserMemoryRegion2, "setUserMemoryRegion2"));
  exports.Set("setMemoryAttributes", Napi::Function::New(env, SetMemoryAttributes, "setMemoryAttributes"));
  exports.Set("createGuestMemfd", Napi::Function::New(env, CreateGuestMemfd, "createGuestMemfd"));
  exports.Set("createVcpu", Napi::Function::New(env, CreateVcpu, "createVcpu"));
  exports.Set("getStatsFd", Napi::Function::New(env, GetStatsFd, "getStatsFd"));
}

}  // namespace nkvm
