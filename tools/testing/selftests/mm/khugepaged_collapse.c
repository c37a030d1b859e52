// SPDX-License-Identifier: GPL-2.0
/*
 * MADV_COLLAPSE for anonymous, shmem and file memory, and re-collapse of a
 * PTE-mapped THP (which reaches collapse_pte_mapped_thp()), checked through
 * smaps and the data, for whichever khugepaged implementation is selected
 * in /sys/kernel/mm/transparent_hugepage/khugepaged/impl.
 *
 * Usage: KHUGEPAGED_FILE_DIR=DIR khugepaged_collapse [harness options]
 * DIR is on a block-device filesystem, for the file cases; they are
 * skipped without it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

static const char *file_dir;

/* Value in kB of /proc/self/status field @name (the mm's rss counters). */
static long status_field(const char *name)
{
	char line[256];
	long val = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, strlen(name)))
			val = atol(line + strlen(name));
	fclose(f);
	return val;
}

/* Calls of collapse_pte_mapped_thp() for the selected implementation. */
static long impl_calls(char *impl, size_t len)
{
	long calls, succeeded;

	if (current_impl(impl, len) ||
	    impl_stat(impl, "collapse_pte_mapped_thp", &calls, &succeeded))
		return -1;
	return calls;
}

/* A PMD-aligned address with PMD_SIZE * @nr free bytes. */
static char *aligned_area(size_t nr)
{
	return aligned_hole(nr * PMD_SIZE);
}

static void fill(char *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i += sizeof(uint32_t))
		*(uint32_t *)(p + i) = (uint32_t)(i * 2654435761u) ^ seed;
}

static bool check(const char *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i += sizeof(uint32_t))
		if (*(const uint32_t *)(p + i) != ((uint32_t)(i * 2654435761u) ^ seed))
			return false;
	return true;
}

/*
 * Splits the PMD mapping at @p by an mprotect() of one page, faults every
 * page back in while the VMA is split (so by PTEs), then undoes the
 * mprotect(): the THP stays in the page cache, mapped by 512 PTEs.
 */
static int split_pmd(char *p, int prot)
{
	/* Any other protection splits the VMA, hence the PMD mapping. */
	int other = prot == PROT_READ ? PROT_READ | PROT_WRITE : PROT_READ;

	if (mprotect(p + 4096, 4096, other))
		return -1;
	touch(p, PMD_SIZE);
	return mprotect(p + 4096, 4096, prot);
}

/*
 * Maps anonymous memory over the 2 MiB at @p, faulted in by small pages
 * (MADV_NOHUGEPAGE) filled with fill(, @seed); -1 on failure.
 */
static int small_anon(char *p, unsigned int seed)
{
	if (mmap(p, PMD_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p ||
	    madvise(p, PMD_SIZE, MADV_NOHUGEPAGE))
		return -1;
	fill(p, PMD_SIZE, seed);
	return 0;
}

TEST(anon_collapse)
{
	char *p = aligned_area(1);

	ASSERT_NE(p, NULL);
	ASSERT_EQ(0, small_anon(p, 1));
	ASSERT_EQ(0, smaps_field(p, "AnonHugePages:"));
	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	EXPECT_TRUE(check(p, PMD_SIZE, 1));
	/*
	 * Every folio the collapse isolated was put back or freed: none stays
	 * counted in NR_ISOLATED_ANON (512 would, per collapse, if the small
	 * folios' isolation leaked; the slack is the per-cpu batching).
	 */
	EXPECT_GT(128, vmstat_settled("nr_isolated_anon", 127));
	munmap(p, PMD_SIZE);
}

/*
 * How many of the @nr pages at @p are on an LRU list (kpageflags' LRU bit),
 * after draining the per-cpu LRU batches (mlock() does, of any page);
 * -1 on error.
 */
static long pages_on_lru(const char *p, size_t nr)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	int kpageflags = open("/proc/kpageflags", O_RDONLY);
	void *drain = mmap(NULL, KH_PAGE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long lru = -1;

	if (pagemap < 0 || kpageflags < 0 || drain == MAP_FAILED ||
	    mlock(drain, KH_PAGE))
		goto out;
	lru = 0;
	for (size_t i = 0; i < nr; i++) {
		uint64_t ent, flags;
		off_t off = ((uintptr_t)p / KH_PAGE + i) * sizeof(ent);

		if (pread(pagemap, &ent, sizeof(ent), off) != sizeof(ent) ||
		    !(ent >> 63) || !(ent & ((1ULL << 55) - 1)) ||
		    pread(kpageflags, &flags, sizeof(flags),
			  (ent & ((1ULL << 55) - 1)) * sizeof(flags)) != sizeof(flags)) {
			lru = -1;
			break;
		}
		lru += (flags >> 5) & 1;	/* KPF_LRU */
	}
out:
	if (drain != MAP_FAILED)
		munmap(drain, KH_PAGE);
	if (pagemap >= 0)
		close(pagemap);
	if (kpageflags >= 0)
		close(kpageflags);
	return lru;
}

/*
 * The small folios a collapse copies are freed, but only those nothing
 * else maps: after fork, the child's pages stay its own, with their data,
 * and go back to the LRU, where reclaim can find them. (A folio that the
 * collapse freed off the LRU while the child still mapped it would be
 * invisible to reclaim: KPF_LRU clear.)
 */
TEST(anon_collapse_shared_with_child)
{
	char *p = aligned_area(1);
	int to_child[2], to_parent[2], status;
	char c = 0;
	pid_t pid;

	ASSERT_NE(p, NULL);
	ASSERT_EQ(0, small_anon(p, 3));
	ASSERT_EQ(0, pipe(to_child));
	ASSERT_EQ(0, pipe(to_parent));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		long lru;

		/* Wait for the parent's collapse, then look at our pages. */
		if (read(to_child[0], &c, 1) != 1)
			_exit(2);
		if (!check(p, PMD_SIZE, 3))
			_exit(3);
		lru = pages_on_lru(p, PMD_SIZE / KH_PAGE);
		if (lru != PMD_SIZE / KH_PAGE) {
			fprintf(stderr, "# child: %ld of 512 pages on an LRU\n", lru);
			_exit(4);
		}
		_exit(0);
	}
	/*
	 * fork() write-protected every entry, and a collapse wants a writable
	 * one: copy page 0 (same data). The other 511 stay shared.
	 */
	fill(p, KH_PAGE, 3);
	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	EXPECT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	EXPECT_TRUE(check(p, PMD_SIZE, 3));
	ASSERT_EQ(1, write(to_child[1], &c, 1));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status))
		TH_LOG("child: status %#x", status);
	EXPECT_GT(128, vmstat_settled("nr_isolated_anon", 127));
	munmap(p, PMD_SIZE);
}

/*
 * An mlocked range: its small folios are on the unevictable LRU and
 * mlocked; the collapse must not free them with those bits set (the page
 * allocator would report a bad page) and the huge page is mlocked in turn.
 */
TEST(anon_collapse_mlocked)
{
	char *p = aligned_area(1);

	ASSERT_NE(p, NULL);
	ASSERT_EQ(0, small_anon(p, 4));
	ASSERT_EQ(0, mlock(p, PMD_SIZE));
	ASSERT_EQ(PMD_SIZE / KH_PAGE, pages_on_lru(p, PMD_SIZE / KH_PAGE));
	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	EXPECT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	EXPECT_EQ(2048, smaps_field(p, "Locked:"));
	EXPECT_TRUE(check(p, PMD_SIZE, 4));
	EXPECT_GT(128, vmstat_settled("nr_isolated_anon", 127));
	EXPECT_EQ(0, munlock(p, PMD_SIZE));
	munmap(p, PMD_SIZE);
}

TEST(bad_ranges)
{
	char *p = aligned_area(1);

	ASSERT_NE(p, NULL);
	ASSERT_EQ(p, mmap(p, PMD_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
	/* Unaligned start. */
	EXPECT_EQ(-1, madvise(p + 1, PMD_SIZE, MADV_COLLAPSE));
	EXPECT_EQ(EINVAL, errno);
	/* Partly unmapped range: the mapped part collapses, then ENOMEM. */
	fill(p, PMD_SIZE, 5);
	EXPECT_EQ(-1, madvise(p, 2 * PMD_SIZE, MADV_COLLAPSE));
	EXPECT_EQ(ENOMEM, errno);
	munmap(p, PMD_SIZE);
	/* Nothing mapped. */
	EXPECT_EQ(-1, madvise(p, PMD_SIZE, MADV_COLLAPSE));
	EXPECT_EQ(ENOMEM, errno);
}

/* Shared memory: collapse, split by mprotect, re-collapse. */
static void shmem_or_file(struct __test_metadata *_metadata, int fd,
			  int prot, int flags, const char *field,
			  const char *rss_field, unsigned int seed,
			  bool fill_first)
{
	char *p = aligned_area(1);
	char impl[32];
	long calls, rss;

	ASSERT_NE(p, NULL);
	ASSERT_EQ(p, mmap(p, PMD_SIZE, prot, flags | MAP_FIXED, fd, 0));
	if (fill_first)
		fill(p, PMD_SIZE, seed);
	else
		touch(p, PMD_SIZE);
	ASSERT_EQ(0, smaps_field(p, field));

	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, field));
	EXPECT_TRUE(check(p, PMD_SIZE, seed));

	/* PTE-mapped THP: MADV_COLLAPSE must go to collapse_pte_mapped_thp(). */
	rss = status_field(rss_field);
	ASSERT_EQ(0, split_pmd(p, prot));
	ASSERT_EQ(0, smaps_field(p, field));
	ASSERT_EQ(2048, smaps_field(p, "Rss:"));
	calls = impl_calls(impl, sizeof(impl));
	ASSERT_GE(calls, 0);
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, field));
	EXPECT_EQ(2048, smaps_field(p, "Rss:"));
	/*
	 * The 512 PTE mappings were accounted away (step 3): the counter is
	 * back where it was, give or take the per-cpu counters' slack (far
	 * below the 2048 kB a missed step 3 leaves).
	 */
	EXPECT_LT(labs(status_field(rss_field) - rss), 1024);
	EXPECT_TRUE(check(p, PMD_SIZE, seed));
	EXPECT_GT(impl_calls(impl, sizeof(impl)), calls);
	TH_LOG("impl %s: collapse_pte_mapped_thp calls %ld -> %ld", impl,
	       calls, impl_calls(impl, sizeof(impl)));
	munmap(p, PMD_SIZE);
}

TEST(shmem_collapse_and_recollapse)
{
	int fd = memfd_create("khugepaged_collapse", 0);

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, ftruncate(fd, PMD_SIZE));
	shmem_or_file(_metadata, fd, PROT_READ | PROT_WRITE, MAP_SHARED,
		      "ShmemPmdMapped:", "RssShmem:", 2, true);
	close(fd);
}

/*
 * collapse_file() unmaps the range from every mapping of the file before
 * it copies the folios: here also from one that starts 1 MiB off a PMD
 * boundary (its 512 entries in two PTE tables, which retraction leaves in
 * place) and from one of 100 pages at page 200 of the file. Afterwards
 * neither maps anything until touched again, the process's shmem rss is
 * down by what they mapped, and the data reads the same through all three.
 */
TEST(shmem_collapse_unaligned_mappings)
{
	int fd = memfd_create("khugepaged_collapse", 0);
	char *p = aligned_area(4), *q, *r;
	long rss;

	ASSERT_GE(fd, 0);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(0, ftruncate(fd, PMD_SIZE));
	q = p + PMD_SIZE + PMD_SIZE / 2;
	r = p + 3 * PMD_SIZE + 64 * KH_PAGE;
	ASSERT_EQ(p, mmap(p, PMD_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_FIXED, fd, 0));
	ASSERT_EQ(q, mmap(q, PMD_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_FIXED, fd, 0));
	ASSERT_EQ(r, mmap(r, 100 * KH_PAGE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_FIXED, fd, 200 * KH_PAGE));
	fill(p, PMD_SIZE, 7);
	touch(q, PMD_SIZE);
	touch(r, 100 * KH_PAGE);
	ASSERT_EQ(2048, smaps_field(q, "Rss:"));
	ASSERT_EQ(400, smaps_field(r, "Rss:"));
	rss = status_field("RssShmem:");

	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, "ShmemPmdMapped:"));
	EXPECT_EQ(0, smaps_field(q, "Rss:"));
	EXPECT_EQ(0, smaps_field(r, "Rss:"));
	/* p maps the same 2 MiB, by PMD; q's and r's 2448 kB are gone. */
	EXPECT_LT(labs(status_field("RssShmem:") - (rss - 2448)), 1024);
	EXPECT_TRUE(check(p, PMD_SIZE, 7));
	EXPECT_TRUE(check(q, PMD_SIZE, 7));
	EXPECT_EQ(0, memcmp(r, p + 200 * KH_PAGE, 100 * KH_PAGE));
	munmap(p, PMD_SIZE);
	munmap(q, PMD_SIZE);
	munmap(r, 100 * KH_PAGE);
	close(fd);
}

/*
 * An mlock()ed shmem range mapped twice: collapse_file() unmaps both
 * mappings of each mlocked folio (TTU_IGNORE_MLOCK), which munlocks it
 * before the folio is freed, and the THP is mlocked once mapped by PMD.
 * A folio freed still mlocked counts in unevictable_pgs_cleared.
 */
TEST(shmem_collapse_mlocked)
{
	int fd = memfd_create("khugepaged_collapse", 0);
	char *p = aligned_area(2), *q;
	long cleared;

	ASSERT_GE(fd, 0);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(0, ftruncate(fd, PMD_SIZE));
	q = p + PMD_SIZE;
	ASSERT_EQ(p, mmap(p, PMD_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_FIXED, fd, 0));
	ASSERT_EQ(q, mmap(q, PMD_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_FIXED, fd, 0));
	fill(p, PMD_SIZE, 8);
	ASSERT_EQ(0, mlock(p, PMD_SIZE));
	ASSERT_EQ(0, mlock(q, PMD_SIZE));
	ASSERT_EQ(2048, smaps_field(q, "Rss:"));
	cleared = vm_counter("unevictable_pgs_cleared");
	ASSERT_GE(cleared, 0);

	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(2048, smaps_field(p, "ShmemPmdMapped:"));
	EXPECT_EQ(2048, smaps_field(p, "Locked:"));
	EXPECT_EQ(cleared, vm_counter("unevictable_pgs_cleared"));
	EXPECT_TRUE(check(p, PMD_SIZE, 8));
	EXPECT_TRUE(check(q, PMD_SIZE, 8));
	EXPECT_EQ(0, munlock(p, 2 * PMD_SIZE));
	munmap(p, 2 * PMD_SIZE);
	close(fd);
}

/*
 * A file of @len bytes in file_dir with the fill() pattern for @seed,
 * reopened read-only (READ_ONLY_THP_FOR_FS needs no writer).
 */
static int make_file(struct __test_metadata *_metadata, size_t len,
		     unsigned int seed)
{
	char path[4096];
	char *buf = malloc(len);
	int fd;

	if (!buf)
		return -1;
	snprintf(path, sizeof(path), "%s/khugepaged_collapse.%d.%u", file_dir,
		 getpid(), seed);
	fill(buf, len, seed);
	fd = ro_file(path, buf, len, false);
	free(buf);
	return fd;
}

TEST(file_collapse_and_recollapse)
{
	int fd;

	if (!file_dir)
		SKIP(return, "KHUGEPAGED_FILE_DIR not set");
	fd = make_file(_metadata, PMD_SIZE, 3);
	ASSERT_GE(fd, 0);
	shmem_or_file(_metadata, fd, PROT_READ | PROT_EXEC, MAP_PRIVATE,
		      "FilePmdMapped:", "RssFile:", 3, false);
	close(fd);
}

/*
 * A CoWed page in a private file mapping of a THP (a VMA with an
 * anon_vma): the re-collapse must refuse (C 6.12: EINVAL) and keep the
 * private data; the folio stays PTE-mapped.
 */
TEST(file_cow_kept)
{
	char *p = aligned_area(1);
	int fd;

	if (!file_dir)
		SKIP(return, "KHUGEPAGED_FILE_DIR not set");
	fd = make_file(_metadata, PMD_SIZE, 4);
	ASSERT_GE(fd, 0);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(p, mmap(p, PMD_SIZE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0));
	/* Fault the file in first, as the other file cases do. */
	touch(p, PMD_SIZE);
	ASSERT_EQ(0, madvise(p, PMD_SIZE, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	ASSERT_EQ(2048, smaps_field(p, "FilePmdMapped:"));

	/* CoW one page: splits the PMD and gives the VMA an anon_vma. */
	ASSERT_EQ(0, mprotect(p, PMD_SIZE, PROT_READ | PROT_WRITE));
	p[5 * 4096] ^= 0xff;
	ASSERT_EQ(0, mprotect(p, PMD_SIZE, PROT_READ));
	ASSERT_EQ(0, smaps_field(p, "FilePmdMapped:"));
	ASSERT_GT(smaps_field(p, "Anonymous:"), 0);

	EXPECT_EQ(-1, kh_collapse(p, PMD_SIZE));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, smaps_field(p, "FilePmdMapped:"));
	/* The private page kept its data; undo it and all else matches. */
	ASSERT_EQ(0, mprotect(p, PMD_SIZE, PROT_READ | PROT_WRITE));
	p[5 * 4096] ^= 0xff;
	EXPECT_TRUE(check(p, PMD_SIZE, 4));
	munmap(p, PMD_SIZE);
	close(fd);
}

/*
 * MADV_COLLAPSE over three extents of a private file/shmem mapping of THPs,
 * all PTE-mapped, where extent @cow holds one CoWed page. Rust (and C with
 * skip_cow_extents) collapses every clean extent; C 6.12 stops at the
 * CoWed one. Both report EINVAL, and the CoWed page keeps its data.
 */
#define NR_EXT 3

#define SKIP_COW_KNOB KHUGEPAGED_SYSFS "skip_cow_extents"

FIXTURE(cow_extent)
{
	int fd;
};

FIXTURE_VARIANT(cow_extent)
{
	const char *dir_env;
	const char *field;
	int cow;
};

FIXTURE_VARIANT_ADD(cow_extent, file_first) {
	.dir_env = "KHUGEPAGED_FILE_DIR", .field = "FilePmdMapped:", .cow = 0,
};

FIXTURE_VARIANT_ADD(cow_extent, file_middle) {
	.dir_env = "KHUGEPAGED_FILE_DIR", .field = "FilePmdMapped:", .cow = 1,
};

FIXTURE_VARIANT_ADD(cow_extent, file_last) {
	.dir_env = "KHUGEPAGED_FILE_DIR", .field = "FilePmdMapped:", .cow = 2,
};

FIXTURE_VARIANT_ADD(cow_extent, shmem_first) {
	.dir_env = "KHUGEPAGED_SHMEM_DIR", .field = "ShmemPmdMapped:", .cow = 0,
};

FIXTURE_VARIANT_ADD(cow_extent, shmem_middle) {
	.dir_env = "KHUGEPAGED_SHMEM_DIR", .field = "ShmemPmdMapped:", .cow = 1,
};

FIXTURE_VARIANT_ADD(cow_extent, shmem_last) {
	.dir_env = "KHUGEPAGED_SHMEM_DIR", .field = "ShmemPmdMapped:", .cow = 2,
};

FIXTURE_SETUP(cow_extent)
{
	const char *dir = getenv(variant->dir_env);
	char path[4096];
	size_t len = NR_EXT * PMD_SIZE;
	char *buf = malloc(len);

	self->fd = -1;
	if (!dir || !*dir)
		SKIP(return, "%s not set", variant->dir_env);
	ASSERT_NE(NULL, buf);
	snprintf(path, sizeof(path), "%s/cow_extent.%d", dir, getpid());
	fill(buf, len, 6);
	self->fd = ro_file(path, buf, len, false);
	free(buf);
	ASSERT_GE(self->fd, 0);
}

FIXTURE_TEARDOWN(cow_extent)
{
	if (self->fd >= 0)
		close(self->fd);
}

/* One run of the scenario; returns the huge kB mapped after the collapse. */
static long cow_extent_run(struct __test_metadata *_metadata, int fd,
			   const char *field, int cow)
{
	size_t len = NR_EXT * PMD_SIZE;
	char *p = aligned_area(NR_EXT);
	char *cowp;
	long huge;
	int e;

	ASSERT_NE(NULL, p);
	ASSERT_EQ(p, mmap(p, len, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0));
	touch(p, len);
	ASSERT_EQ(0, madvise(p, len, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(p, len))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	ASSERT_EQ(NR_EXT * 2048, smaps_field(p, field));

	/* Map every extent by PTEs, then CoW one page of extent @cow. */
	for (e = 0; e < NR_EXT; e++)
		ASSERT_EQ(0, split_pmd(p + e * PMD_SIZE, PROT_READ));
	ASSERT_EQ(0, smaps_field(p, field));
	cowp = p + cow * PMD_SIZE + 7 * 4096;
	ASSERT_EQ(0, mprotect(p, len, PROT_READ | PROT_WRITE));
	*cowp ^= 0x5a;
	ASSERT_EQ(0, mprotect(p, len, PROT_READ));
	ASSERT_EQ(4, smaps_field(p, "Anonymous:"));

	EXPECT_EQ(-1, kh_collapse(p, len));
	EXPECT_EQ(EINVAL, errno);
	huge = smaps_field(p, field);

	/* The private copy is intact, and so is everything else. */
	EXPECT_EQ(4, smaps_field(p, "Anonymous:"));
	ASSERT_EQ(0, mprotect(p, len, PROT_READ | PROT_WRITE));
	*cowp ^= 0x5a;
	EXPECT_TRUE(check(p, len, 6));
	munmap(p, len);
	return huge;
}

TEST_F(cow_extent, collapse_goes_past_cowed_extent)
{
	int cow = variant->cow, skip = read_num(SKIP_COW_KNOB);
	char impl[32];
	long huge;

	ASSERT_GE(impl_calls(impl, sizeof(impl)), 0);
	ASSERT_GE(skip, 0);

	/* Selected implementation, default settings. */
	huge = cow_extent_run(_metadata, self->fd, variant->field, cow);
	if (!strcmp(impl, "rust") || skip) {
		/* Every clean extent. */
		EXPECT_EQ((NR_EXT - 1) * 2048, huge);
	} else {
		/* C 6.12 stops at the CoWed extent. */
		EXPECT_EQ(cow * 2048, huge);
	}
	TH_LOG("impl %s, CoWed extent %d of %d: %ld kB PMD-mapped", impl, cow,
	       NR_EXT, huge);

	/* C with the fix enabled behaves as Rust. */
	if (!strcmp(impl, "c") && !skip) {
		ASSERT_EQ(0, write_str(SKIP_COW_KNOB, "1", false));
		huge = cow_extent_run(_metadata, self->fd, variant->field, cow);
		write_str(SKIP_COW_KNOB, "0", false);
		EXPECT_EQ((NR_EXT - 1) * 2048, huge);
	}
}

static void __attribute__((constructor)) get_file_dir(void)
{
	file_dir = getenv("KHUGEPAGED_FILE_DIR");
	if (file_dir && !*file_dir)
		file_dir = NULL;
}

TEST_HARNESS_MAIN
