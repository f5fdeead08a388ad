// Two VM ioctls the selftest ports need before the VMM API has them:
// KVM_SET_NR_MMU_PAGES (upstream's "KVM_RUN with no memslots" sets it, else the
// MMU has no page to allocate and KVM_RUN fails with ENOSPC) and a bare
// KVM_ENABLE_CAP (KVM_CAP_DISABLE_QUIRKS2 for the slot-zap quirk). Internal:
// lib/selftests uses Vm.enableCap instead once that exists.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <linux/ioctl.h>

#include "common.h"

namespace nkvm {
namespace {

struct EnableCapArgs {
  uint32_t cap;
  uint32_t flags;
  uint64_t args[4];
  uint8_t pad[64];
};
static_assert(sizeof(EnableCapArgs) == 104);

constexpr unsigned long kSetNrMmuPages = _IO(0xAE, 0x44);
constexpr unsigned long kEnableCapIoctl = _IOW(0xAE, 0xa3, EnableCapArgs);
static_assert(kSetNrMmuPages == 0xAE44);
static_assert(kEnableCapIoctl == 0x4068AEA3);

// setNrMmuPages(vmFd, pages)
Napi::Value SetNrMmuPages(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vmFd");
  uint32_t pages = ArgUint32(info, 1, "pages");
  if (::ioctl(fd, kSetNrMmuPages, static_cast<unsigned long>(pages)) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_NR_MMU_PAGES");
  return info.Env().Undefined();
}

// enableCapRaw(fd, cap, arg0, arg1, arg2, arg3): KVM_ENABLE_CAP with flags 0.
Napi::Value EnableCapRaw(const Napi::CallbackInfo& info) {
  EnableCapArgs a;
  std::memset(&a, 0, sizeof a);
  int fd = ArgInt32(info, 0, "fd");
  a.cap = ArgUint32(info, 1, "cap");
  for (size_t i = 0; i < 4; i++) a.args[i] = ArgUint64(info, 2 + i, "arg");
  if (::ioctl(fd, kEnableCapIoctl, &a) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_ENABLE_CAP");
  return info.Env().Undefined();
}

}  // namespace

void InitSelftestVm(Napi::Env env, Napi::Object exports) {
  exports.Set("setNrMmuPages", Napi::Function::New(env, SetNrMmuPages, "setNrMmuPages"));
  exports.Set("enableCapRaw", Napi::Function::New(env, EnableCapRaw, "enableCapRaw"));
}

}  // namespace nkvm
