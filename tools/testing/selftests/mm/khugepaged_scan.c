// SPDX-License-Identifier: GPL-2.0
/*
 * The khugepaged thread, counted: with a fast scan (scan_sleep_millisecs
 * of 10, pages_to_scan large), MADV_HUGEPAGE anonymous and shmem memory
 * populated with small pages must be collapsed by khugepaged alone:
 * pages_collapsed grows by exactly one per 2 MiB extent, full_scans goes
 * on growing, every extent ends up PMD-mapped, and every byte reads back.
 *
 * It runs under whichever implementation is selected; make test runs it
 * for both, so the counts are compared side by side.
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

static uint8_t pattern(size_t i, int salt)
{
	return (uint8_t)(i * 13 + i / KH_PAGE + salt);
}

/* Bytes of [p, p + LEN) that differ from pattern(, @salt). */
static long bad_bytes(const uint8_t *p, int salt)
{
	long bad = 0;

	for (size_t i = 0; i < LEN; i++)
		bad += p[i] != pattern(i, salt);
	return bad;
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

TEST_F_TIMEOUT(scan, collapses_every_extent, TIMEOUT_S + 60)
{
	long collapsed0, full0, collapsed, full;
	int elapsed = 0;

	/* Small pages first, then MADV_HUGEPAGE for khugepaged. */
	self->anon = (uint8_t *)aligned_map(LEN, PROT_READ | PROT_WRITE,
					    MAP_PRIVATE | MAP_ANONYMOUS, -1);
	ASSERT_NE(NULL, self->anon);
	ASSERT_EQ(0, madvise(self->anon, LEN, MADV_NOHUGEPAGE));
	for (size_t i = 0; i < LEN; i++)
		self->anon[i] = pattern(i, 1);

	self->memfd = memfd_create("khugepaged_scan", 0);
	ASSERT_GE(self->memfd, 0);
	ASSERT_EQ(0, ftruncate(self->memfd, LEN));
	self->shmem = (uint8_t *)aligned_map(LEN, PROT_READ | PROT_WRITE,
					     MAP_SHARED, self->memfd);
	ASSERT_NE(NULL, self->shmem);
	for (size_t i = 0; i < LEN; i++)
		self->shmem[i] = pattern(i, 2);
	ASSERT_EQ(0, smaps_field(self->anon, "AnonHugePages:"));
	ASSERT_EQ(0, smaps_field(self->shmem, "ShmemPmdMapped:"));

	collapsed0 = read_num(KHUGEPAGED_SYSFS "pages_collapsed");
	full0 = read_num(KHUGEPAGED_SYSFS "full_scans");
	ASSERT_GE(collapsed0, 0);
	ASSERT_GE(full0, 0);
	ASSERT_EQ(0, madvise(self->anon, LEN, MADV_HUGEPAGE));
	ASSERT_EQ(0, madvise(self->shmem, LEN, MADV_HUGEPAGE));
	ASSERT_EQ(0, write_str(KHUGEPAGED_SYSFS "scan_sleep_millisecs", "10",
			       false));

	/* Until every extent is collapsed and two more passes went by. */
	do {
		sleep(1);
		collapsed = read_num(KHUGEPAGED_SYSFS "pages_collapsed");
		full = read_num(KHUGEPAGED_SYSFS "full_scans");
	} while ((collapsed - collapsed0 < 2 * EXTENTS || full - full0 < 2) &&
		 ++elapsed < TIMEOUT_S);
	TH_LOG("pages_collapsed +%ld, full_scans +%ld in %d s",
	       collapsed - collapsed0, full - full0, elapsed);
	EXPECT_EQ(2 * EXTENTS, collapsed - collapsed0);
	EXPECT_GE(full - full0, 2);

	/* Reading refaults the retracted shmem extents by PMD. */
	EXPECT_EQ(0, bad_bytes(self->anon, 1));
	EXPECT_EQ(0, bad_bytes(self->shmem, 2));
	EXPECT_EQ((long)(LEN >> 10), smaps_field(self->anon, "AnonHugePages:"));
	EXPECT_EQ((long)(LEN >> 10), smaps_field(self->shmem, "ShmemPmdMapped:"));
}

TEST_HARNESS_MAIN
