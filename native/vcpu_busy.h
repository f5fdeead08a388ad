// Which threads are inside an ioctl on which vcpu, process-wide, so that a
// kick reaches every one of them and a short ioctl (registers, CPUID, ...)
// answers EBUSY instead of waiting on the kernel's vcpu mutex behind a
// KVM_RUN.
//
// A vcpu is named by a key (a number from vcpuKey()), not by its fd: a worker
// runs a vcpu through a dup'd fd with another number, and fd numbers are
// recycled. Callers without a key (key 0, the raw addon) are matched by fd.
#pragma once

#include <napi.h>
#include <pthread.h>

#include <cerrno>
#include <cstdint>

namespace nkvm {

// Errno answered once the owning Vcpu of a key was closed (TS: ECLOSED).
constexpr int kOwnerClosed = ESHUTDOWN;

int KickSignal();

// Set once the main thread's 'exit' event ran: no vcpu enters KVM_RUN again.
bool ProcessExiting();

// One long ioctl (KVM_RUN, KVM_PRE_FAULT_MEMORY) by one thread, registered for
// its duration so kicks find the thread.
class LongIoctl {
 public:
  // watchdog: a synchronous run on a thread other than the process's main
  // thread, kicked periodically so a terminating worker can leave KVM_RUN.
  LongIoctl(uint64_t key, int fd, pthread_t thread, bool watchdog);
  ~LongIoctl();
  // Registers: 0, EBUSY (another long ioctl on this vcpu), kOwnerClosed, or
  // EINTR (the process is exiting). Callable on any thread.
  int Begin();
  // Waits until no short ioctl on this vcpu is in progress (new ones answer
  // EBUSY once Begin() succeeded); call on the thread issuing the ioctl.
  void WaitForShortIoctls();
  // Whether the watchdog signalled this thread since the last call.
  bool TakeWatchdogKick();
  LongIoctl(const LongIoctl&) = delete;
  LongIoctl& operator=(const LongIoctl&) = delete;

 private:
  struct Entry* entry_;
  bool registered_ = false;
};


}  // namespace nkvm
