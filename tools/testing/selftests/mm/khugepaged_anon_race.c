// SPDX-License-Identifier: GPL-2.0
/*
 * The anonymous collapse racing with page references: MADV_COLLAPSE of a
 * 2 MiB anonymous extent while another thread keeps taking and dropping
 * references on a few of its pages (vmsplice() into a pipe holds them
 * until the pipe is read, at once).
 *
 * collapse_huge_page() drops the mmap lock to allocate the huge page, so a
 * reference can appear after hpage_collapse_scan_pmd() checked the
 * refcounts: the isolation under the detached page table then fails, and
 * the table must go back with every PTE and every folio already isolated
 * back to the LRU. Every other round first pages a few pages out
 * (MADV_PAGEOUT, to zram), which widens that window: the collapse swaps
 * them back in between the scan and the isolation.
 *
 * Each round checks that every byte reads back, that a failure is EAGAIN
 * (or ENOMEM), as madvise_collapse_errno() maps the transient results,
 * and that a success maps the extent by PMD. Between rounds the PMD is
 * split (mprotect() of one page), so the next collapse copies a
 * PTE-mapped large folio (C's compound_pagelist); every few rounds the
 * extent is refilled with small pages.
 *
 * Successful MADV_COLLAPSEs must match the huge pages the running
 * implementation's collapse_huge_page() installed (impl_stats); the calls
 * it failed are collapses undone after the scan: rounds go on (up to
 * MAX_ROUNDS) until UNDONE_WANTED of them, and the count is logged. The
 * tracepoints, traced for this process only, must match the counters:
 * one mm_khugepaged_scan_pmd per scan, one mm_collapse_huge_page per
 * collapse (status succeeded for each huge page installed), and one
 * successful mm_collapse_huge_page_isolate per huge page. Runs under the
 * selected implementation; make test runs it for both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

#define ROUNDS		150	/* at least */
#define MAX_ROUNDS	450
#define UNDONE_WANTED	4	/* rounds go on until this many are undone */
#define REFILL_EVERY	16
#define MAX_PIN_PAGES	2
#define PAGEOUT_PAGES	32
#define SPIN		20000

static const char * const events[] = {
	"mm_khugepaged_scan_pmd",
	"mm_collapse_huge_page",
	"mm_collapse_huge_page_isolate",
};

/* The events above, for this process only, on or off. */
static int trace_events(bool on)
{
	char path[128], pid[32];

	snprintf(pid, sizeof(pid), "%d", getpid());
	if (write_str(TRACEFS "set_event_pid", on ? pid : "", false) ||
	    (on && write_str(TRACEFS "trace", "", false)))
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(events); i++) {
		snprintf(path, sizeof(path),
			 TRACEFS "events/huge_memory/%s/enable", events[i]);
		if (write_str(path, on ? "1" : "0", false))
			return -1;
	}
	return 0;
}

/* Per event: how many were traced, and how many with status=succeeded. */
static int trace_count(long *n, long *ok)
{
	char line[512], name[64];
	FILE *f = fopen(TRACEFS "trace", "r");

	if (!f)
		return -1;
	memset(n, 0, ARRAY_SIZE(events) * sizeof(*n));
	memset(ok, 0, ARRAY_SIZE(events) * sizeof(*ok));
	while (fgets(line, sizeof(line), f)) {
		for (size_t i = 0; i < ARRAY_SIZE(events); i++) {
			snprintf(name, sizeof(name), " %s:", events[i]);
			if (!strstr(line, name))
				continue;
			n[i]++;
			ok[i] += !!strstr(line, "status=succeeded");
		}
	}
	fclose(f);
	return 0;
}

/* Small pages again: drop the extent and fault it back page by page. */
static void refill(uint8_t *p, int salt)
{
	madvise(p, PMD_SIZE, MADV_DONTNEED);
	for (size_t i = 0; i < PMD_SIZE; i++)
		p[i] = kh_pattern(i, salt);
}

FIXTURE(race)
{
	char enabled[64];
	uint8_t *p;
	pthread_t pinner;
	bool running, tracing;
	atomic_bool stop;
	atomic_long pins;
	int pipe[2];
};

/*
 * Takes references on 1..MAX_PIN_PAGES pages, drops them, waits, until
 * told to stop.
 */
static void *pinner(void *arg)
{
	struct _test_data_race *self = arg;
	static char buf[MAX_PIN_PAGES * KH_PAGE];
	unsigned int seed = 1;

	while (!atomic_load(&self->stop)) {
		size_t n = 1 + rand_r(&seed) % MAX_PIN_PAGES;
		size_t first = rand_r(&seed) % (PMD_SIZE / KH_PAGE - n + 1);
		struct iovec iov = { self->p + first * KH_PAGE, n * KH_PAGE };
		ssize_t left = vmsplice(self->pipe[1], &iov, 1, 0);

		if (left <= 0)
			continue;
		atomic_fetch_add(&self->pins, 1);
		while (left > 0) {
			ssize_t got = read(self->pipe[0], buf, left);

			if (got <= 0)
				break;
			left -= got;
		}
		/*
		 * Short references, short gaps: the collapse is undone when
		 * its scan saw none and its isolation, a little later, sees
		 * one. A busy gap: sleeping would take far longer.
		 */
		for (unsigned int spin = rand_r(&seed) % SPIN; spin; spin--)
			__asm__ volatile("" ::: "memory");
	}
	return NULL;
}

FIXTURE_SETUP(race)
{
	int fd = open(THP_SYSFS "enabled", O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, self->enabled,
				   sizeof(self->enabled) - 1) : -1;

	if (fd >= 0)
		close(fd);
	ASSERT_GT(n, 0);
	self->enabled[n] = 0;
	/*
	 * madvise: faults map small pages and khugepaged leaves the extent
	 * (no MADV_HUGEPAGE) alone, so every collapse counted is ours.
	 */
	ASSERT_EQ(0, write_str(THP_SYSFS "enabled", "madvise", false));
	self->running = false;
	self->tracing = false;
	atomic_store(&self->stop, false);
	atomic_store(&self->pins, 0);
	ASSERT_EQ(0, pipe(self->pipe));
	self->p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS, -1);
	ASSERT_NE(NULL, self->p);
}

FIXTURE_TEARDOWN(race)
{
	char *old = self->enabled, *b = strchr(old, '[');

	if (self->running) {
		atomic_store(&self->stop, true);
		pthread_join(self->pinner, NULL);
	}
	if (self->tracing)
		trace_events(false);
	/* "always [madvise] never" -> "madvise" */
	if (b) {
		old = b + 1;
		*strchr(old, ']') = 0;
	}
	write_str(THP_SYSFS "enabled", old, false);
	munmap(self->p, PMD_SIZE);
	close(self->pipe[0]);
	close(self->pipe[1]);
}

TEST_F_TIMEOUT(race, collapse_vs_references, 600)
{
	long calls0, ok0, calls1, ok1, scans0, scans1, dummy;
	long traced[ARRAY_SIZE(events)], traced_ok[ARRAY_SIZE(events)];
	int collapsed = 0, eagain = 0, enomem = 0, round;
	unsigned int seed = 2;
	char impl[16];

	ASSERT_EQ(0, current_impl(impl, sizeof(impl)));
	ASSERT_EQ(0, impl_stat(impl, "collapse_huge_page", &calls0, &ok0));
	ASSERT_EQ(0, impl_stat(impl, "hpage_collapse_scan_pmd", &scans0,
			       &dummy));
	refill(self->p, 0);
	ASSERT_EQ(0, smaps_field(self->p, "AnonHugePages:"));
	self->tracing = true;
	ASSERT_EQ(0, trace_events(true));
	ASSERT_EQ(0, pthread_create(&self->pinner, NULL, pinner, self));
	self->running = true;

	for (round = 1; round <= MAX_ROUNDS; round++) {
		int salt = round / REFILL_EVERY;

		if (round % REFILL_EVERY == 0)
			refill(self->p, salt);
		for (int i = 0; round % 2 && i < PAGEOUT_PAGES; i++) {
			size_t pg = rand_r(&seed) % (PMD_SIZE / KH_PAGE);

			ASSERT_EQ(0, madvise(self->p + pg * KH_PAGE, KH_PAGE,
					     MADV_PAGEOUT));
		}
		if (madvise(self->p, PMD_SIZE, MADV_COLLAPSE) == 0) {
			collapsed++;
			ASSERT_EQ((long)(PMD_SIZE >> 10),
				  smaps_field(self->p, "AnonHugePages:"));
			ASSERT_EQ(0, kh_bad_bytes(self->p, PMD_SIZE, salt));
			/* Split the PMD; the folio stays large. */
			ASSERT_EQ(0, mprotect(self->p, KH_PAGE, PROT_READ));
			ASSERT_EQ(0, mprotect(self->p, KH_PAGE,
					      PROT_READ | PROT_WRITE));
			ASSERT_EQ(0, smaps_field(self->p, "AnonHugePages:"));
		} else {
			int err = errno;

			if (err != EAGAIN && err != ENOMEM)
				TH_LOG("round %d: MADV_COLLAPSE: %s", round,
				       strerror(err));
			ASSERT_TRUE(err == EAGAIN || err == ENOMEM);
			eagain += err == EAGAIN;
			enomem += err == ENOMEM;
			ASSERT_EQ(0, smaps_field(self->p, "AnonHugePages:"));
		}
		ASSERT_EQ(0, kh_bad_bytes(self->p, PMD_SIZE, salt));
		ASSERT_EQ(0, impl_stat(impl, "collapse_huge_page", &calls1,
				       &ok1));
		if (round >= ROUNDS &&
		    (calls1 - calls0) - (ok1 - ok0) >= UNDONE_WANTED)
			break;
	}
	round = round > MAX_ROUNDS ? MAX_ROUNDS : round;
	atomic_store(&self->stop, true);
	pthread_join(self->pinner, NULL);
	self->running = false;
	ASSERT_EQ(0, trace_events(false));
	self->tracing = false;
	ASSERT_EQ(0, trace_count(traced, traced_ok));

	ASSERT_EQ(0, impl_stat(impl, "collapse_huge_page", &calls1, &ok1));
	ASSERT_EQ(0, impl_stat(impl, "hpage_collapse_scan_pmd", &scans1,
			       &dummy));
	TH_LOG("%s: %d rounds, %ld references taken: %d collapsed, %d EAGAIN, %d ENOMEM",
	       impl, round, atomic_load(&self->pins), collapsed, eagain,
	       enomem);
	TH_LOG("%s: %ld scans, collapse_huge_page %ld calls, %ld installed, %ld undone",
	       impl, scans1 - scans0, calls1 - calls0, ok1 - ok0,
	       (calls1 - calls0) - (ok1 - ok0));
	TH_LOG("%s: traced %ld scan_pmd, %ld collapse (%ld succeeded), %ld isolate (%ld succeeded)",
	       impl, traced[0], traced[1], traced_ok[1], traced[2],
	       traced_ok[2]);
	EXPECT_EQ(scans1 - scans0, traced[0]);
	EXPECT_EQ(calls1 - calls0, traced[1]);
	EXPECT_EQ(ok1 - ok0, traced_ok[1]);
	EXPECT_EQ(ok1 - ok0, traced_ok[2]);
	EXPECT_GT(collapsed, 0);
	EXPECT_GT(atomic_load(&self->pins), 0);
	EXPECT_EQ(collapsed, ok1 - ok0);
	EXPECT_GE(scans1 - scans0, round);
	if ((calls1 - calls0) - (ok1 - ok0) == 0)
		TH_LOG("no isolation failed after its scan: the undo path did not run");
}

TEST_HARNESS_MAIN
