// Argument conversion and errno-carrying errors shared by every native file.
// Bad argument types become JS TypeErrors (never a crash); a failed syscall
// becomes an Error with errno, syscall and op so the TypeScript layer can turn
// it into a KvmError.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>

namespace nkvm {

// Throws Error{ errno, syscall, op }; op is the ioctl or call name.
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* op);

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name);
uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t i, const char* name);
uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name);

// Runs one blocking syscall on the libuv pool and settles a Promise with the
// value built by `settle` from (rc, errno). The promise never rejects for a
// syscall failure: errno is data for the caller's retry policy. Built on raw
// napi_async_work: when the environment is being torn down (a worker
// terminating) the completion finds it cannot call into JS and drops the
// result quietly instead of throwing out of the callback (which aborts Node).
class SyscallWorker {
 public:
  using Call = std::function<long()>;
  using Settle = std::function<Napi::Value(Napi::Env, long rc, int err)>;
  static Napi::Promise Start(Napi::Env env, Call call, Settle settle);

 private:
  SyscallWorker(Call call, Settle settle) : call_(std::move(call)), settle_(std::move(settle)) {}
  static void Execute(napi_env env, void* self);
  static void Complete(napi_env env, napi_status status, void* self);

  Call call_;
  Settle settle_;
  napi_deferred deferred_ = nullptr;
  napi_async_work work_ = nullptr;
  long rc_ = 0;
  int err_ = 0;
};

// { rc, errno } as a plain object.
Napi::Object ResultObject(Napi::Env env, long rc, int err);

// Whether this thread's environment can still run JavaScript (false once a
// worker is terminating; common.cc).
bool CanCallJs(napi_env env);

void InitSystem(Napi::Env env, Napi::Object exports);
void InitVm(Napi::Env env, Napi::Object exports);
void InitVcpu(Napi::Env env, Napi::Object exports);
void InitVcpuBusy(Napi::Env env, Napi::Object exports);
void InitVcpuThread(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitFile(Napi::Env env, Napi::Object exports);
// The VMM ioctls (vm_irq.cc, vm_state.cc, vcpu_state.cc, eventfd.cc, device.cc).
void InitVmIrq(Napi::Env env, Napi::Object exports);
void InitVmState(Napi::Env env, Napi::Object exports);
void InitVcpuState(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitDevice(Napi::Env env, Napi::Object exports);
void InitExits(Napi::Env env, Napi::Object exports);
void InitUserfault(Napi::Env env, Napi::Object exports);
void InitSelftestVm(Napi::Env env, Napi::Object exports);
void InitDirtyRing(Napi::Env env, Napi::Object exports);
void InitVmMsrFilter(Napi::Env env, Napi::Object exports);

}  // namespace nkvm
