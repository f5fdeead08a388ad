// Module entry: each file registers the functions for one kernel object.
#include "common.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
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
