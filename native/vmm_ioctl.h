// Table-driven registration of the fixed-size VMM ioctls: each entry names
// the JS function, the ioctl, its number and struct size, and how the struct
// travels. The codecs (struct <-> typed object) are in TypeScript (lib/vm/*,
// lib/vcpu/*); here bytes go in and out unchanged, one ioctl per call.
#pragma once

#include <napi.h>

#include <cstddef>

namespace nkvm {

enum class IoctlShape {
  kGet,    // (fd) -> Uint8Array(size): the kernel fills the struct
  kSet,    // (fd, Uint8Array(size)) -> rc: the kernel reads the struct
  kInOut,  // (fd, Uint8Array(size)) -> Uint8Array(size): read and written back
  kValue,  // (fd, value: number) -> rc: _IO ioctls taking an integer argument
};

struct FixedIoctl {
  const char* js;
  const char* op;
  unsigned long request;
  size_t size;
  IoctlShape shape;
};

// Registers every entry of `table` on exports (the table must be static).
void RegisterFixedIoctls(Napi::Env env, Napi::Object exports, const FixedIoctl* table, size_t count);

template <size_t N>
void RegisterFixedIoctls(Napi::Env env, Napi::Object exports, const FixedIoctl (&table)[N]) {
  RegisterFixedIoctls(env, exports, table, N);
}

}  // namespace nkvm
