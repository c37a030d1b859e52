// SPDX-License-Identifier: GPL-2.0
/*
 * `make run` demo: MADV_COLLAPSE of 2 MiB of anonymous, shmem and file
 * memory, and the re-collapse of a PTE-mapped THP (collapse_pte_mapped_thp),
 * timed with CLOCK_MONOTONIC around the syscall. One line per run:
 *
 *   @@DEMO impl=IMPL mem=MEM result=ok|fail before=KB after=KB ns=NS
 *
 * Usage: khugepaged_demo IMPL RUNS [DIR]
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

#include "khugepaged_util.h"

static const char *impl;
static int quiet;

static void one(const char *mem, const char *field, char *p, int recollapse,
		int prot)
{
	struct timespec t0, t1;
	long before, after;
	int ret;

	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	touch(p, PMD_SIZE);
	if (recollapse) {
		/* Collapse, then split the PMD: a PTE-mapped THP. */
		madvise(p, PMD_SIZE, MADV_COLLAPSE);
		mprotect(p + 4096, 4096, PROT_READ);
		touch(p, PMD_SIZE);
		mprotect(p + 4096, 4096, prot);
	}
	before = smaps_field(p, field);
	if (recollapse && (before != 0 || smaps_field(p, "Rss:") != 2048))
		printf("# %s: not a PTE-mapped THP\n", mem);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = madvise(p, PMD_SIZE, MADV_COLLAPSE);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	after = smaps_field(p, field);
	if (quiet)
		return;
	printf("@@DEMO impl=%s mem=%s result=%s before=%ld after=%ld ns=%lld\n",
	       impl, mem, !ret && after == 2048 ? "ok" : "fail", before, after,
	       (t1.tv_sec - t0.tv_sec) * 1000000000LL + t1.tv_nsec - t0.tv_nsec);
}

static void demo_round(const char *dir, char *buf, int r)
{
	char path[4096], *p;
	int fd;

	p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	madvise(p, PMD_SIZE, MADV_NOHUGEPAGE);
	memset(p, 1, PMD_SIZE);
	one("anon", "AnonHugePages:", p, 0, PROT_READ | PROT_WRITE);
	munmap(p, PMD_SIZE);

	for (int re = 0; re < 2; re++) {
		fd = memfd_create("demo", 0);
		if (ftruncate(fd, PMD_SIZE))
			return;
		p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
		memset(p, 2, PMD_SIZE);
		one(re ? "shmem-pte-mapped" : "shmem", "ShmemPmdMapped:", p, re,
		    PROT_READ | PROT_WRITE);
		munmap(p, PMD_SIZE);
		close(fd);

		if (!dir)
			continue;
		snprintf(path, sizeof(path), "%s/demo.%d.%d", dir, r, re);
		fd = ro_file(path, buf, PMD_SIZE, false);
		if (fd < 0)
			return;
		p = aligned_map(PMD_SIZE, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd);
		one(re ? "file-pte-mapped" : "file", "FilePmdMapped:", p, re,
		    PROT_READ | PROT_EXEC);
		munmap(p, PMD_SIZE);
		close(fd);
	}
}

int main(int argc, char **argv)
{
	static const char * const impls[] = { "c", "rust" };
	int runs = argc > 1 ? atoi(argv[1]) : 5;
	const char *dir = argc > 2 ? argv[2] : NULL;
	char *buf = malloc(PMD_SIZE);

	if (argc < 2 || !buf)
		return 2;
	memset(buf, 0x5a, PMD_SIZE);
	for (int r = -1; r < runs; r++) {
		for (int i = 0; i < 2; i++) {
			impl = impls[i];
			if (write_str(KHUGEPAGED_SYSFS "impl", impl, false)) {
				printf("# cannot select %s\n", impl);
				return 1;
			}
			quiet = r < 0;	/* warm-up */
			demo_round(dir, buf, r + 1);
		}
	}
	return 0;
}
