// eventfd(2): create, write, non-blocking read, and an asynchronous wait
// that parks no thread: the fd sits in libuv's epoll set (uv_poll) and the
// promise settles on the event loop when it becomes readable. This is how a
// VMM serves an ioeventfd in JavaScript without a vcpu exit.
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common.h"

namespace nkvm {
namespace {

Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  uint32_t initval = ArgUint32(info, 0, "initval");
  bool semaphore = info.Length() > 1 && info[1].ToBoolean().Value();
  int fd = ::eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0));
  if (fd < 0) ThrowErrno(info.Env(), errno, "eventfd", "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// (fd, value: bigint) -> void; EAGAIN when the counter would overflow.
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  uint64_t v = ArgUint64(info, 1, "value");
  ssize_t n;
  do n = ::write(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(info.Env(), errno, "write", "eventfd write");
  return info.Env().Undefined();
}

// (fd) -> bigint, or null when the counter is 0 (EAGAIN).
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  uint64_t v = 0;
  ssize_t n;
  do n = ::read(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return info.Env().Null();
    ThrowErrno(info.Env(), errno, "read", "eventfd read");
  }
  return Napi::BigInt::New(info.Env(), v);
}

// One pending wait. Kept alive by the uv handle (until its close callback)
// and by the JS cancel function (until it is collected).
struct Waiter {
  uv_poll_t poll{};
  napi_env env = nullptr;
  napi_deferred deferred = nullptr;
  int fd = -1;
  bool active = false;  // poll started and not yet closed
  std::shared_ptr<Waiter>* self = nullptr;  // held by the handle while active
};

void OnClosed(uv_handle_t* h) {
  auto* holder = static_cast<std::shared_ptr<Waiter>*>(h->data);
  delete holder;  // drops the handle's reference
}

void OnEnvCleanup(void* arg);

// Stops polling and releases the handle; settles nothing.
void Stop(Waiter* w) {
  if (!w->active) return;
  w->active = false;
  napi_remove_env_cleanup_hook(w->env, OnEnvCleanup, w);
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
}

void OnEnvCleanup(void* arg) {
  auto* w = static_cast<Waiter*>(arg);
  if (!w->active) return;
  w->active = false;  // the hook is being run: do not remove it
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
}

void Settle(Waiter* w, bool ok, napi_value value) {
  napi_deferred d = w->deferred;
  w->deferred = nullptr;
  if (d == nullptr) return;
  if (ok) napi_resolve_deferred(w->env, d, value);
  else napi_reject_deferred(w->env, d, value);
}

napi_value ErrnoValue(Napi::Env env, int err, const char* op) {
  try {
    ThrowErrno(env, err, "read", op);
  } catch (const Napi::Error& e) {
    return e.Value();
  }
  return nullptr;
}

void OnReadable(uv_poll_t* h, int status, int /*events*/) {
  Waiter* w = static_cast<std::shared_ptr<Waiter>*>(h->data)->get();
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  // A callback scope, so promise reactions run when this returns.
  Napi::AsyncContext ctx(env, "node-kvm:eventfd");
  Napi::CallbackScope cb(env, ctx);
  if (status < 0) {
    Stop(w);
    Settle(w, false, ErrnoValue(env, -status, "eventfd wait"));
    return;
  }
  uint64_t v = 0;
  ssize_t n = ::read(w->fd, &v, sizeof v);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;  // another reader took it: keep waiting
  int err = errno;
  Stop(w);
  if (n < 0) Settle(w, false, ErrnoValue(env, err, "eventfd wait"));
  else Settle(w, true, Napi::BigInt::New(env, v));
}

// (fd) -> { promise: Promise<bigint>, cancel(): boolean }. The promise
// resolves with the counter read when the fd becomes readable; cancel()
// stops the wait and rejects it with ECANCELED (returns false if already
// settled).
Napi::Value EventfdWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt32(info, 0, "fd");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "no event loop");
  auto w = std::make_shared<Waiter>();
  w->env = env;
  w->fd = fd;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc < 0) ThrowErrno(env, -rc, "uv_poll_init", "eventfd wait");
  w->self = new std::shared_ptr<Waiter>(w);
  w->poll.data = w->self;
  w->active = true;
  rc = uv_poll_start(&w->poll, UV_READABLE, OnReadable);
  if (rc < 0) {
    w->active = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
    ThrowErrno(env, -rc, "uv_poll_start", "eventfd wait");
  }
  napi_add_env_cleanup_hook(env, OnEnvCleanup, w.get());
  napi_value promise;
  napi_create_promise(env, &w->deferred, &promise);
  Napi::Object out = Napi::Object::New(env);
  out.Set("promise", Napi::Value(env, promise));
  std::shared_ptr<Waiter> keep = w;
  out.Set("cancel", Napi::Function::New(env, [keep](const Napi::CallbackInfo& ci) -> Napi::Value {
            Waiter* x = keep.get();
            if (x->deferred == nullptr) return Napi::Boolean::New(ci.Env(), false);
            Stop(x);
            Settle(x, false, ErrnoValue(ci.Env(), ECANCELED, "eventfd wait"));
            return Napi::Boolean::New(ci.Env(), true);
          }, "cancel"));
  return out;
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate, "eventfdCreate"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
  exports.Set("eventfdWait", Napi::Function::New(env, EventfdWait, "eventfdWait"));
}

}  // namespace nkvm
