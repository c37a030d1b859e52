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
 *
 * KH_BENCH_ROWS=anon,retract (say) runs only the rows, and profiles, whose
 * names start with one of the words; unset, all of them. KH_PROF_SYM=NAME
 * adds the samples within kernel function NAME by offset:
 *
 *   @@PROFIP row=ROW sym=NAME off=OFFSET samples=N
 *
 * Profile: khugepaged_bench --profile ITERATIONS [DIR]
 *   Re-collapses a PTE-mapped shmem (and file) THP ITERATIONS times per
 *   implementation, and collapses new shmem and anonymous memory
 *   ITERATIONS / 3 times, sampling the kernel's instruction pointer with a
 *   cpu-clock perf event enabled only around MADV_COLLAPSE, and prints the
 *   samples per kernel function (from /proc/kallsyms):
 *
 *   @@PROF row=ROW impl=IMPL sym=SYMBOL samples=N
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
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

/* Whether row @row is selected by KH_BENCH_ROWS (all if unset or empty). */
static bool want(const char *row)
{
	const char *rows = getenv("KH_BENCH_ROWS");
	size_t n;

	if (!rows || !*rows)
		return true;
	for (const char *w = rows; *w; w += n + (w[n] == ',')) {
		n = strcspn(w, ",");
		if (n && !strncmp(row, w, n))
			return true;
	}
	return false;
}

/* Clock @clk in ns, or -1 if it cannot be read. */
static long long clock_ns(clockid_t clk)
{
	struct timespec t;

	if (clock_gettime(clk, &t))
		return -1;
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
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

/*
 * 1b. MADV_COLLAPSE of a PTE-mapped anonymous THP (mprotect() of one page
 * and back splits the PMD, not the folio): collapse_huge_page() copies it
 * into a new THP, and unmaps it a run of PTEs at a time where the
 * implementation batches (6.17's C, this Rust), one PTE at a time in
 * 6.12's C.
 */
static char *anon_pte_mapped_thp(void)
{
	char *p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1);

	if (!p)
		return NULL;
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	memset(p, 5, PMD_SIZE);
	if (smaps_field(p, "AnonHugePages:") != 2048 ||
	    mprotect(p, PAGE, PROT_READ) ||
	    mprotect(p, PAGE, PROT_READ | PROT_WRITE) ||
	    smaps_field(p, "AnonHugePages:") != 0) {
		printf("# %s: no PTE-mapped THP\n", __func__);
		munmap(p, PMD_SIZE);
		return NULL;
	}
	return p;
}

static void bench_anon_pte_mapped(void)
{
	char *p = anon_pte_mapped_thp();
	long long ns;

	if (!p)
		return;
	ns = timed_collapse(p, PMD_SIZE);
	if (ns >= 0 && smaps_field(p, "AnonHugePages:") == 2048)
		report("anon-pte-mapped", ns, 0);
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

/*
 * Splits the PMD mapping of the THP at @p by an mprotect() of one page and
 * faults it all in while split: PTE-mapped, ready for a re-collapse.
 */
static bool pte_map(char *p, bool is_file)
{
	int prot = is_file ? PROT_READ | PROT_EXEC : PROT_READ | PROT_WRITE;
	const char *field = is_file ? "FilePmdMapped:" : "ShmemPmdMapped:";

	mprotect(p + PAGE, PAGE, PROT_READ | (is_file ? 0 : PROT_EXEC));
	touch(p, PMD_SIZE);
	mprotect(p + PAGE, PAGE, prot);
	return smaps_field(p, field) == 0 && smaps_field(p, "Rss:") == 2048;
}

/*
 * A read-only ext4 file (needs DIR) or a memfd of PMD_SIZE bytes, as the
 * shmem and file rows use them; -1 on failure.
 */
static int shared_fd(bool is_file)
{
	char path[4096];
	int fd;

	if (!is_file) {
		fd = memfd_create("bench", 0);
		if (fd >= 0 && ftruncate(fd, PMD_SIZE)) {
			close(fd);
			fd = -1;
		}
		return fd;
	}
	if (!dir)
		return -1;
	snprintf(path, sizeof(path), "%s/bench.%d", dir, getpid());
	return make_file(path, PMD_SIZE, false);
}

/* Maps @fd at a PMD-aligned address and faults it in; NULL on failure. */
static char *map_shared(int fd, bool is_file)
{
	int prot = is_file ? PROT_READ | PROT_EXEC : PROT_READ | PROT_WRITE;
	char *p = aligned_map(PMD_SIZE, prot, is_file ? MAP_PRIVATE : MAP_SHARED,
			      fd);

	if (p && is_file)
		touch(p, PMD_SIZE);
	else if (p)
		memset(p, 2, PMD_SIZE);
	return p;
}

/* 2. and 3. shmem and file: collapse_file + retract; then re-collapse. */
static void bench_shared(const char *mem)
{
	int is_file = !strcmp(mem, "file");
	const char *field = is_file ? "FilePmdMapped:" : "ShmemPmdMapped:";
	int fd;
	char row[32], *p;
	long long ns;

	fd = shared_fd(is_file);
	if (fd < 0)
		return;
	p = map_shared(fd, is_file);
	if (!p)
		goto out;
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	ns = timed_collapse(p, PMD_SIZE);
	snprintf(row, sizeof(row), "%s", mem);
	if (ns >= 0 && smaps_field(p, field) == 2048)
		report(row, ns, 0);

	if (pte_map(p, is_file)) {
		ns = timed_collapse(p, PMD_SIZE);
		snprintf(row, sizeof(row), "%s-pte-mapped", mem);
		if (ns >= 0 && smaps_field(p, field) == 2048)
			report(row, ns, 0);
	}
	munmap(p, PMD_SIZE);
out:
	close(fd);
}

/*
 * 4. uprobe removal until the range is PMD-mapped again: the CPU time of
 * the thread that removes it. The breakpoint's removal heals the PMD
 * (collapse_pte_mapped_thp()) in this thread; the RCU grace periods that
 * the removal then waits for are sleeps, which wall time would count in
 * whole scheduler ticks.
 */
/*
 * Measurements of the row per round: it is short (some 110k instructions)
 * and costs one of two values some 3% apart from round to round, so that a
 * median of nine flipped between them from boot to boot.
 */
#define UPROBE_REPEAT	5

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
	/* The thread's CPU time (user and kernel). */
	t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	write_str(en, "0", 0);
	write_str(TRACEFS "uprobe_events", "-:khugepaged_bench/heal\n", 1);
	touch(p + PAGE, 1);
	t1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	if (smaps_field(p, "FilePmdMapped:") == 2048)
		report("uprobe-heal", t1 - t0, 0);
unmap:
	write_str(TRACEFS "uprobe_events", "-:khugepaged_bench/heal\n", 1);
	munmap(p, PMD_SIZE);
out:
	close(fd);
	unlink(path);
}

/*
 * A memfd of PMD_SIZE bytes mapped by this process and by @nr - 1 children,
 * each by PTEs at a 2 MiB aligned address, waiting on a pipe: the retract
 * rows and their profile.
 */
struct retract_setup {
	int nr, fd, go[2], ready[2];
	pid_t *pids;
	char *p;
};

static bool retract_setup(struct retract_setup *r, int nr)
{
	char c;
	int i;

	memset(r, 0, sizeof(*r));
	r->nr = nr;
	r->fd = memfd_create("bench_retract", 0);
	if (r->fd < 0 || ftruncate(r->fd, PMD_SIZE) || pipe(r->go) || pipe(r->ready))
		return false;
	r->pids = calloc(nr, sizeof(*r->pids));
	r->p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd);
	if (!r->pids || !r->p)
		return false;
	memset(r->p, 3, PMD_SIZE);
	for (i = 0; i < nr - 1; i++) {
		r->pids[i] = fork();
		if (!r->pids[i]) {
			char *q = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, r->fd);

			if (q)
				touch(q, PMD_SIZE);
			c = q ? 1 : 0;
			if (write(r->ready[1], &c, 1) != 1 || read(r->go[0], &c, 1) != 1)
				_exit(1);
			_exit(0);
		}
	}
	for (i = 0; i < nr - 1; i++)
		if (read(r->ready[0], &c, 1) != 1 || !c)
			return false;
	madvise(r->p, PMD_SIZE, MADV_HUGEPAGE);
	return true;
}

static void retract_teardown(struct retract_setup *r)
{
	char c = 0;
	int i;

	for (i = 0; r->pids && i < r->nr - 1 && r->pids[i] > 0; i++)
		if (write(r->go[1], &c, 1) != 1)
			break;
	for (i = 0; r->pids && i < r->nr - 1 && r->pids[i] > 0; i++)
		waitpid(r->pids[i], NULL, 0);
	free(r->pids);
	if (r->p)
		munmap(r->p, PMD_SIZE);
	for (i = 0; i < 2; i++) {
		if (r->go[i] > 0)
			close(r->go[i]);
		if (r->ready[i] > 0)
			close(r->ready[i]);
	}
	if (r->fd >= 0)
		close(r->fd);
}

/* 5. One shmem file mapped by @nr processes; collapse + retract. */
static void bench_retract(int nr)
{
	struct retract_setup r;
	char row[32];
	long long ns;

	if (retract_setup(&r, nr)) {
		ns = timed_collapse(r.p, PMD_SIZE);
		snprintf(row, sizeof(row), "retract-%d", nr);
		if (ns >= 0)
			report(row, ns, 0);
	}
	retract_teardown(&r);
}

/* khugepaged's pid, or -1. */
static pid_t khugepaged_pid(void)
{
	static pid_t pid = -1;
	DIR *d;
	struct dirent *e;

	if (pid > 0)
		return pid;
	d = opendir("/proc");
	while (d && pid < 0 && (e = readdir(d))) {
		char comm[64] = "", path[300];
		FILE *c;

		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		c = fopen(path, "r");
		if (!c)
			continue;
		if (fgets(comm, sizeof(comm), c) && !strcmp(comm, "khugepaged\n"))
			pid = atoi(e->d_name);
		fclose(c);
	}
	if (d)
		closedir(d);
	return pid;
}

/*
 * khugepaged's CPU time in ns: its CPU-time clock (sum_exec_runtime, to the
 * nanosecond; under -icount, to the instruction), not /proc/PID/stat's
 * whole ticks.
 */
static long long khugepaged_cpu_ns(void)
{
	clockid_t clk;

	if (khugepaged_pid() < 0 || clock_getcpuclockid(khugepaged_pid(), &clk))
		return -1;
	return clock_ns(clk);
}

/* khugepaged's state letter in /proc/PID/stat ('S' asleep), or 0. */
static char khugepaged_state(void)
{
	char path[64], buf[256] = "", *p;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", khugepaged_pid());
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	if (read(fd, buf, sizeof(buf) - 1) < 0)
		buf[0] = 0;
	close(fd);
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/*
 * khugepaged's CPU time once it sleeps: asleep, and its clock still over
 * 1 ms of ours (so it is not waiting for this CPU either), or -1 after 60 s
 * (at once without its clock).
 */
static long long khugepaged_idle_cpu_ns(void)
{
	long long t0 = now_ns(), a = khugepaged_cpu_ns(), b;

	while (a >= 0 && now_ns() - t0 < 60000000000LL) {
		usleep(1000);
		b = khugepaged_cpu_ns();
		if (b == a && khugepaged_state() == 'S')
			return b;
		a = b;
	}
	return -1;
}

#define SCAN_PMDS	16
#define SCAN_PAGES	"8192"	/* SCAN_PMDS * HPAGE_PMD_NR (4 KiB pages) */
#define SCAN_SLEEP	"3600000"	/* ms */

/*
 * Has khugepaged collapse SCAN_PMDS PMDs of new anonymous memory of small
 * pages (event @pfd enabled meanwhile, if not -1); returns its CPU time in
 * ns per PMD collapsed, or -1.
 *
 * Each of its passes (khugepaged_do_scan()) is started by hand, by a
 * write to scan_sleep_millisecs, with scan_sleep_millisecs an hour (no
 * pass of its own, even in the guest time of -icount, where a second is
 * 10^9 instructions) and pages_to_scan the SCAN_PMDS PMDs: a pass scans
 * from the cursor, and ends once it has gone through the SCAN_PMDS PMDs
 * (or its mm list twice); khugepaged then sleeps, and its CPU time is
 * read. The clock stops on that event, not when a poll sees
 * pages_collapsed move: khugepaged does not spin rescanning the collapsed
 * range (or an mm whose mmap lock the benchmark holds) for as long as the
 * scheduler lets it, which made this row depend on how the vCPUs
 * interleaved.
 */
static long long scan_collapse(int pfd)
{
	size_t len = SCAN_PMDS * PMD_SIZE;
	long long cpu0, cpu1 = -1, ret = -1;
	long before;
	int pass;
	char *q, *p = aligned_map(len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1);

	if (!p)
		return -1;
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, 4, len);
	/*
	 * The first MADV_HUGEPAGE of an mm (of a range with an anon_vma)
	 * wakes khugepaged by itself: make it on another range, unmapped
	 * at once, and let that pass end, as the one the write below starts.
	 */
	q = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1);
	if (q) {
		q[0] = 1;
		madvise(q, PMD_SIZE, MADV_HUGEPAGE);
		munmap(q, PMD_SIZE);
	}
	write_str(KHUGEPAGED "scan_sleep_millisecs", SCAN_SLEEP, 0);
	write_str(KHUGEPAGED "pages_to_scan", SCAN_PAGES, 0);
	khugepaged_idle_cpu_ns();
	madvise(p, len, MADV_HUGEPAGE);
	cpu0 = khugepaged_idle_cpu_ns();
	/* After cpu0: a collapse before it fails the round. */
	before = read_num(KHUGEPAGED "pages_collapsed");
	if (pfd >= 0)
		ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0);
	for (pass = 0; pass < 4 && cpu0 >= 0 &&
	     read_num(KHUGEPAGED "pages_collapsed") - before < SCAN_PMDS; pass++) {
		/* Wakes khugepaged for one pass (khugepaged_sleep_expire = 0). */
		write_str(KHUGEPAGED "scan_sleep_millisecs", SCAN_SLEEP, 0);
		cpu1 = khugepaged_idle_cpu_ns();
		if (cpu1 < 0)
			break;
	}
	if (pfd >= 0)
		ioctl(pfd, PERF_EVENT_IOC_DISABLE, 0);
	if (pass && cpu1 >= 0 &&
	    read_num(KHUGEPAGED "pages_collapsed") - before == SCAN_PMDS &&
	    smaps_field(p, "AnonHugePages:") == (long)(len >> 10))
		ret = (cpu1 - cpu0) / SCAN_PMDS;
	else
		printf("# %s: %d passes, %ld collapsed, khugepaged's CPU time %lld..%lld\n",
		       __func__, pass, read_num(KHUGEPAGED "pages_collapsed") - before,
		       cpu0, cpu1);
	write_str(KHUGEPAGED "pages_to_scan", "4096", 0);
	write_str(KHUGEPAGED "scan_sleep_millisecs", "10000", 0);
	munmap(p, len);
	return ret;
}

/* 6. khugepaged: ns of its CPU time per PMD collapsed. */
static void bench_scan(void)
{
	long before = read_num(KHUGEPAGED "pages_collapsed");
	long long ns = scan_collapse(-1);

	if (ns >= 0)
		report("khugepaged-scan", ns,
		       read_num(KHUGEPAGED "pages_collapsed") - before);
}

/* Kernel text symbols, sorted by address, for the profile. */
struct ksym {
	unsigned long addr;
	char name[128];
};

static struct ksym *ksyms;
static size_t nr_ksyms;

static int ksym_cmp(const void *a, const void *b)
{
	const struct ksym *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int load_ksyms(void)
{
	char line[256], name[128], type;
	unsigned long addr;
	size_t cap = 0;
	FILE *f = fopen("/proc/kallsyms", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx %c %127s", &addr, &type, name) != 3 ||
		    (type != 't' && type != 'T') || !addr)
			continue;
		if (nr_ksyms == cap) {
			cap = cap ? 2 * cap : 4096;
			ksyms = realloc(ksyms, cap * sizeof(*ksyms));
			if (!ksyms)
				return -1;
		}
		ksyms[nr_ksyms].addr = addr;
		snprintf(ksyms[nr_ksyms].name, sizeof(ksyms->name), "%s", name);
		nr_ksyms++;
	}
	fclose(f);
	qsort(ksyms, nr_ksyms, sizeof(*ksyms), ksym_cmp);
	return nr_ksyms ? 0 : -1;
}

/* Index of the symbol containing @ip, or -1. */
static long ksym_of(unsigned long ip)
{
	size_t lo = 0, hi = nr_ksyms;

	if (!nr_ksyms || ip < ksyms[0].addr)
		return -1;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (ksyms[mid].addr <= ip)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

#define PROF_PAGES	512	/* ring buffer, plus one header page */
#define PROF_STACK	64	/* kernel frames per sample, at most */
#define PROF_PERIOD_NS	20000

/*
 * A cpu-clock sampling event on thread @pid (0: this one), kernel IPs
 * only, disabled.
 */
static int prof_open(pid_t pid, void **ring)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.size = sizeof(attr),
		.config = PERF_COUNT_SW_CPU_CLOCK,
		.sample_period = PROF_PERIOD_NS,
		.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_CALLCHAIN,
		.disabled = 1,
		.exclude_user = 1,
		.exclude_hv = 1,
		.exclude_callchain_user = 1,
		.sample_max_stack = PROF_STACK,
	};
	int fd = syscall(__NR_perf_event_open, &attr, pid, -1, -1, 0);

	if (fd < 0)
		return -1;
	*ring = mmap(NULL, (PROF_PAGES + 1) * PAGE, PROT_READ | PROT_WRITE,
		     MAP_SHARED, fd, 0);
	if (*ring == MAP_FAILED) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * The call chain of a sample at @off in the ring (nr, then the frames; the
 * first one the sample's own ip): one count per function on it, each once.
 * Return addresses are looked up one byte back, inside the call.
 */
static void prof_chain(const char *data, uint64_t size, uint64_t off, long *incl)
{
	uint64_t nr = *(const uint64_t *)(data + off % size);
	long seen[PROF_STACK + 8];
	int nseen = 0;
	bool first = true;

	for (uint64_t i = 0; i < nr && nseen < (int)(sizeof(seen) / sizeof(*seen)); i++) {
		uint64_t ip = *(const uint64_t *)(data + (off + 8 + 8 * i) % size);
		long k;
		int j;

		if (ip >= (uint64_t)PERF_CONTEXT_MAX)
			continue;
		k = ksym_of(first ? ip : ip - 1);
		first = false;
		if (k < 0)
			continue;
		for (j = 0; j < nseen && seen[j] != k; j++)
			;
		if (j == nseen) {
			seen[nseen++] = k;
			incl[k]++;
		}
	}
}

/* KH_PROF_SYM=name: the samples in that function by offset, too. */
static const char *prof_sym;
static long prof_hist[0x4000];

/*
 * Adds the samples in the ring to @counts (per symbol: the function the
 * sample is in) and to @counts + 2 * nr_ksyms (per symbol on the sample's
 * kernel call chain, once per sample: inclusive); returns the lost ones.
 */
static long prof_drain(void *ring, long *counts)
{
	struct perf_event_mmap_page *pg = ring;
	char *data = (char *)ring + PAGE;
	uint64_t size = PROF_PAGES * PAGE, head, tail = pg->data_tail;
	long lost = 0;

	head = __atomic_load_n(&pg->data_head, __ATOMIC_ACQUIRE);
	while (tail < head) {
		struct perf_event_header *h = (void *)(data + tail % size);

		if (h->type == PERF_RECORD_SAMPLE) {
			uint64_t ip = *(uint64_t *)(data + (tail + sizeof(*h)) % size);
			long k = ksym_of(ip);

			if (k >= 0)
				counts[k]++;
			if (k >= 0 && prof_sym && !strcmp(ksyms[k].name, prof_sym) &&
			    ip - ksyms[k].addr < sizeof(prof_hist) / sizeof(*prof_hist))
				prof_hist[ip - ksyms[k].addr]++;
			prof_chain(data, size, tail + sizeof(*h) + 8, counts + 2 * nr_ksyms);
		} else if (h->type == PERF_RECORD_LOST) {
			lost++;
		}
		tail += h->size;
	}
	__atomic_store_n(&pg->data_tail, tail, __ATOMIC_RELEASE);
	return lost;
}

/* The samples per kernel function and implementation, and the totals. */
static void prof_print(const char *row, const long *counts, const long *done,
		       long lost)
{
	static const char * const impls[] = { "c", "rust" };

	/* @counts: C, Rust in the function; then C, Rust on the call chain. */
	for (int n = 0; n < 4; n++)
		for (size_t k = 0; k < nr_ksyms; k++)
			if (counts[n * nr_ksyms + k])
				printf("@@%s row=%s impl=%s sym=%s samples=%ld\n",
				       n < 2 ? "PROF" : "PROFINC", row, impls[n % 2],
				       ksyms[k].name, counts[n * nr_ksyms + k]);
	for (size_t off = 0; prof_sym && off < sizeof(prof_hist) / sizeof(*prof_hist); off++)
		if (prof_hist[off])
			printf("@@PROFIP row=%s sym=%s off=%#zx samples=%ld\n",
			       row, prof_sym, off, prof_hist[off]);
	memset(prof_hist, 0, sizeof(prof_hist));
	printf("@@PROFDONE row=%s iterations_c=%ld iterations_rust=%ld period_ns=%d lost=%ld\n",
	       row, done[0], done[1], PROF_PERIOD_NS, lost);
}

/*
 * Samples of @iters first collapses of 2 MiB of small pages per impl, new
 * memory each time: shmem (a memfd: hpage_collapse_scan_file,
 * collapse_file, retract_page_tables, collapse_pte_mapped_thp) or, if
 * @anon, anonymous (hpage_collapse_scan_pmd, collapse_huge_page).
 */
static void profile_fresh(const char *row, bool anon, bool pte_mapped, int iters,
			  long *counts, void *ring, int pfd)
{
	static const char * const impls[] = { "c", "rust" };
	long done[2] = { 0 }, lost = 0;

	for (int i = 0; i < 2 * iters; i++) {
		int which = (i + i / 2) % 2;	/* C, Rust, Rust, C, ... */
		int fd = anon ? -1 : memfd_create("prof-shmem", 0);
		char *p = NULL;
		int ret;

		if (anon && pte_mapped)
			p = anon_pte_mapped_thp();
		else if (anon)
			p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1);
		else if (fd >= 0 && !ftruncate(fd, PMD_SIZE))
			p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
					MAP_SHARED, fd);
		if (!p || write_str(KHUGEPAGED "impl", impls[which], 0)) {
			if (fd >= 0)
				close(fd);
			break;
		}
		if (!pte_mapped) {
			madvise(p, PMD_SIZE, MADV_NOHUGEPAGE);
			memset(p, 2, PMD_SIZE);
			madvise(p, PMD_SIZE, MADV_HUGEPAGE);
		}
		ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0);
		ret = madvise(p, PMD_SIZE, MADV_COLLAPSE);
		ioctl(pfd, PERF_EVENT_IOC_DISABLE, 0);
		lost += prof_drain(ring, counts + which * nr_ksyms);
		munmap(p, PMD_SIZE);
		if (fd >= 0)
			close(fd);
		if (ret)
			break;
		done[which]++;
	}
	prof_print(row, counts, done, lost);
}

/*
 * Samples of khugepaged's thread while it collapses SCAN_PMDS PMDs
 * (scan_collapse()), @iters times per impl.
 */
static void profile_scan(int iters, long *counts)
{
	static const char * const impls[] = { "c", "rust" };
	long done[2] = { 0 }, lost = 0;
	void *ring;
	int pfd = khugepaged_pid() < 0 ? -1 : prof_open(khugepaged_pid(), &ring);

	if (pfd < 0) {
		printf("# %s: setup failed\n", __func__);
		return;
	}
	for (int i = 0; i < 2 * iters; i++) {
		int which = (i + i / 2) % 2;	/* C, Rust, Rust, C, ... */

		if (write_str(KHUGEPAGED "impl", impls[which], 0) ||
		    scan_collapse(pfd) < 0)
			break;
		lost += prof_drain(ring, counts + which * nr_ksyms);
		/* Iterations are PMDs collapsed, as for the other rows. */
		done[which] += SCAN_PMDS;
	}
	prof_print("khugepaged-scan", counts, done, lost);
	munmap(ring, (PROF_PAGES + 1) * PAGE);
	close(pfd);
}

/*
 * Samples of @iters collapses per impl of a shmem range that RETRACT_PROF_VMAS
 * processes map by PTEs: where the cost per VMA of the retract rows goes.
 */
#define RETRACT_PROF_VMAS 64

static void profile_retract(int iters, long *counts, void *ring, int pfd)
{
	static const char * const impls[] = { "c", "rust" };
	long done[2] = { 0 }, lost = 0;
	char row[32];

	for (int i = 0; i < 2 * iters; i++) {
		int which = (i + i / 2) % 2;	/* C, Rust, Rust, C, ... */
		struct retract_setup r;
		int ret = -1;

		if (retract_setup(&r, RETRACT_PROF_VMAS) &&
		    !write_str(KHUGEPAGED "impl", impls[which], 0)) {
			ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0);
			ret = madvise(r.p, PMD_SIZE, MADV_COLLAPSE);
			ioctl(pfd, PERF_EVENT_IOC_DISABLE, 0);
			lost += prof_drain(ring, counts + which * nr_ksyms);
		}
		retract_teardown(&r);
		if (ret)
			break;
		done[which]++;
	}
	snprintf(row, sizeof(row), "retract-%d", RETRACT_PROF_VMAS);
	prof_print(row, counts, done, lost);
}

/* Samples of @iters re-collapses of a PTE-mapped THP of @mem per impl. */
static void profile(const char *mem, int iters)
{
	static const char * const impls[] = { "c", "rust" };
	bool is_file = !strcmp(mem, "file");
	const char *field = is_file ? "FilePmdMapped:" : "ShmemPmdMapped:";
	long *counts = calloc(4 * nr_ksyms, sizeof(long));
	long done[2] = { 0 }, lost = 0;
	char row[32], *p = NULL;
	void *ring;
	int fd, pfd;

	if (is_file && !dir)
		return;
	if (!strcmp(mem, "khugepaged-scan")) {
		profile_scan(iters, counts);
		goto out_free;
	}
	fd = shared_fd(is_file);
	pfd = prof_open(0, &ring);
	if (fd < 0 || pfd < 0 || !counts) {
		printf("# %s %s: setup failed\n", __func__, mem);
		goto out;
	}
	if (!strcmp(mem, "retract")) {
		profile_retract(iters, counts, ring, pfd);
		goto out;
	}
	if (!strcmp(mem, "shmem-collapse") || !strncmp(mem, "anon", 4)) {
		bool anon = !strncmp(mem, "anon", 4);

		profile_fresh(anon ? mem : "shmem", anon,
			      !strcmp(mem, "anon-pte-mapped"), iters, counts,
			      ring, pfd);
		goto out;
	}
	p = map_shared(fd, is_file);
	if (!p)
		goto out;
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	if (madvise(p, PMD_SIZE, MADV_COLLAPSE) || smaps_field(p, field) != 2048)
		goto out;
	snprintf(row, sizeof(row), "%s-pte-mapped", mem);
	for (int i = 0; i < 2 * iters; i++) {
		int which = (i + i / 2) % 2;	/* C, Rust, Rust, C, ... */

		if (write_str(KHUGEPAGED "impl", impls[which], 0) ||
		    !pte_map(p, is_file))
			goto out;
		ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0);
		if (madvise(p, PMD_SIZE, MADV_COLLAPSE))
			goto out;
		ioctl(pfd, PERF_EVENT_IOC_DISABLE, 0);
		lost += prof_drain(ring, counts + which * nr_ksyms);
		done[which]++;
	}
	prof_print(row, counts, done, lost);
out:
	if (p)
		munmap(p, PMD_SIZE);
	if (pfd >= 0)
		close(pfd);
	if (fd >= 0)
		close(fd);
out_free:
	free(counts);
}

static int bench(int argc, char **argv)
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
			if (want("anon-empty")) {
				bench_anon(0);
				bench_anon(256);
				bench_anon(511);
			}
			if (want("anon-pte-mapped"))
				bench_anon_pte_mapped();
			if (want("shmem"))
				bench_shared("shmem");
			if (want("file"))
				bench_shared("file");
			if (want("uprobe-heal"))
				for (int k = 0; k < UPROBE_REPEAT; k++)
					bench_uprobe();
			if (want("retract-")) {
				bench_retract(1);
				bench_retract(16);
				bench_retract(256);
				bench_retract(1024);
			}
			if (want("khugepaged-scan"))
				bench_scan();
		}
	}
	return 0;
}

/*
 * Runs this process, and the children it forks, on CPU 0 only. Under
 * -icount the guest clock counts the instructions of both vCPUs: per-CPU
 * state a collapse leaves behind (LRU batches to drain, RCU callbacks, a
 * lazy TLB) must be on the same CPU in every round and every boot.
 */
static void pin_cpu0(void)
{
	cpu_set_t set;

	if (getenv("KH_BENCH_NOPIN"))
		return;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		printf("# cannot pin to CPU 0\n");
}

int main(int argc, char **argv)
{
	pin_cpu0();
	if (argc > 2 && !strcmp(argv[1], "--profile")) {
		dir = argc > 3 ? argv[3] : NULL;
		prof_sym = getenv("KH_PROF_SYM");
		setbuf(stdout, NULL);
		if (load_ksyms()) {
			printf("# no /proc/kallsyms\n");
			return 1;
		}
		if (want("shmem"))
			profile("shmem", atoi(argv[2]));
		if (want("file"))
			profile("file", atoi(argv[2]));
		if (want("shmem-collapse"))
			profile("shmem-collapse", atoi(argv[2]) / 3);
		if (want("anon"))
			profile("anon", atoi(argv[2]) / 3);
		if (want("anon-pte-mapped"))
			profile("anon-pte-mapped", atoi(argv[2]) / 3);
		if (want("khugepaged-scan"))
			profile("khugepaged-scan", atoi(argv[2]) / 30);
		if (want("retract"))
			profile("retract", atoi(argv[2]) / 50);
		return 0;
	}
	return bench(argc, argv);
}
