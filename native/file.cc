// Plain file-descriptor syscalls the KVM objects need: fallocate on a
// guest_memfd, fstat, pread of a binary-stats fd, memfd_create for tests and
// callers that want a non-KVM fd.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common.h"

namespace nkvm {
namespace {

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  int mode = ArgInt32(info, 1, "mode");
  off_t off = static_cast<off_t>(ArgUint64(info, 2, "offset"));
  off_t len = static_cast<off_t>(ArgUint64(info, 3, "length"));
  if (::fallocate(fd, mode, off, len) < 0) ThrowErrno(info.Env(), errno, "fallocate", "fallocate");
  return info.Env().Undefined();
}

Napi::Value FallocateAsync(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  int mode = ArgInt32(info, 1, "mode");
  off_t off = static_cast<off_t>(ArgUint64(info, 2, "offset"));
  off_t len = static_cast<off_t>(ArgUint64(info, 3, "length"));
  return SyscallWorker::Start(
      info.Env(), [=] { return static_cast<long>(::fallocate(fd, mode, off, len)); }, ResultObject);
}

Napi::Value Fstat(const Napi::CallbackInfo& info) {
  struct stat st {};
  if (::fstat(ArgInt32(info, 0, "fd"), &st) < 0) ThrowErrno(info.Env(), errno, "fstat", "fstat");
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", Napi::BigInt::New(env, static_cast<int64_t>(st.st_size)));
  o.Set("blksize", Napi::Number::New(env, static_cast<double>(st.st_blksize)));
  o.Set("blocks", Napi::BigInt::New(env, static_cast<int64_t>(st.st_blocks)));
  o.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_ino)));
  o.Set("mode", Napi::Number::New(env, st.st_mode));
  return o;
}

Napi::Value Pread(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  uint32_t len = ArgUint32(info, 1, "length");
  off_t off = static_cast<off_t>(ArgUint64(info, 2, "offset"));
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), len);
  ssize_t n = ::pread(fd, out.Data(), len, off);
  if (n < 0) ThrowErrno(info.Env(), errno, "pread", "pread");
  if (static_cast<size_t>(n) < len) {
    return Napi::Uint8Array::New(info.Env(), static_cast<size_t>(n), out.ArrayBuffer(), 0);
  }
  return out;
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "name must be a string");
  std::string name = info[0].As<Napi::String>();
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), errno, "memfd_create", "memfd_create");
  return Napi::Number::New(info.Env(), fd);
}

}  // namespace

void InitFile(Napi::Env env, Napi::Object exports) {
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("fallocateAsync", Napi::Function::New(env, FallocateAsync, "fallocateAsync"));
  exports.Set("fstat", Napi::Function::New(env, Fstat, "fstat"));
  exports.Set("pread", Napi::Function::New(env, Pread, "pread"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
}

}  // namespace nkvm
