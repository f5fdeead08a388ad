// A dedicated native thread per vcpu for runAsync(): KVM_RUN never sits on
// libuv's pool (which Node joins at exit, and which fs, zlib and our own
// populate share). The result comes back through a thread-safe function.
//
// Lifetime: the thread is created by runThread(), ended by endThread() (the
// Vcpu's close) or, at the latest, when the environment is torn down: the
// thread-safe function's finalizer stops and joins it before Node frees the
// function, so the thread never calls into a freed one.
#include <signal.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "common.h"
#include "kvm_uapi.h"
#include "vcpu_busy.h"

namespace nkvm {
namespace {

class RunThread {
 public:
  ~RunThread() = default;

  static std::shared_ptr<RunThread> Create(Napi::Env env) {
    std::shared_ptr<RunThread> t(new RunThread());
    auto* context = new std::shared_ptr<RunThread>(t);
    napi_value name;
    napi_create_string_utf8(env, "node-kvm:vcpu", NAPI_AUTO_LENGTH, &name);
    napi_status s = napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, context, Finalize, context,
                                                    Deliver, &t->tsfn_);
    if (s != napi_ok) {
      delete context;
      throw Napi::Error::New(env, "napi_create_threadsafe_function failed");
    }
    napi_unref_threadsafe_function(env, t->tsfn_);
    try {
      t->thread_ = std::thread([raw = t.get()] { raw->Loop(); });
    } catch (const std::system_error& e) {
      t->ended_ = t->finished_ = true;  // nothing to stop or join
      t->Release();
      ThrowErrno(env, e.code().value() > 0 ? e.code().value() : EAGAIN, "pthread_create", "KVM_RUN");
    }
    return t;
  }

  // Starts one KVM_RUN on the thread; the promise resolves with its errno.
  Napi::Value Run(Napi::Env env, int fd, uint64_t key) {
    napi_value promise;
    std::unique_lock<std::mutex> lock(mu_);
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
    work_ = true;
    napi_ref_threadsafe_function(env, tsfn_);
    lock.unlock();
    cv_.notify_all();
    return Napi::Value(env, promise);
  }

  // Stops and joins the thread (kicking it out of KVM_RUN); idempotent.
  void End() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_) return;
      ended_ = true;
      stop_ = true;
    }
    cv_.notify_all();
    // A signal can land just before the thread enters KVM_RUN; repeat until it left.
    std::unique_lock<std::mutex> lock(mu_);
    while (!finished_) {
      pthread_kill(thread_.native_handle(), KickSignal());
      finishedCv_.wait_for(lock, std::chrono::milliseconds(10));
    }
    lock.unlock();
    if (thread_.joinable()) thread_.join();
  }

  // Releases the thread-safe function once (from JS; never after its finalizer).
  void Release() {
    if (released_ || finalized_) return;
    released_ = true;
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
  }

 private:
  RunThread() = default;

  void Loop() {
    // Process-directed signals (SIGTERM, SIGCHLD, ...) belong to Node's main
    // thread; only the kick reaches this one.
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, KickSignal());
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    pthread_setname_np(pthread_self(), "node-kvm-vcpu");
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || work_; });
      if (!work_) break;  // a run already asked for still runs (End() kicks it)
      work_ = false;
      int fd = fd_;
      lock.unlock();
      io_->WaitForShortIoctls();
      int err = EINTR;
      if (!ProcessExiting()) {
        long rc = ::ioctl(fd, KVM_RUN, 0);
        err = rc < 0 ? errno : 0;
      }
      lock.lock();
      io_.reset();  // unregistered before JS sees the result: its next ioctl is not EBUSY
      result_ = err;
      lock.unlock();
      napi_status s = napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_blocking);
      lock.lock();
      if (s != napi_ok) break;  // napi_closing: the environment is going away
    }
    finished_ = true;
    finishedCv_.notify_all();
  }

  // On the JS thread: settles the run's promise.
  static void Deliver(napi_env env, napi_value, void* context, void*) {
    if (env == nullptr) return;  // torn down with the call still queued
    RunThread* t = static_cast<std::shared_ptr<RunThread>*>(context)->get();
    napi_deferred d;
    int err;
    {
      std::lock_guard<std::mutex> lock(t->mu_);
      d = t->deferred_;
      err = t->result_;
      t->deferred_ = nullptr;
    }
    if (d == nullptr) return;
    napi_unref_threadsafe_function(env, t->tsfn_);
    napi_value v;
    if (napi_create_int32(env, err, &v) == napi_ok) napi_resolve_deferred(env, d, v);
  }

  // On the JS thread, once: released, or the environment torn down.
  static void Finalize(napi_env, void* data, void*) {
    auto* holder = static_cast<std::shared_ptr<RunThread>*>(data);
    (*holder)->finalized_ = true;
    (*holder)->End();
    delete holder;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable finishedCv_;
  bool work_ = false;
  bool stop_ = false;
  bool ended_ = false;
  bool finished_ = false;
  bool released_ = false;
  bool finalized_ = false;
  int fd_ = -1;
  int result_ = 0;
  std::unique_ptr<LongIoctl> io_;
  napi_deferred deferred_ = nullptr;
  napi_threadsafe_function tsfn_ = nullptr;
  std::thread thread_;
};

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
    (*h)->Release();
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
  std::shared_ptr<RunThread>& t = ArgThread(info);
  t->End();
  t->Release();
  return info.Env().Undefined();
}

}  // namespace

void InitVcpuThread(Napi::Env env, Napi::Object exports) {
  exports.Set("runThread", Napi::Function::New(env, CreateRunThread, "runThread"));
  exports.Set("runOn", Napi::Function::New(env, RunOn, "runOn"));
  exports.Set("endThread", Napi::Function::New(env, EndRunThread, "endThread"));
}

}  // namespace nkvm
