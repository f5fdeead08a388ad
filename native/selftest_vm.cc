// A VM ioctl only the selftest ports need: KVM_SET_NR_MMU_PAGES (upstream's
// "KVM_RUN with no memslots" sets it, else the MMU has no page to allocate and
// KVM_RUN fails with ENOSPC). Internal; not part of the public API.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>
#include <linux/ioctl.h>

#include "common.h"

namespace nkvm {
namespace {

constexpr unsigned long kSetNrMmuPages = _IO(0xAE, 0x44);
static_assert(kSetNrMmuPages == 0xAE44);

// setNrMmuPages(vmFd, pages)
Napi::Value SetNrMmuPages(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vmFd");
  uint32_t pages = ArgUint32(info, 1, "pages");
  if (::ioctl(fd, kSetNrMmuPages, static_cast<unsigned long>(pages)) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_NR_MMU_PAGES");
  return info.Env().Undefined();
}

}  // namespace

void InitSelftestVm(Napi::Env env, Napi::Object exports) {
  exports.Set("setNrMmuPages", Napi::Function::New(env, SetNrMmuPages, "setNrMmuPages"));
}

}  // namespace nkvm
