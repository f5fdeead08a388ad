// VM-fd interrupt ioctls: in-kernel irqchip and PIT, IRQ lines, GSI routing,
// MSIs, irqfd and ioeventfd.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common.h"
#include "kvm_uapi_vmm.h"
#include "vmm_ioctl.h"

namespace nkvm {
namespace {

using namespace uapi;

const FixedIoctl kIrqIoctls[] = {
    {"vmCreateIrqchip", "KVM_CREATE_IRQCHIP", kCreateIrqchip, 0, IoctlShape::kValue},
    {"vmGetIrqchip", "KVM_GET_IRQCHIP", kGetIrqchip, sizeof(Irqchip), IoctlShape::kInOut},
    {"vmSetIrqchip", "KVM_SET_IRQCHIP", kSetIrqchip, sizeof(Irqchip), IoctlShape::kSet},
    {"vmCreatePit2", "KVM_CREATE_PIT2", kCreatePit2, sizeof(PitConfig), IoctlShape::kSet},
    {"vmGetPit2", "KVM_GET_PIT2", kGetPit2, sizeof(PitState2), IoctlShape::kGet},
    {"vmSetPit2", "KVM_SET_PIT2", kSetPit2, sizeof(PitState2), IoctlShape::kSet},
    {"vmIrqLine", "KVM_IRQ_LINE", kIrqLine, sizeof(IrqLevel), IoctlShape::kSet},
    {"vmIrqLineStatus", "KVM_IRQ_LINE_STATUS", kIrqLineStatus, sizeof(IrqLevel), IoctlShape::kInOut},
    {"vmSignalMsi", "KVM_SIGNAL_MSI", kSignalMsi, sizeof(Msi), IoctlShape::kSet},
    {"vmIrqfd", "KVM_IRQFD", kIrqfd, sizeof(Irqfd), IoctlShape::kSet},
    {"vmIoeventfd", "KVM_IOEVENTFD", kIoeventfd, sizeof(Ioeventfd), IoctlShape::kSet},
};

// (vmFd, entries: Uint8Array of n * 48-byte kvm_irq_routing_entry) -> void.
// kvm_irq_routing ends in a flexible array, so the buffer is built here.
Napi::Value SetGsiRouting(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vmFd");
  Napi::Uint8Array entries = ArgBytes(info, 1, "entries");
  if (entries.ByteLength() % sizeof(IrqRoutingEntry) != 0) {
    throw Napi::RangeError::New(info.Env(), "entries must be a whole number of 48-byte kvm_irq_routing_entry");
  }
  size_t n = entries.ByteLength() / sizeof(IrqRoutingEntry);
  std::vector<uint64_t> buf((sizeof(IrqRoutingHeader) + entries.ByteLength() + 7) / 8, 0);
  auto* h = reinterpret_cast<IrqRoutingHeader*>(buf.data());
  h->nr = static_cast<uint32_t>(n);
  if (n > 0) std::memcpy(reinterpret_cast<uint8_t*>(buf.data()) + sizeof(IrqRoutingHeader), entries.Data(), entries.ByteLength());
  if (::ioctl(fd, kSetGsiRouting, buf.data()) < 0) ThrowErrno(info.Env(), errno, "ioctl", "KVM_SET_GSI_ROUTING");
  return info.Env().Undefined();
}

}  // namespace

void InitVmIrq(Napi::Env env, Napi::Object exports) {
  RegisterFixedIoctls(env, exports, kIrqIoctls);
  exports.Set("vmSetGsiRouting", Napi::Function::New(env, SetGsiRouting, "vmSetGsiRouting"));
}

}  // namespace nkvm
