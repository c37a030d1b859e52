// SPDX-License-Identifier: GPL-2.0
/*
 * Every collapse and page-table retraction must tell the MMU notifiers: a
 * secondary MMU (KVM, a GPU through HMM) that is not told keeps using the
 * old page table or pages (the CVE-2022-48991 class).  Each case registers
 * a notifier on its own mm through /sys/kernel/debug/khugepaged/notifier_log
 * (CONFIG_KHUGEPAGED_NOTIFIER_LOG), runs one collapse, and checks the
 * invalidations it received:
 *
 *  - every invalidate_range_start() is closed by an invalidate_range_end()
 *    of the same range and event, nothing is left open, nothing dropped;
 *  - each PMD range the collapse changed was invalidated as a whole
 *    (MMU_NOTIFY_CLEAR over exactly [pmd, pmd + 2 MiB)) once, and no other
 *    range of that size or more was;
 *  - where collapse_file() unmaps 32 pages at a time (unmap_file_range in
 *    impl_stats, the Rust implementation), each VMA got exactly one
 *    invalidation per 32 pages for the unmapping; C's try_to_unmap()
 *    invalidates each page of each VMA on its own.
 *
 * No range is MADV_HUGEPAGE: khugepaged (THP "madvise" mode) leaves them
 * alone, so that all the log sees is the MADV_COLLAPSE of the test.
 *
 * The sequence of whole-PMD invalidations is printed as one @@NOTIFY line
 * per case, which scripts/report.py compares between the C and the Rust
 * implementation.
 *
 * Usage: KHUGEPAGED_FILE_DIR=DIR khugepaged_notifier [harness options]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

#define NOTIFIER_LOG	"/sys/kernel/debug/khugepaged/notifier_log"
#define MMU_NOTIFY_CLEAR 1
#define MAX_REC		8192
#define MAX_PMDS	4

struct rec {
	bool end;
	int event;
	int blockable;
	unsigned long start, last;
};

struct log {
	int fd;
	int nr;
	long dropped;
	struct rec rec[MAX_REC];
};

/* Each test runs in a child of its own: what it mapped, for the teardown. */
static char *maps[MAX_PMDS];
static int nr_maps;

FIXTURE(notifier)
{
	struct log *log;
	int fd;
};

FIXTURE_SETUP(notifier)
{
	self->fd = -1;
	self->log = calloc(1, sizeof(*self->log));
	ASSERT_NE(NULL, self->log);
	self->log->fd = open(NOTIFIER_LOG, O_RDWR);
	ASSERT_LE(0, self->log->fd) TH_LOG("open %s: %s", NOTIFIER_LOG,
					   strerror(errno));
}

FIXTURE_TEARDOWN(notifier)
{
	for (int i = 0; i < nr_maps; i++)
		munmap(maps[i], PMD_SIZE);
	if (self->fd >= 0)
		close(self->fd);
	close(self->log->fd);
	free(self->log);
}

/* Empties the log: what follows is what the next step does. */
static int log_clear(struct log *log)
{
	return write(log->fd, "0", 1) == 1 ? 0 : -1;
}

/* Reads the whole log into @log->rec; 0 or -1. */
static int log_read(struct log *log)
{
	static char buf[MAX_REC * 64 + 64];
	size_t len = 0;
	ssize_t n;
	char *line, *save;

	if (lseek(log->fd, 0, SEEK_SET))
		return -1;
	while ((n = read(log->fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += n;
	if (n < 0)
		return -1;
	buf[len] = 0;
	log->nr = 0;
	log->dropped = 0;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		struct rec *r = &log->rec[log->nr];
		char kind[8];

		if (sscanf(line, "dropped %ld", &log->dropped) == 1)
			continue;
		if (log->nr == MAX_REC ||
		    sscanf(line, "%7s %d %lx %lx %d", kind, &r->event, &r->start,
			   &r->last, &r->blockable) != 5)
			return -1;
		r->end = !strcmp(kind, "end");
		log->nr++;
	}
	return 0;
}

/*
 * Checks the log after one collapse that changed the PMD ranges at
 * @pmd[0..@nr): pairing, exactly one whole-range MMU_NOTIFY_CLEAR pair for
 * each of them, and @want_small smaller invalidations (any number if -1).
 * Prints the @@NOTIFY line for @name.
 */
static void check_log(struct __test_metadata *_metadata, struct log *log,
		      const char *name, char **pmd, int nr, int want_small)
{
	int pending[MAX_REC], nr_open = 0, whole[MAX_PMDS] = { 0 };
	int small = 0, i, j;
	char seq[512] = "";
	size_t len = 0;

	ASSERT_EQ(0, log_read(log));
	ASSERT_EQ(0, log->dropped) TH_LOG("the log overflowed");
	for (i = 0; i < log->nr; i++) {
		struct rec *r = &log->rec[i];
		int at = -1;

		if (!r->end) {
			pending[nr_open++] = i;
		} else {
			/* The innermost open range with the same key. */
			for (j = nr_open - 1; j >= 0; j--) {
				struct rec *s = &log->rec[pending[j]];

				if (s->event == r->event && s->start == r->start &&
				    s->last == r->last)
					break;
			}
			ASSERT_LE(0, j) TH_LOG("record %d: end %#lx-%#lx without a start",
					       i, r->start, r->last);
			memmove(&pending[j], &pending[j + 1],
				(nr_open - j - 1) * sizeof(int));
			nr_open--;
		}
		if (r->last - r->start < PMD_SIZE) {
			small += !r->end;
			continue;
		}
		for (j = 0; j < nr; j++)
			if (r->start == (unsigned long)pmd[j] &&
			    r->last == (unsigned long)pmd[j] + PMD_SIZE &&
			    r->event == MMU_NOTIFY_CLEAR)
				at = j;
		ASSERT_LE(0, at) TH_LOG("unexpected invalidation of %#lx-%#lx (event %d)",
					r->start, r->last, r->event);
		/* The collapse paths sleep inside their invalidation. */
		EXPECT_EQ(1, r->blockable) TH_LOG("%#lx-%#lx: not blockable",
						  r->start, r->last);
		whole[at] += !r->end;
		if (len < sizeof(seq) - 16)
			len += snprintf(seq + len, sizeof(seq) - len, "%s%s:pmd%d",
					len ? "," : "", r->end ? "end" : "start",
					at);
	}
	ASSERT_EQ(0, nr_open) TH_LOG("%d invalidations never ended", nr_open);
	for (j = 0; j < nr; j++)
		EXPECT_EQ(1, whole[j]) TH_LOG("PMD %d (%p): %d whole-PMD invalidations",
					      j, pmd[j], whole[j]);
	if (want_small >= 0)
		EXPECT_EQ(want_small, small) TH_LOG("%d smaller invalidations", small);
	TH_LOG("@@NOTIFY case=%s seq=%s small=%d", name, seq[0] ? seq : "-",
	       small);
}

/* Maps @fd (or anonymous memory) PMD-aligned; remembered for teardown. */
static char *map(int prot, int flags, int fd)
{
	char *p = nr_maps < MAX_PMDS ? aligned_map(PMD_SIZE, prot, flags, fd) : NULL;

	if (p)
		maps[nr_maps++] = p;
	return p;
}

static void fill(char *p, int salt)
{
	for (size_t i = 0; i < PMD_SIZE; i++)
		p[i] = kh_pattern(i, salt);
}

static int log_clear_arg(void *log)
{
	return log_clear(log);
}

/*
 * kh_collapse(), its errno logged on failure; with @log, the log is emptied
 * before each try, so that it holds the invalidations of the try that
 * counted (a failed anonymous collapse has invalidated its range already).
 */
static int collapse(struct __test_metadata *_metadata, struct log *log,
		    char *p, size_t len)
{
	int ret = kh_collapse_each(p, len, log ? log_clear_arg : NULL, log);

	if (ret)
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	return ret;
}

/* collapse_huge_page(): one anonymous PMD range. */
TEST_F(notifier, anon)
{
	char *p = map(PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);

	ASSERT_NE(NULL, p);
	fill(p, 1);
	ASSERT_EQ(0, smaps_field(p, "AnonHugePages:"))
		TH_LOG("THP \"always\"? the range must fault in small pages");
	ASSERT_EQ(0, collapse(_metadata, self->log, p, PMD_SIZE));
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	EXPECT_EQ(0, kh_bad_bytes((uint8_t *)p, PMD_SIZE, 1));
	check_log(_metadata, self->log, "anon", &p, 1, -1);
}

/*
 * collapse_file() and retract_page_tables(): two PTE-mapped mappings of
 * the same small folios; MADV_COLLAPSE of the first retracts both tables.
 */
static void shared_collapse(struct __test_metadata *_metadata,
			    struct log *log, int fd, const char *name,
			    int prot, int flags)
{
	long calls[2], entries[2];
	char impl[16] = "";
	bool batched;
	char *p[2];

	for (int i = 0; i < 2; i++) {
		p[i] = map(prot, flags, fd);
		ASSERT_NE(NULL, p[i]);
	}
	touch(p[0], PMD_SIZE);
	touch(p[1], PMD_SIZE);
	ASSERT_EQ(0, current_impl(impl, sizeof(impl) - 1));
	ASSERT_EQ(0, impl_stat(NULL, "unmap_file_range", &calls[0], &entries[0]));
	ASSERT_EQ(0, collapse(_metadata, log, p[0], PMD_SIZE));
	ASSERT_EQ(0, impl_stat(NULL, "unmap_file_range", &calls[1], &entries[1]));
	EXPECT_EQ(0, kh_bad_bytes((uint8_t *)p[0], PMD_SIZE, 2));
	EXPECT_EQ(0, kh_bad_bytes((uint8_t *)p[1], PMD_SIZE, 2));
	/*
	 * The Rust implementation unmaps 32 pages at a time, from both
	 * mappings: 512 entries each, in 16 invalidations each.  A retried
	 * collapse finds nothing mapped any more.
	 */
	batched = calls[1] != calls[0];
	EXPECT_EQ(!strcmp(impl, "rust"), batched) TH_LOG("impl %s", impl);
	if (batched)
		EXPECT_EQ((long)(2 * PMD_SIZE / KH_PAGE), entries[1] - entries[0]);
	check_log(_metadata, log, name, p, 2,
		  batched ? (int)(2 * PMD_SIZE / KH_PAGE / 32) : -1);
}

/*
 * A memfd, or a read-only ext4 file, of one PMD holding the test pattern in
 * small folios of the page cache, not mapped yet.
 */
static int make_fd(struct __test_metadata *_metadata, bool file)
{
	const char *dir = getenv("KHUGEPAGED_FILE_DIR");
	char path[4096];
	uint8_t *buf = malloc(PMD_SIZE);
	int fd = -1;

	if (!buf)
		return -1;
	for (size_t i = 0; i < PMD_SIZE; i++)
		buf[i] = kh_pattern(i, 2);
	if (!file) {
		fd = memfd_create("khugepaged_notifier", 0);
		if (fd >= 0 && pwrite(fd, buf, PMD_SIZE, 0) != (ssize_t)PMD_SIZE) {
			close(fd);
			fd = -1;
		}
	} else if (dir && *dir) {
		snprintf(path, sizeof(path), "%s/khugepaged_notifier.%d", dir,
			 getpid());
		fd = ro_file(path, buf, PMD_SIZE, false);
	}
	free(buf);
	return fd;
}

TEST_F(notifier, shmem_retract)
{
	self->fd = make_fd(_metadata, false);
	ASSERT_LE(0, self->fd);
	shared_collapse(_metadata, self->log, self->fd, "shmem_retract",
			PROT_READ | PROT_WRITE, MAP_SHARED);
}

TEST_F(notifier, file_retract)
{
	self->fd = make_fd(_metadata, true);
	ASSERT_LE(0, self->fd) TH_LOG("KHUGEPAGED_FILE_DIR: no file");
	shared_collapse(_metadata, self->log, self->fd, "file_retract",
			PROT_READ | PROT_EXEC, MAP_PRIVATE);
}

/*
 * collapse_pte_mapped_thp(): a THP of the page cache mapped by 512 PTEs
 * (the PMD mapping split by an mprotect() of one page) maps by PMD again.
 */
static void recollapse(struct __test_metadata *_metadata, struct log *log,
		       int fd, const char *name, int prot, int flags,
		       const char *field)
{
	char *p = map(prot, flags, fd);

	ASSERT_NE(NULL, p);
	touch(p, PMD_SIZE);
	ASSERT_EQ(0, collapse(_metadata, NULL, p, PMD_SIZE));
	ASSERT_EQ(2048, smaps_field(p, field));
	/*
	 * PROT_READ, not a writable protection: that would give a private
	 * mapping VM_ACCOUNT, and the VMA would not merge back.
	 */
	ASSERT_EQ(0, mprotect(p + KH_PAGE, KH_PAGE, PROT_READ));
	touch(p, PMD_SIZE);
	ASSERT_EQ(0, mprotect(p + KH_PAGE, KH_PAGE, prot));
	ASSERT_EQ(0, smaps_field(p, field));
	ASSERT_EQ(0, collapse(_metadata, log, p, PMD_SIZE));
	EXPECT_EQ(2048, smaps_field(p, field));
	EXPECT_EQ(0, kh_bad_bytes((uint8_t *)p, PMD_SIZE, 2));
	check_log(_metadata, log, name, &p, 1, -1);
}

TEST_F(notifier, shmem_recollapse)
{
	self->fd = make_fd(_metadata, false);
	ASSERT_LE(0, self->fd);
	recollapse(_metadata, self->log, self->fd, "shmem_recollapse",
		   PROT_READ | PROT_WRITE, MAP_SHARED, "ShmemPmdMapped:");
}

TEST_F(notifier, file_recollapse)
{
	self->fd = make_fd(_metadata, true);
	ASSERT_LE(0, self->fd) TH_LOG("KHUGEPAGED_FILE_DIR: no file");
	recollapse(_metadata, self->log, self->fd, "file_recollapse",
		   PROT_READ | PROT_EXEC, MAP_PRIVATE, "FilePmdMapped:");
}

TEST_HARNESS_MAIN
