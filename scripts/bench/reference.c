/*
 * reference.c - plain C reference for node-kvm's guest first-touch benchmark.
 *
 * Measures what it costs a guest to touch every 4 KiB page of a fresh memory
 * region once (first pass) and again (second pass), for several ways of
 * backing and preparing that memory, so that the Node benchmark can be
 * compared with it (Node/C ratio).
 *
 *   reference --size BYTES --backing anon|thp|gmem
 *             --method demand|populate|prefault-kernel
 *             [--threads N] [--access write|read] [--populate-access write|read]
 *             [--reps R] [--warmup W] [--timeout S]
 *   reference --memset --size BYTES [--backing anon|thp] [--reps R] [--warmup W]
 *   reference --exits out|mmio [--vcpus N] [--threads 1|N] [--iterations K]
 *             [--reps R] [--warmup W] [--timeout S]
 *
 * --exits measures the exit round trip instead (see "exits" below): a guest
 * doing OUT (or an MMIO read the host answers) in a loop, re-entered at once.
 *
 * Prints one JSON object per repetition on stdout (JSON lines); W warm-up
 * repetitions run first and are not printed. Each repetition uses a fresh VM.
 * Times are CLOCK_MONOTONIC nanoseconds:
 *
 *   allocNs       mmap (anon/thp) or KVM_CREATE_GUEST_MEMFD + mmap (gmem)
 *   fillNs        MADV_POPULATE_* (populate: _WRITE or _READ as --access says,
 *                 or as --populate-access says when given) or KVM_PRE_FAULT_MEMORY loop
 *                 (prefault-kernel); 0 for demand
 *   prepNs        allocNs + fillNs: everything before the first guest pass
 *                 that depends on the method (VM, memslot and vcpu creation
 *                 are fixed costs, reported apart as setupNs / slotNs)
 *   firstPassNs   KVM_RUN until the guest's OUT after touching every page
 *   secondPassNs  KVM_RUN resuming the guest, which touches every page again
 *   totalNsPerPage = (prepNs + firstPassNs) / pages
 *
 * plus the vcpu stats "exits" (per pass) and "pf_taken" (first pass), and the
 * VM stats pages_4k / pages_2m / pages_1g after the first pass (null when the
 * kernel lacks the stat).
 *
 * Warm-up matters when the host is itself a VM with free page reporting
 * (virtio_balloon): memory freed for more than a couple of seconds goes back
 * to the outer hypervisor, and touching it again costs an outer fault per
 * page. Repetitions that follow each other quickly reuse warm memory.
 *
 * A method the kernel does not support (KVM_PRE_FAULT_MEMORY gives EOPNOTSUPP
 * under kvm_pvm, for instance) prints one {"error":"EOPNOTSUPP", ...} object
 * and exits 0, so the caller can record it as unavailable. Any other failure
 * prints a message on stderr and exits 1.
 *
 * The guest is a 64-bit long-mode guest running at CPL3 (under kvm_pvm only
 * that runs natively; every other mode is emulated instruction by instruction
 * and takes no shadow page faults). Guest physical layout:
 *
 *   slot 0, gpa 0, 2 MiB "system" region:
 *     0x01000 PML4, 0x02000 PDPT, 0x03000-0x06fff page directories mapping
 *     0-4 GiB 1:1 with 2 MiB pages, 0x10000 code, 0x30000 stack top and TSS,
 *     0x40000.. page directories for the measured region
 *   slot 1, gpa 4 GiB: the measured region, mapped 1:1 with 2 MiB pages.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -pthread (see
 * build-reference.sh next to this file).
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM_NAME "reference"
#include "kvm-cpl3.h"

/* ---- KVM definitions newer than the distro's 6.1 <linux/kvm.h> ---------- */

struct bench_create_guest_memfd {
	uint64_t size;
	uint64_t flags;
	uint64_t reserved[6];
};
static_assert(sizeof(struct bench_create_guest_memfd) == 64, "guest_memfd struct");
#define BENCH_KVM_CREATE_GUEST_MEMFD 0xC040AED4UL
static_assert(BENCH_KVM_CREATE_GUEST_MEMFD ==
	      _IOWR(KVMIO, 0xd4, struct bench_create_guest_memfd), "ioctl number");
#define BENCH_GUEST_MEMFD_FLAG_MMAP (1ULL << 0)
#define BENCH_GUEST_MEMFD_FLAG_INIT_SHARED (1ULL << 1)

#define BENCH_KVM_MEM_GUEST_MEMFD (1U << 2)

struct bench_pre_fault_memory {
	uint64_t gpa;
	uint64_t size;
	uint64_t flags;
	uint64_t padding[5];
};
static_assert(sizeof(struct bench_pre_fault_memory) == 64, "pre-fault struct");
#define BENCH_KVM_PRE_FAULT_MEMORY 0xC040AED5UL
static_assert(BENCH_KVM_PRE_FAULT_MEMORY ==
	      _IOWR(KVMIO, 0xd5, struct bench_pre_fault_memory), "ioctl number");

/* ---- layout ------------------------------------------------------------- */

#define PAGE_4K UINT64_C(0x1000)
#define PAGE_2M UINT64_C(0x200000)
#define SYS_SIZE PAGE_2M
#define PML4_GPA UINT64_C(0x1000)
#define PDPT_GPA UINT64_C(0x2000)
#define LOW_PD_GPA UINT64_C(0x3000)	/* four PDs: 0-4 GiB */
#define REGION_PD_GPA UINT64_C(0x40000) /* one PD per GiB of the measured region */
#define REGION_GPA UINT64_C(0x100000000)
#define IO_PORT 0x1000


/* Largest region whose page directories fit between REGION_PD_GPA and the end
 * of the system region, and whose PDPT entries fit in the one PDPT. */
#define MAX_REGION_GIB ((SYS_SIZE - REGION_PD_GPA) / PAGE_4K)
static_assert(4 + MAX_REGION_GIB <= 512, "PDPT entries");

/* ---- options ------------------------------------------------------------ */

enum backing { BACKING_ANON, BACKING_THP, BACKING_GMEM };
enum method { METHOD_DEMAND, METHOD_POPULATE, METHOD_PREFAULT, METHOD_MEMSET };

static const char *const backing_names[] = { "anon", "thp", "gmem" };
static const char *const method_names[] = { "demand", "populate", "prefault-kernel", "memset" };

struct options {
	uint64_t size;
	enum backing backing;
	enum method method;
	int threads;
	bool read;
	bool populate_read;	/* MADV_POPULATE_READ rather than _WRITE */
	int reps;
	int warmup;
	unsigned timeout_s;
	int exits;		/* 0: first-touch bench; EXITS_OUT / EXITS_MMIO */
	int vcpus;
	int iterations;
};

enum { EXITS_OUT = 1, EXITS_MMIO = 2 };

/* ---- small helpers ------------------------------------------------------ */

static uint64_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s)
		die("bad size '%s'", s);
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		die("bad size '%s'", s);
	return v;
}

static int lookup(const char *value, const char *const *names, int count, const char *what)
{
	for (int i = 0; i < count; i++)
		if (!strcmp(value, names[i]))
			return i;
	die("unknown %s '%s'", what, value);
}

static void usage(void)
{
	fputs("usage: reference --size BYTES --backing anon|thp|gmem\n"
	      "                 --method demand|populate|prefault-kernel\n"
	      "                 [--threads N] [--access write|read] [--populate-access write|read]\n"
	      "                 [--reps R] [--warmup W] [--timeout S]\n"
	      "       reference --memset --size BYTES [--backing anon|thp] [--reps R] [--warmup W]\n"
	      "       reference --exits out|mmio [--vcpus N] [--threads 1|N] [--iterations K]\n"
	      "                 [--reps R] [--warmup W] [--timeout S]\n",
	      stderr);
	exit(2);
}

static struct options parse_args(int argc, char **argv)
{
	struct options o = { .backing = BACKING_ANON, .method = METHOD_DEMAND,
			     .threads = 1, .reps = 1, .timeout_s = 300, .vcpus = 1, .iterations = 20000 };
	bool have_method = false;
	int populate_access = -1;	/* -1: follow --access */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--memset")) {
			o.method = METHOD_MEMSET;
			have_method = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			usage();
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (!strcmp(a, "--size"))
			o.size = parse_size(v);
		else if (!strcmp(a, "--backing"))
			o.backing = lookup(v, backing_names, 3, "backing");
		else if (!strcmp(a, "--method")) {
			o.method = lookup(v, method_names, 3, "method");
			have_method = true;
		} else if (!strcmp(a, "--threads"))
			o.threads = atoi(v);
		else if (!strcmp(a, "--access"))
			o.read = lookup(v, (const char *const[]){ "write", "read" }, 2, "access");
		else if (!strcmp(a, "--populate-access"))
			populate_access = lookup(v, (const char *const[]){ "write", "read" }, 2, "populate access");
		else if (!strcmp(a, "--reps"))
			o.reps = atoi(v);
		else if (!strcmp(a, "--warmup"))
			o.warmup = atoi(v);
		else if (!strcmp(a, "--timeout"))
			o.timeout_s = (unsigned)atoi(v);
		else if (!strcmp(a, "--exits")) {
			o.exits = 1 + lookup(v, (const char *const[]){ "out", "mmio" }, 2, "exits guest");
			have_method = true;
		} else if (!strcmp(a, "--vcpus"))
			o.vcpus = atoi(v);
		else if (!strcmp(a, "--iterations"))
			o.iterations = atoi(v);
		else
			usage();
	}
	if (o.exits) {
		if (o.vcpus < 1 || o.vcpus > 64)
			die("--vcpus must be 1..64");
		if (o.threads != 1 && o.threads != o.vcpus)
			die("--threads must be 1 (one thread runs every vcpu in turn) or --vcpus (a thread per vcpu)");
		if (o.iterations < 1 || o.reps < 1 || o.warmup < 0)
			die("--iterations and --reps must be at least 1, --warmup at least 0");
		return o;
	}
	if (!have_method || !o.size)
		usage();
	o.populate_read = populate_access < 0 ? o.read : populate_access == 1;
	if (o.size % PAGE_2M)
		die("--size must be a multiple of 2 MiB (the region is mapped with 2 MiB pages)");
	if (o.size > MAX_REGION_GIB << 30)
		die("--size must be at most %llu GiB", (unsigned long long)MAX_REGION_GIB);
	if (o.threads < 1 || o.threads > 256)
		die("--threads must be 1..256");
	if (o.reps < 1 || o.warmup < 0)
		die("--reps must be at least 1 and --warmup at least 0");
	if (o.method == METHOD_MEMSET && o.backing == BACKING_GMEM)
		die("--memset takes --backing anon or thp");
	return o;
}

/* ---- memory ------------------------------------------------------------- */

/* Reserve size + 2 MiB of address space, keep a 2 MiB aligned window of size
 * bytes and give the rest back. With fd >= 0 the window maps that file
 * MAP_SHARED; otherwise it is private anonymous memory. */
static uint8_t *map_aligned(uint64_t size, int fd)
{
	size_t span = size + PAGE_2M;
	int prot = fd >= 0 ? PROT_NONE : PROT_READ | PROT_WRITE;
	uint8_t *raw = mmap(NULL, span, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		die_errno("mmap reserve");
	uint8_t *base = (uint8_t *)(((uintptr_t)raw + PAGE_2M - 1) & ~(uintptr_t)(PAGE_2M - 1));
	if (fd >= 0 && mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
		die_errno("mmap guest_memfd");
	if (base > raw)
		munmap(raw, (size_t)(base - raw));
	if (raw + span > base + size)
		munmap(base + size, (size_t)(raw + span - (base + size)));
	return base;
}

struct populate_chunk {
	uint8_t *addr;
	size_t len;
	int advice;
	int err;
	pthread_t thread;
};

static void *populate_worker(void *arg)
{
	struct populate_chunk *c = arg;
	int rc;
	do
		rc = madvise(c->addr, c->len, c->advice);
	while (rc < 0 && (errno == EINTR || errno == EAGAIN));
	c->err = rc < 0 ? errno : 0;
	return NULL;
}

/* MADV_POPULATE_* over [base, base+size), in threads contiguous chunks whose
 * length is a multiple of 2 MiB. One thread means the calling thread. */
static void populate(uint8_t *base, uint64_t size, int threads, bool read)
{
	struct populate_chunk chunks[256];
	int advice = read ? MADV_POPULATE_READ : MADV_POPULATE_WRITE;
	uint64_t per = (size + (uint64_t)threads - 1) / (uint64_t)threads;
	per = (per + PAGE_2M - 1) & ~(PAGE_2M - 1);
	int n = 0;
	for (uint64_t off = 0; off < size && n < threads; off += per, n++) {
		uint64_t len = size - off < per ? size - off : per;
		chunks[n] = (struct populate_chunk){ .addr = base + off, .len = len, .advice = advice };
	}
	if (n == 1) {
		populate_worker(&chunks[0]);
	} else {
		for (int i = 0; i < n; i++)
			if ((errno = pthread_create(&chunks[i].thread, NULL, populate_worker, &chunks[i])))
				die_errno("pthread_create");
		for (int i = 0; i < n; i++)
			pthread_join(chunks[i].thread, NULL);
	}
	for (int i = 0; i < n; i++)
		if (chunks[i].err)
			die("madvise(%s): %s", read ? "MADV_POPULATE_READ" : "MADV_POPULATE_WRITE",
			    strerror(chunks[i].err));
}

/* ---- binary stats ------------------------------------------------------- */

/* File offsets, in a stats fd, of the values of the stats we read; -1 when the
 * kernel does not have the stat. */
struct stat_offsets {
	int64_t exits, pf_taken;		/* vcpu */
	int64_t pages_4k, pages_2m, pages_1g;	/* VM */
};

static void read_exact(int fd, void *buf, size_t len, off_t off)
{
	ssize_t got = pread(fd, buf, len, off);
	if (got < 0)
		die_errno("pread stats fd");
	if ((size_t)got != len)
		die("short read from stats fd");
}

/* Find the named stats and store their value offsets into out[] */
static void stat_lookup(int fd, const char *const *names, int64_t *const *out, int count)
{
	struct kvm_stats_header h;
	read_exact(fd, &h, sizeof(h), 0);
	size_t desc_size = sizeof(struct kvm_stats_desc) + h.name_size;
	uint8_t *descs = malloc(desc_size * h.num_desc);
	if (!descs)
		die("out of memory");
	read_exact(fd, descs, desc_size * h.num_desc, h.desc_offset);
	for (int i = 0; i < count; i++)
		*out[i] = -1;
	for (uint32_t d = 0; d < h.num_desc; d++) {
		const struct kvm_stats_desc *desc = (const void *)(descs + d * desc_size);
		for (int i = 0; i < count; i++)
			if (!strncmp(desc->name, names[i], h.name_size))
				*out[i] = (int64_t)h.data_offset + desc->offset;
	}
	free(descs);
}

/* Value of a stat, or -1 when it is absent */
static int64_t stat_value(int fd, int64_t off)
{
	uint64_t v;
	if (off < 0)
		return -1;
	read_exact(fd, &v, sizeof(v), off);
	return (int64_t)v;
}

/* ---- guest -------------------------------------------------------------- */

/* Write the guest program at code; returns its length. */
static size_t emit_guest(uint8_t *code, uint64_t pages, bool read)
{
	uint8_t *p = code;
#define EMIT(...) do { const uint8_t b_[] = { __VA_ARGS__ }; memcpy(p, b_, sizeof(b_)); p += sizeof(b_); } while (0)
#define EMIT64(v) do { uint64_t v_ = (v); memcpy(p, &v_, 8); p += 8; } while (0)
	uint8_t *start = p;
	EMIT(0x48, 0xbb); EMIT64(REGION_GPA);	/* start: mov rbx, REGION_GPA */
	EMIT(0x48, 0xb9); EMIT64(pages);	/*        mov rcx, pages */
	uint8_t *loop = p;
	if (read)
		EMIT(0x48, 0x8b, 0x03);		/* loop:  mov rax, [rbx] */
	else
		EMIT(0x48, 0x89, 0x1b);		/* loop:  mov [rbx], rbx */
	EMIT(0x48, 0x81, 0xc3, 0x00, 0x10, 0x00, 0x00); /* add rbx, 0x1000 */
	EMIT(0x48, 0xff, 0xc9);			/*        dec rcx */
	EMIT(0x75, (uint8_t)(loop - (p + 2)));	/*        jnz loop */
	EMIT(0x66, 0xba, IO_PORT & 0xff, IO_PORT >> 8); /* mov dx, IO_PORT */
	EMIT(0xef);				/*        out dx, eax */
	EMIT(0xeb, (uint8_t)(start - (p + 2)));	/*        jmp start */
#undef EMIT
#undef EMIT64
	return (size_t)(p - code);
}

/* Page tables, code and TSS in the 2 MiB system region */
static void build_system(uint8_t *sys, uint64_t region_size, bool read)
{
	uint64_t *pml4 = (uint64_t *)(sys + PML4_GPA);
	uint64_t *pdpt = (uint64_t *)(sys + PDPT_GPA);
	pml4[0] = PDPT_GPA | 7;
	for (uint64_t g = 0; g < 4; g++) {
		uint64_t *pd = (uint64_t *)(sys + LOW_PD_GPA + g * PAGE_4K);
		pdpt[g] = (LOW_PD_GPA + g * PAGE_4K) | 7;
		for (uint64_t i = 0; i < 512; i++)
			pd[i] = ((g << 30) + i * PAGE_2M) | 0x87;
	}
	for (uint64_t off = 0; off < region_size; off += PAGE_2M) {
		uint64_t gib = off >> 30, pd_gpa = REGION_PD_GPA + gib * PAGE_4K;
		uint64_t *pd = (uint64_t *)(sys + pd_gpa);
		pdpt[4 + gib] = pd_gpa | 7;
		pd[(off >> 21) & 511] = (REGION_GPA + off) | 0x87;
	}
	emit_guest(sys + CODE_GPA, region_size / PAGE_4K, read);
	/* TSS: all zero except the I/O map base; every bitmap bit zero (port
	 * allowed), then the 0xff terminator byte. Under kvm_pvm a CPL3 OUT is
	 * emulated and checked against this bitmap regardless of IOPL. */
	uint16_t iomap = TSS_IOMAP_OFFSET;
	memcpy(sys + TSS_GPA + 0x66, &iomap, sizeof(iomap));
	sys[TSS_GPA + TSS_IOMAP_OFFSET + TSS_IOMAP_BYTES] = 0xff;
}

static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
}

/* KVM_RUN until the guest's OUT to IO_PORT */
static void run_pass(int vcpu, struct kvm_run *run, const char *pass)
{
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR && !timed_out)
				continue;
			if (timed_out)
				die("%s pass: timed out", pass);
			die("%s pass: KVM_RUN: %s", pass, strerror(errno));
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.port == IO_PORT && run->io.direction == KVM_EXIT_IO_OUT)
				return;
			die("%s pass: unexpected I/O to port %#x", pass, run->io.port);
		case KVM_EXIT_INTR:
			continue;
		case KVM_EXIT_MMIO:
			die("%s pass: MMIO exit at gpa %#llx", pass, (unsigned long long)run->mmio.phys_addr);
		case KVM_EXIT_INTERNAL_ERROR:
			die("%s pass: internal error, suberror %u", pass, run->internal.suberror);
		case KVM_EXIT_FAIL_ENTRY:
			die("%s pass: entry failed, reason %#llx", pass,
			    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		default:
			die("%s pass: exit reason %u (8 = shutdown/triple fault)", pass, run->exit_reason);
		}
	}
}

/* ---- exits: the exit round trip ------------------------------------------
 *
 * One VM with --vcpus vcpus running the same guest in the system region's
 * code page: OUT to IO_PORT in a loop ("out"), or a 4-byte MMIO read of
 * EXITS_MMIO_GPA (identity mapped, no memslot) in a loop ("mmio"), for which
 * the host writes the value the guest loads. Every exit is answered and the
 * vcpu re-entered at once. With --threads 1 one thread runs the vcpus in
 * turn (one round trip each per round); with --threads N each vcpu has its
 * own thread. Each repetition does 200 unrecorded round trips per vcpu, then
 * --iterations timed ones per vcpu, and prints
 *
 *   {"family":"exits","guest":"out","vcpus":N,"threads":T,"rep":i,
 *    "iterations":K,"exits":N*K,"elapsedNs":...,"nsPerExit":...,
 *    "p10Ns":...,"p25Ns":...,"p50Ns":...}
 *
 * nsPerExit = elapsedNs / (N*K): wall time per exit over all vcpus. Each
 * round trip is also timed on its own: pXXNs are percentiles of those, over
 * all vcpus (the low ones are the least disturbed by other work).
 */

#define EXITS_MMIO_GPA UINT64_C(0xd0000000)
#define EXITS_WARM 200

static size_t emit_exits_guest(uint8_t *code, int guest)
{
	uint8_t *p = code;
	const uint8_t out_loop[] = {
		0x66, 0xba, IO_PORT & 0xff, IO_PORT >> 8,	/* mov dx, IO_PORT */
		0xef,					/* loop: out dx, eax */
		0xeb, 0xfd,				/* jmp loop */
	};
	const uint8_t mmio_loop[] = {
		0xbb, 0x00, 0x00, 0x00, 0xd0,		/* mov ebx, EXITS_MMIO_GPA */
		0x8b, 0x03,				/* loop: mov eax, [rbx] */
		0xeb, 0xfc,				/* jmp loop */
	};
	static_assert(EXITS_MMIO_GPA == 0xd0000000, "mmio_loop encodes the address");
	if (guest == EXITS_OUT) {
		memcpy(p, out_loop, sizeof(out_loop));
		p += sizeof(out_loop);
	} else {
		memcpy(p, mmio_loop, sizeof(mmio_loop));
		p += sizeof(mmio_loop);
	}
	return (size_t)(p - code);
}

struct exits_vcpu {
	int fd;
	struct kvm_run *run;
	int guest;
	int iterations;
	uint64_t *lat;		/* per round trip ns, iterations entries */
	pthread_t thread;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* One KVM_RUN and the answer to its exit */
static void exits_round_trip(struct exits_vcpu *v)
{
	for (;;) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR && !timed_out)
				continue;
			die("exits: KVM_RUN: %s", timed_out ? "timed out" : strerror(errno));
		}
		struct kvm_run *run = v->run;
		if (run->exit_reason == KVM_EXIT_INTR)
			continue;
		if (v->guest == EXITS_OUT && run->exit_reason == KVM_EXIT_IO &&
		    run->io.port == IO_PORT && run->io.direction == KVM_EXIT_IO_OUT)
			return;
		if (v->guest == EXITS_MMIO && run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write &&
		    run->mmio.phys_addr == EXITS_MMIO_GPA) {
			uint32_t value = 0x12345678;
			memcpy(run->mmio.data, &value, sizeof(value));
			return;
		}
		die("exits: unexpected exit reason %u", run->exit_reason);
	}
}

static void *exits_thread(void *arg)
{
	struct exits_vcpu *v = arg;
	for (int i = 0; i < v->iterations; i++) {
		uint64_t t = now_ns();
		exits_round_trip(v);
		v->lat[i] = now_ns() - t;
	}
	return NULL;
}

static void exits_once(const struct options *o, int kvm, const struct kvm_cpuid2 *cpuid, int run_size, int rep)
{
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die_errno("KVM_CREATE_VM");
	uint8_t *sys = mmap(NULL, SYS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sys == MAP_FAILED)
		die_errno("mmap system region");
	build_system(sys, 0, false);
	emit_exits_guest(sys + CODE_GPA, o->exits);
	struct kvm_userspace_memory_region slot0 = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = SYS_SIZE, .userspace_addr = (uintptr_t)sys
	};
	if (xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot0))
		die_errno("KVM_SET_USER_MEMORY_REGION slot 0");
	struct exits_vcpu vcpus[64];
	for (int i = 0; i < o->vcpus; i++) {
		struct exits_vcpu *v = &vcpus[i];
		v->fd = ioctl(vm, KVM_CREATE_VCPU, i);
		if (v->fd < 0)
			die_errno("KVM_CREATE_VCPU");
		v->run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		if (v->run == MAP_FAILED)
			die_errno("mmap kvm_run");
		set_vcpu_state(v->fd, cpuid, PML4_GPA);
		v->guest = o->exits;
		v->iterations = o->iterations;
		v->lat = calloc((size_t)o->iterations, sizeof(uint64_t));
		if (!v->lat)
			die("out of memory");
		for (int w = 0; w < EXITS_WARM; w++)
			exits_round_trip(v);
	}
	uint64_t t0 = now_ns();
	if (o->threads == 1) {
		for (int i = 0; i < o->iterations; i++)
			for (int c = 0; c < o->vcpus; c++) {
				uint64_t t = now_ns();
				exits_round_trip(&vcpus[c]);
				vcpus[c].lat[i] = now_ns() - t;
			}
	} else {
		for (int c = 0; c < o->vcpus; c++)
			if ((errno = pthread_create(&vcpus[c].thread, NULL, exits_thread, &vcpus[c])))
				die_errno("pthread_create");
		for (int c = 0; c < o->vcpus; c++)
			pthread_join(vcpus[c].thread, NULL);
	}
	uint64_t elapsed = now_ns() - t0;
	uint64_t exits = (uint64_t)o->vcpus * (uint64_t)o->iterations;
	uint64_t *all = malloc(exits * sizeof(uint64_t));
	if (!all)
		die("out of memory");
	for (int c = 0; c < o->vcpus; c++) {
		memcpy(all + (size_t)c * (size_t)o->iterations, vcpus[c].lat, (size_t)o->iterations * sizeof(uint64_t));
		free(vcpus[c].lat);
	}
	qsort(all, exits, sizeof(uint64_t), cmp_u64);
	uint64_t p10 = all[(exits - 1) / 10], p25 = all[(exits - 1) / 4], p50 = all[(exits - 1) / 2];
	free(all);
	for (int i = 0; i < o->vcpus; i++) {
		munmap(vcpus[i].run, (size_t)run_size);
		close(vcpus[i].fd);
	}
	close(vm);
	munmap(sys, SYS_SIZE);
	if (rep < 0)
		return;
	printf("{\"family\":\"exits\",\"guest\":\"%s\",\"vcpus\":%d,\"threads\":%d,\"rep\":%d,"
	       "\"iterations\":%d,\"exits\":%" PRIu64 ",\"elapsedNs\":%" PRIu64 ",\"nsPerExit\":%.1f,"
	       "\"p10Ns\":%" PRIu64 ",\"p25Ns\":%" PRIu64 ",\"p50Ns\":%" PRIu64 "}\n",
	       o->exits == EXITS_OUT ? "out" : "mmio", o->vcpus, o->threads, rep, o->iterations, exits,
	       elapsed, (double)elapsed / (double)exits, p10, p25, p50);
	fflush(stdout);
}

/* ---- one repetition ----------------------------------------------------- */

struct result {
	uint64_t setup_ns, alloc_ns, slot_ns, fill_ns, first_ns, second_ns;
	int64_t exits_first, exits_second, pf_taken;
	int64_t pages_4k, pages_2m, pages_1g;
	int error;		/* errno of an unsupported method, else 0 */
};

static void print_common(const struct options *o)
{
	printf("\"backing\":\"%s\",\"method\":\"%s\",\"threads\":%d,\"access\":\"%s\","
	       "\"sizeBytes\":%" PRIu64 ",\"pages\":%" PRIu64,
	       backing_names[o->backing], method_names[o->method], o->threads,
	       o->read ? "read" : "write", o->size, o->size / PAGE_4K);
	if (o->method == METHOD_POPULATE)
		printf(",\"populateAccess\":\"%s\"", o->populate_read ? "read" : "write");
}

static void print_stat(const char *name, int64_t v)
{
	if (v < 0)
		printf(",\"%s\":null", name);
	else
		printf(",\"%s\":%" PRId64, name, v);
}

static void print_error(const struct options *o, int err)
{
	printf("{\"error\":\"%s\",", errno_name(err));
	print_common(o);
	printf("}\n");
	fflush(stdout);
}

static void print_result(const struct options *o, const struct result *r, int rep)
{
	uint64_t prep = r->alloc_ns + r->fill_ns;
	printf("{");
	print_common(o);
	printf(",\"rep\":%d", rep);
	printf(",\"prepNs\":%" PRIu64 ",\"firstPassNs\":%" PRIu64 ",\"secondPassNs\":%" PRIu64
	       ",\"totalNsPerPage\":%.1f",
	       prep, r->first_ns, r->second_ns,
	       (double)(prep + r->first_ns) / (double)(o->size / PAGE_4K));
	print_stat("exitsFirstPass", r->exits_first);
	print_stat("exitsSecondPass", r->exits_second);
	print_stat("pfTaken", r->pf_taken);
	print_stat("pages_4k", r->pages_4k);
	print_stat("pages_2m", r->pages_2m);
	print_stat("pages_1g", r->pages_1g);
	printf(",\"allocNs\":%" PRIu64 ",\"fillNs\":%" PRIu64 ",\"slotNs\":%" PRIu64
	       ",\"setupNs\":%" PRIu64 "}\n",
	       r->alloc_ns, r->fill_ns, r->slot_ns, r->setup_ns);
	fflush(stdout);
}

static int pre_fault(int vcpu, uint64_t size)
{
	struct bench_pre_fault_memory r = { .gpa = REGION_GPA, .size = size };
	while (r.size) {
		uint64_t before = r.size;
		if (ioctl(vcpu, BENCH_KVM_PRE_FAULT_MEMORY, &r) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno;
		}
		if (r.size == before)
			die("KVM_PRE_FAULT_MEMORY made no progress at gpa %#llx", (unsigned long long)r.gpa);
	}
	return 0;
}

static struct result run_once(const struct options *o, int kvm, const struct kvm_cpuid2 *cpuid, int run_size)
{
	struct result r = { 0 };
	uint64_t t0 = now_ns();

	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die_errno("KVM_CREATE_VM");
	uint8_t *sys = mmap(NULL, SYS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sys == MAP_FAILED)
		die_errno("mmap system region");
	build_system(sys, o->size, o->read);
	struct kvm_userspace_memory_region slot0 = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = SYS_SIZE, .userspace_addr = (uintptr_t)sys
	};
	if (xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot0))
		die_errno("KVM_SET_USER_MEMORY_REGION slot 0");
	uint64_t t_setup = now_ns() - t0;

	/* allocation */
	int gmem = -1;
	uint64_t t1 = now_ns();
	if (o->backing == BACKING_GMEM) {
		struct bench_create_guest_memfd g = {
			.size = o->size,
			.flags = BENCH_GUEST_MEMFD_FLAG_MMAP | BENCH_GUEST_MEMFD_FLAG_INIT_SHARED,
		};
		gmem = ioctl(vm, BENCH_KVM_CREATE_GUEST_MEMFD, &g);
		if (gmem < 0) {
			if (errno == EINVAL || errno == ENOTTY || errno == EOPNOTSUPP) {
				r.error = errno;
				goto out_vm;
			}
			die_errno("KVM_CREATE_GUEST_MEMFD");
		}
	}
	uint8_t *region = map_aligned(o->size, gmem);
	if (gmem < 0 && madvise(region, o->size, o->backing == BACKING_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
		die_errno("madvise(HUGEPAGE/NOHUGEPAGE)");
	r.alloc_ns = now_ns() - t1;

	/* measured region memslot */
	uint64_t t2 = now_ns();
	if (gmem >= 0) {
		struct bench_userspace_memory_region2 slot1 = {
			.slot = 1, .flags = BENCH_KVM_MEM_GUEST_MEMFD, .guest_phys_addr = REGION_GPA,
			.memory_size = o->size, .userspace_addr = (uintptr_t)region,
			.guest_memfd_offset = 0, .guest_memfd = (uint32_t)gmem,
		};
		if (xioctl(vm, BENCH_KVM_SET_USER_MEMORY_REGION2, &slot1))
			die_errno("KVM_SET_USER_MEMORY_REGION2 slot 1");
	} else {
		struct kvm_userspace_memory_region slot1 = {
			.slot = 1, .guest_phys_addr = REGION_GPA, .memory_size = o->size,
			.userspace_addr = (uintptr_t)region,
		};
		if (xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot1))
			die_errno("KVM_SET_USER_MEMORY_REGION slot 1");
	}
	r.slot_ns = now_ns() - t2;

	/* vcpu */
	uint64_t t3 = now_ns();
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die_errno("KVM_CREATE_VCPU");
	struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die_errno("mmap kvm_run");
	set_vcpu_state(vcpu, cpuid, PML4_GPA);
	int vcpu_stats = ioctl(vcpu, KVM_GET_STATS_FD, 0);
	int vm_stats = ioctl(vm, KVM_GET_STATS_FD, 0);
	if (vcpu_stats < 0 || vm_stats < 0)
		die_errno("KVM_GET_STATS_FD");
	struct stat_offsets so;
	stat_lookup(vcpu_stats, (const char *const[]){ "exits", "pf_taken" },
		    (int64_t *const[]){ &so.exits, &so.pf_taken }, 2);
	stat_lookup(vm_stats, (const char *const[]){ "pages_4k", "pages_2m", "pages_1g" },
		    (int64_t *const[]){ &so.pages_4k, &so.pages_2m, &so.pages_1g }, 3);
	r.setup_ns = t_setup + (now_ns() - t3);

	/* populate / pre-fault */
	uint64_t t4 = now_ns();
	if (o->method == METHOD_POPULATE) {
		populate(region, o->size, o->threads, o->populate_read);
	} else if (o->method == METHOD_PREFAULT) {
		int err = pre_fault(vcpu, o->size);
		if (err) {
			r.error = err;
			goto out_vcpu;
		}
	}
	r.fill_ns = now_ns() - t4;

	/* first pass */
	int64_t exits0 = stat_value(vcpu_stats, so.exits);
	int64_t pf0 = stat_value(vcpu_stats, so.pf_taken);
	uint64_t t5 = now_ns();
	run_pass(vcpu, run, "first");
	r.first_ns = now_ns() - t5;
	int64_t exits1 = stat_value(vcpu_stats, so.exits);
	int64_t pf1 = stat_value(vcpu_stats, so.pf_taken);
	r.pages_4k = stat_value(vm_stats, so.pages_4k);
	r.pages_2m = stat_value(vm_stats, so.pages_2m);
	r.pages_1g = stat_value(vm_stats, so.pages_1g);

	/* second pass */
	uint64_t t6 = now_ns();
	run_pass(vcpu, run, "second");
	r.second_ns = now_ns() - t6;
	int64_t exits2 = stat_value(vcpu_stats, so.exits);

	r.exits_first = exits0 < 0 ? -1 : exits1 - exits0;
	r.exits_second = exits0 < 0 ? -1 : exits2 - exits1;
	r.pf_taken = pf0 < 0 ? -1 : pf1 - pf0;

out_vcpu:
	close(vcpu_stats);
	close(vm_stats);
	munmap(run, (size_t)run_size);
	close(vcpu);
	munmap(region, o->size);
	if (gmem >= 0)
		close(gmem);
out_vm:
	close(vm);
	munmap(sys, SYS_SIZE);
	return r;
}

/* Floor for zeroing: fault in and fill fresh anonymous memory from the host */
static void memset_once(const struct options *o, int rep)
{
	uint64_t t0 = now_ns();
	uint8_t *p = map_aligned(o->size, -1);
	if (madvise(p, o->size, o->backing == BACKING_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
		die_errno("madvise");
	memset(p, 0xff, o->size);
	uint64_t prep = now_ns() - t0;
	munmap(p, o->size);
	if (rep < 0)
		return;
	printf("{\"method\":\"memset\",\"backing\":\"%s\",\"threads\":1,\"access\":\"write\","
	       "\"sizeBytes\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"rep\":%d,\"prepNs\":%" PRIu64
	       ",\"totalNsPerPage\":%.1f}\n",
	       backing_names[o->backing], o->size, o->size / PAGE_4K, rep, prep,
	       (double)prep / (double)(o->size / PAGE_4K));
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct options o = parse_args(argc, argv);

	if (o.method == METHOD_MEMSET) {
		for (int i = -o.warmup; i < o.reps; i++)
			memset_once(&o, i);
		return 0;
	}

	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART: KVM_RUN sees EINTR */
	sigaction(SIGALRM, &sa, NULL);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die_errno("open /dev/kvm");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		die_errno("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_cpuid2 *cpuid = supported_cpuid(kvm);

	if (o.exits) {
		for (int i = -o.warmup; i < o.reps; i++) {
			alarm(o.timeout_s);
			exits_once(&o, kvm, cpuid, run_size, i);
			alarm(0);
		}
		free(cpuid);
		close(kvm);
		return 0;
	}

	for (int i = -o.warmup; i < o.reps; i++) {
		alarm(o.timeout_s);
		struct result r = run_once(&o, kvm, cpuid, run_size);
		alarm(0);
		if (r.error) {
			print_error(&o, r.error);
			break;
		}
		if (i >= 0)
			print_result(&o, &r, i);
	}
	free(cpuid);
	close(kvm);
	return 0;
}
