/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the khugepaged-rs selftests, demo and benchmark:
 * smaps and sysfs access, 2 MiB aligned mappings, faulting ranges in.
 */
#ifndef KHUGEPAGED_UTIL_H
#define KHUGEPAGED_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PMD_SIZE	(2UL << 20)
#define KH_PAGE		4096UL
#define THP_SYSFS	"/sys/kernel/mm/transparent_hugepage/"
#define KHUGEPAGED_SYSFS THP_SYSFS "khugepaged/"
#define TRACEFS		"/sys/kernel/tracing/"
/* The counters of each implementation (debugfs, mounted here). */
#define IMPL_STATS	"/sys/kernel/debug/khugepaged/impl_stats"

/* Newer than the C library's headers may be (bits 13 and 15 of 6.12's uapi). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED	0x2000
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC	0x8000
#endif

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE	25
#endif

/* Value in kB of smaps field @name for the VMA containing @addr, or -1. */
static inline long smaps_field(void *addr, const char *name)
{
	unsigned long start, end, a = (unsigned long)addr;
	char line[256];
	long val = -1;
	bool in = false;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = a >= start && a < end;
			continue;
		}
		if (in && !strncmp(line, name, strlen(name))) {
			val = atol(line + strlen(name));
			break;
		}
	}
	fclose(f);
	return val;
}

/* Writes @s to @path (appending if @append); 0 or -1. */
static inline int write_str(const char *path, const char *s, bool append)
{
	int fd = open(path, O_WRONLY | (append ? O_APPEND : O_TRUNC));
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* The number at the start of @path, or -1. */
static inline long read_num(const char *path)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atol(buf) : -1;
}

/* The counter @name of /proc/vmstat, or -1. */
static inline long vm_counter(const char *name)
{
	size_t n = strlen(name);
	char line[128];
	long v = -1;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, name, n) && line[n] == ' ') {
			v = atol(line + n + 1);
			break;
		}
	}
	fclose(f);
	return v;
}

/*
 * Waits up to two seconds for the global counter @name of /proc/vmstat to
 * come within @slack of zero, and returns it. Per-cpu deltas reach the
 * global counter in batches (the stat threshold, a few dozen pages per
 * CPU here) and at least every second (vm.stat_interval).
 */
static inline long vmstat_settled(const char *name, long slack)
{
	long v = vm_counter(name);

	for (int i = 0; i < 200 && (v > slack || v < -slack); i++) {
		usleep(10000);
		v = vm_counter(name);
	}
	return v;
}

/*
 * Writes @len bytes of @buf to a new file @path, then reopens it read-only
 * (READ_ONLY_THP_FOR_FS wants no writer) with its page cache dropped, so
 * that a collapse finds small folios. @path is unlinked unless @keep.
 * Returns the read-only fd, or -1.
 */
static inline int ro_file(const char *path, const void *buf, size_t len,
			  bool keep)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0755);
	bool ok;

	if (fd < 0)
		return -1;
	ok = write(fd, buf, len) == (ssize_t)len && !fsync(fd);
	close(fd);
	fd = ok ? open(path, O_RDONLY) : -1;
	if (!keep || fd < 0)
		unlink(path);
	if (fd >= 0)
		posix_fadvise(fd, 0, len, POSIX_FADV_DONTNEED);
	return fd;
}

/* The selected implementation, from khugepaged/impl ("[rust] c"); 0 or -1. */
static inline int current_impl(char *name, size_t len)
{
	char buf[64] = "", *b, *e;
	int fd = open(KHUGEPAGED_SYSFS "impl", O_RDONLY);

	if (fd < 0)
		return -1;
	if (read(fd, buf, sizeof(buf) - 1) <= 0)
		buf[0] = 0;
	close(fd);
	b = strchr(buf, '[');
	e = b ? strchr(b, ']') : NULL;
	if (!e || (size_t)(e - b) > len)
		return -1;
	memcpy(name, b + 1, e - b - 1);
	name[e - b - 1] = 0;
	return 0;
}

/*
 * The two counters of <debugfs>/khugepaged/impl_stats's line "<impl> @fn <first>
 * <second>" for implementation @impl, or summed over all of them if @impl
 * is NULL. Returns 0, or -1 if no such line was found.
 */
static inline int impl_stat(const char *impl, const char *fn, long *first,
			    long *second)
{
	char line[256], name[32], f[64];
	FILE *file = fopen(IMPL_STATS, "r");
	int found = -1;
	long a, b;

	if (!file)
		return -1;
	*first = *second = 0;
	while (fgets(line, sizeof(line), file)) {
		if (sscanf(line, "%31s %63s %ld %ld", name, f, &a, &b) != 4 ||
		    strcmp(f, fn) || (impl && strcmp(name, impl)))
			continue;
		*first += a;
		*second += b;
		found = 0;
	}
	fclose(file);
	return found;
}

/*
 * MADV_COLLAPSE of [@p, @p + @len), tried again (at most KH_COLLAPSE_TRIES
 * times in all) while it fails with EAGAIN: a transient reference or lock on
 * a page (readahead I/O still in flight, a folio in another CPU's LRU batch)
 * makes 6.12 give up with SCAN_PAGE_LOCK/_LRU/_COUNT, and so does khugepaged
 * collapsing the same range at that moment (100 and 200 ms let it finish).
 * Every retry prints an "@@RETRY" line, which scripts/report.py counts; a
 * persistent EAGAIN still fails.  @before(@arg), if given, runs before each
 * try; its failure ends the attempt with -1.  Returns madvise()'s result
 * with its errno.
 */
#if defined(__x86_64__)
static const uint8_t kh_ret_insn[] = { 0xc3 };			/* ret */
#elif defined(__aarch64__)
static const uint8_t kh_ret_insn[] = { 0xc0, 0x03, 0x5f, 0xd6 };	/* ret */
#else
#error "add the return instruction of this architecture"
#endif

/* Hits of uprobe @event, from uprobe_profile; -1 if it is not listed. */
static inline long kh_probe_hits(const char *event)
{
	char line[512];
	long hits = -1;
	FILE *f = fopen(TRACEFS "uprobe_profile", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = strstr(line, event);

		if (p && (p[strlen(event)] == ' ' || p[strlen(event)] == '\t'))
			hits = atol(p + strlen(event));
	}
	fclose(f);
	return hits;
}

/*
 * Defines uprobe khugepaged_rs/@event at offset @off of the file @path and
 * enables it: the breakpoint goes into every mapping of that page; 0 or -1.
 */
static inline int kh_uprobe_set(const char *event, const char *path,
				unsigned long off)
{
	char cmd[768], enable[256];

	snprintf(cmd, sizeof(cmd), "p:khugepaged_rs/%s %s:0x%lx\n", event,
		 path, off);
	snprintf(enable, sizeof(enable),
		 TRACEFS "events/khugepaged_rs/%s/enable", event);
	return write_str(TRACEFS "uprobe_events", cmd, true) ||
	       write_str(enable, "1", false) ? -1 : 0;
}

/*
 * Disables and deletes uprobe khugepaged_rs/@event: the breakpoints are
 * removed, and where the page was part of a THP, uprobe_write_opcode()
 * calls collapse_pte_mapped_thp() to map it by its PMD again; 0 or -1.
 */
static inline int kh_uprobe_clear(const char *event)
{
	char cmd[128], enable[256];

	snprintf(enable, sizeof(enable),
		 TRACEFS "events/khugepaged_rs/%s/enable", event);
	snprintf(cmd, sizeof(cmd), "-:khugepaged_rs/%s\n", event);
	write_str(enable, "0", false);
	return write_str(TRACEFS "uprobe_events", cmd, true);
}

/* collapse_pte_mapped_thp() calls, all implementations together. */
static inline long kh_pte_mapped_calls(void)
{
	long calls, succeeded;

	return impl_stat(NULL, "collapse_pte_mapped_thp", &calls,
			 &succeeded) ? -1 : calls;
}

#define KH_COLLAPSE_TRIES	3

static inline int kh_collapse_each(void *p, size_t len,
				   int (*before)(void *arg), void *arg)
{
	int ret, tries = 1;

	for (;;) {
		if (before && before(arg))
			return -1;
		ret = madvise(p, len, MADV_COLLAPSE);
		if (!ret || errno != EAGAIN || tries == KH_COLLAPSE_TRIES)
			return ret;
		fprintf(stderr, "# @@RETRY MADV_COLLAPSE at %p: EAGAIN, try %d of %d\n",
			p, ++tries, KH_COLLAPSE_TRIES);
		usleep(100000 * (tries - 1));
	}
}

static inline int kh_collapse(void *p, size_t len)
{
	return kh_collapse_each(p, len, NULL, NULL);
}

/* Test data: byte @i of a range, different from page to page and per @salt. */
static inline uint8_t kh_pattern(size_t i, int salt)
{
	return (uint8_t)(i * 13 + i / KH_PAGE + salt);
}

/* Bytes of [p, p + len) that differ from kh_pattern(, @salt). */
static inline long kh_bad_bytes(const uint8_t *p, size_t len, int salt)
{
	long bad = 0;

	for (size_t i = 0; i < len; i++)
		bad += p[i] != kh_pattern(i, salt);
	return bad;
}

/* A PMD-aligned address with @len bytes free after it, or NULL. */
static inline char *aligned_hole(size_t len)
{
	char *p = mmap(NULL, len + PMD_SIZE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	munmap(p, len + PMD_SIZE);
	return (char *)(((uintptr_t)p + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
}

/* mmap() of @len bytes at a PMD-aligned address, or NULL. */
static inline char *aligned_map(size_t len, int prot, int flags, int fd)
{
	char *a = aligned_hole(len), *p;

	if (!a)
		return NULL;
	p = mmap(a, len, prot, flags | MAP_FIXED, fd, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Reads one byte of every page of [p, p + len), faulting it in. */
static inline void touch(const char *p, size_t len)
{
	char s = 0;

	for (size_t i = 0; i < len; i += KH_PAGE)
		s += p[i];
	__asm__ __volatile__("" : : "r"(s) : "memory");
}

/*
 * A userfaultfd with @features, [@p, @p + @len) registered with @mode
 * (UFFDIO_REGISTER_MODE_*); the uffd, or -1. Async WP allows any VMA type,
 * file-backed ones included.
 */
static inline int kh_uffd_register(void *p, size_t len, __u64 features,
				   __u64 mode)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)p, .len = len },
		.mode = mode,
	};
	int uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (uffd < 0)
		return -1;
	if (ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		close(uffd);
		return -1;
	}
	return uffd;
}

#endif /* KHUGEPAGED_UTIL_H */
