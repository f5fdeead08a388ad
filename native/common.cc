#include "common.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

namespace nkvm {

void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* op) {
  Napi::Error e = Napi::Error::New(env, std::string(op) + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.Set("op", Napi::String::New(env, op));
  throw e;
}

static Napi::Value Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) {
    throw Napi::TypeError::New(info.Env(), std::string("missing argument: ") + name);
  }
  return info[i];
}

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i, name);
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int32_t>(d))) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be a 32-bit integer");
  }
  return static_cast<int32_t>(d);
}

uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i, name);
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 4294967295.0 || d != static_cast<double>(static_cast<uint32_t>(d))) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an unsigned 32-bit integer");
  }
  return static_cast<uint32_t>(d);
}

uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i, name);
  if (!v.IsBigInt()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a bigint");
  bool lossless = false;
  uint64_t out = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(info.Env(), std::string(name) + " must fit in 64 unsigned bits");
  return out;
}

Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i, name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Uint8Array");
  }
  return v.As<Napi::Uint8Array>();
}

Napi::Object ResultObject(Napi::Env env, long rc, int err) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rc", Napi::Number::New(env, static_cast<double>(rc)));
  o.Set("errno", Napi::Number::New(env, err));
  return o;
}

Napi::Promise SyscallWorker::Start(Napi::Env env, Call call, Settle settle) {
  auto* w = new SyscallWorker(std::move(call), std::move(settle));
  napi_value promise, name;
  if (napi_create_promise(env, &w->deferred_, &promise) != napi_ok ||
      napi_create_string_utf8(env, "node-kvm:syscall", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, nullptr, name, Execute, Complete, w, &w->work_) != napi_ok) {
    delete w;
    throw Napi::Error::New(env, "could not queue a syscall on the thread pool");
  }
  if (napi_queue_async_work(env, w->work_) != napi_ok) {
    napi_delete_async_work(env, w->work_);
    delete w;
    throw Napi::Error::New(env, "could not queue a syscall on the thread pool");
  }
  return Napi::Promise(env, promise);
}

void SyscallWorker::Execute(napi_env, void* self) {
  auto* w = static_cast<SyscallWorker*>(self);
  errno = 0;
  w->rc_ = w->call_();
  w->err_ = w->rc_ < 0 ? errno : 0;
}

void SyscallWorker::Complete(napi_env env, napi_status status, void* self) {
  std::unique_ptr<SyscallWorker> w(static_cast<SyscallWorker*>(self));
  napi_delete_async_work(env, w->work_);
  if (status != napi_ok) return;  // cancelled: the environment is going away
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value value = nullptr;
  bool rejected = false;
  try {
    value = w->settle_(Napi::Env(env), w->rc_, w->err_);
  } catch (const Napi::Error& e) {
    value = e.Value();
    rejected = true;
  } catch (...) {
    value = nullptr;
  }
  // Failures here mean the environment can no longer run JS: nothing to tell.
  if (value != nullptr) {
    if (rejected) napi_reject_deferred(env, w->deferred_, value);
    else napi_resolve_deferred(env, w->deferred_, value);
  }
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  napi_close_handle_scope(env, scope);
}

// Whether this thread's environment can still run JavaScript: calling a no-op
// fails with napi_pending_exception once a worker is terminating.
bool CanCallJs(napi_env env) {
  napi_value global, fn, result;
  if (napi_get_global(env, &global) != napi_ok) return false;
  if (napi_create_function(env, "noop", NAPI_AUTO_LENGTH, [](napi_env, napi_callback_info) -> napi_value { return nullptr; },
                           nullptr, &fn) != napi_ok) {
    return false;
  }
  return napi_call_function(env, global, fn, 0, nullptr, &result) == napi_ok;
}

}  // namespace nkvm
