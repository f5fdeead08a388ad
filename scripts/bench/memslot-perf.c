/*
 * memslot-perf.c - plain C reference for node-kvm's memslot_perf workloads
 * (lib/selftests/memslot_perf-workload.ts; the kernel's memslot_perf_test
 * describes them): the same ioctls, madvise calls and guest/host handshake,
 * without Node, so the benchmark can print time per iteration for both.
 *
 *   memslot-perf --test map|unmap|unmap-chunked|move-active|move-inactive|rw
 *                --image FILE --cr3 N --mem-size N --test-size N
 *                --chunk-pages N --move-dest N --slots N
 *                [--seconds S] [--min-iterations N] [--verify 0|1]
 *
 * The guest is not built here: --image is the system memslot's contents
 * (page tables, the guest program at CODE_GPA, the TSS) as node-kvm's guest
 * kit made them for the same test, so both sides run the very same guest.
 * The test memory (--mem-size bytes from MEM_GPA) is one anonymous mapping
 * cut into --slots memslots (ids 1..slots, the last takes the remainder),
 * zeroed after the slots are added.
 *
 * A vcpu thread runs the guest: SYNC(0) = ready, DONE = finished, MMIO
 * writes allowed only in the moved half (move-active). The main thread runs
 * the host loop for at least --seconds and --min-iterations, then sets the
 * exit flag and joins the vcpu thread. Prints one JSON line:
 *   {"test":..,"slots":..,"pagesPerSlot":..,"iterations":..,"runtimeNs":..,
 *    "slotSetupNs":..,"mmioExits":..}
 * Any failure prints a message on stderr and exits 1.
 *
 * Build: build-reference.sh memslot-perf (gcc -std=c11 -O2 -Wall -Wextra -Werror -pthread).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROGRAM_NAME "memslot-perf"
#include "kvm-cpl3.h"

#define PAGE UINT64_C(4096)
#define MEM_GPA (UINT64_C(256) << 20)
#define MEM_EXTRA (UINT64_C(64) << 10)
#define TEST_GPA (MEM_GPA + MEM_EXTRA)
#define MOVE_SIZE (UINT64_C(3) * (UINT64_C(64) << 10))
#define VAL_1 UINT64_C(0x1122334455667788)
#define VAL_2 UINT64_C(0x99AABBCCDDEEFF00)
#define UCALL_PORT 0x1000
enum { UCALL_DONE = 1, UCALL_SYNC = 2, UCALL_ABORT = 3 };

/* The sync area at MEM_GPA (lib/selftests/memslot_perf-guest.ts). */
struct sync_area {
	uint32_t start;
	uint32_t exit;
	uint32_t sync;
	uint32_t pad;
	uint64_t move_area;
};

enum test { T_MAP, T_UNMAP, T_UNMAP_CHUNKED, T_MOVE_ACTIVE, T_MOVE_INACTIVE, T_RW };
static const char *const test_names[] = { "map", "unmap", "unmap-chunked", "move-active", "move-inactive", "rw" };

struct opts {
	enum test test;
	const char *image;
	uint64_t cr3, mem_size, test_size, chunk_pages, move_dest;
	uint32_t slots;
	double seconds;
	uint64_t min_iterations;
	bool verify;
};

struct ctx {
	struct opts o;
	int vm, vcpu;
	struct kvm_run *run;
	uint8_t *mem;
	uint64_t pages, per_slot;
	struct sync_area *sync;
	bool mmio_ok;
	uint64_t mmio_min, mmio_max, mmio_exits;
	sem_t ready;
	int stopped;		/* set (atomically) when the vcpu thread ends */
	char failure[256];	/* why, when it failed */
};

static uint64_t num(const char *s, const char *what)
{
	char *end;
	errno = 0;
	uint64_t v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		die("bad %s '%s'", what, s);
	return v;
}

static struct opts parse_args(int argc, char **argv)
{
	struct opts o = { .test = T_MAP, .seconds = 1, .min_iterations = 1, .chunk_pages = 1 };
	bool have_test = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			die("%s needs a value", a);
		const char *v = argv[++i];
		if (!strcmp(a, "--test")) {
			have_test = false;
			for (int t = 0; t <= T_RW; t++)
				if (!strcmp(v, test_names[t])) {
					o.test = (enum test)t;
					have_test = true;
				}
			if (!have_test)
				die("unknown test '%s'", v);
		} else if (!strcmp(a, "--image"))
			o.image = v;
		else if (!strcmp(a, "--cr3"))
			o.cr3 = num(v, a);
		else if (!strcmp(a, "--mem-size"))
			o.mem_size = num(v, a);
		else if (!strcmp(a, "--test-size"))
			o.test_size = num(v, a);
		else if (!strcmp(a, "--chunk-pages"))
			o.chunk_pages = num(v, a);
		else if (!strcmp(a, "--move-dest"))
			o.move_dest = num(v, a);
		else if (!strcmp(a, "--slots"))
			o.slots = (uint32_t)num(v, a);
		else if (!strcmp(a, "--seconds"))
			o.seconds = strtod(v, NULL);
		else if (!strcmp(a, "--min-iterations"))
			o.min_iterations = num(v, a);
		else if (!strcmp(a, "--verify"))
			o.verify = num(v, a) != 0;
		else
			die("unknown option %s", a);
	}
	if (!have_test || !o.image || !o.cr3 || !o.mem_size || !o.test_size || !o.slots || !o.chunk_pages)
		die("--test, --image, --cr3, --mem-size, --test-size, --chunk-pages and --slots are required");
	if (o.mem_size % PAGE || o.test_size % PAGE || o.mem_size / PAGE < o.slots)
		die("sizes must be page multiples with at least a page per slot");
	return o;
}

static void set_region(struct ctx *c, uint32_t slot, uint64_t gpa, uint64_t size, void *hva)
{
	struct bench_userspace_memory_region2 r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = (uintptr_t)hva,
	};
	if (xioctl(c->vm, BENCH_KVM_SET_USER_MEMORY_REGION2, &r))
		die("KVM_SET_USER_MEMORY_REGION2 slot %u gpa %#" PRIx64 ": %s", slot, gpa, strerror(errno));
}

/* Test slot index i (0-based; id i + 1): its gpa and pages. */
static uint64_t slot_gpa(const struct ctx *c, uint64_t i)
{
	return MEM_GPA + i * c->per_slot * PAGE;
}

static uint64_t slot_pages(const struct ctx *c, uint64_t i)
{
	return i == c->o.slots - 1 ? c->pages - i * c->per_slot : c->per_slot;
}

static void fail_vcpu(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail_vcpu(struct ctx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->failure, sizeof(c->failure), fmt, ap);
	va_end(ap);
}

static void *vcpu_thread(void *arg)
{
	struct ctx *c = arg;
	struct kvm_run *run = c->run;
	for (;;) {
		if (xioctl(c->vcpu, KVM_RUN, NULL)) {
			fail_vcpu(c, "KVM_RUN: %s", strerror(errno));
			break;
		}
		if (run->exit_reason == KVM_EXIT_MMIO) {
			uint64_t a = run->mmio.phys_addr;
			if (!c->mmio_ok || !run->mmio.is_write || run->mmio.len != 8 || a < c->mmio_min || a > c->mmio_max) {
				fail_vcpu(c, "unexpected MMIO %s of %u bytes at %#" PRIx64, run->mmio.is_write ? "write" : "read", run->mmio.len, a);
				break;
			}
			c->mmio_exits++;
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != UCALL_PORT) {
			fail_vcpu(c, "unexpected exit reason %u", run->exit_reason);
			break;
		}
		struct kvm_regs r;
		if (xioctl(c->vcpu, KVM_GET_REGS, &r)) {
			fail_vcpu(c, "KVM_GET_REGS: %s", strerror(errno));
			break;
		}
		unsigned cmd = r.rax & 0xff;
		if (cmd == UCALL_SYNC && r.rdi == 0) {
			sem_post(&c->ready);
			continue;
		}
		if (cmd != UCALL_DONE)
			fail_vcpu(c, cmd == UCALL_ABORT ? "guest assertion failed at %#llx" : "unexpected ucall, value %#llx",
				  (unsigned long long)r.rsi);
		break;
	}
	__atomic_store_n(&c->stopped, 1, __ATOMIC_RELEASE);
	sem_post(&c->ready);	/* in case main still waits for ready */
	return NULL;
}

static void check_vcpu(struct ctx *c)
{
	if (__atomic_load_n(&c->stopped, __ATOMIC_ACQUIRE))
		die("vcpu thread: %s", c->failure[0] ? c->failure : "the guest stopped in the middle of the test");
}

/* Raise the sync flag and spin until the guest clears it (or stops). */
static void host_sync(struct ctx *c)
{
	__atomic_store_n(&c->sync->sync, 1, __ATOMIC_RELEASE);
	for (uint64_t n = 1; __atomic_load_n(&c->sync->sync, __ATOMIC_ACQUIRE); n++)
		if (!(n & 0xfff))
			check_vcpu(c);
}

static uint64_t *at(struct ctx *c, uint64_t gpa)
{
	return (uint64_t *)(c->mem + (gpa - MEM_GPA));
}

/* MADV_DONTNEED over count pages from test page first, a call per slot piece. */
static void unmap(struct ctx *c, uint64_t first, uint64_t count)
{
	uint64_t page = (TEST_GPA - MEM_GPA) / PAGE + first;
	for (uint64_t done = 0; done < count;) {
		uint64_t slot = page / c->per_slot;
		if (slot > c->o.slots - 1)
			slot = c->o.slots - 1;
		uint64_t left = slot_pages(c, slot) - (page - slot * c->per_slot);
		uint64_t n = left < count - done ? left : count - done;
		if (madvise(c->mem + page * PAGE, n * PAGE, MADV_DONTNEED))
			die_errno("madvise(MADV_DONTNEED)");
		done += n;
		page += n;
	}
}

static void check(struct ctx *c, uint64_t page, uint64_t expected)
{
	if (!c->o.verify)
		return;
	uint64_t *p = at(c, TEST_GPA + page * PAGE);
	if (*p != expected)
		die("guest-written value did not read back at %#" PRIx64 ": %#" PRIx64, TEST_GPA + page * PAGE, *p);
	*p = 0;
}

static void loop_once(struct ctx *c)
{
	uint64_t pages = c->o.test_size / PAGE, half = pages / 2;
	switch (c->o.test) {
	case T_MAP:
		unmap(c, half, half);
		host_sync(c);
		check(c, 0, VAL_1);
		check(c, half - 1, VAL_1);
		unmap(c, 0, half);
		host_sync(c);
		check(c, half, VAL_2);
		check(c, pages - 1, VAL_2);
		break;
	case T_UNMAP:
	case T_UNMAP_CHUNKED:
		host_sync(c);
		check(c, 0, VAL_1);
		for (uint64_t p = 0; p < half; p += c->o.chunk_pages)
			unmap(c, p, c->o.chunk_pages);
		host_sync(c);
		check(c, half, VAL_2);
		for (uint64_t p = half; p < pages; p += c->o.chunk_pages)
			unmap(c, p, c->o.chunk_pages);
		break;
	case T_MOVE_ACTIVE:
	case T_MOVE_INACTIVE: {
		uint64_t last = c->o.slots - 1;
		void *hva = c->mem + (slot_gpa(c, last) - MEM_GPA);
		set_region(c, (uint32_t)last + 1, c->o.move_dest, slot_pages(c, last) * PAGE, hva);
		set_region(c, (uint32_t)last + 1, slot_gpa(c, last), slot_pages(c, last) * PAGE, hva);
		check_vcpu(c);
		break;
	}
	case T_RW:
		for (uint64_t g = TEST_GPA + PAGE / 2; g < TEST_GPA + c->o.test_size; g += PAGE)
			*at(c, g) = VAL_2;
		host_sync(c);
		for (uint64_t g = TEST_GPA; g < TEST_GPA + c->o.test_size; g += PAGE) {
			if (*at(c, g) != VAL_1)
				die("guest-written value did not read back at %#" PRIx64 ": %#" PRIx64, g, *at(c, g));
			*at(c, g) = 0;
		}
		host_sync(c);
		break;
	}
}

static uint8_t *map_aligned(uint64_t size)
{
	const uint64_t align = UINT64_C(2) << 20;
	uint8_t *p = mmap(NULL, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die_errno("mmap");
	uint8_t *a = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + size, (size_t)(p + size + align - (a + size)));
	return a;
}

int main(int argc, char **argv)
{
	struct ctx c = { .o = parse_args(argc, argv) };
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die_errno("/dev/kvm");
	c.vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (c.vm < 0)
		die_errno("KVM_CREATE_VM");

	/* The system slot, from node-kvm's image of it. */
	int fd = open(c.o.image, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die("%s: %s", c.o.image, strerror(errno));
	uint64_t sys_size = (uint64_t)st.st_size;
	if (!sys_size || sys_size % (UINT64_C(2) << 20) || sys_size > MEM_GPA)
		die("%s: the image must be a multiple of 2 MiB below MEM_GPA", c.o.image);
	uint8_t *sys = map_aligned(sys_size);
	for (uint64_t got = 0; got < sys_size;) {
		ssize_t n = read(fd, sys + got, sys_size - got);
		if (n <= 0)
			die("%s: short read", c.o.image);
		got += (uint64_t)n;
	}
	close(fd);
	set_region(&c, 0, 0, sys_size, sys);

	c.vcpu = ioctl(c.vm, KVM_CREATE_VCPU, 0);
	if (c.vcpu < 0)
		die_errno("KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		die_errno("KVM_GET_VCPU_MMAP_SIZE");
	c.run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c.vcpu, 0);
	if (c.run == MAP_FAILED)
		die_errno("mmap(kvm_run)");
	set_vcpu_state(c.vcpu, supported_cpuid(kvm), c.o.cr3);

	/* The test memory, cut into slots as upstream does (timed), then zeroed. */
	c.pages = c.o.mem_size / PAGE;
	c.per_slot = c.pages / c.o.slots;
	c.mem = map_aligned(c.o.mem_size);
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < c.o.slots; i++)
		set_region(&c, (uint32_t)i + 1, slot_gpa(&c, i), slot_pages(&c, i) * PAGE, c.mem + (slot_gpa(&c, i) - MEM_GPA));
	uint64_t slot_setup_ns = now_ns() - t0;
	memset(c.mem, 0, c.o.mem_size);
	c.sync = (struct sync_area *)c.mem;

	if (c.o.test == T_MOVE_ACTIVE || c.o.test == T_MOVE_INACTIVE) {
		bool active = c.o.test == T_MOVE_ACTIVE;
		uint64_t src = slot_gpa(&c, c.o.slots - 1);
		if (active && slot_pages(&c, c.o.slots - 1) * PAGE < MOVE_SIZE / 2)
			die("the last slot is smaller than half the move area: use fewer slots");
		uint64_t area = src - (active ? MOVE_SIZE / 2 : MOVE_SIZE);
		if (area < TEST_GPA)
			die("the move area would start before the test area");
		c.sync->move_area = area;
		c.mmio_ok = active;
		c.mmio_min = src;
		c.mmio_max = src + MOVE_SIZE / 2 - 1;
	}

	if (sem_init(&c.ready, 0, 0))
		die_errno("sem_init");
	pthread_t thread;
	if (pthread_create(&thread, NULL, vcpu_thread, &c))
		die("pthread_create failed");
	while (sem_wait(&c.ready) && errno == EINTR)
		;
	check_vcpu(&c);

	uint64_t limit = (uint64_t)(c.o.seconds * 1e9), iterations = 0, elapsed;
	t0 = now_ns();
	__atomic_store_n(&c.sync->start, 1, __ATOMIC_RELEASE);
	for (;;) {
		elapsed = now_ns() - t0;
		if (elapsed >= limit && iterations >= c.o.min_iterations)
			break;
		loop_once(&c);
		iterations++;
	}
	__atomic_store_n(&c.sync->exit, 1, __ATOMIC_RELEASE);
	pthread_join(thread, NULL);
	if (c.failure[0])
		die("vcpu thread: %s", c.failure);
	printf("{\"test\":\"%s\",\"slots\":%u,\"pagesPerSlot\":%" PRIu64 ",\"iterations\":%" PRIu64
	       ",\"runtimeNs\":%" PRIu64 ",\"slotSetupNs\":%" PRIu64 ",\"mmioExits\":%" PRIu64 "}\n",
	       test_names[c.o.test], c.o.slots, c.per_slot, iterations, elapsed, slot_setup_ns, c.mmio_exits);
	return 0;
}
