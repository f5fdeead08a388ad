/*
 * kvm-cpl3.h - what the C references (reference.c, memslot-perf.c) share:
 * error exits, a monotonic clock, an EINTR-retrying ioctl, and the vcpu state
 * of a 64-bit guest at CPL3 (the only mode kvm_pvm runs natively): long mode
 * with paging rooted at cr3, CPL3 flat segments, a TSS whose I/O bitmap
 * allows every port (kvm_pvm checks it for a CPL3 OUT), RFLAGS with IOPL 3,
 * code at CODE_GPA and the stack below STACK_TOP. node-kvm's guest kit
 * (lib/guest/layout.ts) uses the same layout.
 *
 * Define PROGRAM_NAME (the prefix of error messages) before including it.
 */
#ifndef NODE_KVM_BENCH_KVM_CPL3_H
#define NODE_KVM_BENCH_KVM_CPL3_H

#include <assert.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

/* KVM_SET_USER_MEMORY_REGION2 (6.8), newer than the distro's 6.1 <linux/kvm.h> */
struct bench_userspace_memory_region2 {
	uint32_t slot;
	uint32_t flags;
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t guest_memfd_offset;
	uint32_t guest_memfd;
	uint32_t pad1;
	uint64_t pad2[14];
};
static_assert(sizeof(struct bench_userspace_memory_region2) == 160, "region2 struct");
#define BENCH_KVM_SET_USER_MEMORY_REGION2 0x40A0AE49UL
static_assert(BENCH_KVM_SET_USER_MEMORY_REGION2 ==
	      _IOW(KVMIO, 0x49, struct bench_userspace_memory_region2), "ioctl number");

#define CODE_GPA UINT64_C(0x10000)
#define STACK_TOP UINT64_C(0x30000)
#define TSS_GPA UINT64_C(0x30000)
#define TSS_IOMAP_OFFSET 0x68	/* iomap base; the bitmap follows the TSS */
#define TSS_IOMAP_BYTES 0x2000	/* 65536 ports, all allowed (zero bits) */
#define TSS_LIMIT (TSS_IOMAP_OFFSET + TSS_IOMAP_BYTES) /* covers the 0xff byte */

static inline void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static inline void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", PROGRAM_NAME);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static inline void die_errno(const char *what) __attribute__((noreturn));

static inline void die_errno(const char *what)
{
	die("%s: %s", what, strerror(errno));
}

static inline const char *errno_name(int err)
{
	const char *name = strerrorname_np(err);
	return name ? name : "UNKNOWN";
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ioctl, retried while interrupted */
static inline int xioctl(int fd, unsigned long req, void *arg)
{
	int rc;
	do
		rc = ioctl(fd, req, arg);
	while (rc < 0 && errno == EINTR);
	return rc;
}

static inline struct kvm_cpuid2 *supported_cpuid(int kvm)
{
	for (uint32_t n = 64;; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			die("out of memory");
		c->nent = n;
		if (xioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG || n > 4096)
			die_errno("KVM_GET_SUPPORTED_CPUID");
	}
}

static inline void set_vcpu_state(int vcpu, const struct kvm_cpuid2 *cpuid, uint64_t cr3)
{
	if (xioctl(vcpu, KVM_SET_CPUID2, (void *)cpuid))
		die_errno("KVM_SET_CPUID2");
	struct kvm_sregs s;
	if (xioctl(vcpu, KVM_GET_SREGS, &s))
		die_errno("KVM_GET_SREGS");
	s.cr0 = 0x80000011;	/* PG | ET | PE */
	s.cr3 = cr3;
	s.cr4 = 0x20;		/* PAE */
	s.efer = 0x500;		/* LMA | LME */
	s.cs = (struct kvm_segment){ .selector = 0x33, .type = 0xb, .dpl = 3, .l = 1,
				     .g = 1, .present = 1, .s = 1, .limit = 0xffffffff };
	struct kvm_segment data = { .selector = 0x2b, .type = 3, .dpl = 3, .db = 1,
				    .g = 1, .present = 1, .s = 1, .limit = 0xffffffff };
	s.ss = s.ds = s.es = s.fs = s.gs = data;
	s.tr = (struct kvm_segment){ .selector = 0x18, .base = TSS_GPA, .limit = TSS_LIMIT,
				     .type = 11, .present = 1, .s = 0 };
	if (xioctl(vcpu, KVM_SET_SREGS, &s))
		die_errno("KVM_SET_SREGS");
	struct kvm_regs r = { .rip = CODE_GPA, .rsp = STACK_TOP, .rflags = 0x3002 };
	if (xioctl(vcpu, KVM_SET_REGS, &r))
		die_errno("KVM_SET_REGS");
}

#endif
