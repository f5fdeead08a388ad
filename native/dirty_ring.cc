// The per-vcpu dirty ring (KVM_CAP_DIRTY_LOG_RING): our definition of its
// entry and mapping offset, for lib/vm/dirty-ring.ts, and the VM ioctl that
// gives harvested entries back to KVM (KVM_RESET_DIRTY_RINGS). The ring itself
// is mapped from the vcpu fd with the generic Mapping (memory.cc).
#include <sys/ioctl.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "common.h"

namespace nkvm {
namespace {

// struct kvm_dirty_gfn (api.rst, "KVM_CAP_DIRTY_LOG_RING"): one ring entry.
struct DirtyGfn {
  uint32_t flags;   // DIRTY: written by KVM; RESET: harvested by userspace
  uint32_t slot;    // (address space << 16) | memslot id
  uint64_t offset;  // page index within the memslot
};
static_assert(sizeof(DirtyGfn) == 16, "kvm_dirty_gfn is 16 bytes");
static_assert(offsetof(DirtyGfn, slot) == 4, "kvm_dirty_gfn.slot at 4");
static_assert(offsetof(DirtyGfn, offset) == 8, "kvm_dirty_gfn.offset at 8");

constexpr uint32_t kDirtyGfnDirty = 1u << 0;
constexpr uint32_t kDirtyGfnReset = 1u << 1;
// The ring is mapped from the vcpu fd at this many pages (KVM_DIRTY_LOG_PAGE_OFFSET on x86).
constexpr uint32_t kDirtyLogPageOffset = 64;
// _IO(KVMIO, 0xc7)
constexpr unsigned long kResetDirtyRings = (0xAEul << 8) | 0xc7ul;
static_assert(kResetDirtyRings == 0xAEC7, "KVM_RESET_DIRTY_RINGS is _IO(0xAE, 0xc7)");
// Capability numbers.
constexpr uint32_t kCapDirtyLogRing = 192;
constexpr uint32_t kCapDirtyLogRingAcqRel = 223;

// (vmFd) -> number of entries KVM reset (rearmed for logging) over all vcpus.
Napi::Value ResetDirtyRingsCall(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vmFd");
  int rc = ::ioctl(fd, kResetDirtyRings, 0);
  if (rc < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_RESET_DIRTY_RINGS");
  return Napi::Number::New(info.Env(), rc);
}

// () -> the numbers lib/vm/dirty-ring.ts lays the ring out with.
Napi::Value DirtyRingLayoutCall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("entryBytes", Napi::Number::New(env, sizeof(DirtyGfn)));
  o.Set("flagsOffset", Napi::Number::New(env, offsetof(DirtyGfn, flags)));
  o.Set("slotOffset", Napi::Number::New(env, offsetof(DirtyGfn, slot)));
  o.Set("offsetOffset", Napi::Number::New(env, offsetof(DirtyGfn, offset)));
  o.Set("flagDirty", Napi::Number::New(env, kDirtyGfnDirty));
  o.Set("flagReset", Napi::Number::New(env, kDirtyGfnReset));
  o.Set("pageOffset", Napi::Number::New(env, kDirtyLogPageOffset));
  o.Set("capDirtyLogRing", Napi::Number::New(env, kCapDirtyLogRing));
  o.Set("capDirtyLogRingAcqRel", Napi::Number::New(env, kCapDirtyLogRingAcqRel));
  return o;
}

}  // namespace

void InitDirtyRing(Napi::Env env, Napi::Object exports) {
  exports.Set("vmResetDirtyRings", Napi::Function::New(env, ResetDirtyRingsCall, "vmResetDirtyRings"));
  exports.Set("dirtyRingLayout", Napi::Function::New(env, DirtyRingLayoutCall, "dirtyRingLayout"));
}

}  // namespace nkvm
