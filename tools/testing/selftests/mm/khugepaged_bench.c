// SPDX-License-Identifier: GPL-2.0
/*
 * `make bench`: the cost of khugepaged's collapse paths, C and Rust
 * alternating (C, Rust, C, Rust, ...) through the impl knob in one boot,
 * after warm-up rounds that are not reported. One line per measurement:
 *
 *   @@BENCH row=ROW impl=IMPL ns=NS collapsed=PAGES_COLLAPSED_DELTA
 *
 * Usage: khugepaged_bench ROUNDS WARMUP [DIR]
 *   DIR: ext4 directory for the file rows (skipped without it).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "khugepaged_util.h"

#define PAGE		KH_PAGE
#define THP		THP_SYSFS
#define KHUGEPAGED	KHUGEPAGED_SYSFS

static const char *dir;
static const char *impl;
static int quiet;

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void report(const char *row, long long ns, long collapsed)
{
	if (!quiet)
		printf("@@BENCH row=%s impl=%s ns=%lld collapsed=%ld\n", row,
		       impl, ns, collapsed);
}

/* Timed MADV_COLLAPSE of [p, p + len); -1 if it did not collapse. */
static long long timed_collapse(char *p, size_t len)
{
	long long t0 = now_ns(), t1;
	int ret = madvise(p, len, MADV_COLLAPSE);

	t1 = now_ns();
	return ret ? -1 : t1 - t0;
}

/* 1. Anonymous memory with @empty PTEs not populated. */
static void bench_anon(int empty)
{
	char row[32], *p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1);
	long long ns;

	if (!p)
		return;
	madvise(p, PMD_SIZE, MADV_NOHUGEPAGE);
	for (size_t i = empty * PAGE; i < PMD_SIZE; i += PAGE)
		p[i] = 1;
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	ns = timed_collapse(p, PMD_SIZE);
	snprintf(row, sizeof(row), "anon-empty%d", empty);
	if (ns >= 0 && smaps_field(p, "AnonHugePages:") == 2048)
		report(row, ns, 0);
	munmap(p, PMD_SIZE);
}

/* The read-only fd of a new file @path of @len bytes (see ro_file()). */
static int make_file(const char *path, size_t len, bool keep)
{
	char *buf = malloc(len);
	int fd;

	if (!buf)
		return -1;
	memset(buf, 0xc3, len);
	fd = ro_file(path, buf, len, keep);
	free(buf);
	return fd;
}

/* 2. and 3. shmem and file: collapse_file + retract; then re-collapse. */
static void bench_shared(const char *mem)
{
	int is_file = !strcmp(mem, "file");
	const char *field = is_file ? "FilePmdMapped:" : "ShmemPmdMapped:";
	int prot = is_file ? PROT_READ | PROT_EXEC : PROT_READ | PROT_WRITE;
	int fd;
	char row[32], *p;
	long long ns;

	if (is_file) {
		char path[4096];

		if (!dir)
			return;
		snprintf(path, sizeof(path), "%s/bench.%d", dir, getpid());
		fd = make_file(path, PMD_SIZE, false);
	} else {
		fd = memfd_create("bench", 0);
		if (fd >= 0 && ftruncate(fd, PMD_SIZE))
			fd = -1;
	}
	if (fd < 0)
		return;
	p = aligned_map(PMD_SIZE, prot, is_file ? MAP_PRIVATE : MAP_SHARED, fd);
	if (!p)
		goto out;
	if (is_file)
		touch(p, PMD_SIZE);
	else
		memset(p, 2, PMD_SIZE);
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	ns = timed_collapse(p, PMD_SIZE);
	snprintf(row, sizeof(row), "%s", mem);
	if (ns >= 0 && smaps_field(p, field) == 2048)
		report(row, ns, 0);

	/* PTE-mapped THP: split by mprotect(), faulted in while split. */
	mprotect(p + PAGE, PAGE, PROT_READ | (is_file ? 0 : PROT_EXEC));
	touch(p, PMD_SIZE);
	mprotect(p + PAGE, PAGE, prot);
	if (smaps_field(p, field) == 0 && smaps_field(p, "Rss:") == 2048) {
		ns = timed_collapse(p, PMD_SIZE);
		snprintf(row, sizeof(row), "%s-pte-mapped", mem);
		if (ns >= 0 && smaps_field(p, field) == 2048)
			report(row, ns, 0);
	}
	munmap(p, PMD_SIZE);
out:
	close(fd);
}

/* 4. uprobe removal until the range is PMD-mapped again. */
static void bench_uprobe(void)
{
	char path[4096], cmd[4200], en[256];
	long long t0, t1;
	char *p;
	int fd;

	if (!dir || access(TRACEFS "uprobe_events", W_OK))
		return;
	snprintf(path, sizeof(path), "%s/uprobe-text.%d", dir, getpid());
	/* Kept until the end: the uprobe names the file by its path. */
	fd = make_file(path, PMD_SIZE, true);
	if (fd < 0)
		return;
	p = aligned_map(PMD_SIZE, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd);
	if (!p)
		goto out;
	touch(p, PMD_SIZE);
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	if (madvise(p, PMD_SIZE, MADV_COLLAPSE))
		goto unmap;
	snprintf(cmd, sizeof(cmd), "p:khugepaged_bench/heal %s:0x1000\n", path);
	snprintf(en, sizeof(en), TRACEFS "events/khugepaged_bench/heal/enable");
	if (write_str(TRACEFS "uprobe_events", cmd, 1) || write_str(en, "1", 0))
		goto unmap;
	t0 = now_ns();
	write_str(en, "0", 0);
	write_str(TRACEFS "uprobe_events", "-:khugepaged_bench/heal\n", 1);
	touch(p + PAGE, 1);
	t1 = now_ns();
	if (smaps_field(p, "FilePmdMapped:") == 2048)
		report("uprobe-heal", t1 - t0, 0);
unmap:
	write_str(TRACEFS "uprobe_events", "-:khugepaged_bench/heal\n", 1);
	munmap(p, PMD_SIZE);
out:
	close(fd);
	unlink(path);
}

/* 5. One shmem file mapped by @nr processes; collapse + retract. */
static void bench_retract(int nr)
{
	int fd = memfd_create("bench_retract", 0);
	int go[2], ready[2];
	pid_t *pids;
	char row[32], c, *p;
	long long ns;
	int i;

	if (fd < 0 || ftruncate(fd, PMD_SIZE) || pipe(go) || pipe(ready))
		return;
	pids = calloc(nr, sizeof(*pids));
	p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	if (!pids || !p)
		return;
	memset(p, 3, PMD_SIZE);
	/* nr - 1 other processes map it by PTEs, at a 2 MiB aligned address. */
	for (i = 0; i < nr - 1; i++) {
		pids[i] = fork();
		if (!pids[i]) {
			char *q = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, fd);

			if (q)
				touch(q, PMD_SIZE);
			c = q ? 1 : 0;
			if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
				_exit(1);
			_exit(0);
		}
	}
	for (i = 0; i < nr - 1; i++)
		if (read(ready[0], &c, 1) != 1)
			break;
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	ns = timed_collapse(p, PMD_SIZE);
	snprintf(row, sizeof(row), "retract-%d", nr);
	if (ns >= 0)
		report(row, ns, 0);
	for (i = 0; i < nr - 1; i++)
		if (write(go[1], &c, 1) != 1)
			break;
	for (i = 0; i < nr - 1; i++)
		waitpid(pids[i], NULL, 0);
	free(pids);
	munmap(p, PMD_SIZE);
	close(fd);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
	close(ready[1]);
}

/* khugepaged's CPU time in ns, from /proc/PID/stat (utime + stime). */
static long long khugepaged_cpu_ns(void)
{
	static char stat[300];
	char buf[1024], *s;
	unsigned long ut, st;
	FILE *f;

	if (!stat[0]) {
		DIR *d = opendir("/proc");
		struct dirent *e;

		while (d && (e = readdir(d))) {
			char comm[64] = "", path[300];
			FILE *c;

			snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
			c = fopen(path, "r");
			if (!c)
				continue;
			if (fgets(comm, sizeof(comm), c) &&
			    !strcmp(comm, "khugepaged\n"))
				snprintf(stat, sizeof(stat), "/proc/%s/stat",
					 e->d_name);
			fclose(c);
		}
		if (d)
			closedir(d);
	}
	f = fopen(stat, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	s = strrchr(buf, ')');
	if (!s || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			 &ut, &st) != 2)
		return -1;
	return (long long)(ut + st) * (1000000000LL / sysconf(_SC_CLK_TCK));
}

/* 6. khugepaged: ns of its CPU time per 2 MiB collapsed, 16 MiB of anon. */
static void bench_scan(void)
{
	size_t len = 16 * PMD_SIZE;
	long before, collapsed;
	long long cpu0, t0;
	char *p = aligned_map(len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1);

	if (!p)
		return;
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, 4, len);
	/* khugepaged as fast as it goes, for this row only. */
	write_str(KHUGEPAGED "scan_sleep_millisecs", "0", 0);
	write_str(KHUGEPAGED "alloc_sleep_millisecs", "0", 0);
	before = read_num(KHUGEPAGED "pages_collapsed");
	cpu0 = khugepaged_cpu_ns();
	t0 = now_ns();
	madvise(p, len, MADV_HUGEPAGE);
	while (smaps_field(p, "AnonHugePages:") < (long)(len >> 10) &&
	       now_ns() - t0 < 60000000000LL)
		usleep(2000);
	collapsed = read_num(KHUGEPAGED "pages_collapsed") - before;
	if (smaps_field(p, "AnonHugePages:") == (long)(len >> 10) && cpu0 >= 0)
		report("khugepaged-scan", (khugepaged_cpu_ns() - cpu0) / 16,
		       collapsed);
	write_str(KHUGEPAGED "scan_sleep_millisecs", "10000", 0);
	write_str(KHUGEPAGED "alloc_sleep_millisecs", "60000", 0);
	munmap(p, len);
}

int main(int argc, char **argv)
{
	static const char * const impls[] = { "c", "rust" };
	int rounds = argc > 1 ? atoi(argv[1]) : 9;
	int warmup = argc > 2 ? atoi(argv[2]) : 2;

	dir = argc > 3 ? argv[3] : NULL;
	setbuf(stdout, NULL);
	write_str(KHUGEPAGED "pages_to_scan", "4096", 0);
	write_str(THP "enabled", "madvise", 0);
	for (int r = 0; r < warmup + rounds; r++) {
		for (int i = 0; i < 2; i++) {
			/* ABAB..., starting with the other one every round. */
			impl = impls[(i + r) % 2];
			if (write_str(KHUGEPAGED "impl", impl, 0)) {
				printf("# cannot select %s\n", impl);
				return 1;
			}
			quiet = r < warmup;
			bench_anon(0);
			bench_anon(256);
			bench_anon(511);
			bench_shared("shmem");
			bench_shared("file");
			bench_uprobe();
			bench_retract(1);
			bench_retract(16);
			bench_retract(256);
			bench_scan();
		}
	}
	return 0;
}
