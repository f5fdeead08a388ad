// Host memory mappings (anonymous, guest_memfd, the vcpu's kvm_run page),
// exposed to JS as zero-copy ArrayBuffers that are detached when unmapped.
//
// Ownership: the mapping lives in a shared State. The JS Mapping object, the
// ArrayBuffer and every in-flight worker each hold a reference, so memory is
// never unmapped under a live view or a running madvise.
//
// unmap() never detaches an ArrayBuffer: Node itself may be in the middle of
// an operation on it (an asynchronous zlib stream, fs.write on the thread
// pool...) that keeps the pointer and length it read, and a buffer that
// shrinks to 0 under such an operation aborts Node 20 and throws an uncaught
// RangeError on Node 24. Instead, while any ArrayBuffer over the mapping is
// alive, unmap() replaces the pages with fresh private zero pages (MAP_FIXED,
// so the old pages, and the file of a guest_memfd mapping, are dropped at
// once) and keeps the address range reserved until the last buffer is
// collected: a view of closed memory reads zeros and its writes go nowhere,
// and no later mmap can be placed under it.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>

#include "common.h"

namespace nkvm {
namespace {

struct State {
  uint8_t* addr = nullptr;
  size_t length = 0;
  bool unmapped = false;      // touched only on the JS thread
  bool placeholder = false;   // unmap() left zero pages for views still alive
  std::atomic<int> busy{0};   // async operations in flight
  ~State() {
    if ((!unmapped || placeholder) && addr != nullptr) ::munmap(addr, length);
  }
};

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

class Mapping : public Napi::ObjectWrap<Mapping> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Mapping",
                       {
                           InstanceAccessor<&Mapping::Address>("address"),
                           InstanceAccessor<&Mapping::Length>("length"),
                           InstanceAccessor<&Mapping::Mapped>("mapped"),
                           InstanceMethod<&Mapping::Buffer>("buffer"),
                           InstanceMethod<&Mapping::Unmap>("unmap"),
                           InstanceMethod<&Mapping::Madvise>("madvise"),
                           InstanceMethod<&Mapping::MadviseAsync>("madviseAsync"),
                           InstanceMethod<&Mapping::Mprotect>("mprotect"),
                           InstanceMethod<&Mapping::Touch>("touch"),
                       });
  }

  // new Mapping(fd, length, prot, flags, offset, alignment); fd -1 with
  // MAP_ANONYMOUS in flags for anonymous memory.
  explicit Mapping(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Mapping>(info) {
    int fd = ArgInt32(info, 0, "fd");
    uint64_t length = ArgUint64(info, 1, "length");
    int prot = ArgInt32(info, 2, "prot");
    int flags = ArgInt32(info, 3, "flags");
    uint64_t offset = ArgUint64(info, 4, "offset");
    uint64_t alignment = ArgUint64(info, 5, "alignment");
    size_t page = PageSize();
    if (length == 0 || length % page != 0) throw Napi::RangeError::New(info.Env(), "length must be a non-zero multiple of the page size");
    if (alignment < page || (alignment & (alignment - 1)) != 0) throw Napi::RangeError::New(info.Env(), "alignment must be a power of two >= the page size");
    if (length > (uint64_t{1} << 46)) throw Napi::RangeError::New(info.Env(), "length too large");

    // Reserve length + alignment of address space, then place the real mapping
    // at the aligned address inside it and give back the rest. This is how an
    // aligned (e.g. 2 MiB, for THP and huge guest mappings) region is obtained
    // for anonymous memory and file mappings alike.
    size_t reserve = static_cast<size_t>(length + (alignment > page ? alignment : 0));
    void* base = ::mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) ThrowErrno(info.Env(), errno, "mmap", "mmap");
    uintptr_t b = reinterpret_cast<uintptr_t>(base);
    uintptr_t aligned = (b + alignment - 1) & ~static_cast<uintptr_t>(alignment - 1);
    void* p = ::mmap(reinterpret_cast<void*>(aligned), length, prot, flags | MAP_FIXED, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) {
      int err = errno;
      ::munmap(base, reserve);
      ThrowErrno(info.Env(), err, "mmap", "mmap");
    }
    if (aligned > b) ::munmap(base, aligned - b);
    uintptr_t end = aligned + length;
    if (b + reserve > end) ::munmap(reinterpret_cast<void*>(end), b + reserve - end);

    state_ = std::make_shared<State>();
    state_->addr = static_cast<uint8_t*>(p);
    state_->length = length;
  }

 private:
  void CheckMapped(Napi::Env env) const {
    if (state_ == nullptr || state_->unmapped) ThrowErrno(env, EBADF, "mmap", "mapping is unmapped");
  }

  // [offset, offset+length) inside the mapping, or a RangeError.
  std::pair<uint8_t*, size_t> Span(const Napi::CallbackInfo& info) const {
    CheckMapped(info.Env());
    uint64_t off = ArgUint64(info, 0, "offset");
    uint64_t len = ArgUint64(info, 1, "length");
    if (off > state_->length || len > state_->length - off) throw Napi::RangeError::New(info.Env(), "range outside the mapping");
    return {state_->addr + off, static_cast<size_t>(len)};
  }

  Napi::Value Address(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(state_->addr)));
  }
  Napi::Value Length(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(state_->length));
  }
  Napi::Value Mapped(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_->unmapped); }

  // buffer([offset, length, maxLength]): an ArrayBuffer over the whole
  // mapping (cached) or a sub-range. V8 refuses ArrayBuffers above its limit
  // (4 GiB on Node 20), and a refused external buffer gets its finalizer data
  // freed twice (by Node and by node-addon-api), so the length is checked
  // against maxLength first (default 4 GiB, safe on every supported Node).
  Napi::Value Buffer(const Napi::CallbackInfo& info) {
    CheckMapped(info.Env());
    bool whole = info.Length() == 0 || info[0].IsUndefined();
    uint64_t off = whole ? 0 : ArgUint64(info, 0, "offset");
    uint64_t len = whole ? state_->length : ArgUint64(info, 1, "length");
    uint64_t max = info.Length() > 2 && !info[2].IsUndefined() ? ArgUint64(info, 2, "maxLength") : (uint64_t{1} << 32);
    if (off > state_->length || len > state_->length - off) throw Napi::RangeError::New(info.Env(), "range outside the mapping");
    if (len > max) throw Napi::RangeError::New(info.Env(), "view larger than the largest ArrayBuffer this Node.js allows");
    // A cached buffer moved out with ArrayBuffer.prototype.transfer() (Node
    // 22+) is detached: hand out a new one over the same pages.
    if (whole && !buffer_.IsEmpty() && !buffer_.Value().IsEmpty() && !buffer_.Value().IsDetached()) return buffer_.Value();
    auto* hold = new std::shared_ptr<State>(state_);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        info.Env(), state_->addr + off, static_cast<size_t>(len), [](Napi::Env, void*, std::shared_ptr<State>* h) { delete h; }, hold);
    if (whole) buffer_ = Napi::Weak(ab);
    return ab;
  }

  Napi::Value Unmap(const Napi::CallbackInfo& info) {
    if (state_->unmapped) return info.Env().Undefined();
    if (state_->busy.load() > 0) ThrowErrno(info.Env(), EBUSY, "munmap", "munmap (an operation on this memory is in flight)");
    buffer_.Reset();
    // Every ArrayBuffer still alive holds the state (see the top of the file).
    if (state_.use_count() > 1) {
      void* p = ::mmap(state_->addr, state_->length, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) ThrowErrno(info.Env(), errno, "mmap", "munmap (placeholder)");
      state_->placeholder = true;
    } else if (::munmap(state_->addr, state_->length) < 0) {
      ThrowErrno(info.Env(), errno, "munmap", "munmap");
    }
    state_->unmapped = true;
    return info.Env().Undefined();
  }

  Napi::Value Madvise(const Napi::CallbackInfo& info) {
    auto [p, len] = Span(info);
    if (::madvise(p, len, ArgInt32(info, 2, "advice")) < 0) ThrowErrno(info.Env(), errno, "madvise", "madvise");
    return info.Env().Undefined();
  }

  // Resolves with { rc, errno } so callers can retry EINTR/EAGAIN themselves.
  Napi::Value MadviseAsync(const Napi::CallbackInfo& info) {
    auto [p, len] = Span(info);
    int advice = ArgInt32(info, 2, "advice");
    std::shared_ptr<State> s = state_;
    s->busy++;
    return SyscallWorker::Start(
        info.Env(), [p = p, len = len, advice] { return static_cast<long>(::madvise(p, len, advice)); },
        [s](Napi::Env env, long rc, int err) {
          s->busy--;
          return ResultObject(env, rc, err);
        });
  }

  // touch(offset, length, write): faults in every page of the range by
  // reading a byte of it, or adding 0 to it atomically (a write fault that
  // cannot lose a concurrent guest write). For kernels without
  // MADV_POPULATE_*; the caller makes sure the range is accessible.
  Napi::Value Touch(const Napi::CallbackInfo& info) {
    auto [p, len] = Span(info);
    bool write = info.Length() > 2 && info[2].ToBoolean().Value();
    size_t page = PageSize();
    for (size_t off = 0; off < len; off += page) {
      if (write) {
        __atomic_fetch_add(p + off, 0, __ATOMIC_RELAXED);
      } else {
        (void)__atomic_load_n(p + off, __ATOMIC_RELAXED);
      }
    }
    return info.Env().Undefined();
  }

  Napi::Value Mprotect(const Napi::CallbackInfo& info) {
    auto [p, len] = Span(info);
    if (::mprotect(p, len, ArgInt32(info, 2, "prot")) < 0) ThrowErrno(info.Env(), errno, "mprotect", "mprotect");
    return info.Env().Undefined();
  }

  std::shared_ptr<State> state_;
  Napi::Reference<Napi::ArrayBuffer> buffer_;
};

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("Mapping", Mapping::Define(env));
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(PageSize())));
}

}  // namespace nkvm
