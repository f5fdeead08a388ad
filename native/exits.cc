// kvm_run's exit union as the distro's <linux/kvm.h> (6.1) lays it out, so a
// test can check lib/exit-layout.ts against the C compiler.

#include <cstddef>

#include "common.h"
#include "kvm_uapi.h"

namespace nkvm {
namespace {

static_assert(sizeof(kvm_run::s) == 2048, "kvm_run sync regs union is 2048 bytes");
static_assert(offsetof(kvm_run, kvm_valid_regs) == 288, "exit union is 256 bytes at 32");

// Offsets of the fields lib/exit-layout.ts names, where the 6.1 header has them.
Napi::Value KvmRunLayout(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  auto set = [&](const char* name, size_t off) { o.Set(name, Napi::Number::New(info.Env(), static_cast<double>(off))); };
  set("exitReason", offsetof(kvm_run, exit_reason));
  set("readyForInterruptInjection", offsetof(kvm_run, ready_for_interrupt_injection));
  set("ifFlag", offsetof(kvm_run, if_flag));
  set("flags", offsetof(kvm_run, flags));
  set("cr8", offsetof(kvm_run, cr8));
  set("apicBase", offsetof(kvm_run, apic_base));
  set("validRegs", offsetof(kvm_run, kvm_valid_regs));
  set("syncRegs", offsetof(kvm_run, s));
  set("hw.hardwareExitReason", offsetof(kvm_run, hw.hardware_exit_reason));
  set("failEntry.reason", offsetof(kvm_run, fail_entry.hardware_entry_failure_reason));
  set("failEntry.cpu", offsetof(kvm_run, fail_entry.cpu));
  set("ex.exception", offsetof(kvm_run, ex.exception));
  set("ex.errorCode", offsetof(kvm_run, ex.error_code));
  set("io.direction", offsetof(kvm_run, io.direction));
  set("io.size", offsetof(kvm_run, io.size));
  set("io.port", offsetof(kvm_run, io.port));
  set("io.count", offsetof(kvm_run, io.count));
  set("io.dataOffset", offsetof(kvm_run, io.data_offset));
  set("debug.exception", offsetof(kvm_run, debug.arch.exception));
  set("debug.pc", offsetof(kvm_run, debug.arch.pc));
  set("debug.dr6", offsetof(kvm_run, debug.arch.dr6));
  set("debug.dr7", offsetof(kvm_run, debug.arch.dr7));
  set("mmio.physAddr", offsetof(kvm_run, mmio.phys_addr));
  set("mmio.data", offsetof(kvm_run, mmio.data));
  set("mmio.len", offsetof(kvm_run, mmio.len));
  set("mmio.isWrite", offsetof(kvm_run, mmio.is_write));
  set("hypercall.nr", offsetof(kvm_run, hypercall.nr));
  set("hypercall.args", offsetof(kvm_run, hypercall.args));
  set("hypercall.ret", offsetof(kvm_run, hypercall.ret));
  set("hypercall.flags", offsetof(kvm_run, hypercall.longmode));
  set("tprAccess.rip", offsetof(kvm_run, tpr_access.rip));
  set("tprAccess.isWrite", offsetof(kvm_run, tpr_access.is_write));
  set("internal.suberror", offsetof(kvm_run, internal.suberror));
  set("internal.ndata", offsetof(kvm_run, internal.ndata));
  set("internal.data", offsetof(kvm_run, internal.data));
  set("emulationFailure.flags", offsetof(kvm_run, emulation_failure.flags));
  set("emulationFailure.insnSize", offsetof(kvm_run, emulation_failure.insn_size));
  set("emulationFailure.insnBytes", offsetof(kvm_run, emulation_failure.insn_bytes));
  set("systemEvent.type", offsetof(kvm_run, system_event.type));
  set("systemEvent.ndata", offsetof(kvm_run, system_event.ndata));
  set("systemEvent.data", offsetof(kvm_run, system_event.data));
  set("eoi.vector", offsetof(kvm_run, eoi.vector));
  set("hyperv.type", offsetof(kvm_run, hyperv.type));
  set("hyperv.synic.msr", offsetof(kvm_run, hyperv.u.synic.msr));
  set("hyperv.synic.control", offsetof(kvm_run, hyperv.u.synic.control));
  set("hyperv.synic.evtPage", offsetof(kvm_run, hyperv.u.synic.evt_page));
  set("hyperv.synic.msgPage", offsetof(kvm_run, hyperv.u.synic.msg_page));
  set("hyperv.hcall.input", offsetof(kvm_run, hyperv.u.hcall.input));
  set("hyperv.hcall.result", offsetof(kvm_run, hyperv.u.hcall.result));
  set("hyperv.hcall.params", offsetof(kvm_run, hyperv.u.hcall.params));
  set("hyperv.syndbg.msr", offsetof(kvm_run, hyperv.u.syndbg.msr));
  set("hyperv.syndbg.control", offsetof(kvm_run, hyperv.u.syndbg.control));
  set("hyperv.syndbg.status", offsetof(kvm_run, hyperv.u.syndbg.status));
  set("hyperv.syndbg.sendPage", offsetof(kvm_run, hyperv.u.syndbg.send_page));
  set("hyperv.syndbg.recvPage", offsetof(kvm_run, hyperv.u.syndbg.recv_page));
  set("hyperv.syndbg.pendingPage", offsetof(kvm_run, hyperv.u.syndbg.pending_page));
  set("msr.error", offsetof(kvm_run, msr.error));
  set("msr.reason", offsetof(kvm_run, msr.reason));
  set("msr.index", offsetof(kvm_run, msr.index));
  set("msr.data", offsetof(kvm_run, msr.data));
  set("xen.type", offsetof(kvm_run, xen.type));
  set("xen.longMode", offsetof(kvm_run, xen.u.hcall.longmode));
  set("xen.cpl", offsetof(kvm_run, xen.u.hcall.cpl));
  set("xen.input", offsetof(kvm_run, xen.u.hcall.input));
  set("xen.result", offsetof(kvm_run, xen.u.hcall.result));
  set("xen.params", offsetof(kvm_run, xen.u.hcall.params));
  set("notify.flags", offsetof(kvm_run, notify.flags));
  return o;
}

}  // namespace

void InitExits(Napi::Env env, Napi::Object exports) {
  exports.Set("kvmRunLayout", Napi::Function::New(env, KvmRunLayout, "kvmRunLayout"));
}

}  // namespace nkvm
