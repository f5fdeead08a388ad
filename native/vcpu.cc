// vcpu-fd ioctls: CPUID, registers, KVM_RUN on the calling thread and
// KVM_PRE_FAULT_MEMORY. Long ioctls register in vcpu_busy so kicks find them.
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"
#include "kvm_uapi.h"
#include "vcpu_busy.h"

namespace nkvm {
namespace {

uint64_t ArgKeyOpt(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
    throw Napi::TypeError::New(info.Env(), "key must be a vcpu key");
  }
  return static_cast<uint64_t>(d);
}

bool OnMainThread() {
  thread_local const bool main = ::getpid() == static_cast<pid_t>(::syscall(SYS_gettid));
  return main;
}

// KVM_RUN on the calling thread; returns errno (0 on success). Off the main
// thread the watchdog kicks the run periodically: if the environment can
// still call into JS (the worker is not terminating), KVM_RUN is re-entered
// transparently; a kick (immediate_exit set) or process exit still returns.
long RunOnce(napi_env env, int fd, uint64_t key) {
  bool watchdog = !OnMainThread();
  LongIoctl busy(key, fd, pthread_self(), watchdog);
  if (int refused = busy.Begin()) return refused;
  busy.WaitForShortIoctls();
  for (;;) {
    long rc = ::ioctl(fd, KVM_RUN, 0);
    int err = rc < 0 ? errno : 0;
    if (err == EINTR && watchdog && busy.TakeWatchdogKick() && !ProcessExiting() && CanCallJs(env)) continue;
    return err;
  }
}

long PreFaultOnce(int fd, uint64_t key, PreFaultMemory* range) {
  LongIoctl busy(key, fd, pthread_self(), false);
  if (int refused = busy.Begin()) {
    errno = refused;
    return -1;
  }
  busy.WaitForShortIoctls();
  return ::ioctl(fd, kIoctlPreFaultMemory, range);
}

Napi::Value SetCpuid2(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  Napi::Uint8Array entries = ArgBytes(info, 1, "entries");
  if (entries.ByteLength() % sizeof(kvm_cpuid_entry2) != 0) {
    throw Napi::RangeError::New(info.Env(), "entries must be a whole number of 40-byte kvm_cpuid_entry2");
  }
  std::vector<uint8_t> buf(kCpuid2Header + entries.ByteLength());
  auto* c = reinterpret_cast<Cpuid2Header*>(buf.data());
  c->nent = static_cast<uint32_t>(entries.ByteLength() / sizeof(kvm_cpuid_entry2));
  // An empty array's Data() is null, and memcpy from null is undefined even for 0 bytes (UBSan).
  if (entries.ByteLength() > 0) std::memcpy(buf.data() + kCpuid2Header, entries.Data(), entries.ByteLength());
  if (::ioctl(fd, kIoctlSetCpuid2, c) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_CPUID2");
  return info.Env().Undefined();
}

template <typename T, unsigned long kGet>
Napi::Value GetStruct(const Napi::CallbackInfo& info, const char* op) {
  T s{};
  if (::ioctl(ArgInt32(info, 0, "vcpuFd"), kGet, &s) < 0) ThrowErrno(info.Env(), errno, "ioctl", op);
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), sizeof(T));
  std::memcpy(out.Data(), &s, sizeof(T));
  return out;
}

template <typename T, unsigned long kSet>
Napi::Value SetStruct(const Napi::CallbackInfo& info, const char* op) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  Napi::Uint8Array bytes = ArgBytes(info, 1, "bytes");
  if (bytes.ByteLength() != sizeof(T)) {
    throw Napi::RangeError::New(info.Env(), std::string(op) + " needs exactly " + std::to_string(sizeof(T)) + " bytes");
  }
  T s{};
  std::memcpy(&s, bytes.Data(), sizeof(T));
  if (::ioctl(fd, kSet, &s) < 0) ThrowErrno(info.Env(), errno, "ioctl", op);
  return info.Env().Undefined();
}

Napi::Value GetRegs(const Napi::CallbackInfo& info) { return GetStruct<kvm_regs, KVM_GET_REGS>(info, "KVM_GET_REGS"); }
Napi::Value SetRegs(const Napi::CallbackInfo& info) { return SetStruct<kvm_regs, KVM_SET_REGS>(info, "KVM_SET_REGS"); }
Napi::Value GetSregs(const Napi::CallbackInfo& info) { return GetStruct<kvm_sregs, KVM_GET_SREGS>(info, "KVM_GET_SREGS"); }
Napi::Value SetSregs(const Napi::CallbackInfo& info) { return SetStruct<kvm_sregs, KVM_SET_SREGS>(info, "KVM_SET_SREGS"); }

// KVM_RUN on the calling thread. Returns errno (0 on success) instead of
// throwing: EINTR is an expected outcome the caller decides about.
// run(vcpuFd[, key]).
Napi::Value Run(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  uint64_t key = ArgKeyOpt(info, 1);
  return Napi::Number::New(info.Env(), static_cast<double>(RunOnce(info.Env(), fd, key)));
}

Napi::Object PreFaultResult(Napi::Env env, long rc, int err, const PreFaultMemory& r) {
  Napi::Object o = ResultObject(env, rc, err);
  o.Set("gpa", Napi::BigInt::New(env, r.gpa));
  o.Set("size", Napi::BigInt::New(env, r.size));
  return o;
}

PreFaultMemory PreFaultArgs(const Napi::CallbackInfo& info) {
  PreFaultMemory r{};
  r.gpa = ArgUint64(info, 1, "gpa");
  r.size = ArgUint64(info, 2, "size");
  r.flags = ArgUint64(info, 3, "flags");
  return r;
}

// One KVM_PRE_FAULT_MEMORY call: { rc, errno, gpa, size } with the range as
// the kernel left it.
Napi::Value PreFaultMemorySync(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  PreFaultMemory r = PreFaultArgs(info);
  long rc = PreFaultOnce(fd, ArgKeyOpt(info, 4), &r);
  return PreFaultResult(info.Env(), rc, rc < 0 ? errno : 0, r);
}

Napi::Value PreFaultMemoryAsync(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  auto range = std::make_shared<PreFaultMemory>(PreFaultArgs(info));
  uint64_t key = ArgKeyOpt(info, 4);
  return SyscallWorker::Start(
      info.Env(), [fd, key, range] { return PreFaultOnce(fd, key, range.get()); },
      [range](Napi::Env env, long rc, int err) { return PreFaultResult(env, rc, err, *range); });
}

}  // namespace

void InitVcpu(Napi::Env env, Napi::Object exports) {
  exports.Set("setCpuid2", Napi::Function::New(env, SetCpuid2, "setCpuid2"));
  exports.Set("getRegs", Napi::Function::New(env, GetRegs, "getRegs"));
  exports.Set("setRegs", Napi::Function::New(env, SetRegs, "setRegs"));
  exports.Set("getSregs", Napi::Function::New(env, GetSregs, "getSregs"));
  exports.Set("setSregs", Napi::Function::New(env, SetSregs, "setSregs"));
  exports.Set("run", Napi::Function::New(env, Run, "run"));
  exports.Set("preFaultMemory", Napi::Function::New(env, PreFaultMemorySync, "preFaultMemory"));
  exports.Set("preFaultMemoryAsync", Napi::Function::New(env, PreFaultMemoryAsync, "preFaultMemoryAsync"));
}

}  // namespace nkvm
