// SPDX-License-Identifier: GPL-2.0
/*
 * The khugepaged thread, counted: with a fast scan (scan_sleep_millisecs
 * of 10, pages_to_scan large), MADV_HUGEPAGE anonymous and shmem memory
 * populated with small pages must be collapsed by khugepaged alone, and
 * the counters must then grow as 6.12 makes them grow:
 *
 * - until every extent is collapsed: pages_collapsed grows by at least one
 *   per 2 MiB extent, full_scans by at least two;
 * - then, per full scan, pages_collapsed grows by exactly one per shmem
 *   extent (within one pass at the edges of the window): khugepaged
 *   retracted their page tables without mapping the THP, so every pass
 *   finds SCAN_PTE_MAPPED_HUGEPAGE, and collapse_pte_mapped_thp(mm, addr,
 *   false) on the empty PMD counts as a success again; the anonymous
 *   extents, PMD-mapped, count nothing.
 *
 * Then every extent refaults by PMD and every byte reads back. It runs
 * under whichever implementation is selected; make test runs it for both.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

#define EXTENTS		4		/* per memory type */
#define LEN		(EXTENTS * PMD_SIZE)
#define TIMEOUT_S	120
#define WINDOW_S	2

/* ShmemHugePages of /proc/meminfo, in kB, or -1. */
static long shmem_huge_kb(void)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "ShmemHugePages: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

struct knob {
	const char *path;
	char old[64];
};

FIXTURE(scan)
{
	struct knob knobs[4];
	uint8_t *anon, *shmem;
	int memfd;
};

FIXTURE_SETUP(scan)
{
	static const char * const paths[] = {
		KHUGEPAGED_SYSFS "scan_sleep_millisecs",
		KHUGEPAGED_SYSFS "pages_to_scan",
		THP_SYSFS "enabled",
		THP_SYSFS "shmem_enabled",
	};

	self->anon = NULL;
	self->shmem = NULL;
	self->memfd = -1;
	for (int i = 0; i < 4; i++) {
		int fd = open(paths[i], O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, self->knobs[i].old,
					   sizeof(self->knobs[i].old) - 1) : -1;

		if (fd >= 0)
			close(fd);
		ASSERT_GT(n, 0);
		self->knobs[i].path = paths[i];
		self->knobs[i].old[n] = 0;
	}
	/* Slow until the memory is ready: nothing collapses half-populated. */
	ASSERT_EQ(0, write_str(paths[0], "100000", false));
	ASSERT_EQ(0, write_str(paths[1], "4096", false));
	ASSERT_EQ(0, write_str(paths[2], "madvise", false));
	ASSERT_EQ(0, write_str(paths[3], "advise", false));
}

FIXTURE_TEARDOWN(scan)
{
	for (int i = 0; i < 4; i++) {
		char *old = self->knobs[i].old, *b = strchr(old, '[');

		/* "always [madvise] never" -> "madvise" */
		if (b) {
			old = b + 1;
			*strchr(old, ']') = 0;
		}
		write_str(self->knobs[i].path, old, false);
	}
	if (self->anon)
		munmap(self->anon, LEN);
	if (self->shmem)
		munmap(self->shmem, LEN);
	if (self->memfd >= 0)
		close(self->memfd);
}

TEST_F_TIMEOUT(scan, collapses_every_extent, TIMEOUT_S + WINDOW_S + 60)
{
	long collapsed0, full0, collapsed1, full1, collapsed2, full2;
	long shmem0;
	int elapsed = 0;

	/* Small pages first, then MADV_HUGEPAGE for khugepaged. */
	self->anon = (uint8_t *)aligned_map(LEN, PROT_READ | PROT_WRITE,
					    MAP_PRIVATE | MAP_ANONYMOUS, -1);
	ASSERT_NE(NULL, self->anon);
	ASSERT_EQ(0, madvise(self->anon, LEN, MADV_NOHUGEPAGE));
	for (size_t i = 0; i < LEN; i++)
		self->anon[i] = kh_pattern(i, 1);

	self->memfd = memfd_create("khugepaged_scan", 0);
	ASSERT_GE(self->memfd, 0);
	ASSERT_EQ(0, ftruncate(self->memfd, LEN));
	self->shmem = (uint8_t *)aligned_map(LEN, PROT_READ | PROT_WRITE,
					     MAP_SHARED, self->memfd);
	ASSERT_NE(NULL, self->shmem);
	for (size_t i = 0; i < LEN; i++)
		self->shmem[i] = kh_pattern(i, 2);
	ASSERT_EQ(0, smaps_field(self->anon, "AnonHugePages:"));
	ASSERT_EQ(0, smaps_field(self->shmem, "ShmemPmdMapped:"));

	shmem0 = shmem_huge_kb();
	collapsed0 = read_num(KHUGEPAGED_SYSFS "pages_collapsed");
	full0 = read_num(KHUGEPAGED_SYSFS "full_scans");
	ASSERT_GE(shmem0, 0);
	ASSERT_GE(collapsed0, 0);
	ASSERT_GE(full0, 0);
	ASSERT_EQ(0, madvise(self->anon, LEN, MADV_HUGEPAGE));
	ASSERT_EQ(0, madvise(self->shmem, LEN, MADV_HUGEPAGE));
	ASSERT_EQ(0, write_str(KHUGEPAGED_SYSFS "scan_sleep_millisecs", "10",
			       false));

	/* Until every extent is collapsed and two more passes went by. */
	do {
		sleep(1);
		collapsed1 = read_num(KHUGEPAGED_SYSFS "pages_collapsed");
		full1 = read_num(KHUGEPAGED_SYSFS "full_scans");
	} while ((smaps_field(self->anon, "AnonHugePages:") < (long)(LEN >> 10) ||
		  shmem_huge_kb() - shmem0 < (long)(LEN >> 10) ||
		  full1 - full0 < 2) && ++elapsed < TIMEOUT_S);
	TH_LOG("collapsed in %d s: pages_collapsed +%ld, full_scans +%ld",
	       elapsed, collapsed1 - collapsed0, full1 - full0);
	ASSERT_LT(elapsed, TIMEOUT_S);
	EXPECT_GE(collapsed1 - collapsed0, 2 * EXTENTS);

	/* The steady state: EXTENTS more per full scan, give or take a pass. */
	sleep(WINDOW_S);
	collapsed2 = read_num(KHUGEPAGED_SYSFS "pages_collapsed");
	full2 = read_num(KHUGEPAGED_SYSFS "full_scans");
	TH_LOG("then in %d s: pages_collapsed +%ld, full_scans +%ld", WINDOW_S,
	       collapsed2 - collapsed1, full2 - full1);
	EXPECT_GE(full2 - full1, 2);
	EXPECT_LE(labs(collapsed2 - collapsed1 - EXTENTS * (full2 - full1)),
		  EXTENTS);

	/* Reading refaults the retracted shmem extents by PMD. */
	EXPECT_EQ(0, kh_bad_bytes(self->anon, LEN, 1));
	EXPECT_EQ(0, kh_bad_bytes(self->shmem, LEN, 2));
	EXPECT_EQ((long)(LEN >> 10), smaps_field(self->anon, "AnonHugePages:"));
	EXPECT_EQ((long)(LEN >> 10), smaps_field(self->shmem, "ShmemPmdMapped:"));
}

TEST_HARNESS_MAIN
