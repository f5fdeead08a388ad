#include "common.h"

#include <cerrno>
#include <cstring>
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

SyscallWorker::SyscallWorker(Napi::Env env, Call call, Settle settle)
    : Napi::AsyncWorker(env, "node-kvm:syscall"),
      call_(std::move(call)),
      settle_(std::move(settle)),
      deferred_(Napi::Promise::Deferred::New(env)) {}

Napi::Promise SyscallWorker::Start(Napi::Env env, Call call, Settle settle) {
  auto* w = new SyscallWorker(env, std::move(call), std::move(settle));
  Napi::Promise p = w->deferred_.Promise();
  w->Queue();
  return p;
}

void SyscallWorker::Execute() {
  errno = 0;
  rc_ = call_();
  err_ = rc_ < 0 ? errno : 0;
}

void SyscallWorker::OnOK() {
  Napi::HandleScope scope(Env());
  try {
    deferred_.Resolve(settle_(Env(), rc_, err_));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
}

void SyscallWorker::OnError(const Napi::Error& e) { deferred_.Reject(e.Value()); }

}  // namespace nkvm
