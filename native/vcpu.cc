// vcpu-fd ioctls: CPUID, registers, KVM_RUN, KVM_PRE_FAULT_MEMORY, and the
// signal used to interrupt a thread blocked in one of them.
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "kvm_uapi.h"

namespace nkvm {
namespace {

// A realtime signal nothing in Node uses; its handler does nothing, and it is
// installed without SA_RESTART so KVM_RUN / KVM_PRE_FAULT_MEMORY return EINTR.
int KickSignal() { return SIGRTMIN + 3; }

void NoopHandler(int) {}

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = NoopHandler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(KickSignal(), &sa, nullptr);
  });
}

// Which thread is blocked in a vcpu ioctl, by vcpu fd, so interrupt() can
// signal it. Entries live only for the duration of the ioctl.
std::mutex g_busyMutex;
std::unordered_map<int, pthread_t> g_busy;

class BusyScope {
 public:
  explicit BusyScope(int fd) : fd_(fd) {
    std::lock_guard<std::mutex> lock(g_busyMutex);
    g_busy[fd_] = pthread_self();
  }
  ~BusyScope() {
    std::lock_guard<std::mutex> lock(g_busyMutex);
    g_busy.erase(fd_);
  }
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;

 private:
  int fd_;
};

long RunOnce(int fd) {
  BusyScope busy(fd);
  return ::ioctl(fd, KVM_RUN, 0);
}

long PreFaultOnce(int fd, PreFaultMemory* range) {
  BusyScope busy(fd);
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
Napi::Value Run(const Napi::CallbackInfo& info) {
  long rc = RunOnce(ArgInt32(info, 0, "vcpuFd"));
  return Napi::Number::New(info.Env(), rc < 0 ? errno : 0);
}

Napi::Value RunAsync(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  return SyscallWorker::Start(
      info.Env(), [fd] { return RunOnce(fd); },
      [](Napi::Env env, long, int err) { return Napi::Number::New(env, err); });
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
  long rc = PreFaultOnce(fd, &r);
  return PreFaultResult(info.Env(), rc, rc < 0 ? errno : 0, r);
}

Napi::Value PreFaultMemoryAsync(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  auto range = std::make_shared<PreFaultMemory>(PreFaultArgs(info));
  return SyscallWorker::Start(
      info.Env(), [fd, range] { return PreFaultOnce(fd, range.get()); },
      [range](Napi::Env env, long rc, int err) { return PreFaultResult(env, rc, err, *range); });
}

// Signals the thread currently blocked in KVM_RUN or KVM_PRE_FAULT_MEMORY on
// this vcpu fd. Returns whether a thread was signalled. The caller sets
// kvm_run.immediate_exit first so a kick that lands just before entry is not
// lost.
Napi::Value Interrupt(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  std::lock_guard<std::mutex> lock(g_busyMutex);
  auto it = g_busy.find(fd);
  if (it == g_busy.end()) return Napi::Boolean::New(info.Env(), false);
  int rc = pthread_kill(it->second, KickSignal());
  if (rc != 0) ThrowErrno(info.Env(), rc, "pthread_kill", "interrupt");
  return Napi::Boolean::New(info.Env(), true);
}

}  // namespace

void InitVcpu(Napi::Env env, Napi::Object exports) {
  InstallKickHandler();
  exports.Set("setCpuid2", Napi::Function::New(env, SetCpuid2, "setCpuid2"));
  exports.Set("getRegs", Napi::Function::New(env, GetRegs, "getRegs"));
  exports.Set("setRegs", Napi::Function::New(env, SetRegs, "setRegs"));
  exports.Set("getSregs", Napi::Function::New(env, GetSregs, "getSregs"));
  exports.Set("setSregs", Napi::Function::New(env, SetSregs, "setSregs"));
  exports.Set("run", Napi::Function::New(env, Run, "run"));
  exports.Set("runAsync", Napi::Function::New(env, RunAsync, "runAsync"));
  exports.Set("preFaultMemory", Napi::Function::New(env, PreFaultMemorySync, "preFaultMemory"));
  exports.Set("preFaultMemoryAsync", Napi::Function::New(env, PreFaultMemoryAsync, "preFaultMemoryAsync"));
  exports.Set("interrupt", Napi::Function::New(env, Interrupt, "interrupt"));
}

}  // namespace nkvm
