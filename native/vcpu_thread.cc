// A dedicated native thread per vcpu for runAsync(): KVM_RUN never sits on
// libuv's pool (which Node joins at exit, and which fs, zlib and our own
// populate share).
//
// The exit round trip is the hot path of a VMM, and on a host that is itself
// a VM, waking an idle CPU costs tens of microseconds (an IPI and a halt
// exit), more than the exit itself. So neither hand-off sleeps at once:
// - vcpu thread -> JS: the thread flags its result and calls uv_async_send
//   (lock-free; a thread-safe function would take a mutex the woken JS
//   thread then waits on, which costs a second wake-up); while a run is in
//   flight, and for at most kLoopPoll after it began, an idle handle keeps
//   the event loop polling instead of sleeping in epoll, so the result is
//   seen without a wake-up. The loop is never blocked: it keeps running
//   every other callback.
// - JS -> vcpu thread: after each run the thread spins (with pause) for at
//   most kSpin on the request flag before it sleeps on a condition variable.
// Both waits are bounded, so an idle VM costs at most that much CPU per run.
//
// Lifetime: a thread is created by runThread(), ended by endThread() (the
// Vcpu's close) or, at the latest, when the environment is torn down: the
// JS thread's Dispatcher (one per environment) ends and joins every thread
// of the environment in an async cleanup hook before it closes its libuv
// handles, so no thread ever signals a closed handle.
#include <signal.h>
#include <sys/ioctl.h>
#include <uv.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "common.h"
#include "kvm_uapi.h"
#include "vcpu_busy.h"

namespace nkvm {
namespace {

using Clock = std::chrono::steady_clock;

// A tuning knob read once at load (docs/exits.md): 0 turns the wait off; at most 10 ms.
std::chrono::microseconds EnvMicros(const char* name, long fallback) {
  const char* v = getenv(name);
  long us = v != nullptr ? atol(v) : fallback;
  return std::chrono::microseconds(us < 0 ? 0 : us > 10000 ? 10000 : us);
}
// How long the vcpu thread waits for the next run request before sleeping.
const std::chrono::microseconds kSpin = EnvMicros("NODE_KVM_SPIN_US", 100);
// How long after a run began the event loop polls instead of sleeping.
const std::chrono::microseconds kLoopPoll = EnvMicros("NODE_KVM_POLL_US", 200);
// Spinning pays only with a CPU to spare. A gap this long between two looks
// at the clock means the spinner was preempted (the CPUs are oversubscribed):
// it then sleeps at once, and does not spin again for kBackoff, so a busy
// machine keeps the plain sleep/wake hand-off and its wake-up preference.
constexpr std::chrono::microseconds kSpinGap{30};
constexpr std::chrono::microseconds kPollGap{100};
constexpr std::chrono::milliseconds kBackoff{20};

class RunThread;

// The JS thread's side: delivers finished runs, keeps the loop polling while
// runs are young, and ends the environment's threads when it goes away.
class Dispatcher {
 public:
  static Dispatcher* For(napi_env env);

  void Add(const std::shared_ptr<RunThread>& t) { threads_.push_back(t); }
  void Remove(const RunThread* t);
  // A run began: keep the loop alive until it settles, and polling for a while.
  void Started();
  // A run settled.
  void Settled();
  // Any thread: a run finished.
  void Notify() { uv_async_send(&async_); }
  napi_env env() const { return env_; }

 private:
  explicit Dispatcher(napi_env env) : env_(env) {}
  static void OnAsync(uv_async_t* handle);
  static void OnIdle(uv_idle_t* handle);
  static void Cleanup(napi_async_cleanup_hook_handle hook, void* data);
  static void OnClosed(uv_handle_t* handle);

  napi_env env_;
  uv_async_t async_{};
  uv_idle_t idle_{};
  napi_async_context context_ = nullptr;
  napi_ref resource_ = nullptr;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  std::vector<std::shared_ptr<RunThread>> threads_;
  int inflight_ = 0;
  bool polling_ = false;
  int closing_ = 0;
  Clock::time_point pollUntil_{};
  Clock::time_point lastPoll_{};
  Clock::time_point noPollUntil_{};
};

thread_local Dispatcher* tDispatcher = nullptr;

class RunThread {
 public:
  ~RunThread() = default;

  static std::shared_ptr<RunThread> Create(Napi::Env env) {
    Dispatcher* d = Dispatcher::For(env);
    std::shared_ptr<RunThread> t(new RunThread(d));
    try {
      t->thread_ = std::thread([raw = t.get()] { raw->Loop(); });
    } catch (const std::system_error& e) {
      t->ended_ = t->finished_ = true;  // nothing to stop or join
      ThrowErrno(env, e.code().value() > 0 ? e.code().value() : EAGAIN, "pthread_create", "KVM_RUN");
    }
    d->Add(t);
    return t;
  }

  // Starts one KVM_RUN on the thread; the promise resolves with its errno.
  // ended_ and deferred_ belong to the JS thread; io_ and fd_ pass to the
  // vcpu thread through work_ and come back through done_.
  Napi::Value Run(Napi::Env env, int fd, uint64_t key) {
    napi_value promise;
    if (ended_) ThrowErrno(env, kOwnerClosed, "ioctl", "KVM_RUN");
    if (deferred_ != nullptr) ThrowErrno(env, EBUSY, "ioctl", "KVM_RUN");
    auto io = std::make_unique<LongIoctl>(key, fd, thread_.native_handle(), false);
    int refused = io->Begin();
    if (napi_create_promise(env, &deferred_, &promise) != napi_ok) throw Napi::Error::New(env, "napi_create_promise failed");
    if (refused != 0) {
      napi_deferred d = deferred_;
      deferred_ = nullptr;
      napi_resolve_deferred(env, d, Napi::Number::New(env, refused));
      return Napi::Value(env, promise);
    }
    io_ = std::move(io);
    fd_ = fd;
    dispatcher_->Started();
    work_.store(true);
    // A thread still spinning sees work_ by itself. One that went to sleep is
    // woken after mu_ was taken once, so the wake cannot fall between its
    // check and its wait (sleeping_ and work_ are seq_cst: one side sees the
    // other's store).
    if (sleeping_.load()) {
      { std::lock_guard<std::mutex> lock(mu_); }
      cv_.notify_all();
    }
    return Napi::Value(env, promise);
  }

  // On the JS thread: settles the run's promise if the run finished.
  void Deliver(napi_env env) {
    if (!done_.exchange(false)) return;
    napi_deferred d = deferred_;
    deferred_ = nullptr;
    if (d == nullptr) return;
    dispatcher_->Settled();
    napi_value v;
    if (napi_create_int32(env, result_.load(), &v) == napi_ok) napi_resolve_deferred(env, d, v);
  }

  // Whether the Dispatcher may forget it: ended, and no promise left to settle.
  bool Spent() const { return ended_ && deferred_ == nullptr; }

  // Stops and joins the thread (kicking it out of KVM_RUN); idempotent. A run
  // in flight still settles (its result was flagged before the thread ended).
  void End() {
    if (ended_) return;
    ended_ = true;
    stop_.store(true);
    { std::lock_guard<std::mutex> lock(mu_); }  // see Run()
    cv_.notify_all();
    // A signal can land just before the thread enters KVM_RUN; repeat until it left.
    std::unique_lock<std::mutex> lock(mu_);
    while (!finished_) {
      pthread_kill(thread_.native_handle(), KickSignal());
      finishedCv_.wait_for(lock, std::chrono::milliseconds(10));
    }
    lock.unlock();
    if (thread_.joinable()) thread_.join();
    if (Spent()) dispatcher_->Remove(this);
  }

 private:
  explicit RunThread(Dispatcher* d) : dispatcher_(d) {}

  void Loop() {
    // Process-directed signals (SIGTERM, SIGCHLD, ...) belong to Node's main
    // thread; only the kick reaches this one.
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, KickSignal());
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    pthread_setname_np(pthread_self(), "node-kvm-vcpu");
    for (;;) {
      if (!Ready()) SpinForWork();
      if (!Ready()) {
        std::unique_lock<std::mutex> lock(mu_);
        sleeping_.store(true);
        cv_.wait(lock, [this] { return Ready(); });
        sleeping_.store(false);
      }
      if (!work_.load()) break;  // a run already asked for still runs (End() kicks it)
      work_.store(false);
      io_->WaitForShortIoctls();
      int err = EINTR;
      if (!ProcessExiting()) {
        long rc = ::ioctl(fd_, KVM_RUN, 0);
        err = rc < 0 ? errno : 0;
      }
      io_.reset();  // unregistered before JS sees the result: its next ioctl is not EBUSY
      result_.store(err);
      done_.store(true);
      dispatcher_->Notify();
    }
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    finishedCv_.notify_all();
  }

  bool Ready() const { return stop_.load() || work_.load(); }

  // A VMM re-enters the guest right after answering an exit: wait a bounded
  // while for that before sleeping (see the top of the file).
  void SpinForWork() {
    auto last = Clock::now();
    if (last < noSpinUntil_) return;
    const auto until = last + kSpin;
    for (unsigned i = 0; !Ready(); i++) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if ((i & 31) != 31) continue;
      auto now = Clock::now();
      if (now - last > kSpinGap) noSpinUntil_ = now + kBackoff;
      if (now - last > kSpinGap || now >= until) return;
      last = now;
    }
  }

  Dispatcher* dispatcher_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable finishedCv_;
  std::atomic<bool> work_{false};      // a run is asked for (JS sets it, the thread clears it)
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};  // the thread waits on cv_
  std::atomic<bool> done_{false};      // a run finished; result_ holds its errno
  std::atomic<int> result_{0};
  Clock::time_point noSpinUntil_{};  // the vcpu thread's: see kSpinGap
  bool ended_ = false;
  bool finished_ = false;  // under mu_
  int fd_ = -1;
  std::unique_ptr<LongIoctl> io_;
  napi_deferred deferred_ = nullptr;
  std::thread thread_;
};

Dispatcher* Dispatcher::For(napi_env env) {
  if (tDispatcher != nullptr) return tDispatcher;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
  auto* d = new Dispatcher(env);
  napi_value resource, name;
  if (napi_create_object(env, &resource) != napi_ok || napi_create_reference(env, resource, 1, &d->resource_) != napi_ok ||
      napi_create_string_utf8(env, "node-kvm:vcpu", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &d->context_) != napi_ok) {
    delete d;  // leaks at most the reference: nothing else was made
    throw Napi::Error::New(env, "napi_async_init failed");
  }
  uv_async_init(loop, &d->async_, OnAsync);
  uv_idle_init(loop, &d->idle_);
  d->async_.data = d->idle_.data = d;
  uv_unref(reinterpret_cast<uv_handle_t*>(&d->async_));  // ref'd only while runs are in flight
  uv_unref(reinterpret_cast<uv_handle_t*>(&d->idle_));   // polling never keeps the loop alive
  napi_add_async_cleanup_hook(env, Cleanup, d, &d->hook_);
  tDispatcher = d;
  return d;
}

void Dispatcher::Remove(const RunThread* t) {
  threads_.erase(std::remove_if(threads_.begin(), threads_.end(), [t](const auto& p) { return p.get() == t; }), threads_.end());
}

void Dispatcher::Started() {
  if (inflight_++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&async_));
  auto now = Clock::now();
  pollUntil_ = now + kLoopPoll;
  if (!polling_ && kLoopPoll.count() > 0 && now >= noPollUntil_) {
    polling_ = true;
    lastPoll_ = now;
    uv_idle_start(&idle_, OnIdle);
  }
}

void Dispatcher::Settled() {
  if (--inflight_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
}

// An active idle handle makes the loop poll with a zero timeout; stop it once
// no run is young any more, and the loop sleeps in epoll again.
void Dispatcher::OnIdle(uv_idle_t* handle) {
  auto* d = static_cast<Dispatcher*>(handle->data);
  auto now = Clock::now();
  if (now - d->lastPoll_ > kPollGap) d->noPollUntil_ = now + kBackoff;  // preempted: see kSpinGap
  d->lastPoll_ = now;
  if (d->inflight_ > 0 && now < d->pollUntil_ && now >= d->noPollUntil_) return;
  d->polling_ = false;
  uv_idle_stop(handle);
}

void Dispatcher::OnAsync(uv_async_t* handle) {
  auto* d = static_cast<Dispatcher*>(handle->data);
  napi_env env = d->env_;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value resource;
  napi_callback_scope callback;
  // The callback scope runs the microtasks on close: a VMM's `await
  // runAsync()` continues, and asks for the next run, before the loop polls.
  bool scoped = napi_get_reference_value(env, d->resource_, &resource) == napi_ok &&
                napi_open_callback_scope(env, resource, d->context_, &callback) == napi_ok;
  // Copies: a settled promise's continuation may end or create threads.
  std::vector<std::shared_ptr<RunThread>> threads = d->threads_;
  for (const auto& t : threads) t->Deliver(env);
  d->threads_.erase(std::remove_if(d->threads_.begin(), d->threads_.end(), [](const auto& t) { return t->Spent(); }), d->threads_.end());
  if (scoped) napi_close_callback_scope(env, callback);
  napi_close_handle_scope(env, scope);
}

// The environment is going away: end every thread, then close the handles.
void Dispatcher::Cleanup(napi_async_cleanup_hook_handle, void* data) {
  auto* d = static_cast<Dispatcher*>(data);
  std::vector<std::shared_ptr<RunThread>> threads;
  threads.swap(d->threads_);
  for (const auto& t : threads) t->End();
  if (tDispatcher == d) tDispatcher = nullptr;
  napi_async_destroy(d->env_, d->context_);
  napi_delete_reference(d->env_, d->resource_);
  d->closing_ = 2;
  uv_close(reinterpret_cast<uv_handle_t*>(&d->async_), OnClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&d->idle_), OnClosed);
}

void Dispatcher::OnClosed(uv_handle_t* handle) {
  auto* d = static_cast<Dispatcher*>(handle->data);
  if (--d->closing_ > 0) return;
  napi_remove_async_cleanup_hook(d->hook_);
  delete d;
}

using Handle = Napi::External<std::shared_ptr<RunThread>>;

std::shared_ptr<RunThread>& ArgThread(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "thread must be a runThread()");
  return *info[0].As<Handle>().Data();
}

// runThread(): a new dedicated thread, idle until runOn().
Napi::Value CreateRunThread(const Napi::CallbackInfo& info) {
  auto* holder = new std::shared_ptr<RunThread>(RunThread::Create(info.Env()));
  return Handle::New(info.Env(), holder, [](Napi::Env, std::shared_ptr<RunThread>* h) {
    (*h)->End();
    delete h;
  });
}

// runOn(thread, vcpuFd, key): KVM_RUN on the thread; resolves with errno.
Napi::Value RunOn(const Napi::CallbackInfo& info) {
  std::shared_ptr<RunThread>& t = ArgThread(info);
  int fd = ArgInt32(info, 1, "vcpuFd");
  double key = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  if (!(key >= 0) || key > 9007199254740991.0) throw Napi::TypeError::New(info.Env(), "key must be a vcpu key");
  return t->Run(info.Env(), fd, static_cast<uint64_t>(key));
}

// endThread(thread): stops and joins it; later runOn() calls reject.
Napi::Value EndRunThread(const Napi::CallbackInfo& info) {
  ArgThread(info)->End();
  return info.Env().Undefined();
}

}  // namespace

void InitVcpuThread(Napi::Env env, Napi::Object exports) {
  exports.Set("runThread", Napi::Function::New(env, CreateRunThread, "runThread"));
  exports.Set("runOn", Napi::Function::New(env, RunOn, "runOn"));
  exports.Set("endThread", Napi::Function::New(env, EndRunThread, "endThread"));
}

}  // namespace nkvm
