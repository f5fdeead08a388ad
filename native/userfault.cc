// userfaultfd: page faults in a registered range are served by a thread of our
// own (poll on the uffd; never the libuv pool, never the event loop), the way a
// VMM restores a snapshot lazily. MISSING mode (anonymous memory) resolves a
// fault with UFFDIO_COPY or UFFDIO_ZEROPAGE; MINOR mode (shmem/memfd, whose
// pages are already in the page cache) optionally rewrites the page through a
// second mapping of the file and then maps it with UFFDIO_CONTINUE.
//
// Who decides how a fault is answered:
// - the native default (zero, copy from bytes copied in at registration, copy
//   from a file with pread, or keep the page cache contents in MINOR mode);
// - or JS: the thread queues a request on a thread-safe function and waits;
//   JS answers with respond(id, kind, bytes) whenever it likes (a Promise may
//   settle later). A fault taken by the JS thread itself (it touched the
//   range) could never be answered by JS, so it gets the native default and a
//   report instead of a deadlock. close() answers pending requests with the
//   native default, so a vcpu is never left waiting.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "uffd_uapi.h"

namespace nkvm {
namespace {

// How a fault is answered (also the `kind` of respond()).
enum Answer : int32_t {
  kDefault = 0,  // the native default policy
  kZero = 1,
  kBytes = 2,    // the bytes JS gave, zero-padded to the granule
  kKeep = 3,     // MINOR: map the page cache contents as they are
};

// The native default policy.
enum Policy : int32_t {
  kPolicyZero = 0,
  kPolicyBytes = 1,  // from the bytes given at registration
  kPolicyFile = 2,   // pread from a file
  kPolicyKeep = 3,   // MINOR only
};

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

pid_t Gettid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// A userfaultfd that sees kernel-mode faults too (KVM touches guest memory from
// the kernel), non-blocking. userfaultfd(2) needs CAP_SYS_PTRACE for that unless
// vm.unprivileged_userfaultfd is 1; /dev/userfaultfd is the other way in.
int OpenUserfaultfd(int* err) {
  long fd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0) return static_cast<int>(fd);
  int first = errno;
  int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    int r = ::ioctl(dev, kUserfaultfdIocNew, O_CLOEXEC | O_NONBLOCK);
    int e = errno;
    ::close(dev);
    if (r >= 0) return r;
    *err = e;
    return -1;
  }
  *err = first;
  return -1;
}

struct Request {
  uint64_t id;
  uint64_t offset;
  uint64_t flags;
  uint32_t tid;
  bool done = false;
  int32_t answer = kDefault;
  std::vector<uint8_t> bytes;
};

// What the thread tells JS: a fault to decide, a report (an error message),
// or, with `jsGone`, a ping asking whether JS can still answer at all.
struct Message {
  std::shared_ptr<Request> request;  // null for a report or a ping
  std::string report;
  std::shared_ptr<std::atomic<bool>> jsGone;  // set for a ping
};

// JS side of a message: onMessage(id, offset, flags, tid) for a fault,
// onMessage(0n, 0n, 0n, 0, text) for a report.
void CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t*, Message* m) {
  std::unique_ptr<Message> owned(m);
  if (m->jsGone) {
    // A worker being terminated never answers the faults it holds, and Node
    // waits for the thread-pool call stuck on them before it runs our
    // cleanup hook: tell the thread to answer them with the default.
    if (env == nullptr || !CanCallJs(env)) m->jsGone->store(true);
    return;
  }
  if (env == nullptr || fn.IsEmpty()) return;
  try {
    if (m->request) {
      fn.Call({Napi::BigInt::New(env, m->request->id), Napi::BigInt::New(env, m->request->offset), Napi::BigInt::New(env, m->request->flags),
               Napi::Number::New(env, m->request->tid)});
    } else {
      fn.Call({Napi::BigInt::New(env, uint64_t{0}), Napi::BigInt::New(env, uint64_t{0}), Napi::BigInt::New(env, uint64_t{0}), Napi::Number::New(env, 0),
               Napi::String::New(env, m->report)});
    }
  } catch (const Napi::Error&) {
    // The TypeScript layer catches everything itself; a throw here can only be
    // a bug there. The fault is answered with the default when closed.
  }
}

using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, Message, CallJs>;

struct Counters {
  std::atomic<uint64_t> faults{0}, zeroed{0}, copied{0}, continued{0}, jsAnswers{0}, defaults{0}, errors{0}, bytes{0};
  std::atomic<uint64_t> latencyNs{0}, maxLatencyNs{0};
};

class Server {
 public:
  Server(int uffd, int stopfd) : uffd_(uffd), stopfd_(stopfd) {}
  ~Server() {
    Stop();
    if (alias_ != nullptr) ::munmap(alias_, length_);
    if (file_ >= 0) ::close(file_);
    ::close(uffd_);
    ::close(stopfd_);
  }

  // Set before Start(), read-only afterwards.
  uint64_t start_ = 0, length_ = 0, granule_ = 0;
  bool minor_ = false;
  int32_t policy_ = kPolicyZero;
  std::vector<uint8_t> source_;
  int file_ = -1;
  uint64_t fileOffset_ = 0;
  uint8_t* alias_ = nullptr;
  bool useJs_ = false;
  pid_t jsTid_ = 0;
  Tsfn tsfn_;
  Counters counters_;

  void Start() { thread_ = std::thread([this] { Loop(); }); }

  // Stops the thread (answering anything pending with the default) and joins it.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    cv_.notify_all();
    uint64_t one = 1;
    ssize_t n = ::write(stopfd_, &one, sizeof one);
    (void)n;
    if (thread_.joinable()) thread_.join();
    if (tsfn_) tsfn_.Release();
  }

  // JS's answer to request `id`; false when it is no longer waited for.
  bool Respond(uint64_t id, int32_t answer, const uint8_t* data, size_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return false;
    Request& r = *it->second;
    r.answer = answer;
    if (answer == kBytes) r.bytes.assign(data, data + (len < granule_ ? len : granule_));
    r.done = true;
    pending_.erase(it);
    cv_.notify_all();
    return true;
  }

 private:
  int uffd_;
  int stopfd_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
  uint64_t nextId_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Request>> pending_;
  // Set (by a ping's CallJs) once this Userfault's JS thread can no longer run JavaScript.
  std::shared_ptr<std::atomic<bool>> jsGone_ = std::make_shared<std::atomic<bool>>(false);
  std::vector<uint8_t> page_;  // the thread's staging buffer (one granule)

  void Report(const std::string& text) {
    counters_.errors++;
    if (!tsfn_) return;
    auto* m = new Message{nullptr, text, nullptr};
    if (tsfn_.NonBlockingCall(m) != napi_ok) delete m;
  }

  void Loop() {
    page_.assign(granule_, 0);
    pollfd fds[2] = {{uffd_, POLLIN, 0}, {stopfd_, POLLIN, 0}};
    for (;;) {
      int r = ::poll(fds, 2, -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        Report(std::string("poll on the userfaultfd failed: ") + std::strerror(errno));
        return;
      }
      if (fds[1].revents != 0) return;
      if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
        Report("the userfaultfd reported an error (POLLERR/POLLHUP)");
        return;
      }
      UffdMsg msgs[16];
      ssize_t n = ::read(uffd_, msgs, sizeof msgs);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        Report(std::string("read from the userfaultfd failed: ") + std::strerror(errno));
        return;
      }
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(UffdMsg)); i++) {
        if (msgs[i].event == kUffdEventPagefault) Serve(msgs[i]);
      }
    }
  }

  void Serve(const UffdMsg& msg) {
    auto t0 = std::chrono::steady_clock::now();
    counters_.faults++;
    uint64_t addr = msg.address & ~(granule_ - 1);
    if (addr < start_) addr = start_;
    uint64_t off = addr - start_;
    uint64_t len = granule_;
    if (off + len > length_) len = length_ - off;

    int32_t answer = kDefault;
    std::shared_ptr<Request> req;
    if (useJs_ && static_cast<pid_t>(msg.ptid) == jsTid_) {
      Report("the JS thread itself touched a userfault range served by JS (it could never answer); served with the default policy at offset 0x" + Hex(off));
    } else if (useJs_) {
      req = std::make_shared<Request>();
      req->offset = off;
      req->flags = msg.flags;
      req->tid = msg.ptid;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!stopped_) {
          req->id = nextId_++;
          pending_[req->id] = req;
        } else {
          req.reset();
        }
      }
      if (req) {
        auto* m = new Message{req, {}, nullptr};
        if (tsfn_.NonBlockingCall(m) != napi_ok) {
          delete m;
          std::lock_guard<std::mutex> lock(mu_);
          pending_.erase(req->id);
          req.reset();
        }
      }
      if (req) {
        std::unique_lock<std::mutex> lock(mu_);
        auto settled = [&] { return req->done || stopped_ || jsGone_->load(); };
        // While JS takes long, ask every 100 ms whether it can still answer.
        while (!cv_.wait_for(lock, std::chrono::milliseconds(100), settled)) {
          lock.unlock();
          auto* ping = new Message{nullptr, {}, jsGone_};
          if (tsfn_.NonBlockingCall(ping) != napi_ok) {
            delete ping;
            jsGone_->store(true);  // the function is closing: nobody will answer
          }
          lock.lock();
        }
        if (req->done) {
          answer = req->answer;
          counters_.jsAnswers++;
        } else {
          pending_.erase(req->id);
        }
      }
    }
    if (answer == kDefault) counters_.defaults++;
    Resolve(addr, off, len, answer, req.get(), (msg.flags & kUffdPagefaultFlagWrite) != 0);
    uint64_t ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    counters_.latencyNs += ns;
    uint64_t max = counters_.maxLatencyNs.load();
    while (ns > max && !counters_.maxLatencyNs.compare_exchange_weak(max, ns)) {
    }
  }

  static std::string Hex(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
    return buf;
  }

  // Fills page_[0, len) with what the answer (or the default policy) says;
  // returns false for "zero" (no bytes needed) and for "keep".
  bool Contents(uint64_t off, uint64_t len, int32_t answer, const Request* req, bool* keep) {
    *keep = false;
    if (answer == kZero) return false;
    if (answer == kKeep) {
      *keep = minor_;
      return false;
    }
    if (answer == kBytes && req != nullptr) {
      size_t n = req->bytes.size() < len ? req->bytes.size() : len;
      std::memcpy(page_.data(), req->bytes.data(), n);
      std::memset(page_.data() + n, 0, len - n);
      return true;
    }
    switch (policy_) {
      case kPolicyBytes: {
        size_t have = off < source_.size() ? source_.size() - off : 0;
        size_t n = have < len ? have : len;
        if (n) std::memcpy(page_.data(), source_.data() + off, n);
        std::memset(page_.data() + n, 0, len - n);
        return true;
      }
      case kPolicyFile: {
        size_t done = 0;
        while (done < len) {
          ssize_t r = ::pread(file_, page_.data() + done, len - done, static_cast<off_t>(fileOffset_ + off + done));
          if (r < 0 && errno == EINTR) continue;
          if (r < 0) {
            Report(std::string("pread from the source file failed: ") + std::strerror(errno) + "; served zeros");
            break;
          }
          if (r == 0) break;
          done += static_cast<size_t>(r);
        }
        std::memset(page_.data() + done, 0, len - done);
        return true;
      }
      case kPolicyKeep:
        *keep = minor_;
        return false;
      default:
        return false;
    }
  }

  void Resolve(uint64_t addr, uint64_t off, uint64_t len, int32_t answer, const Request* req, bool write) {
    bool keep = false;
    bool bytes = Contents(off, len, answer, req, &keep);
    // UFFDIO_ZEROPAGE maps the shared zero page read-only: a write fault
    // answered that way faults again at once (copy-on-write, one more exit
    // for a guest). Zeros for a write are copied in as a writable page.
    if (!bytes && !minor_ && write) {
      std::memset(page_.data(), 0, len);
      bytes = true;
    }
    if (minor_) {
      // Rewrite the page cache through the alias, then map it here.
      if (!keep) {
        if (bytes) std::memcpy(alias_ + off, page_.data(), len);
        else std::memset(alias_ + off, 0, len);
      }
      UffdioContinue c{{addr, len}, 0, 0};
      Precount(counters_.continued, len);
      Count(counters_.continued, len, Ioctl(kUffdioContinue, &c, "UFFDIO_CONTINUE", off));
      return;
    }
    if (bytes) {
      UffdioCopy c{addr, reinterpret_cast<uint64_t>(page_.data()), len, 0, 0};
      Precount(counters_.copied, len);
      Count(counters_.copied, len, Ioctl(kUffdioCopy, &c, "UFFDIO_COPY", off));
    } else {
      UffdioZeropage z{{addr, len}, 0, 0};
      Precount(counters_.zeroed, len);
      Count(counters_.zeroed, len, Ioctl(kUffdioZeropage, &z, "UFFDIO_ZEROPAGE", off));
    }
  }

  // Counts an answer. The counters go up before the ioctl (which wakes the
  // faulting thread, which may read them at once) and back down if it did nothing.
  void Count(std::atomic<uint64_t>& which, uint64_t len, bool ok) {
    if (!ok) {
      which--;
      counters_.bytes -= len;
    }
  }
  void Precount(std::atomic<uint64_t>& which, uint64_t len) {
    which++;
    counters_.bytes += len;
  }

  // One resolving ioctl. EEXIST: another fault already resolved the page (fine).
  // EAGAIN: the mappings changed under us; retry. Anything else is reported, and
  // the range is woken anyway so the faulting thread retries rather than hangs.
  template <typename T>
  bool Ioctl(unsigned long op, T* arg, const char* name, uint64_t off) {
    for (int attempt = 0; attempt < 1000; attempt++) {
      T copy = *arg;
      if (::ioctl(uffd_, op, &copy) == 0) return true;
      if (errno == EEXIST) return false;
      if (errno == EAGAIN || errno == EINTR) continue;
      int e = errno;
      Report(std::string(name) + " at offset 0x" + Hex(off) + " failed: " + std::strerror(e));
      return false;
    }
    Report(std::string(name) + " at offset 0x" + Hex(off) + " kept failing with EAGAIN");
    return false;
  }
};


class Userfault : public Napi::ObjectWrap<Userfault> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Userfault",
                       {
                           InstanceMethod<&Userfault::Respond>("respond"),
                           InstanceMethod<&Userfault::Stats>("stats"),
                           InstanceMethod<&Userfault::Close>("close"),
                       });
  }

  // new Userfault(start, length, mode ('missing' 0 | 'minor' 1), granule,
  //   policy, sourceBytes | null, fileFd, fileOffset, minorFd, minorOffset, onMessage | null,
  //   faultsToJs): with faultsToJs, onMessage decides every fault; it always gets reports.
  explicit Userfault(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Userfault>(info) {
    Napi::Env env = info.Env();
    uint64_t start = ArgUint64(info, 0, "start");
    uint64_t length = ArgUint64(info, 1, "length");
    int32_t mode = ArgInt32(info, 2, "mode");
    uint64_t granule = ArgUint64(info, 3, "granule");
    int32_t policy = ArgInt32(info, 4, "policy");
    int32_t fileFd = ArgInt32(info, 6, "fileFd");
    uint64_t fileOffset = ArgUint64(info, 7, "fileOffset");
    int32_t minorFd = ArgInt32(info, 8, "minorFd");
    uint64_t minorOffset = ArgUint64(info, 9, "minorOffset");
    size_t page = PageSize();
    if (mode != 0 && mode != 1) throw Napi::RangeError::New(env, "mode must be 0 (missing) or 1 (minor)");
    if (granule < page || (granule & (granule - 1)) != 0) throw Napi::RangeError::New(env, "granule must be a power of two >= the page size");
    if (start % page != 0 || length == 0 || length % page != 0) throw Napi::RangeError::New(env, "start and length must be page aligned, length non-zero");
    if (policy < kPolicyZero || policy > kPolicyKeep) throw Napi::RangeError::New(env, "unknown policy");
    if (mode == 1 && minorFd < 0) throw Napi::RangeError::New(env, "minor mode needs the file's fd");
    bool useJs = info.Length() > 11 && info[11].ToBoolean().Value();

    int err = 0;
    int uffd = OpenUserfaultfd(&err);
    if (uffd < 0) ThrowErrno(env, err, "userfaultfd", "userfaultfd");
    int stopfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stopfd < 0) {
      err = errno;
      ::close(uffd);
      ThrowErrno(env, err, "eventfd", "userfaultfd");
    }
    server_ = std::make_unique<Server>(uffd, stopfd);
    Server& s = *server_;
    s.start_ = start;
    s.length_ = length;
    s.granule_ = granule;
    s.minor_ = mode == 1;
    s.policy_ = policy;
    s.jsTid_ = Gettid();
    s.useJs_ = useJs && info.Length() > 10 && info[10].IsFunction();
    if (policy == kPolicyBytes && info[5].IsTypedArray()) {
      Napi::Uint8Array src = ArgBytes(info, 5, "sourceBytes");
      s.source_.assign(src.Data(), src.Data() + src.ByteLength());
    }
    if (policy == kPolicyFile) {
      s.file_ = ::fcntl(fileFd, F_DUPFD_CLOEXEC, 0);
      if (s.file_ < 0) ThrowErrno(env, errno, "fcntl", "userfaultfd source file");
      s.fileOffset_ = fileOffset;
    }
    if (s.minor_) {
      void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, minorFd, static_cast<off_t>(minorOffset));
      if (p == MAP_FAILED) ThrowErrno(env, errno, "mmap", "userfaultfd alias mapping");
      s.alias_ = static_cast<uint8_t*>(p);
    }

    UffdioApi api{kUffdApi, kUffdFeatureThreadId | (s.minor_ ? kUffdFeatureMinorShmem : 0), 0};
    if (::ioctl(uffd, kUffdioApi, &api) != 0) ThrowErrno(env, errno, "ioctl", "UFFDIO_API");
    UffdioRegister reg{{start, length}, s.minor_ ? kUffdRegisterModeMinor : kUffdRegisterModeMissing, 0};
    if (::ioctl(uffd, kUffdioRegister, &reg) != 0) ThrowErrno(env, errno, "ioctl", "UFFDIO_REGISTER");

    if (info.Length() > 10 && info[10].IsFunction()) {
      s.tsfn_ = Tsfn::New(env, info[10].As<Napi::Function>(), "node-kvm userfault", 0, 1);
      // An open userfault alone does not keep the process alive.
      s.tsfn_.Unref(env);
    }
    s.Start();
    napi_add_env_cleanup_hook(env, Cleanup, this);
    env_ = env;
    hooked_ = true;
  }

  // Collected without close(): stop the thread and drop the cleanup hook,
  // which would otherwise point at freed memory at environment teardown.
  ~Userfault() override { Shutdown(env_); }

 private:
  std::unique_ptr<Server> server_;
  napi_env env_ = nullptr;
  bool hooked_ = false;

  static void Cleanup(void* arg) {
    auto* self = static_cast<Userfault*>(arg);
    self->hooked_ = false;
    self->server_.reset();
  }

  void Shutdown(napi_env env) {
    if (hooked_ && env != nullptr) napi_remove_env_cleanup_hook(env, Cleanup, this);
    hooked_ = false;
    server_.reset();  // stops and joins the thread, closes the uffd (unregisters)
  }

  // respond(id, answer, bytes?): false when that fault is no longer waited for.
  Napi::Value Respond(const Napi::CallbackInfo& info) {
    uint64_t id = ArgUint64(info, 0, "id");
    int32_t answer = ArgInt32(info, 1, "answer");
    if (answer < kDefault || answer > kKeep) throw Napi::RangeError::New(info.Env(), "unknown answer");
    if (!server_) return Napi::Boolean::New(info.Env(), false);
    const uint8_t* data = nullptr;
    size_t len = 0;
    if (answer == kBytes) {
      Napi::Uint8Array b = ArgBytes(info, 2, "bytes");
      data = b.Data();
      len = b.ByteLength();
    }
    return Napi::Boolean::New(info.Env(), server_->Respond(id, answer, data, len));
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!server_) return o;
    const Counters& c = server_->counters_;
    auto set = [&](const char* k, uint64_t v) { o.Set(k, Napi::BigInt::New(env, v)); };
    set("faults", c.faults);
    set("zeroed", c.zeroed);
    set("copied", c.copied);
    set("continued", c.continued);
    set("jsAnswers", c.jsAnswers);
    set("defaults", c.defaults);
    set("errors", c.errors);
    set("bytes", c.bytes);
    set("latencyNs", c.latencyNs);
    set("maxLatencyNs", c.maxLatencyNs);
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown(env_);
    return info.Env().Undefined();
  }
};

// The features this kernel's userfaultfd offers (UFFDIO_API with none asked),
// or throws the errno of opening one.
Napi::Value UserfaultFeatures(const Napi::CallbackInfo& info) {
  int err = 0;
  int fd = OpenUserfaultfd(&err);
  if (fd < 0) ThrowErrno(info.Env(), err, "userfaultfd", "userfaultfd");
  UffdioApi api{kUffdApi, 0, 0};
  int r = ::ioctl(fd, kUffdioApi, &api);
  err = errno;
  ::close(fd);
  if (r != 0) ThrowErrno(info.Env(), err, "ioctl", "UFFDIO_API");
  return Napi::BigInt::New(info.Env(), api.features);
}

}  // namespace

void InitUserfault(Napi::Env env, Napi::Object exports) {
  exports.Set("Userfault", Userfault::Define(env));
  exports.Set("userfaultFeatures", Napi::Function::New(env, UserfaultFeatures, "userfaultFeatures"));
}

}  // namespace nkvm
