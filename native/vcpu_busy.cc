// The process-wide record of vcpu keys, their worker handles, and the
// threads inside vcpu ioctls; kicks, the exit flag and the watchdog.
#include "vcpu_busy.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace nkvm {

struct Entry {
  uint64_t key;
  int fd;
  pthread_t thread;
  bool watchdog;
  bool watchdogKicked = false;
};

namespace {

struct Record {
  int refs = 1;  // the owner, each pending handle, each adopted Vcpu
  bool closed = false;
  int shortIoctls = 0;
  std::set<int> pendingHandles;
};

// Allocated once and never destroyed: threads may still use them while the
// process runs its static destructors inside exit().
struct Globals {
  std::mutex mu;
  std::condition_variable shortDone;
  std::condition_variable watchdogWake;   // a first watched run appeared
  std::condition_variable watchdogSleep;  // never notified: the period's timed wait
  int watched = 0;                        // entries the watchdog kicks
  std::vector<Entry*> entries;
  std::unordered_map<uint64_t, Record> records;
  uint64_t nextKey = 1;
  bool watchdogStarted = false;
};
Globals& G() {
  static Globals* g = new Globals();
  return *g;
}
std::atomic<bool> g_exiting{false};

// How often a synchronous run on a non-main thread is kicked so that it can
// notice its worker terminating (Node gives addons no hook on terminate()).
constexpr auto kWatchdogPeriod = std::chrono::milliseconds(100);

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

void WatchdogLoop() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, nullptr);  // process signals belong to Node's main thread
  pthread_setname_np(pthread_self(), "node-kvm-watch");
  Globals& g = G();
  std::unique_lock<std::mutex> lock(g.mu);
  for (;;) {
    g.watchdogWake.wait(lock, [&g] { return g.watched > 0; });
    // A full period, whatever runs start meanwhile: a run is kicked at most every period.
    auto deadline = std::chrono::steady_clock::now() + kWatchdogPeriod;
    while (g.watchdogSleep.wait_until(lock, deadline) != std::cv_status::timeout) {
    }
    for (Entry* e : g.entries) {
      if (!e->watchdog) continue;
      e->watchdogKicked = true;
      pthread_kill(e->thread, KickSignal());
    }
  }
}

// Signals every thread in a long ioctl on this vcpu; caller holds g.mu.
int KickLocked(uint64_t key, int fd) {
  int n = 0;
  for (Entry* e : G().entries) {
    if ((key != 0 && e->key == key) || (fd >= 0 && e->fd == fd)) {
      if (pthread_kill(e->thread, KickSignal()) == 0) n++;
    }
  }
  return n;
}

// Whether a long ioctl is in progress on this vcpu: by key, or by fd for raw
// callers (an fd in an ioctl cannot name another vcpu meanwhile).
bool LongBusyLocked(uint64_t key, int fd) {
  for (Entry* e : G().entries) {
    if ((key != 0 && e->key == key) || (fd >= 0 && e->fd == fd)) return true;
  }
  return false;
}

uint64_t ArgKey(const Napi::CallbackInfo& info, size_t i) {
  double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
    throw Napi::TypeError::New(info.Env(), "key must be a vcpu key");
  }
  return static_cast<uint64_t>(d);
}

// vcpuKey(): a new key owned by the caller (the Vcpu that created the fd).
Napi::Value VcpuKey(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(G().mu);
  uint64_t key = G().nextKey++;
  G().records.emplace(key, Record{});
  return Napi::Number::New(info.Env(), static_cast<double>(key));
}

// vcpuRelease(key, owner): drops one reference. The owner's release marks the
// vcpu closed everywhere: running threads are kicked, handles not yet
// adopted are closed, and every later ioctl through the key answers
// kOwnerClosed.
Napi::Value VcpuRelease(const Napi::CallbackInfo& info) {
  uint64_t key = ArgKey(info, 0);
  bool owner = info[1].ToBoolean();
  std::lock_guard<std::mutex> lock(G().mu);
  auto it = G().records.find(key);
  if (it == G().records.end()) return info.Env().Undefined();
  Record& r = it->second;
  r.refs--;
  if (owner && !r.closed) {
    r.closed = true;
    KickLocked(key, -1);
    for (int fd : r.pendingHandles) ::close(fd);
    r.refs -= static_cast<int>(r.pendingHandles.size());
    r.pendingHandles.clear();
  }
  if (r.refs <= 0) G().records.erase(it);
  return info.Env().Undefined();
}

// vcpuDupForHandle(key, fd): a new fd for a worker handle (close-on-exec),
// closed with the owner unless adopted first.
Napi::Value VcpuDupForHandle(const Napi::CallbackInfo& info) {
  uint64_t key = ArgKey(info, 0);
  int fd = ArgInt32(info, 1, "vcpuFd");
  std::lock_guard<std::mutex> lock(G().mu);
  auto it = G().records.find(key);
  if (it == G().records.end() || it->second.closed) ThrowErrno(info.Env(), kOwnerClosed, "fcntl", "workerHandle");
  int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) ThrowErrno(info.Env(), errno, "fcntl", "workerHandle");
  it->second.pendingHandles.insert(dup);
  it->second.refs++;
  return Napi::Number::New(info.Env(), dup);
}

// vcpuAdopt(key, fd): takes a handle's fd over (once).
Napi::Value VcpuAdopt(const Napi::CallbackInfo& info) {
  uint64_t key = ArgKey(info, 0);
  int fd = ArgInt32(info, 1, "vcpuFd");
  std::lock_guard<std::mutex> lock(G().mu);
  auto it = G().records.find(key);
  if (it == G().records.end() || it->second.closed) ThrowErrno(info.Env(), kOwnerClosed, "fcntl", "fromWorkerHandle");
  if (it->second.pendingHandles.erase(fd) == 0) ThrowErrno(info.Env(), EBADF, "fcntl", "fromWorkerHandle");
  return info.Env().Undefined();
}

// vcpuExclusive(key, fn[, fd]): runs fn (one short vcpu ioctl) unless a long
// ioctl is in progress on the vcpu (EBUSY at once) or its owner closed it.
Napi::Value VcpuExclusive(const Napi::CallbackInfo& info) {
  uint64_t key = ArgKey(info, 0);
  int fd = info.Length() > 2 && !info[2].IsUndefined() ? ArgInt32(info, 2, "vcpuFd") : -1;
  if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(info.Env(), "fn must be a function");
  Napi::Function fn = info[1].As<Napi::Function>();
  Globals& g = G();
  {
    std::lock_guard<std::mutex> lock(g.mu);
    auto it = g.records.find(key);
    if (it == g.records.end() || it->second.closed) ThrowErrno(info.Env(), kOwnerClosed, "ioctl", "");
    if (LongBusyLocked(key, fd)) ThrowErrno(info.Env(), EBUSY, "ioctl", "");
    it->second.shortIoctls++;
  }
  auto done = [&g, key] {
    std::lock_guard<std::mutex> lock(g.mu);
    auto it = g.records.find(key);
    if (it != g.records.end()) it->second.shortIoctls--;
    g.shortDone.notify_all();
  };
  try {
    Napi::Value v = fn.Call({});
    done();
    return v;
  } catch (...) {
    done();
    throw;
  }
}

// interrupt(fd[, key]): signals every thread in a long ioctl on this vcpu.
Napi::Value Interrupt(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "vcpuFd");
  uint64_t key = info.Length() > 1 && !info[1].IsUndefined() ? ArgKey(info, 1) : 0;
  std::lock_guard<std::mutex> lock(G().mu);
  return Napi::Boolean::New(info.Env(), KickLocked(key, fd) > 0);
}

// processExiting(): the main thread is exiting; stop every vcpu for good.
Napi::Value ProcessExitingJs(const Napi::CallbackInfo& info) {
  g_exiting.store(true);
  std::lock_guard<std::mutex> lock(G().mu);
  for (Entry* e : G().entries) pthread_kill(e->thread, KickSignal());
  return info.Env().Undefined();
}

}  // namespace

int KickSignal() { return SIGRTMIN + 3; }

bool ProcessExiting() { return g_exiting.load(); }

LongIoctl::LongIoctl(uint64_t key, int fd, pthread_t thread, bool watchdog)
    : entry_(new Entry{key, fd, thread, watchdog}) {}

LongIoctl::~LongIoctl() {
  if (registered_) {
    std::lock_guard<std::mutex> lock(G().mu);
    auto& v = G().entries;
    v.erase(std::remove(v.begin(), v.end(), entry_), v.end());
    if (entry_->watchdog) G().watched--;
  }
  delete entry_;
}

int LongIoctl::Begin() {
  Globals& g = G();
  std::lock_guard<std::mutex> lock(g.mu);
  if (g_exiting.load()) return EINTR;
  if (entry_->key != 0) {
    auto it = g.records.find(entry_->key);
    if (it == g.records.end() || it->second.closed) return kOwnerClosed;
  }
  if (LongBusyLocked(entry_->key, entry_->fd)) return EBUSY;
  g.entries.push_back(entry_);
  registered_ = true;
  if (entry_->watchdog && g.watched++ == 0) {
    if (!g.watchdogStarted) {
      try {
        std::thread(WatchdogLoop).detach();
        g.watchdogStarted = true;
      } catch (const std::system_error&) {
        // No watchdog: the run still works; only terminate() would wait for a kick.
      }
    }
    g.watchdogWake.notify_all();
  }
  return 0;
}

void LongIoctl::WaitForShortIoctls() {
  if (entry_->key == 0) return;
  Globals& g = G();
  std::unique_lock<std::mutex> lock(g.mu);
  g.shortDone.wait(lock, [&] {
    auto it = g.records.find(entry_->key);
    return it == g.records.end() || it->second.shortIoctls == 0;
  });
}

bool LongIoctl::TakeWatchdogKick() {
  std::lock_guard<std::mutex> lock(G().mu);
  bool kicked = entry_->watchdogKicked;
  entry_->watchdogKicked = false;
  return kicked;
}

void InitVcpuBusy(Napi::Env env, Napi::Object exports) {
  InstallKickHandler();
  exports.Set("vcpuKey", Napi::Function::New(env, VcpuKey, "vcpuKey"));
  exports.Set("vcpuRelease", Napi::Function::New(env, VcpuRelease, "vcpuRelease"));
  exports.Set("vcpuDupForHandle", Napi::Function::New(env, VcpuDupForHandle, "vcpuDupForHandle"));
  exports.Set("vcpuAdopt", Napi::Function::New(env, VcpuAdopt, "vcpuAdopt"));
  exports.Set("vcpuExclusive", Napi::Function::New(env, VcpuExclusive, "vcpuExclusive"));
  exports.Set("interrupt", Napi::Function::New(env, Interrupt, "interrupt"));
  exports.Set("processExiting", Napi::Function::New(env, ProcessExitingJs, "processExiting"));
}

}  // namespace nkvm
