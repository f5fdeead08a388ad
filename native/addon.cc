// Module entry: each file registers the functions for one kernel object.
#include <dlfcn.h>

#include <mutex>

#include "common.h"

// Keeps the addon mapped for the life of the process. Node dlclose()s an
// addon when the last environment that loaded it is torn down (a worker that
// alone used node-kvm, then terminate()), but code of ours can still run
// after that: uv close callbacks of the worker's loop, the watchdog and vcpu
// threads. RTLD_NOLOAD | RTLD_NODELETE only marks the loaded copy.
static void PinAddon() {
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&PinAddon), &info) != 0 && info.dli_fname != nullptr) {
      dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
  });
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinAddon();
  nkvm::InitSystem(env, exports);
  nkvm::InitVm(env, exports);
  nkvm::InitVcpu(env, exports);
  nkvm::InitVcpuBusy(env, exports);
  nkvm::InitVcpuThread(env, exports);
  nkvm::InitMemory(env, exports);
  nkvm::InitFile(env, exports);
  nkvm::InitVmIrq(env, exports);
  nkvm::InitVmState(env, exports);
  nkvm::InitVcpuState(env, exports);
  nkvm::InitEventfd(env, exports);
  nkvm::InitDevice(env, exports);
  nkvm::InitExits(env, exports);
  nkvm::InitUserfault(env, exports);
  nkvm::InitSelftestVm(env, exports);
  nkvm::InitDirtyRing(env, exports);
  nkvm::InitVmMsrFilter(env, exports);
  return exports;
}

NODE_API_MODULE(node_kvm, Init)
