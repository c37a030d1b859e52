// SPDX-License-Identifier: GPL-2.0
/*
 * Regression tests for the known khugepaged races: each case runs the
 * operations of one upstream bug concurrently with MADV_COLLAPSE (and so
 * with collapse_file(), retract_page_tables(), collapse_pte_mapped_thp()
 * or collapse_huge_page() of the selected implementation) for a bounded
 * time, then checks
 *
 *  - every byte of the memory it owns, through every mapping and read(),
 *    against what the test wrote (a torn or lost page is a failure);
 *  - that MADV_COLLAPSE only ever failed with an errno of the case's set,
 *    which is what 6.12's madvise_collapse_errno() can give for that race;
 *  - that the race was run: at least MIN_OK collapses succeeded while the
 *    other threads or processes were at work;
 *  - for the fault-injection cases, the errno the injected failure maps to,
 *    and that nothing leaked (memcg usage, isolated pages, data);
 *
 * and the kernel log is checked by scripts/report.py: a KASAN report (a
 * page table freed under a lockless walker), a page_table_check or
 * DEBUG_VM report, lockdep, "Bad rss-counter", a new taint bit all fail
 * the suite. Each case names its bug.
 *
 * Every case runs for KH_RACE_SECONDS (default 2) seconds, or longer until
 * MIN_OK collapses succeeded, at most CAP_FACTOR times that; make soak
 * scales it. Environment: KHUGEPAGED_FILE_DIR (ext4, READ_ONLY_THP_FOR_FS),
 * needed by the cases that use a file. The guest has two CPUs and two NUMA
 * nodes; the migration case needs the second node.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

#define NR_PAGES	(PMD_SIZE / KH_PAGE)
#define MIN_OK		3	/* successful collapses a race needs */
#define CAP_FACTOR	10	/* a case gives up after this many times its time */
#define TIMEOUT		3600	/* the harness's per-case limit (make soak) */
#define PM_UFFD_WP	0x0200000000000000ULL	/* bit 57 */
#define MPOL_MF_MOVE_ALL 4

/* errno bits of the failures a case accepts from a racing MADV_COLLAPSE. */
#define E_AGAIN		0x1
#define E_INVAL		0x2
#define E_BUSY		0x4
#define E_NOMEM		0x8

/*
 * What the threads and processes of a case share (MAP_SHARED, so that
 * forked children see it): a sequence count around each rewrite of a page
 * (odd while the page is a hole or half written), the stop flag, and what
 * they count.
 */
struct shared {
	atomic_uint seq;
	atomic_bool stop;
	atomic_long bad;	/* wrong bytes seen, or failed operations */
	atomic_long ok;		/* successful collapses by helpers */
	atomic_long rounds;	/* collapse rounds of the main loop */
	atomic_long collapsed;	/* and how many of them succeeded */
	atomic_long ops;	/* operations of the helpers */
	atomic_int bad_errno;	/* an errno no case accepts, if any */
	atomic_bool hold;	/* the main loop collapses, but punches no page */
};

/* The results of one case's MADV_COLLAPSEs. */
struct counts {
	long rounds, ok, again, inval, busy, nomem, other;
	int other_errno;
};

static double race_seconds(void)
{
	const char *s = getenv("KH_RACE_SECONDS");
	double v = s ? atof(s) : 0;

	return v > 0 ? v : 2;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Is the main loop of a case that started at @t0 done? */
static bool race_over(double t0, long ok)
{
	double t = now() - t0, secs = race_seconds();

	return (t >= secs && ok >= MIN_OK) || t >= CAP_FACTOR * secs;
}

static long least(long a, long b)
{
	return a < b ? a : b;
}

static struct shared *shared_new(void)
{
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return sh == MAP_FAILED ? NULL : sh;
}

/* Counts madvise()'s result @ret (with errno) in @c. */
static void count(struct counts *c, int ret)
{
	c->rounds++;
	if (!ret) {
		c->ok++;
		return;
	}
	switch (errno) {
	case EAGAIN:
		c->again++;
		break;
	case EINVAL:
		c->inval++;
		break;
	case EBUSY:
		c->busy++;
		break;
	case ENOMEM:
		c->nomem++;
		break;
	default:
		c->other++;
		c->other_errno = errno;
		break;
	}
}

/* Failures of @c outside the errno set @allowed. */
static long disallowed(const struct counts *c, int allowed)
{
	return c->other + (allowed & E_AGAIN ? 0 : c->again) +
	       (allowed & E_INVAL ? 0 : c->inval) +
	       (allowed & E_BUSY ? 0 : c->busy) +
	       (allowed & E_NOMEM ? 0 : c->nomem);
}

static void print_counts(const char *what, const struct counts *c)
{
	fprintf(stderr,
		"# %s: %ld MADV_COLLAPSE, %ld ok, EAGAIN %ld, EINVAL %ld, EBUSY %ld, ENOMEM %ld, other %ld%s%s\n",
		what, c->rounds, c->ok, c->again, c->inval, c->busy, c->nomem,
		c->other, c->other ? " " : "",
		c->other ? strerror(c->other_errno) : "");
}

/* The test data of page @k of a 2 MiB range, per @salt. */
static void page_pattern(uint8_t *buf, size_t k, int salt)
{
	for (size_t j = 0; j < KH_PAGE; j++)
		buf[j] = kh_pattern(k * KH_PAGE + j, salt);
}

/* A memfd (shmem) of 2 MiB filled with kh_pattern(, @salt); -1 on failure. */
static int shmem_fd(int salt)
{
	int fd = memfd_create("khugepaged_races", 0);
	uint8_t buf[KH_PAGE];

	if (fd < 0)
		return -1;
	for (size_t k = 0; k < NR_PAGES; k++) {
		page_pattern(buf, k, salt);
		if (pwrite(fd, buf, KH_PAGE, k * KH_PAGE) != KH_PAGE) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

/* A read-only ext4 file of 2 MiB of kh_pattern(, @salt); -1 without one. */
static int ext4_fd(int salt, const char *name)
{
	const char *dir = getenv("KHUGEPAGED_FILE_DIR");
	uint8_t *buf = malloc(PMD_SIZE);
	char path[512];
	int fd;

	if (!dir || !*dir || !buf) {
		free(buf);
		return -1;
	}
	for (size_t i = 0; i < PMD_SIZE; i++)
		buf[i] = kh_pattern(i, salt);
	snprintf(path, sizeof(path), "%s/races-%s.%d", dir, name, getpid());
	fd = ro_file(path, buf, PMD_SIZE, false);
	free(buf);
	return fd;
}

/*
 * Splits the shmem THP of @fd (if it is one) by punching page @k out of it,
 * and writes the page back, inside the sequence count: readers skip what
 * they read meanwhile.
 */
static int punch_refill(struct shared *sh, int fd, size_t k, int salt)
{
	uint8_t buf[KH_PAGE];
	int ret;

	page_pattern(buf, k, salt);
	atomic_fetch_add(&sh->seq, 1);
	ret = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			k * KH_PAGE, KH_PAGE);
	if (!ret && pwrite(fd, buf, KH_PAGE, k * KH_PAGE) != KH_PAGE)
		ret = -1;
	atomic_fetch_add(&sh->seq, 1);
	return ret;
}

/*
 * Reads @n random pages of @p (a mapping of the whole range), comparing
 * them with kh_pattern(, @salt), and counts the wrong bytes in sh->bad
 * unless a rewrite ran meanwhile.
 */
static void check_sample(struct shared *sh, const uint8_t *p, int salt,
			 int n, unsigned int *seed)
{
	for (int i = 0; i < n; i++) {
		size_t k = rand_r(seed) % NR_PAGES;
		unsigned int s = atomic_load(&sh->seq);
		long bad;

		if (s & 1)
			continue;
		bad = 0;
		for (size_t j = 0; j < KH_PAGE; j++)
			bad += p[k * KH_PAGE + j] !=
			       kh_pattern(k * KH_PAGE + j, salt);
		atomic_thread_fence(memory_order_acquire);
		if (bad && atomic_load(&sh->seq) == s) {
			fprintf(stderr, "# page %zu of %p: %ld bytes wrong\n",
				k, p, bad);
			atomic_fetch_add(&sh->bad, bad);
		}
	}
}

/* Bytes of the 2 MiB at @p that differ from kh_pattern(, @salt). */
static long whole_bad(const uint8_t *p, int salt)
{
	return kh_bad_bytes(p, PMD_SIZE, salt);
}

/* Bytes of the file @fd's first 2 MiB that differ, read with pread(). */
static long file_bad(int fd, int salt)
{
	uint8_t *buf = malloc(PMD_SIZE);
	long bad;

	if (!buf || pread(fd, buf, PMD_SIZE, 0) != (ssize_t)PMD_SIZE) {
		free(buf);
		return -1;
	}
	bad = whole_bad(buf, salt);
	free(buf);
	return bad;
}

/*
 * The main loop of the shmem cases: split the THP by a punched page, then
 * MADV_COLLAPSE of @col (the collapser's mapping): collapse_file(), then
 * retract_page_tables() over every other mapping of the memfd, and
 * collapse_pte_mapped_thp() where a THP is PTE-mapped.
 */
static void collapse_loop(struct shared *sh, int fd, char *col, int salt,
			  struct counts *c)
{
	unsigned int seed = 7;
	double t0 = now();

	while (!race_over(t0, c->ok)) {
		if (!atomic_load(&sh->hold) &&
		    punch_refill(sh, fd, rand_r(&seed) % NR_PAGES, salt)) {
			atomic_fetch_add(&sh->bad, 1);
			break;
		}
		count(c, madvise(col, PMD_SIZE, MADV_COLLAPSE));
		atomic_store(&sh->collapsed, c->ok);
		atomic_fetch_add(&sh->rounds, 1);
	}
}

/*
 * A PROT_NONE reservation of @len bytes, PMD-aligned or (again) at @at,
 * that a thread maps its mappings over; NULL on failure.
 */
static char *reserve_slot(char *at, size_t len)
{
	const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	char *p;

	if (!at)
		return aligned_map(len, PROT_NONE, flags, -1);
	p = mmap(at, len, PROT_NONE, flags | MAP_FIXED, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Settings a case changes, restored by the teardown. */
static const char * const saved_paths[] = {
	THP_SYSFS "enabled",
	KHUGEPAGED_SYSFS "scan_sleep_millisecs",
	KHUGEPAGED_SYSFS "alloc_sleep_millisecs",
	KHUGEPAGED_SYSFS "pages_to_scan",
};

FIXTURE(races)
{
	char saved[ARRAY_SIZE(saved_paths)][64];
	struct shared *sh;
	pthread_t threads[4];
	int nr_threads;
	int fd, fd2;
	char event[64];		/* a uprobe to delete, if any */
	char path[512];		/* a file to unlink, if any */
};

FIXTURE_SETUP(races)
{
	for (size_t i = 0; i < ARRAY_SIZE(saved_paths); i++) {
		int fd = open(saved_paths[i], O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, self->saved[i],
					   sizeof(self->saved[i]) - 1) : -1;
		char *b;

		if (fd >= 0)
			close(fd);
		ASSERT_GT(n, 0);
		self->saved[i][n] = 0;
		/* "always [madvise] never" -> "madvise" */
		b = strchr(self->saved[i], '[');
		if (b) {
			memmove(self->saved[i], b + 1, strlen(b));
			*strchr(self->saved[i], ']') = 0;
		}
	}
	/* Faults map small pages: every collapse is the test's. */
	ASSERT_EQ(0, write_str(THP_SYSFS "enabled", "madvise", false));
	self->sh = shared_new();
	ASSERT_NE(NULL, self->sh);
	self->nr_threads = 0;
	self->fd = -1;
	self->fd2 = -1;
	self->event[0] = 0;
	self->path[0] = 0;
}

/* Stops and joins the helper threads. */
static void stop_threads(struct _test_data_races *self)
{
	atomic_store(&self->sh->stop, true);
	while (self->nr_threads)
		pthread_join(self->threads[--self->nr_threads], NULL);
}

FIXTURE_TEARDOWN(races)
{
	stop_threads(self);
	for (size_t i = 0; i < ARRAY_SIZE(saved_paths); i++)
		write_str(saved_paths[i], self->saved[i], false);
	if (self->fd >= 0)
		close(self->fd);
	if (self->fd2 >= 0)
		close(self->fd2);
	if (self->event[0])
		kh_uprobe_clear(self->event);
	if (self->path[0])
		unlink(self->path);
}

static int start(struct _test_data_races *self, void *(*fn)(void *),
		 void *arg)
{
	if (self->nr_threads == ARRAY_SIZE(self->threads))
		return -1;
	return pthread_create(&self->threads[self->nr_threads++], NULL, fn, arg);
}

/* ------------------------------------------------------------------ */

struct mover {
	struct shared *sh;
	char *a, *b, *cur;
	int salt;
};

/*
 * Moves a PTE-mapped mapping of the memfd between two PMD-aligned slots:
 * move_normal_pmd() moves its whole page table, under the mmap write lock
 * and the PMD locks but not the i_mmap lock retract_page_tables() walks.
 */
static void *mover(void *arg)
{
	struct mover *m = arg;
	unsigned int seed = 3;

	while (!atomic_load(&m->sh->stop)) {
		char *to = m->cur == m->a ? m->b : m->a;

		if (mremap(m->cur, PMD_SIZE, PMD_SIZE,
			   MREMAP_MAYMOVE | MREMAP_FIXED, to) == MAP_FAILED) {
			fprintf(stderr, "# mremap: %s\n", strerror(errno));
			atomic_fetch_add(&m->sh->bad, 1);
			break;
		}
		m->cur = to;
		/* A populated table again for the next move. */
		touch(m->cur, PMD_SIZE);
		check_sample(m->sh, (uint8_t *)m->cur, m->salt, 4, &seed);
		atomic_fetch_add(&m->sh->ops, 1);
	}
	return NULL;
}

/*
 * CVE-2024-50066 (6fa1066fc5d0, "mm: fix move_normal_pmd/retract_page_tables
 * race"): mremap() moved a PTE table while MADV_COLLAPSE of another mapping
 * of the same memfd retracted it; the moved table was freed under the new
 * mapping (KASAN, or page_table_check and data).
 */
TEST_F_TIMEOUT(races, mremap_retract, TIMEOUT)
{
	struct mover m = { .sh = self->sh, .salt = 1 };
	struct counts c = { 0 };
	char *col, *slots;

	self->fd = shmem_fd(m.salt);
	ASSERT_GE(self->fd, 0);
	col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, col);
	/* Two slots, reserved so that nothing else lands there. */
	slots = reserve_slot(NULL, 2 * PMD_SIZE);
	ASSERT_NE(NULL, slots);
	m.a = slots;
	m.b = slots + PMD_SIZE;
	ASSERT_EQ(m.a, mmap(m.a, PMD_SIZE, PROT_READ, MAP_SHARED | MAP_FIXED,
			    self->fd, 0));
	m.cur = m.a;
	touch(m.cur, PMD_SIZE);
	ASSERT_EQ(0, start(self, mover, &m));

	collapse_loop(self->sh, self->fd, col, m.salt, &c);
	stop_threads(self);
	print_counts("mremap_retract", &c);
	fprintf(stderr, "# %ld mremaps\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_GE(atomic_load(&self->sh->ops), MIN_OK);
	EXPECT_EQ(0, whole_bad((uint8_t *)col, m.salt));
	EXPECT_EQ(0, whole_bad((uint8_t *)m.cur, m.salt));
	EXPECT_EQ(0, file_bad(self->fd, m.salt));
}

/* ------------------------------------------------------------------ */

/*
 * A thread that forks children one after the other until told to stop:
 * each runs @child(f, seed) and exits; a failed fork or a child exiting
 * non-zero counts in sh->bad.
 */
struct forker {
	struct shared *sh;
	void (*child)(struct forker *f, unsigned int seed);
	const char *what;
	unsigned int seed;
	int fd, salt;
	const uint8_t *priv;	/* fork_collapse_file's private mapping */
};

/* Maps the memfd, faults it in (a page table to retract), checks a sample. */
static char *mapper_map(struct forker *f, unsigned int seed)
{
	char *p = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, f->fd);

	if (!p)
		_exit(2);
	touch(p, PMD_SIZE);
	check_sample(f->sh, (uint8_t *)p, f->salt, 8, &seed);
	return p;
}

/*
 * A child mapping the memfd, which then does one of: exit at once
 * (exit_mmap() racing the retraction), munmap() first, or fork a
 * grandchild that maps it too and exits.
 */
static void mapper_child(struct forker *f, unsigned int seed)
{
	char *p = mapper_map(f, seed);
	pid_t pid;
	int status;

	switch (rand_r(&seed) % 3) {
	case 1:
		munmap(p, PMD_SIZE);
		break;
	case 2:
		pid = fork();
		if (pid == 0) {
			mapper_map(f, seed + 1);
			_exit(0);
		}
		if (pid < 0 || waitpid(pid, &status, 0) != pid || status)
			_exit(3);
		break;
	}
	_exit(0);
}

static void *forker(void *arg)
{
	struct forker *f = arg;
	unsigned int seed = f->seed;

	while (!atomic_load(&f->sh->stop)) {
		pid_t pid = fork();
		int status;

		if (pid == 0)
			f->child(f, rand_r(&seed));
		if (pid < 0 || waitpid(pid, &status, 0) != pid || status) {
			fprintf(stderr, "# %s child: status %#x\n", f->what,
				pid < 0 ? -1 : status);
			atomic_fetch_add(&f->sh->bad, 1);
		}
		atomic_fetch_add(&f->sh->ops, 1);
	}
	return NULL;
}

/*
 * exit_mmap(), munmap() and fork()+exit of processes mapping the memfd,
 * racing retract_page_tables() (which walks their VMAs under the i_mmap
 * lock only, and checks hpage_collapse_test_exit()) and
 * collapse_pte_mapped_thp(). Two forkers, so two mappers at a time.
 */
TEST_F_TIMEOUT(races, mapper_exit_retract, TIMEOUT)
{
	struct forker f = { .sh = self->sh, .child = mapper_child,
			    .what = "mapper", .seed = 5, .salt = 2 }, g;
	struct counts c = { 0 };
	char *col;

	f.fd = shmem_fd(f.salt);
	self->fd = f.fd;
	ASSERT_GE(self->fd, 0);
	col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, col);
	g = f;
	g.seed = 6;
	ASSERT_EQ(0, start(self, forker, &f));
	ASSERT_EQ(0, start(self, forker, &g));

	collapse_loop(self->sh, self->fd, col, f.salt, &c);
	stop_threads(self);
	print_counts("mapper_exit_retract", &c);
	fprintf(stderr, "# %ld mapper processes\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_GE(atomic_load(&self->sh->ops), MIN_OK);
	EXPECT_EQ(0, whole_bad((uint8_t *)col, f.salt));
	EXPECT_EQ(0, file_bad(self->fd, f.salt));
}

/* ------------------------------------------------------------------ */

struct anon_child {
	struct shared *sh;
	uint8_t *p;
	int salt;
	atomic_bool stop, stop_reading;
	atomic_long bad;
};

/*
 * Reads the half being collapsed, page after page: a fault while its table
 * is detached must wait for the collapse (the VMA is write-locked against
 * per-VMA-lock faults), never see zeroes or a stale page.
 */
static void *anon_reader(void *arg)
{
	struct anon_child *a = arg;
	unsigned int seed = a->salt;

	while (!atomic_load(&a->stop_reading)) {
		size_t k = rand_r(&seed) % NR_PAGES;
		const uint8_t *pg = a->p + PMD_SIZE + k * KH_PAGE;
		long bad = 0;

		for (size_t j = 0; j < KH_PAGE; j++)
			bad += pg[j] != kh_pattern(PMD_SIZE + k * KH_PAGE + j, a->salt);
		atomic_fetch_add(&a->bad, bad);
	}
	return NULL;
}

/* MADV_COLLAPSE of the child's second 2 MiB, until the child goes. */
static void *anon_collapser(void *arg)
{
	struct anon_child *a = arg;

	while (!atomic_load(&a->stop)) {
		int ret = madvise(a->p + PMD_SIZE, PMD_SIZE, MADV_COLLAPSE);

		if (!ret) {
			atomic_fetch_add(&a->sh->ok, 1);
			/* Split it again: the next collapse copies PTEs. */
			mprotect(a->p + PMD_SIZE, KH_PAGE, PROT_READ);
			mprotect(a->p + PMD_SIZE, KH_PAGE, PROT_READ | PROT_WRITE);
		} else if (errno != EAGAIN && errno != EINVAL && errno != ENOMEM) {
			atomic_store(&a->sh->bad_errno, errno);
			atomic_fetch_add(&a->sh->bad, 1);
		}
	}
	return NULL;
}

/*
 * A child with 4 MiB of anonymous memory of small pages, MADV_HUGEPAGE (so
 * khugepaged scans it, with no sleep between scans), a thread running
 * MADV_COLLAPSE on the second half and one reading it. It checks its data
 * after a random while, then munmaps the half being collapsed, or forks,
 * or neither, and
 * exits with the collapse thread still running: exit_mmap() and munmap()
 * race collapse_huge_page() from both callers.
 */
static void anon_child(struct forker *f, unsigned int seed)
{
	struct shared *sh = f->sh;
	const int salt = seed;
	size_t len = 2 * PMD_SIZE;
	struct anon_child a = { .sh = sh, .salt = salt };
	pthread_t t, r;
	pid_t pid;
	long bad;

	a.p = (uint8_t *)aligned_map(len, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1);
	if (!a.p || madvise(a.p, len, MADV_NOHUGEPAGE))
		_exit(2);
	for (size_t i = 0; i < len; i++)
		a.p[i] = kh_pattern(i, salt);
	if (madvise(a.p, len, MADV_HUGEPAGE) ||
	    pthread_create(&t, NULL, anon_collapser, &a) ||
	    pthread_create(&r, NULL, anon_reader, &a))
		_exit(2);
	usleep(rand_r(&seed) % 100000);
	atomic_store(&a.stop_reading, true);
	pthread_join(r, NULL);
	bad = kh_bad_bytes(a.p, len, salt) + atomic_load(&a.bad);
	switch (rand_r(&seed) % 3) {
	case 0:
		munmap(a.p + PMD_SIZE, PMD_SIZE);
		break;
	case 1:
		pid = fork();
		if (pid == 0)
			_exit(kh_bad_bytes(a.p, PMD_SIZE, salt) ? 1 : 0);
		if (pid < 0 || waitpid(pid, NULL, 0) != pid)
			_exit(2);
		break;
	}
	if (bad)
		fprintf(stderr, "# anon child: %ld bytes wrong\n", bad);
	_exit(bad ? 1 : 0);
}

/*
 * Processes exiting, unmapping and forking while their anonymous memory is
 * collapsed by khugepaged (scan_sleep_millisecs=0) and by MADV_COLLAPSE
 * threads: collapse_huge_page() drops and retakes the mmap lock, and must
 * find an exiting mm or a vanished VMA on revalidation; the anon_vma,
 * rmap and isolation must be undone or completed, never leaked.
 */
TEST_F_TIMEOUT(races, anon_exit_collapse, TIMEOUT)
{
	long collapsed0 = read_num(KHUGEPAGED_SYSFS "pages_collapsed"), isolated;
	struct forker f = { .sh = self->sh, .child = anon_child,
			    .what = "anon", .seed = 1 }, g = f;
	double t0 = now();

	ASSERT_EQ(0, write_str(KHUGEPAGED_SYSFS "scan_sleep_millisecs", "0", false));
	ASSERT_EQ(0, write_str(KHUGEPAGED_SYSFS "alloc_sleep_millisecs", "0", false));
	g.seed = 2;
	ASSERT_EQ(0, start(self, forker, &f));
	ASSERT_EQ(0, start(self, forker, &g));
	while (!race_over(t0, atomic_load(&self->sh->ok)))
		usleep(20000);
	stop_threads(self);
	fprintf(stderr, "# %ld children, %ld MADV_COLLAPSE ok, khugepaged collapsed %ld\n",
		atomic_load(&self->sh->ops), atomic_load(&self->sh->ok),
		read_num(KHUGEPAGED_SYSFS "pages_collapsed") - collapsed0);
	EXPECT_EQ(0, atomic_load(&self->sh->bad)) {
		TH_LOG("errno %s", strerror(atomic_load(&self->sh->bad_errno)));
	}
	EXPECT_GE(atomic_load(&self->sh->ok), MIN_OK);
	/* Nothing left isolated from the LRU (a leaked isolation stays). */
	isolated = vmstat_settled("nr_isolated_anon", 127);
	EXPECT_LT(isolated, 128);
}

/* ------------------------------------------------------------------ */

struct walker {
	struct shared *sh;
	int fd, salt;
	char *p;	/* this walker's own mapping (the CoW one makes its own) */
	char *slot;
};

/* MADV_PAGEOUT of a shared mapping: reclaim's rmap walk, shmem to zram. */
static void *pageout_walker(void *arg)
{
	struct walker *w = arg;
	unsigned int seed = 11;

	while (!atomic_load(&w->sh->stop)) {
		touch(w->p, PMD_SIZE);
		if (madvise(w->p, PMD_SIZE, MADV_PAGEOUT))
			atomic_fetch_add(&w->sh->bad, 1);
		check_sample(w->sh, (uint8_t *)w->p, w->salt, 4, &seed);
		atomic_fetch_add(&w->sh->ops, 1);
	}
	return NULL;
}

/* Page migration between the two nodes: migration's rmap walk. */
static void *migrate_walker(void *arg)
{
	struct walker *w = arg;
	unsigned int seed = 13;
	void *pages[16];
	int nodes[16], status[16];

	while (!atomic_load(&w->sh->stop)) {
		touch(w->p, PMD_SIZE);
		for (int i = 0; i < 16; i++) {
			pages[i] = w->p + (rand_r(&seed) % NR_PAGES) * KH_PAGE;
			nodes[i] = rand_r(&seed) & 1;
		}
		/* Per-page failures (busy, already there) are fine. */
		if (syscall(__NR_move_pages, 0, 16, pages, nodes, status,
			    MPOL_MF_MOVE_ALL) < 0 && errno != EBUSY &&
		    errno != ENOENT && errno != ENOMEM) {
			fprintf(stderr, "# move_pages: %s\n", strerror(errno));
			atomic_fetch_add(&w->sh->bad, 1);
		}
		check_sample(w->sh, (uint8_t *)w->p, w->salt, 4, &seed);
		atomic_fetch_add(&w->sh->ops, 1);
	}
	return NULL;
}

/*
 * A MAP_PRIVATE mapping, made again and again: faulted in (a table), then
 * a CoW write creates its anon_vma while retract_page_tables() may be
 * looking at the VMA; through the next successful collapse (and its
 * retraction), the written page must keep what was written, the others
 * read the file.
 */
static void *cow_walker(void *arg)
{
	struct walker *w = arg;
	unsigned int seed = 17;

	while (!atomic_load(&w->sh->stop)) {
		uint8_t *p = mmap(w->slot, PMD_SIZE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_FIXED, w->fd, 0);
		size_t k = rand_r(&seed) % NR_PAGES;
		uint8_t v = 0x80 | (rand_r(&seed) & 0x7f);
		long bad = 0, rounds;

		if (p == MAP_FAILED) {
			atomic_fetch_add(&w->sh->bad, 1);
			break;
		}
		touch((char *)p, PMD_SIZE);
		sched_yield();
		memset(p + k * KH_PAGE, v, KH_PAGE);
		/* Through a successful collapse, with its anon PTE. */
		rounds = atomic_load(&w->sh->collapsed);
		while (atomic_load(&w->sh->collapsed) == rounds &&
		       !atomic_load(&w->sh->stop))
			usleep(1000);
		check_sample(w->sh, p, w->salt, 4, &seed);
		for (size_t j = 0; j < KH_PAGE; j++)
			bad += p[k * KH_PAGE + j] != v;
		if (bad) {
			fprintf(stderr, "# CoW page lost %ld bytes\n", bad);
			atomic_fetch_add(&w->sh->bad, bad);
		}
		/* Reserve the slot again (and drop the private copy). */
		reserve_slot(w->slot, PMD_SIZE);
		atomic_fetch_add(&w->sh->ops, 1);
	}
	return NULL;
}

/*
 * 8d3c106e19e8 ("mm/khugepaged: take the right locks for page table
 * retraction") and CVE-2023-52935 (023f47a8250c, "mm/khugepaged: fix
 * ->anon_vma race"): rmap walkers (reclaim by MADV_PAGEOUT, migration
 * between the NUMA nodes) and an anon_vma created by a CoW write, all
 * racing the retraction of the tables they walk or fill.
 */
TEST_F_TIMEOUT(races, rmap_walkers_retract, TIMEOUT)
{
	struct walker out = { .sh = self->sh, .salt = 3 }, mig, cow;
	struct counts c = { 0 };
	char *col;

	ASSERT_EQ(0, access("/sys/devices/system/node/node1", F_OK)) {
		TH_LOG("needs two NUMA nodes (numa=fake=2)");
	}
	out.fd = shmem_fd(out.salt);
	self->fd = out.fd;
	ASSERT_GE(self->fd, 0);
	mig = out;
	cow = out;
	col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	out.p = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	mig.p = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	cow.slot = reserve_slot(NULL, PMD_SIZE);
	ASSERT_TRUE(col && out.p && mig.p && cow.slot);
	ASSERT_EQ(0, start(self, pageout_walker, &out));
	ASSERT_EQ(0, start(self, migrate_walker, &mig));
	ASSERT_EQ(0, start(self, cow_walker, &cow));

	collapse_loop(self->sh, self->fd, col, out.salt, &c);
	stop_threads(self);
	print_counts("rmap_walkers_retract", &c);
	fprintf(stderr, "# %ld walker operations\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_EQ(0, whole_bad((uint8_t *)col, out.salt));
	EXPECT_EQ(0, whole_bad((uint8_t *)out.p, out.salt));
	EXPECT_EQ(0, whole_bad((uint8_t *)mig.p, out.salt));
	EXPECT_EQ(0, file_bad(self->fd, out.salt));
}

/* ------------------------------------------------------------------ */

/* How many of the 512 pages of @p have pagemap's uffd-wp bit; -1 on error. */
static long uffd_wp_pages(int pagemap, const char *p)
{
	uint64_t ents[NR_PAGES];
	long n = 0;

	if (pread(pagemap, ents, sizeof(ents),
		  (uintptr_t)p / KH_PAGE * sizeof(uint64_t)) != sizeof(ents))
		return -1;
	for (size_t k = 0; k < NR_PAGES; k++)
		n += !!(ents[k] & PM_UFFD_WP);
	return n;
}

struct wp {
	struct shared *sh;
	int fd, salt, pagemap;
	char *slot;
	struct counts c;
};

/* Counts in sh->bad a mapping @p not all of whose pages have the uffd-wp bit. */
static void check_all_wp(struct wp *w, const char *p, const char *when)
{
	long n = uffd_wp_pages(w->pagemap, p);

	if (n != (long)NR_PAGES) {
		fprintf(stderr, "# %s%ld of %lu pages uffd-wp\n", when, n, NR_PAGES);
		atomic_fetch_add(&w->sh->bad, 1);
	}
}

/*
 * Maps the memfd, faults it in, registers it for uffd-wp and
 * write-protects every page (PTE markers where a page is not mapped), while
 * the main loop retracts: then every page must keep its uffd-wp bit for a
 * few collapse rounds, and through MADV_COLLAPSE of this VMA with every
 * entry present and the file a THP (which must keep the table:
 * SCAN_PTE_UFFD_WP, EINVAL).
 */
static void *wp_walker(void *arg)
{
	struct wp *w = arg;
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)w->slot, .len = PMD_SIZE },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	while (!atomic_load(&w->sh->stop)) {
		char *p = mmap(w->slot, PMD_SIZE, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_FIXED, w->fd, 0);
		long rounds;
		int uffd;

		if (p == MAP_FAILED) {
			atomic_fetch_add(&w->sh->bad, 1);
			break;
		}
		touch(p, PMD_SIZE);
		uffd = kh_uffd_register(p, PMD_SIZE, UFFD_FEATURE_WP_ASYNC |
					UFFD_FEATURE_WP_UNPOPULATED,
					UFFDIO_REGISTER_MODE_WP);
		if (uffd < 0 || ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)) {
			fprintf(stderr, "# uffd-wp: %s\n", strerror(errno));
			atomic_fetch_add(&w->sh->bad, 1);
			break;
		}
		rounds = atomic_load(&w->sh->rounds);
		for (int i = 0; i < 3 && !atomic_load(&w->sh->stop); i++) {
			while (atomic_load(&w->sh->rounds) == rounds &&
			       !atomic_load(&w->sh->stop))
				sched_yield();
			rounds = atomic_load(&w->sh->rounds);
			check_all_wp(w, p, "");
		}
		/*
		 * With the main loop holding off its punches: a collapse of
		 * this VMA (the file becomes a THP, this VMA's entries
		 * markers), a fault of every page (present entries again; a
		 * fault on a marker keeps the bit), and a second collapse,
		 * which finds the THP and no marker to stop it: only the uffd-wp
		 * check keeps the table.
		 */
		atomic_store(&w->sh->hold, true);
		madvise(p, PMD_SIZE, MADV_COLLAPSE);
		touch(p, PMD_SIZE);
		count(&w->c, madvise(p, PMD_SIZE, MADV_COLLAPSE));
		atomic_store(&w->sh->hold, false);
		check_all_wp(w, p, "own collapse: ");
		close(uffd);
		reserve_slot(w->slot, PMD_SIZE);
		atomic_fetch_add(&w->sh->ops, 1);
	}
	return NULL;
}

/*
 * uffd-wp markers live in the PTE table: retract_page_tables() skips a
 * uffd-wp VMA and checks again under the PTE lock (a registration may race
 * it without the mmap lock), and collapse_pte_mapped_thp() refuses one
 * (SCAN_PTE_UFFD_WP). A marker lost shows as a page without pagemap bit 57.
 */
TEST_F_TIMEOUT(races, uffd_wp_retract, TIMEOUT)
{
	struct wp w = { .sh = self->sh, .salt = 4 };
	struct counts c = { 0 };
	char *col;

	w.fd = shmem_fd(w.salt);
	self->fd = w.fd;
	ASSERT_GE(self->fd, 0);
	w.pagemap = open("/proc/self/pagemap", O_RDONLY);
	self->fd2 = w.pagemap;
	ASSERT_GE(w.pagemap, 0);
	col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	w.slot = reserve_slot(NULL, PMD_SIZE);
	ASSERT_TRUE(col && w.slot);
	ASSERT_EQ(0, start(self, wp_walker, &w));

	collapse_loop(self->sh, self->fd, col, w.salt, &c);
	stop_threads(self);
	print_counts("uffd_wp_retract", &c);
	print_counts("uffd_wp_retract (uffd-wp VMA)", &w.c);
	fprintf(stderr, "# %ld registrations\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	/* The uffd-wp VMA itself is never PMD-mapped: SCAN_PTE_UFFD_WP. */
	EXPECT_EQ(0, w.c.ok);
	EXPECT_EQ(0, disallowed(&w.c, E_AGAIN | E_INVAL));
	EXPECT_GE(w.c.inval, 1);
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_GE(atomic_load(&self->sh->ops), 1);
	EXPECT_EQ(0, whole_bad((uint8_t *)col, w.salt));
	EXPECT_EQ(0, file_bad(self->fd, w.salt));
}

/* ------------------------------------------------------------------ */

struct gup {
	struct shared *sh;
	uint8_t *p;
	int salt, pipe[2], direct;
	size_t skip_off, skip_len;	/* bytes not compared (a breakpoint) */
};

/* vmsplice(): GUP-fast of the THP's pages, then read back through a pipe. */
static void *vmsplice_walker(void *arg)
{
	struct gup *g = arg;
	unsigned int seed = 19;
	uint8_t buf[4 * KH_PAGE];

	while (!atomic_load(&g->sh->stop)) {
		size_t n = 1 + rand_r(&seed) % 4;
		size_t k = rand_r(&seed) % (NR_PAGES - n + 1);
		struct iovec iov = { g->p + k * KH_PAGE, n * KH_PAGE };
		ssize_t left = vmsplice(g->pipe[1], &iov, 1, 0), got = 0;
		long bad = 0;

		if (left != (ssize_t)(n * KH_PAGE)) {
			atomic_fetch_add(&g->sh->bad, 1);
			break;
		}
		while (got < left) {
			ssize_t r = read(g->pipe[0], buf + got, left - got);

			if (r <= 0)
				break;
			got += r;
		}
		/* The pages' bytes never change. */
		for (ssize_t j = 0; j < got; j++) {
			size_t i = k * KH_PAGE + j;

			if (i - g->skip_off >= g->skip_len)
				bad += buf[j] != kh_pattern(i, g->salt);
		}
		if (bad || got != left) {
			fprintf(stderr, "# vmsplice: %ld bytes wrong\n", bad);
			atomic_fetch_add(&g->sh->bad, 1);
		}
		atomic_fetch_add(&g->sh->ops, 1);
	}
	return NULL;
}

/* O_DIRECT read of the same bytes into the THP: GUP-fast for writing. */
static void *direct_walker(void *arg)
{
	struct gup *g = arg;
	unsigned int seed = 23;

	while (!atomic_load(&g->sh->stop)) {
		size_t k = rand_r(&seed) % NR_PAGES;
		ssize_t n = pread(g->direct, g->p + k * KH_PAGE, KH_PAGE,
				  k * KH_PAGE);

		/* EFAULT: the main loop's mprotect() made the page read-only. */
		if (n != KH_PAGE && !(n < 0 && errno == EFAULT)) {
			fprintf(stderr, "# O_DIRECT read: %s\n", strerror(errno));
			atomic_fetch_add(&g->sh->bad, 1);
			break;
		}
		atomic_fetch_add(&g->sh->ops, 1);
	}
	return NULL;
}

/*
 * The same bytes as @g's on ext4 (self->fd2), opened with O_DIRECT to be
 * read into @g->p, the pipe, and the two walkers started.
 */
static void start_gup_walkers(struct __test_metadata *_metadata,
			      struct _test_data_races *self, struct gup *g)
{
	char path[64];

	self->fd2 = ext4_fd(g->salt, "direct");
	ASSERT_GE(self->fd2, 0) TH_LOG("needs KHUGEPAGED_FILE_DIR (ext4)");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", self->fd2);
	g->direct = open(path, O_RDONLY | O_DIRECT);
	ASSERT_GE(g->direct, 0);
	ASSERT_EQ(0, pipe(g->pipe));
	ASSERT_EQ(0, start(self, vmsplice_walker, g));
	ASSERT_EQ(0, start(self, direct_walker, g));
}

/*
 * GUP-fast walks page tables with interrupts off and no lock, so a table
 * that collapse_pte_mapped_thp() or retract_page_tables() removes must be
 * freed after an RCU grace period (pte_free_defer()), never at once:
 * vmsplice() and O_DIRECT reads into a PTE-mapped shmem THP while the main
 * loop splits its PMD mapping (mprotect() of one page) and re-collapses it.
 * An immediate free is a KASAN use-after-free.
 */
TEST_F_TIMEOUT(races, gup_fast_recollapse, TIMEOUT)
{
	struct gup g = { .sh = self->sh, .salt = 5 };
	struct counts c = { 0 };
	double t0;

	self->fd = shmem_fd(g.salt);
	ASSERT_GE(self->fd, 0);
	g.p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
				     MAP_SHARED, self->fd);
	ASSERT_NE(NULL, g.p);
	ASSERT_EQ(0, kh_collapse(g.p, PMD_SIZE));
	start_gup_walkers(_metadata, self, &g);

	t0 = now();
	while (!race_over(t0, c.ok)) {
		size_t k = rand() % NR_PAGES;

		/* Split the PMD mapping, fault it back by PTEs, re-collapse. */
		if (mprotect(g.p + k * KH_PAGE, KH_PAGE, PROT_READ) ||
		    mprotect(g.p + k * KH_PAGE, KH_PAGE, PROT_READ | PROT_WRITE)) {
			atomic_fetch_add(&self->sh->bad, 1);
			break;
		}
		touch((char *)g.p, PMD_SIZE);
		count(&c, madvise(g.p, PMD_SIZE, MADV_COLLAPSE));
	}
	stop_threads(self);
	close(g.direct);
	print_counts("gup_fast_recollapse", &c);
	fprintf(stderr, "# %ld GUP-fast operations\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_EQ(0, whole_bad(g.p, g.salt));
	EXPECT_EQ(0, file_bad(self->fd, g.salt));
}

/*
 * Maps a new memfd of small folios of kh_pattern(, @salt) at @a (shared)
 * and at @b (with @b_flags, MAP_FIXED added), faults both in by PTEs, and
 * makes it the case's self->fd; -1 if any of that failed.
 */
static int remap_fresh(struct _test_data_races *self, int salt, void *a,
		       void *b, int b_flags)
{
	int fd = shmem_fd(salt);

	if (fd < 0 ||
	    mmap(a, PMD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 fd, 0) != a ||
	    mmap(b, PMD_SIZE, PROT_READ | PROT_WRITE, b_flags | MAP_FIXED,
		 fd, 0) != b) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(self->fd);
	self->fd = fd;
	touch(a, PMD_SIZE);
	touch(b, PMD_SIZE);
	return 0;
}

/*
 * collapse_file() copies folios that it has unmapped and whose references
 * it has counted: a reference GUP takes after the count would let a write
 * through it land in the old folio after the copy, and be lost. 6.12's C
 * unmaps and counts each folio in its loop; with unmap_file_range (the
 * Rust implementation) the small folios are unmapped 32 pages at a time,
 * locked, and counted then. Each round gives the mapping a new
 * memfd of small folios, mapped by PTEs here and by a second mapping one
 * MiB off a PMD boundary (two PTE tables), and collapses it while
 * vmsplice() and O_DIRECT reads take and drop references on its pages:
 * MADV_COLLAPSE either fails with EAGAIN or keeps every byte.
 */
TEST_F_TIMEOUT(races, gup_collapse_file, TIMEOUT)
{
	struct gup g = { .sh = self->sh, .salt = 6 };
	struct counts c = { 0 };
	char *hole = aligned_hole(3 * PMD_SIZE), *q;
	long q_bad = 0;
	double t0;

	ASSERT_NE(NULL, hole);
	q = hole + PMD_SIZE / 2;
	self->fd = shmem_fd(g.salt);
	ASSERT_GE(self->fd, 0);
	/* First, so that the hole is not handed out for g.p. */
	ASSERT_EQ(q, mmap(q, PMD_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_FIXED, self->fd, 0));
	g.p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
				     MAP_SHARED, self->fd);
	ASSERT_NE(NULL, g.p);
	start_gup_walkers(_metadata, self, &g);

	t0 = now();
	while (!race_over(t0, c.ok)) {
		/* The same bytes in small folios, mapped in place of the THP. */
		if (remap_fresh(self, g.salt, g.p, q, MAP_SHARED)) {
			atomic_fetch_add(&self->sh->bad, 1);
			break;
		}
		count(&c, madvise(g.p, PMD_SIZE, MADV_COLLAPSE));
		q_bad += kh_bad_bytes((uint8_t *)q, PMD_SIZE, g.salt);
	}
	stop_threads(self);
	close(g.direct);
	print_counts("gup_collapse_file", &c);
	fprintf(stderr, "# %ld GUP-fast operations\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_EQ(0, q_bad);
	EXPECT_EQ(0, whole_bad(g.p, g.salt));
	EXPECT_EQ(0, file_bad(self->fd, g.salt));
	munmap(q, PMD_SIZE);
}

/* A child of fork_collapse_file: its copy of the private mapping. */
static void priv_child(struct forker *f, unsigned int seed)
{
	_exit(kh_bad_bytes(f->priv, PMD_SIZE, f->salt) ? 1 : 0);
}

/*
 * fork() copies the entries of a private file mapping that has an anon_vma
 * (copy_page_range(), under the parent's mmap lock only), after the
 * child's VMA went into the file's interval tree: an rmap walk of
 * collapse_file() can pass the child's VMA while it is still empty and the
 * parent's before its entry is copied, so that the child maps a locked
 * folio the walk has gone by. 6.12's reference check after try_to_unmap()
 * catches that; with unmap_file_range (Rust), a folio still mapped after
 * the walk is unmapped by try_to_unmap() before its check. A thread forks
 * children that read their copy of a MAP_PRIVATE mapping of the memfd,
 * while each round gives it and a shared mapping a new memfd of small
 * folios, copies one page of the private one on write (the same bytes: an
 * anon_vma), and collapses the shared one: no byte lost in the parent's,
 * the children's or the file's view.
 */
TEST_F_TIMEOUT(races, fork_collapse_file, TIMEOUT)
{
	struct forker f = { .sh = self->sh, .child = priv_child,
			    .what = "fork", .seed = 9, .salt = 7 };
	struct counts c = { 0 };
	uint8_t *p, *priv;
	long priv_bad = 0;
	double t0;

	self->fd = shmem_fd(f.salt);
	ASSERT_GE(self->fd, 0);
	p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
				   MAP_SHARED, self->fd);
	ASSERT_NE(NULL, p);
	priv = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE, self->fd);
	ASSERT_NE(NULL, priv);
	f.priv = priv;
	ASSERT_EQ(0, start(self, forker, &f));

	t0 = now();
	while (!race_over(t0, c.ok)) {
		if (remap_fresh(self, f.salt, p, priv, MAP_PRIVATE)) {
			atomic_fetch_add(&self->sh->bad, 1);
			break;
		}
		/* The same byte back: an anonymous copy, and an anon_vma. */
		__atomic_store_n(priv, __atomic_load_n(priv, __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
		count(&c, madvise(p, PMD_SIZE, MADV_COLLAPSE));
		priv_bad += whole_bad(priv, f.salt);
	}
	stop_threads(self);
	print_counts("fork_collapse_file", &c);
	fprintf(stderr, "# %ld children\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_GE(atomic_load(&self->sh->ops), MIN_OK);
	EXPECT_EQ(0, priv_bad);
	EXPECT_EQ(0, whole_bad(p, f.salt));
	EXPECT_EQ(0, file_bad(self->fd, f.salt));
}

/* ------------------------------------------------------------------ */

struct copier {
	struct shared *sh;
	uint8_t *priv;
	int uffd, salt;
	atomic_long go, end, done;	/* the round to copy in, its end, the last done */
	uint8_t *src[2];	/* a source page each for the main loop, the copier */
	atomic_bool copied[NR_PAGES];
};

/* UFFDIO_COPY of page @k's private data into the private mapping. */
static int uffd_copy(struct copier *c, size_t k, uint8_t *buf)
{
	struct uffdio_copy copy = {
		.dst = (uintptr_t)c->priv + k * KH_PAGE,
		.src = (uintptr_t)buf,
		.len = KH_PAGE,
	};

	page_pattern(buf, k, c->salt);
	if (!ioctl(c->uffd, UFFDIO_COPY, &copy))
		return 0;
	return errno;
}

/*
 * While the main loop's MADV_COLLAPSE of a round runs, UFFDIO_COPY into
 * random pages of the private mapping, again and again: every page is
 * mapped when the round starts, so a copy only lands in an entry that
 * collapse_pte_mapped_thp() cleared; an anonymous PTE appears in the table
 * without the mmap write lock and without the folio lock.
 */
static void *copier(void *arg)
{
	struct copier *c = arg;
	unsigned int seed = 37;

	while (!atomic_load(&c->sh->stop)) {
		long round = atomic_load(&c->go);

		if (round == atomic_load(&c->done)) {
			sched_yield();
			continue;
		}
		while (atomic_load(&c->end) != round) {
			size_t k = rand_r(&seed) % NR_PAGES;
			int err = uffd_copy(c, k, c->src[1]);

			if (!err) {
				atomic_store(&c->copied[k], true);
			} else if (err != EEXIST && err != EAGAIN) {
				fprintf(stderr, "# UFFDIO_COPY: %s\n", strerror(err));
				atomic_fetch_add(&c->sh->bad, 1);
				break;
			}
		}
		atomic_store(&c->done, round);
	}
	return NULL;
}

/*
 * a98460494b16 ("mm/khugepaged: fix collapse_pte_mapped_thp() versus
 * uffd"): userfaultfd's UFFDIO_COPY into a MAP_PRIVATE shmem mapping
 * registered for MISSING faults inserts an as-if-CoWed anonymous PTE
 * without looking at the page cache, so the folio lock does not keep it
 * out of the table collapse_pte_mapped_thp() is clearing: for such a VMA
 * it must hold the PTE lock from clearing the table to detaching it (it
 * takes the PMD lock early). Each round makes the mapping PTE-mapped
 * with an anon_vma (so retraction leaves it alone) and every page mapped,
 * then collapses it with the copier at work; every page copied must then
 * read its private data, every other page the file's.
 */
TEST_F_TIMEOUT(races, uffd_copy_private, TIMEOUT)
{
	static struct copier c;
	struct counts cnt = { 0 };
	char *col;
	double t0;
	long lost = 0, torn = 0, round = 0;

	memset(&c, 0, sizeof(c));
	c.src[0] = aligned_alloc(KH_PAGE, KH_PAGE);
	c.src[1] = aligned_alloc(KH_PAGE, KH_PAGE);
	ASSERT_TRUE(c.src[0] && c.src[1]);
	c.sh = self->sh;
	c.salt = 11;
	self->fd = shmem_fd(10);
	ASSERT_GE(self->fd, 0);
	col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, col);
	ASSERT_EQ(0, kh_collapse(col, PMD_SIZE));
	c.priv = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE, self->fd);
	ASSERT_NE(NULL, c.priv);
	c.uffd = kh_uffd_register(c.priv, PMD_SIZE, 0,
				  UFFDIO_REGISTER_MODE_MISSING);
	self->fd2 = c.uffd;
	ASSERT_GE(c.uffd, 0) TH_LOG("userfaultfd: %s", strerror(errno));
	ASSERT_EQ(0, start(self, copier, &c));

	t0 = now();
	while (!race_over(t0, cnt.ok)) {
		/* Nothing mapped; then a table (and an anon_vma) by page 0. */
		ASSERT_EQ(0, madvise(c.priv, PMD_SIZE, MADV_DONTNEED));
		for (size_t k = 0; k < NR_PAGES; k++)
			atomic_store(&c.copied[k], false);
		ASSERT_EQ(0, uffd_copy(&c, 0, c.src[0]));
		ASSERT_EQ(0, madvise(c.priv, KH_PAGE, MADV_DONTNEED));
		/* Every page of the THP by PTEs; then the copier and collapse. */
		touch((char *)c.priv, PMD_SIZE);
		atomic_store(&c.go, ++round);
		count(&cnt, madvise(c.priv, PMD_SIZE, MADV_COLLAPSE));
		atomic_store(&c.end, round);
		while (atomic_load(&c.done) != round && !atomic_load(&self->sh->bad))
			sched_yield();
		for (size_t k = 0; k < NR_PAGES; k++) {
			const uint8_t *pg = c.priv + k * KH_PAGE;
			long file = 0, mine = 0;

			for (size_t j = 0; j < KH_PAGE; j++) {
				file += pg[j] != kh_pattern(k * KH_PAGE + j, 10);
				mine += pg[j] != kh_pattern(k * KH_PAGE + j, c.salt);
			}
			if (atomic_load(&c.copied[k]) ? mine : file) {
				if (atomic_load(&c.copied[k]) && !file)
					lost++;
				else
					torn++;
				fprintf(stderr, "# round %ld page %zu: %s\n", round,
					k, atomic_load(&c.copied[k]) && !file ?
					"the copied page is gone" : "wrong bytes");
			}
		}
		if (lost || torn)
			break;
	}
	stop_threads(self);
	print_counts("uffd_copy_private", &cnt);
	EXPECT_EQ(0, lost);
	EXPECT_EQ(0, torn);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&cnt, E_AGAIN | E_INVAL));
	EXPECT_GE(cnt.ok, MIN_OK);
	EXPECT_EQ(0, whole_bad((uint8_t *)col, 10));
	EXPECT_EQ(0, file_bad(self->fd, 10));
}

/* ------------------------------------------------------------------ */

struct collapser {
	struct shared *sh;
	char *p;
	struct counts c;
};

static void *collapser(void *arg)
{
	struct collapser *k = arg;

	while (!atomic_load(&k->sh->stop)) {
		count(&k->c, madvise(k->p, PMD_SIZE, MADV_COLLAPSE));
		sched_yield();
	}
	return NULL;
}

/*
 * collapse_file() against write(), hole punching and truncation of the
 * same shmem range: every operation lands in a model of the file (the
 * byte each page must hold, 0 for a hole), and at the end every byte of
 * the file, read and mapped, must match it. A write lost to a collapse
 * that copied the old page, or a hole filled after truncation, fails.
 */
TEST_F_TIMEOUT(races, shmem_write_punch_truncate, TIMEOUT)
{
	struct collapser k = { .sh = self->sh };
	static uint8_t model[NR_PAGES], buf[KH_PAGE];
	unsigned int seed = 29;
	double t0;
	long bad = 0, ops = 0;

	self->fd = memfd_create("khugepaged_races", 0);
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(0, ftruncate(self->fd, PMD_SIZE));
	for (size_t i = 0; i < NR_PAGES; i++) {
		model[i] = 1 + i % 255;
		memset(buf, model[i], KH_PAGE);
		ASSERT_EQ(KH_PAGE, pwrite(self->fd, buf, KH_PAGE, i * KH_PAGE));
	}
	k.p = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, k.p);
	ASSERT_EQ(0, start(self, collapser, &k));

	t0 = now();
	while (!race_over(t0, k.c.ok)) {
		size_t i = rand_r(&seed) % NR_PAGES;
		int op = rand_r(&seed) % 16;

		if (op < 9) {
			model[i] = 1 + rand_r(&seed) % 255;
			memset(buf, model[i], KH_PAGE);
			ASSERT_EQ(KH_PAGE, pwrite(self->fd, buf, KH_PAGE,
						  i * KH_PAGE));
		} else if (op < 15) {
			model[i] = 0;
			ASSERT_EQ(0, fallocate(self->fd, FALLOC_FL_PUNCH_HOLE |
					       FALLOC_FL_KEEP_SIZE,
					       i * KH_PAGE, KH_PAGE));
		} else {
			memset(model + i, 0, NR_PAGES - i);
			ASSERT_EQ(0, ftruncate(self->fd, i * KH_PAGE));
			ASSERT_EQ(0, ftruncate(self->fd, PMD_SIZE));
		}
		/* Quiet now and then, for a collapse to get through. */
		if (++ops % 32 == 0)
			usleep(5000);
	}
	stop_threads(self);
	print_counts("shmem_write_punch_truncate", &k.c);
	fprintf(stderr, "# %ld writes, punches and truncations\n", ops);
	for (size_t i = 0; i < NR_PAGES; i++) {
		ASSERT_EQ(KH_PAGE, pread(self->fd, buf, KH_PAGE, i * KH_PAGE));
		for (size_t j = 0; j < KH_PAGE; j++)
			bad += buf[j] != model[i] ||
			       (uint8_t)k.p[i * KH_PAGE + j] != model[i];
	}
	EXPECT_EQ(0, bad);
	/* Truncation mid-collapse is SCAN_TRUNCATED, EINVAL. */
	EXPECT_EQ(0, disallowed(&k.c, E_AGAIN | E_INVAL));
	EXPECT_GE(k.c.ok, MIN_OK);
}

/* ------------------------------------------------------------------ */

struct evictor {
	struct shared *sh;
	int fd;
};

/*
 * Drops random parts of the file's page cache. It reads nothing back: pages
 * it read would sit in this CPU's LRU batch, where collapse_file() cannot
 * isolate them (EAGAIN); the collapse reads them in itself.
 */
static void *evictor(void *arg)
{
	struct evictor *e = arg;
	unsigned int seed = 31;

	while (!atomic_load(&e->sh->stop)) {
		size_t n = 1 + rand_r(&seed) % 64;
		size_t k = rand_r(&seed) % (NR_PAGES - n + 1);

		if (posix_fadvise(e->fd, k * KH_PAGE, n * KH_PAGE,
				  POSIX_FADV_DONTNEED)) {
			atomic_fetch_add(&e->sh->bad, 1);
			break;
		}
		/* A pace at which some collapses still get through. */
		usleep(500 + rand_r(&seed) % 2000);
		atomic_fetch_add(&e->sh->ops, 1);
	}
	return NULL;
}

/*
 * 595cf683519a (folio split/free racing the file scan): the page cache's
 * folios freed (POSIX_FADV_DONTNEED) while hpage_collapse_scan_file() walks
 * them under RCU only and collapse_file() reads them in and locks them, on
 * ext4 (READ_ONLY_THP_FOR_FS). Each round maps the file, collapses it, checks
 * it, unmaps it and drops the THP.
 */
TEST_F_TIMEOUT(races, file_scan_evict, TIMEOUT)
{
	struct evictor e = { .sh = self->sh };
	struct counts c = { 0 };
	double t0;

	e.fd = ext4_fd(6, "evict");
	self->fd = e.fd;
	ASSERT_GE(self->fd, 0) TH_LOG("needs KHUGEPAGED_FILE_DIR (ext4)");
	ASSERT_EQ(0, start(self, evictor, &e));
	t0 = now();
	while (!race_over(t0, c.ok)) {
		char *p = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);

		ASSERT_NE(NULL, p);
		count(&c, madvise(p, PMD_SIZE, MADV_COLLAPSE));
		EXPECT_EQ(0, whole_bad((uint8_t *)p, 6));
		munmap(p, PMD_SIZE);
		posix_fadvise(self->fd, 0, PMD_SIZE, POSIX_FADV_DONTNEED);
	}
	stop_threads(self);
	print_counts("file_scan_evict", &c);
	fprintf(stderr, "# %ld evictions\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_EQ(0, file_bad(self->fd, 6));
}

/* ------------------------------------------------------------------ */

/*
 * f1897f2f08b2 (6.12.41): a MAP_PRIVATE mapping of /dev/zero is anonymous
 * but keeps the pgoff of its mmap() offset. At an unaligned pgoff it must
 * still collapse as anonymous memory, by MADV_COLLAPSE and by khugepaged,
 * with its data.
 */
TEST_F_TIMEOUT(races, dev_zero_unaligned_pgoff, TIMEOUT)
{
	int fd = open("/dev/zero", O_RDWR);
	char *hole = aligned_hole(2 * PMD_SIZE);
	uint8_t *p;
	long collapsed;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, hole);
	p = mmap(hole, 2 * PMD_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_FIXED, fd, 3 * KH_PAGE);
	close(fd);
	ASSERT_EQ(hole, (char *)p);
	for (size_t i = 0; i < 2 * PMD_SIZE; i++)
		p[i] = kh_pattern(i, 7);
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE)) {
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	}
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	/* And the second half by khugepaged, quickly. */
	ASSERT_EQ(0, write_str(KHUGEPAGED_SYSFS "scan_sleep_millisecs", "0", false));
	ASSERT_EQ(0, madvise(p + PMD_SIZE, PMD_SIZE, MADV_HUGEPAGE));
	for (int i = 0; i < 500 && smaps_field(p + PMD_SIZE, "AnonHugePages:") < 2048; i++)
		usleep(20000);
	/* MADV_HUGEPAGE split the VMA: smaps has a line per half. */
	collapsed = smaps_field(p + PMD_SIZE, "AnonHugePages:");
	EXPECT_EQ(2048, collapsed);
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	EXPECT_EQ(0, kh_bad_bytes(p, 2 * PMD_SIZE, 7));
	munmap(p, 2 * PMD_SIZE);
}

/* ------------------------------------------------------------------ */

#define FAIL_PAGE_ALLOC	"/sys/kernel/debug/fail_page_alloc/"

/* Page allocation failures of order 9 and up, for this task only. */
static int fail_huge_allocs(bool on)
{
	static const char * const knobs[][2] = {
		{ "task-filter", "Y" }, { "min-order", "9" },
		{ "ignore-gfp-wait", "N" }, { "ignore-gfp-highmem", "N" },
		{ "verbose", "0" }, { "interval", "1" }, { "times", "-1" },
		{ "space", "0" }, { "probability", "100" },
	};
	char path[128];

	if (!on)
		return write_str("/proc/self/make-it-fail", "0", false) |
		       write_str(FAIL_PAGE_ALLOC "probability", "0", false);
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		snprintf(path, sizeof(path), FAIL_PAGE_ALLOC "%s", knobs[i][0]);
		if (write_str(path, knobs[i][1], false))
			return -1;
	}
	return write_str("/proc/self/make-it-fail", "1", false);
}

/*
 * 2 MiB anonymous, small pages (THP "madvise", no MADV_HUGEPAGE: which also
 * keeps khugepaged away from it), filled.
 */
static uint8_t *anon_small(int salt)
{
	uint8_t *p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
					    MAP_PRIVATE | MAP_ANONYMOUS, -1);

	for (size_t i = 0; p && i < PMD_SIZE; i++)
		p[i] = kh_pattern(i, salt);
	return p;
}

/*
 * fail_page_alloc on the huge page (SCAN_ALLOC_HUGE_PAGE_FAIL): ENOMEM for
 * anonymous memory and shmem alike, the range still small pages with its
 * data and nothing left isolated; once the injection stops, the same
 * MADV_COLLAPSE succeeds.
 */
TEST_F_TIMEOUT(races, fail_huge_alloc, TIMEOUT)
{
	uint8_t *anon = anon_small(8), *shm;
	int ret, err;

	ASSERT_NE(NULL, anon);
	self->fd = shmem_fd(8);
	ASSERT_GE(self->fd, 0);
	shm = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, shm);
	touch((char *)shm, PMD_SIZE);

	ASSERT_EQ(0, fail_huge_allocs(true));
	ret = madvise(anon, PMD_SIZE, MADV_COLLAPSE);
	err = errno;
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(ENOMEM, err) TH_LOG("anon: %s", strerror(err));
	ret = madvise(shm, PMD_SIZE, MADV_COLLAPSE);
	err = errno;
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(ENOMEM, err) TH_LOG("shmem: %s", strerror(err));
	ASSERT_EQ(0, fail_huge_allocs(false));

	EXPECT_EQ(0, smaps_field(anon, "AnonHugePages:"));
	EXPECT_EQ(2048, smaps_field(anon, "Rss:"));
	EXPECT_EQ(0, kh_bad_bytes(anon, PMD_SIZE, 8));
	EXPECT_EQ(0, whole_bad(shm, 8));
	EXPECT_LT(vmstat_settled("nr_isolated_anon", 127), 128);
	EXPECT_EQ(0, kh_collapse(anon, PMD_SIZE));
	EXPECT_EQ(0, kh_collapse(shm, PMD_SIZE));
	EXPECT_EQ(2048, smaps_field(anon, "AnonHugePages:"));
	EXPECT_EQ(0, kh_bad_bytes(anon, PMD_SIZE, 8));
	EXPECT_EQ(0, whole_bad(shm, 8));
}

#ifndef MADV_HWPOISON
#define MADV_HWPOISON	100
#endif

static atomic_int sigbus_seen;

static void on_sigbus(int sig)
{
	atomic_fetch_add(&sigbus_seen, 1);
}

/*
 * MADV_HWPOISON of one page of an anonymous extent: memory_failure()
 * replaces its PTE with a hwpoison entry (and sends this process SIGBUS).
 * MADV_COLLAPSE must then refuse cleanly (the swap-in of the entry fails:
 * EINVAL), leaving every other page mapped small with its data and nothing
 * isolated. The kernel's "Memory failure: <pfn>:" lines for that pfn are
 * announced to the report (@@EXPECT-KERNEL), which accepts those alone.
 */
TEST_F_TIMEOUT(races, hwpoison_refused, TIMEOUT)
{
	const size_t k = 100;
	struct sigaction sa = { .sa_handler = on_sigbus };
	uint8_t *p = anon_small(12);
	uint64_t ent = 0;
	long bad = 0;
	int pagemap, kmsg, ret, err, n;
	char line[96];
	long rss;

	ASSERT_NE(NULL, p);
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_GE(pagemap, 0);
	ASSERT_EQ(8, pread(pagemap, &ent, 8,
			   (uintptr_t)(p + k * KH_PAGE) / KH_PAGE * 8));
	close(pagemap);
	ASSERT_TRUE(ent >> 63) TH_LOG("page %zu not present", k);
	/*
	 * Straight to the kernel log, not through the harness's output pipe:
	 * the announcement must come before what it announces.
	 */
	n = snprintf(line, sizeof(line),
		     "<6>@@EXPECT-KERNEL Memory failure: %#llx:\n",
		     (unsigned long long)(ent & ((1ULL << 55) - 1)));
	kmsg = open("/dev/kmsg", O_WRONLY);
	ASSERT_GE(kmsg, 0);
	ASSERT_EQ(n, write(kmsg, line, n)) TH_LOG("/dev/kmsg: %s", strerror(errno));
	close(kmsg);
	ASSERT_EQ(0, sigaction(SIGBUS, &sa, NULL));
	ASSERT_EQ(0, madvise(p + k * KH_PAGE, KH_PAGE, MADV_HWPOISON)) {
		TH_LOG("MADV_HWPOISON: %s", strerror(errno));
	}

	/* smaps counts the hwpoison entry's page in Rss. */
	rss = smaps_field(p, "Rss:");
	ret = madvise(p, PMD_SIZE, MADV_COLLAPSE);
	err = errno;
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(EINVAL, err) TH_LOG("%s", strerror(err));
	EXPECT_EQ(0, smaps_field(p, "AnonHugePages:"));
	EXPECT_EQ(rss, smaps_field(p, "Rss:"));
	for (size_t i = 0; i < PMD_SIZE; i++)
		if (i / KH_PAGE != k)
			bad += p[i] != kh_pattern(i, 12);
	EXPECT_EQ(0, bad);
	EXPECT_LT(vmstat_settled("nr_isolated_anon", 127), 128);
	fprintf(stderr, "# SIGBUS %d time(s)\n", atomic_load(&sigbus_seen));
	munmap(p, PMD_SIZE);
}

#define CGROUP		"/sys/fs/cgroup/"
#define CG		CGROUP "khugepaged_races/"

/* memory.stat's anon, file, kernel and percpu lines, on one line. */
static void cg_stat(const char *when)
{
	char line[128], out[512] = "";
	FILE *f = fopen(CG "memory.stat", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "anon ", 5) && strncmp(line, "file ", 5) &&
		    strncmp(line, "kernel ", 7) && strncmp(line, "percpu ", 7) &&
		    strncmp(line, "pgscan ", 7) && strncmp(line, "pgsteal ", 8))
			continue;
		*strchr(line, '\n') = 0;
		strncat(out, line, sizeof(out) - strlen(out) - 3);
		strcat(out, ", ");
	}
	if (f)
		fclose(f);
	fprintf(stderr, "# memcg %s: %s\n", when, out);
}

static long cg_num(const char *file)
{
	char path[128];

	snprintf(path, sizeof(path), CG "%s", file);
	return read_num(path);
}

/*
 * A memcg limit just above usage: the huge page's charge fails
 * (SCAN_CGROUP_CHARGE_FAIL, EBUSY), the collapse is undone and the
 * cgroup's usage is back where it was, the data intact; raised, the same
 * collapse succeeds.
 */
TEST_F_TIMEOUT(races, memcg_charge_fail, TIMEOUT)
{
	char pid[32], max[32];
	long before, after;
	uint8_t *p;
	int ret, err;

	mkdir(CGROUP, 0755);
	if (access(CGROUP "cgroup.controllers", F_OK))
		ASSERT_EQ(0, mount("none", CGROUP, "cgroup2", 0, NULL));
	ASSERT_EQ(0, write_str(CGROUP "cgroup.subtree_control", "+memory", false));
	ASSERT_TRUE(mkdir(CG, 0755) == 0 || errno == EEXIST);
	snprintf(pid, sizeof(pid), "%d", getpid());
	ASSERT_EQ(0, write_str(CG "cgroup.procs", pid, false));
	ASSERT_EQ(0, write_str(CG "memory.swap.max", "0", false));

	p = anon_small(9);
	ASSERT_NE(NULL, p);
	/*
	 * What reclaim can free first (it fails when it cannot free it
	 * all): then only the unreclaimable is charged, and a limit 1 MiB
	 * above it cannot take the 2 MiB the collapse charges.
	 */
	write_str(CG "memory.reclaim", "64M", false);
	before = cg_num("memory.current");
	cg_stat("before");
	snprintf(max, sizeof(max), "%ld", before + (1L << 20));
	ASSERT_EQ(0, write_str(CG "memory.max", max, false));
	ret = madvise(p, PMD_SIZE, MADV_COLLAPSE);
	err = errno;
	after = cg_num("memory.current");
	cg_stat("after");
	ASSERT_EQ(0, write_str(CG "memory.max", "max", false));

	EXPECT_EQ(-1, ret);
	EXPECT_EQ(EBUSY, err) TH_LOG("%s", strerror(err));
	/*
	 * Give or take the per-cpu charge caches (MEMCG_CHARGE_BATCH, 64
	 * pages per CPU), which a failed charge drains.
	 */
	EXPECT_LE(labs(after - before),
		  64 * KH_PAGE * sysconf(_SC_NPROCESSORS_ONLN)) {
		TH_LOG("memory.current %ld before, %ld after", before, after);
	}
	EXPECT_EQ(0, smaps_field(p, "AnonHugePages:"));
	EXPECT_EQ(0, kh_bad_bytes(p, PMD_SIZE, 9));
	EXPECT_LT(vmstat_settled("nr_isolated_anon", 127), 128);
	EXPECT_EQ(0, kh_collapse(p, PMD_SIZE));
	EXPECT_EQ(2048, smaps_field(p, "AnonHugePages:"));
	EXPECT_EQ(0, kh_bad_bytes(p, PMD_SIZE, 9));
	munmap(p, PMD_SIZE);
	write_str(CGROUP "cgroup.procs", pid, false);
	rmdir(CG);
}

/* ------------------------------------------------------------------ */

#define PROBE_OFF	0x1000UL

/*
 * GUP-fast while uprobes come and go: a uprobe's breakpoint replaces one
 * page of a PMD-mapped file THP by an anonymous copy (the PMD is split),
 * and its removal restores the page and calls collapse_pte_mapped_thp()
 * straight from uprobe_write_opcode(), which frees the PTE table by
 * pte_free_defer() under vmsplice()'s lockless walk of it. Each round sets
 * and clears one probe, then faults the range back: it must be mapped by
 * its PMD again (healed), the file's bytes in place.
 */
TEST_F_TIMEOUT(races, uprobe_gup_fast, TIMEOUT)
{
	const char *dir = getenv("KHUGEPAGED_FILE_DIR");
	struct gup g = { .sh = self->sh, .salt = 13, .direct = -1 };
	struct counts c = { 0 };
	long calls, healed = 0, rounds = 0, bad = 0;
	uint8_t *buf;
	double t0;

	if (access(TRACEFS "uprobe_events", W_OK))
		SKIP(return, "no uprobe events in tracefs");
	ASSERT_TRUE(dir && *dir) TH_LOG("needs KHUGEPAGED_FILE_DIR (ext4)");
	snprintf(self->path, sizeof(self->path), "%s/races-uprobe.%d", dir,
		 getpid());
	buf = malloc(PMD_SIZE);
	ASSERT_NE(NULL, buf);
	for (size_t i = 0; i < PMD_SIZE; i++)
		buf[i] = kh_pattern(i, g.salt);
	/* The probed instruction must decode: a return. */
	memcpy(buf + PROBE_OFF, kh_ret_insn, sizeof(kh_ret_insn));
	self->fd = ro_file(self->path, buf, PMD_SIZE, true);
	free(buf);
	ASSERT_GE(self->fd, 0);
	g.skip_off = PROBE_OFF;
	g.skip_len = sizeof(kh_ret_insn);
	g.p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_EXEC,
				     MAP_PRIVATE, self->fd);
	ASSERT_NE(NULL, g.p);
	ASSERT_EQ(0, kh_collapse(g.p, PMD_SIZE));
	ASSERT_EQ(2048, smaps_field(g.p, "FilePmdMapped:"));
	snprintf(self->event, sizeof(self->event), "races_%d", getpid());
	ASSERT_EQ(0, pipe(g.pipe));
	ASSERT_EQ(0, start(self, vmsplice_walker, &g));

	calls = kh_pte_mapped_calls();
	t0 = now();
	while (!race_over(t0, healed)) {
		ASSERT_EQ(0, kh_uprobe_set(self->event, self->path, PROBE_OFF));
		/* The breakpoint's CoW split the PMD. */
		if (smaps_field(g.p, "FilePmdMapped:"))
			bad++;
		ASSERT_EQ(0, kh_uprobe_clear(self->event));
		touch((char *)g.p, PMD_SIZE);
		healed += smaps_field(g.p, "FilePmdMapped:") == 2048;
		rounds++;
		/* A round the removal did not heal, MADV_COLLAPSE heals. */
		if (smaps_field(g.p, "FilePmdMapped:") != 2048)
			count(&c, madvise(g.p, PMD_SIZE, MADV_COLLAPSE));
	}
	self->event[0] = 0;
	stop_threads(self);
	calls = kh_pte_mapped_calls() - calls;
	print_counts("uprobe_gup_fast (unhealed rounds)", &c);
	fprintf(stderr,
		"# %ld probe rounds, %ld healed, %ld collapse_pte_mapped_thp() calls, %ld GUP-fast operations\n",
		rounds, healed, calls, atomic_load(&self->sh->ops));
	EXPECT_EQ(0, bad) TH_LOG("%ld probes left the PMD mapped", bad);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_GE(calls, rounds);
	EXPECT_GE(healed, MIN_OK);
	EXPECT_EQ(0, disallowed(&c, E_AGAIN));
	EXPECT_EQ(0, memcmp(g.p + PROBE_OFF, kh_ret_insn, sizeof(kh_ret_insn)));
	g.skip_len = 0;
	for (size_t i = 0; i < PMD_SIZE; i++)
		bad += i - PROBE_OFF >= sizeof(kh_ret_insn) &&
		       g.p[i] != kh_pattern(i, g.salt);
	EXPECT_EQ(0, bad);
}

/* ------------------------------------------------------------------ */

#define SPLIT_HUGE_PAGES	"/sys/kernel/debug/split_huge_pages"

struct splitter {
	struct shared *sh;
	char path[2][64];	/* /proc/<pid>/fd/<n> of each file */
};

/*
 * Splits the large folios of each file's first 2 MiB through debugfs's
 * split_huge_pages (folio_trylock(), then split_folio_to_order()), to
 * order 0: 6.12 splits a shmem or ext4 folio to no other order.
 */
static void *splitter(void *arg)
{
	struct splitter *s = arg;
	unsigned int seed = 41;
	char cmd[128];

	while (!atomic_load(&s->sh->stop)) {
		for (int f = 0; f < 2; f++) {
			snprintf(cmd, sizeof(cmd), "%s,0x0,0x%lx", s->path[f],
				 NR_PAGES);
			if (write_str(SPLIT_HUGE_PAGES, cmd, false)) {
				fprintf(stderr, "# split_huge_pages %s: %s\n",
					cmd, strerror(errno));
				atomic_fetch_add(&s->sh->bad, 1);
				return NULL;
			}
			atomic_fetch_add(&s->sh->ops, 1);
		}
		usleep(200 + rand_r(&seed) % 1500);
	}
	return NULL;
}

/*
 * Folio split racing the file scan (the 595cf683519a row, split rather
 * than freed): hpage_collapse_scan_file() walks the page cache under RCU
 * alone, so a THP it meets may be split under it, and collapse_file()
 * must lock and re-check what it isolates. A shmem THP and a read-only
 * ext4 THP are split while both are collapsed again and again: every
 * byte stays the file's, and once the splitting stops each collapses for
 * good.
 */
TEST_F_TIMEOUT(races, folio_split_file_scan, TIMEOUT)
{
	struct splitter s = { .sh = self->sh };
	struct counts c[2] = { { 0 }, { 0 } };
	uint8_t *p[2];
	double t0;
	long bad = 0;

	if (access(SPLIT_HUGE_PAGES, W_OK))
		SKIP(return, "no %s", SPLIT_HUGE_PAGES);
	self->fd = shmem_fd(14);
	ASSERT_GE(self->fd, 0);
	self->fd2 = ext4_fd(15, "split");
	ASSERT_GE(self->fd2, 0) TH_LOG("needs KHUGEPAGED_FILE_DIR (ext4)");
	snprintf(s.path[0], sizeof(s.path[0]), "/proc/%d/fd/%d", getpid(),
		 self->fd);
	snprintf(s.path[1], sizeof(s.path[1]), "/proc/%d/fd/%d", getpid(),
		 self->fd2);
	p[0] = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	p[1] = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd2);
	ASSERT_NE(NULL, p[0]);
	ASSERT_NE(NULL, p[1]);
	ASSERT_EQ(0, start(self, splitter, &s));

	t0 = now();
	while (!race_over(t0, c[0].ok < c[1].ok ? c[0].ok : c[1].ok)) {
		for (int f = 0; f < 2; f++) {
			count(&c[f], madvise(p[f], PMD_SIZE, MADV_COLLAPSE));
			bad += whole_bad(p[f], 14 + f);
		}
	}
	stop_threads(self);
	print_counts("folio_split_file_scan shmem", &c[0]);
	print_counts("folio_split_file_scan ext4", &c[1]);
	fprintf(stderr, "# %ld splits\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, bad);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	for (int f = 0; f < 2; f++) {
		EXPECT_EQ(0, disallowed(&c[f], E_AGAIN | E_INVAL));
		EXPECT_GE(c[f].ok, MIN_OK);
	}
	EXPECT_EQ(0, file_bad(self->fd, 14));
	EXPECT_EQ(0, file_bad(self->fd2, 15));
	/* Quiet again, each collapses for good. */
	EXPECT_EQ(0, kh_collapse(p[0], PMD_SIZE));
	EXPECT_EQ(0, kh_collapse(p[1], PMD_SIZE));
	touch((char *)p[0], PMD_SIZE);
	touch((char *)p[1], PMD_SIZE);
	EXPECT_EQ(2048, smaps_field(p[0], "ShmemPmdMapped:"));
	EXPECT_EQ(2048, smaps_field(p[1], "FilePmdMapped:"));
}

/* ------------------------------------------------------------------ */

struct truncator {
	struct shared *sh;
	const char *path;
	const uint8_t *buf;	/* the file's bytes */
	size_t size;		/* what round @go truncates the file to */
	unsigned int delay;	/* and after how many microseconds */
	atomic_long go, truncated, restore, restored;	/* rounds */
};

/* Waits until *@v is @round, or something went wrong; 0 or -1. */
static int wait_round(struct shared *sh, atomic_long *v, long round)
{
	while (atomic_load(v) != round) {
		if (atomic_load(&sh->bad) || atomic_load(&sh->stop))
			return -1;
		usleep(100);
	}
	return 0;
}

/*
 * Each round, after its delay, truncates the ext4 file (truncate(2): the
 * page cache beyond the new size is dropped, a THP across it split, the
 * partial page's tail zeroed), while the main loop's MADV_COLLAPSE runs;
 * then, when told, opens it for writing (which drops a file THP's whole
 * page cache, do_dentry_open()) and writes the tail back and to disk:
 * collapse_file() refuses a dirty folio.
 */
static void *truncator(void *arg)
{
	struct truncator *t = arg;

	for (long round = 1; !atomic_load(&t->sh->stop); round++) {
		int fd;

		if (wait_round(t->sh, &t->go, round))
			break;
		usleep(t->delay);
		if (truncate(t->path, t->size)) {
			fprintf(stderr, "# truncate: %s\n", strerror(errno));
			atomic_fetch_add(&t->sh->bad, 1);
			break;
		}
		atomic_store(&t->truncated, round);
		if (wait_round(t->sh, &t->restore, round))
			break;
		fd = open(t->path, O_WRONLY);
		if (fd < 0 || pwrite(fd, t->buf + t->size, PMD_SIZE - t->size,
				     t->size) != (ssize_t)(PMD_SIZE - t->size) ||
		    fdatasync(fd) || close(fd)) {
			fprintf(stderr, "# rewrite: %s\n", strerror(errno));
			atomic_fetch_add(&t->sh->bad, 1);
			break;
		}
		atomic_store(&t->restored, round);
		atomic_fetch_add(&t->sh->ops, 1);
	}
	return NULL;
}

/*
 * Bytes of the truncated ext4 file that differ from @buf's below @size,
 * read and mapped at @p (the tail of the page across the end reads 0),
 * plus the bytes read past @size.
 */
static long truncated_bad(int fd, const uint8_t *p, const uint8_t *buf,
			  size_t size)
{
	uint8_t *got = malloc(PMD_SIZE);
	size_t end = (size + KH_PAGE - 1) / KH_PAGE * KH_PAGE;
	ssize_t n;
	long bad = 0;

	if (!got)
		return -1;
	n = pread(fd, got, PMD_SIZE, 0);
	if (n < 0)
		bad = -1;
	else
		bad = labs(n - (ssize_t)size) + memcmp(got, buf, n < (ssize_t)size ? n : size);
	for (size_t i = 0; i < end; i++)
		bad += p[i] != (i < size ? buf[i] : 0);
	free(got);
	return bad;
}

/*
 * collapse_file() against truncation of the same ext4 range
 * (READ_ONLY_THP_FOR_FS; a writer cannot race: the collapse refuses a file
 * open for writing, and do_dentry_open() drops its THPs): truncation
 * waits for the folios the collapse holds locked, and then must find
 * either the small folios (the collapse gave up: SCAN_TRUNCATED, or it
 * found them gone) or the new THP, which it splits. Each round maps the
 * file, evicts its upper half every other round (the collapse reads it
 * in), collapses it while truncate(2) runs after a random delay, checks
 * what is left below the new size, mapped and read, then has the tail
 * written back, and reads every byte in again and checks it.
 */
TEST_F_TIMEOUT(races, ext4_truncate_collapse, TIMEOUT)
{
	const char *dir = getenv("KHUGEPAGED_FILE_DIR");
	struct truncator t = { .sh = self->sh, .path = self->path };
	struct counts c = { 0 };
	unsigned int seed = 53;
	const int salt = 16;
	long bad = 0, round;
	double t0;
	uint8_t *buf;

	ASSERT_TRUE(dir && *dir) TH_LOG("needs KHUGEPAGED_FILE_DIR (ext4)");
	snprintf(self->path, sizeof(self->path), "%s/races-truncate.%d", dir,
		 getpid());
	buf = malloc(PMD_SIZE);
	ASSERT_NE(NULL, buf);
	for (size_t i = 0; i < PMD_SIZE; i++)
		buf[i] = kh_pattern(i, salt);
	self->fd = ro_file(self->path, buf, PMD_SIZE, true);
	ASSERT_GE(self->fd, 0);
	/* Allocated before the thread starts: aligned_map() is no mmap() race. */
	t.buf = buf;
	ASSERT_EQ(0, start(self, truncator, &t));

	t0 = now();
	for (round = 1; !race_over(t0, c.ok); round++) {
		uint8_t *p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ,
						    MAP_SHARED, self->fd);

		ASSERT_NE(NULL, p);
		/* A page-aligned size half the time, else inside a page. */
		t.size = (rand_r(&seed) % NR_PAGES) * KH_PAGE +
			 rand_r(&seed) % 2 * (rand_r(&seed) % KH_PAGE);
		/*
		 * Half the rounds truncate within 4 ms, while the collapse
		 * (tens of ms here) holds the folios; the others later, when
		 * it may be done.
		 */
		t.delay = rand_r(&seed) % 2 ? rand_r(&seed) % 4000 :
			  20000 + rand_r(&seed) % 80000;
		/*
		 * Every other round the upper half is evicted: the collapse
		 * must read it in, with the lower half's folios locked if it
		 * does so as it comes to it (readahead takes the
		 * invalidate_lock that truncation holds while it waits for
		 * those folios).
		 */
		if (round % 2)
			posix_fadvise(self->fd, PMD_SIZE / 2, PMD_SIZE / 2,
				      POSIX_FADV_DONTNEED);
		atomic_store(&t.go, round);
		count(&c, madvise(p, PMD_SIZE, MADV_COLLAPSE));
		ASSERT_EQ(0, wait_round(self->sh, &t.truncated, round));
		bad += truncated_bad(self->fd, p, buf, t.size);
		atomic_store(&t.restore, round);
		ASSERT_EQ(0, wait_round(self->sh, &t.restored, round));
		/*
		 * The rewritten folios keep their buffers (the journal's) a
		 * while, which collapse_file() cannot release: read it all in
		 * afresh, so that the next collapse finds it cached and does
		 * no I/O.
		 */
		posix_fadvise(self->fd, 0, PMD_SIZE, POSIX_FADV_DONTNEED);
		bad += whole_bad(p, salt) + file_bad(self->fd, salt);
		munmap(p, PMD_SIZE);
	}
	stop_threads(self);
	free(buf);
	print_counts("ext4_truncate_collapse", &c);
	fprintf(stderr, "# %ld truncations\n", atomic_load(&self->sh->ops));
	EXPECT_EQ(0, bad);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	/* Truncated under the collapse: SCAN_TRUNCATED, EINVAL. */
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_GE(c.ok, MIN_OK);
}

/* ------------------------------------------------------------------ */

#define FAILSLAB	"/sys/kernel/debug/failslab/"
#define XA_NODE_SLAB	"/sys/kernel/slab/radix_tree_node/"
#define XA_CHUNK	64	/* pages an xarray leaf node holds */
#define HOLE		64	/* the first page of the hole: a whole leaf */

/*
 * failslab on this task's allocations of xarray nodes (radix_tree_node),
 * sleeping or not, once @space bytes of them succeeded; off if !@on.
 * "times" counts down the failures injected.
 */
static int fail_xa_nodes(bool on, long space)
{
	static const char * const knobs[][2] = {
		{ "task-filter", "Y" }, { "cache-filter", "Y" },
		{ "ignore-gfp-wait", "N" }, { "verbose", "0" },
		{ "interval", "1" }, { "times", "100000" },
		{ "probability", "100" },
	};
	char path[128], num[32];

	if (!on)
		return write_str("/proc/self/make-it-fail", "0", false) |
		       write_str(FAILSLAB "probability", "0", false) |
		       write_str(XA_NODE_SLAB "failslab", "0", false);
	snprintf(num, sizeof(num), "%ld", space);
	if (write_str(XA_NODE_SLAB "failslab", "1", false) ||
	    write_str(FAILSLAB "space", num, false))
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		snprintf(path, sizeof(path), FAILSLAB "%s", knobs[i][0]);
		if (write_str(path, knobs[i][1], false))
			return -1;
	}
	return write_str("/proc/self/make-it-fail", "1", false);
}

/* How often @fn of the selected implementation returned @result. */
static long impl_result(const char *fn, const char *result)
{
	char impl[16], line[256], i[16], f[64], r[64];
	long n, v = 0;
	FILE *file;

	if (current_impl(impl, sizeof(impl)))
		return -1;
	file = fopen("/sys/kernel/debug/khugepaged/impl_results", "r");
	if (!file)
		return -1;
	while (fgets(line, sizeof(line), file))
		if (sscanf(line, "%15s %63s %63s %ld", i, f, r, &n) == 4 &&
		    !strcmp(i, impl) && !strcmp(f, fn) && !strcmp(r, result))
			v = n;
	fclose(file);
	return v;
}

struct filler {
	struct shared *sh;
	int fd;
	atomic_bool held;
};

/*
 * Writes one page into the hole and punches it out again, over and over:
 * the leaf node that collapse_file()'s xas_create_range() made for the
 * hole gets its one entry and loses it, and so is freed. This thread does
 * not inherit make-it-fail: its own node allocations succeed.
 */
static void *filler(void *arg)
{
	struct filler *f = arg;
	unsigned int seed = 47;
	uint8_t buf[KH_PAGE];

	memset(buf, 0x5a, sizeof(buf));
	while (!atomic_load(&f->sh->stop)) {
		off_t off = (HOLE + rand_r(&seed) % XA_CHUNK) * KH_PAGE;

		if (atomic_load(&f->sh->hold)) {
			atomic_store(&f->held, true);
			while (atomic_load(&f->sh->hold) &&
			       !atomic_load(&f->sh->stop))
				usleep(100);
			atomic_store(&f->held, false);
			continue;
		}
		if (pwrite(f->fd, buf, KH_PAGE, off) != KH_PAGE ||
		    fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      off, KH_PAGE)) {
			atomic_fetch_add(&f->sh->bad, 1);
			break;
		}
		atomic_fetch_add(&f->sh->ops, 1);
		usleep(rand_r(&seed) % 200);
	}
	return NULL;
}

/* Bytes of the memfd @fd that are not pattern @salt, the hole's not 0. */
static long holed_bad(int fd, int salt)
{
	uint8_t *buf = malloc(PMD_SIZE);
	long bad = 0;

	if (!buf || pread(fd, buf, PMD_SIZE, 0) != (ssize_t)PMD_SIZE) {
		free(buf);
		return -1;
	}
	for (size_t i = 0; i < PMD_SIZE; i++) {
		bool hole = i / KH_PAGE - HOLE < XA_CHUNK;

		bad += buf[i] != (hole ? 0 : kh_pattern(i, salt));
	}
	free(buf);
	return bad;
}

/*
 * Failing allocations of the page cache's xarray nodes in collapse_file(),
 * on a memfd whose pages 64-127 (one whole leaf node) are a hole:
 *
 *  - all failing: xas_create_range() cannot make the leaf (SCAN_FAIL,
 *    EINVAL); nothing is left allocated (the memfd's blocks, nr_shmem),
 *    the data is intact, and the same collapse then succeeds;
 *  - the first succeeding (failslab's space): xas_create_range() makes the
 *    leaf, a filler thread's write and punch of one page of the hole frees
 *    it again, and the XA_RETRY_ENTRY stores of the hole find no node and
 *    cannot allocate one (SCAN_STORE_FAILED, EINVAL), or the write is seen
 *    (SCAN_PAGE_FILLED, EAGAIN). The rollback must leave the file as it
 *    was: checked after every round. Every fourth round holds the filler:
 *    with the same injection, that collapse succeeds. The case runs until
 *    a store failed (impl_results), at most CAP_FACTOR times its time.
 */
TEST_F_TIMEOUT(races, xarray_node_alloc_fail, TIMEOUT)
{
	struct filler f = { .sh = self->sh };
	struct counts c = { 0 }, q = { 0 };
	long node_size, left, shmem, base, store_failed = 0, bad = 0;
	struct stat before, after;
	uint8_t *p;
	int ret, err;
	double t0;

	if (access(FAILSLAB "space", W_OK) || access(XA_NODE_SLAB "failslab", W_OK))
		SKIP(return, "no failslab for radix_tree_node");
	node_size = read_num(XA_NODE_SLAB "object_size");
	ASSERT_GT(node_size, 0);
	self->fd = shmem_fd(17);
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(0, fallocate(self->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       HOLE * KH_PAGE, XA_CHUNK * KH_PAGE));
	p = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, p);
	f.fd = self->fd;

	/* Every node allocation of this task fails. */
	ASSERT_EQ(0, fstat(self->fd, &before));
	shmem = vm_counter("nr_shmem");
	ASSERT_EQ(0, fail_xa_nodes(true, 0));
	ret = madvise(p, PMD_SIZE, MADV_COLLAPSE);
	err = errno;
	left = read_num(FAILSLAB "times");
	ASSERT_EQ(0, fail_xa_nodes(false, 0));
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(EINVAL, err) TH_LOG("%s", strerror(err));
	EXPECT_LT(left, 100000) TH_LOG("no allocation failed");
	ASSERT_EQ(0, fstat(self->fd, &after));
	EXPECT_EQ(before.st_blocks, after.st_blocks);
	EXPECT_LT(labs(vm_counter("nr_shmem") - shmem), NR_PAGES / 2);
	EXPECT_EQ(0, smaps_field(p, "ShmemPmdMapped:"));
	EXPECT_LT(vmstat_settled("nr_isolated_file", 127), 128);
	EXPECT_EQ(0, holed_bad(self->fd, 17));
	fprintf(stderr, "# all failing: %ld node allocation(s) failed\n",
		100000 - left);

	/* The first succeeds, a filler frees the node it made. */
	ASSERT_EQ(0, start(self, filler, &f));
	base = impl_result("hpage_collapse_scan_file", "store_failed");
	ASSERT_GE(base, 0);
	t0 = now();
	/* Until the quiet rounds succeeded, and a store failed. */
	while (!race_over(t0, least(q.ok, store_failed))) {
		bool quiet = (c.rounds + q.rounds) % 4 == 3;

		atomic_store(&self->sh->hold, quiet);
		while (quiet && !atomic_load(&f.held) && !atomic_load(&self->sh->bad))
			usleep(100);
		ASSERT_EQ(0, fail_xa_nodes(true, node_size + 1));
		count(quiet ? &q : &c, madvise(p, PMD_SIZE, MADV_COLLAPSE));
		ASSERT_EQ(0, fail_xa_nodes(false, 0));
		atomic_store(&self->sh->hold, true);
		while (!atomic_load(&f.held) && !atomic_load(&self->sh->bad))
			usleep(100);
		/* A THP or small pages: the hole a hole again, one leaf. */
		ASSERT_EQ(0, fallocate(self->fd, FALLOC_FL_PUNCH_HOLE |
				       FALLOC_FL_KEEP_SIZE, HOLE * KH_PAGE,
				       XA_CHUNK * KH_PAGE));
		bad += holed_bad(self->fd, 17);
		atomic_store(&self->sh->hold, false);
		store_failed = impl_result("hpage_collapse_scan_file",
					   "store_failed") - base;
	}
	stop_threads(self);
	print_counts("xarray_node_alloc_fail with the filler", &c);
	print_counts("xarray_node_alloc_fail quiet", &q);
	fprintf(stderr, "# %ld fill+punch, %ld SCAN_STORE_FAILED\n",
		atomic_load(&self->sh->ops), store_failed);
	EXPECT_EQ(0, bad);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_EQ(q.rounds, q.ok);
	EXPECT_GE(q.ok, MIN_OK);
	EXPECT_GE(store_failed, 1);
	EXPECT_LT(vmstat_settled("nr_isolated_file", 127), 128);
	EXPECT_EQ(0, holed_bad(self->fd, 17));
}

/* ------------------------------------------------------------------ */

#define NOTIFIER_MIRROR	"/sys/kernel/debug/khugepaged/notifier_mirror"

struct mirror_stats {
	long checks, invalidated, changed, violations;
	unsigned long first;
};

static int mirror_cmd(int fd, const char *cmd)
{
	return write(fd, cmd, strlen(cmd)) == (ssize_t)strlen(cmd) ? 0 : -1;
}

static int mirror_read(int fd, struct mirror_stats *st)
{
	char buf[192];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return -1;
	buf[n] = 0;
	return sscanf(buf, "checks %ld invalidated %ld changed %ld violations %ld first %lx",
		      &st->checks, &st->invalidated, &st->changed,
		      &st->violations, &st->first) == 5 ? 0 : -1;
}

/*
 * The other process: splits the memfd's THP by a punched page, then
 * collapses it through its own mapping, again and again: collapse_file()
 * unmaps the test's PTEs, and retract_page_tables() removes its PTE table.
 */
static void retracting_child(struct shared *sh, int fd, int salt)
{
	char *col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, fd);
	unsigned int seed = 59;

	while (col && !atomic_load(&sh->stop)) {
		if (punch_refill(sh, fd, rand_r(&seed) % NR_PAGES, salt)) {
			atomic_fetch_add(&sh->bad, 1);
			break;
		}
		if (!madvise(col, PMD_SIZE, MADV_COLLAPSE))
			atomic_fetch_add(&sh->ok, 1);
		else if (errno != EAGAIN && errno != EINVAL)
			atomic_store(&sh->bad_errno, errno);
		atomic_fetch_add(&sh->ops, 1);
		usleep(rand_r(&seed) % 3000);
	}
	_exit(col ? 0 : 1);
}

/*
 * CVE-2022-48991 (f268f6cf875f, "mm/khugepaged: invoke MMU notifiers in
 * shmem/file collapse paths"), under load: a secondary MMU must be told of
 * every translation a collapse or retraction changes, and of every PTE
 * table removed (it may cache paging structures). The kernel's
 * notifier_mirror models one over the test's PTE-mapped mapping of a
 * memfd: snapshots of each page's pfn and PMD entry, taken again and
 * again, and checked a little later; a change with no invalidation
 * started in between is a violation. Another process keeps retracting the
 * mapping's table (collapse_file() of the memfd through its own mapping),
 * and every fourth round the test collapses its own mapping
 * (collapse_pte_mapped_thp() in its mm).
 */
TEST_F_TIMEOUT(races, notifier_mirror_retract, TIMEOUT)
{
	struct mirror_stats st = { 0 };
	struct counts c = { 0 };
	unsigned int seed = 61;
	const int salt = 18;
	int mirror, status;
	char cmd[64], *p;
	long rounds = 0;
	pid_t child;
	double t0;

	if (access(NOTIFIER_MIRROR, W_OK))
		SKIP(return, "no %s", NOTIFIER_MIRROR);
	self->fd = shmem_fd(salt);
	ASSERT_GE(self->fd, 0);
	p = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, p);
	mirror = open(NOTIFIER_MIRROR, O_RDWR);
	ASSERT_GE(mirror, 0);
	snprintf(cmd, sizeof(cmd), "watch %lx %lx", (unsigned long)p, PMD_SIZE);
	ASSERT_EQ(0, mirror_cmd(mirror, cmd));
	child = fork();
	ASSERT_GE(child, 0);
	if (!child)
		retracting_child(self->sh, self->fd, salt);

	t0 = now();
	/* Until the other process, this one and the mirror saw enough. */
	while (!race_over(t0, least(least(atomic_load(&self->sh->ok), c.ok),
				    st.changed))) {
		/* Fault the range in: by PTEs if the file is small pages. */
		touch(p, PMD_SIZE);
		check_sample(self->sh, (uint8_t *)p, salt, 4, &seed);
		if (++rounds % 4 == 0)
			count(&c, madvise(p, PMD_SIZE, MADV_COLLAPSE));
		/* Snapshots in the child's collapses, checked soon after. */
		for (int i = 0; i < 16; i++) {
			ASSERT_EQ(0, mirror_cmd(mirror, "snapshot"));
			usleep(rand_r(&seed) % 500);
			ASSERT_EQ(0, mirror_cmd(mirror, "check"));
		}
		ASSERT_EQ(0, mirror_read(mirror, &st));
	}
	atomic_store(&self->sh->stop, true);
	ASSERT_EQ(child, waitpid(child, &status, 0));
	ASSERT_EQ(0, mirror_read(mirror, &st));
	close(mirror);
	print_counts("notifier_mirror_retract (own collapses)", &c);
	fprintf(stderr,
		"# the other process: %ld collapses, %ld ok; mirror: %ld checks, %ld invalidated, %ld changed, %ld violations (first at %#lx, mapping at %p)\n",
		atomic_load(&self->sh->ops), atomic_load(&self->sh->ok),
		st.checks, st.invalidated, st.changed, st.violations, st.first,
		p);
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	EXPECT_EQ(0, st.violations);
	/* The mirror compared, and saw collapses change the range. */
	EXPECT_GE(st.checks - st.invalidated, MIN_OK);
	EXPECT_GE(st.changed, MIN_OK);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, atomic_load(&self->sh->bad_errno));
	EXPECT_EQ(0, disallowed(&c, E_AGAIN | E_INVAL));
	EXPECT_GE(c.ok, MIN_OK);
	EXPECT_GE(atomic_load(&self->sh->ok), MIN_OK);
	EXPECT_EQ(0, whole_bad((uint8_t *)p, salt));
	EXPECT_EQ(0, file_bad(self->fd, salt));
}

/* ------------------------------------------------------------------ */

/* The mirror's stalled invalidations so far; -1 on error. */
static long mirror_stalls(int fd)
{
	char buf[256], *at;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return -1;
	buf[n] = 0;
	at = strstr(buf, " stalls ");
	return at ? atol(at + 8) : -1;
}

struct stall_copier {
	struct shared *sh;
	uint8_t *priv, *src;
	int uffd, mirror, salt;
	atomic_long go, end, done;	/* the round armed, its end, the last done */
	atomic_long base;	/* the mirror's stalls when the round was armed */
	atomic_long page;	/* the page copied in the round, or -1 */
};

/*
 * Once an invalidation of the whole private mapping has started in the
 * round (the mirror stalls it: retract_page_tables() past its first
 * anon_vma check, before its page table locks), one UFFDIO_COPY into a
 * random page: that gives the VMA its anon_vma and puts an anonymous PTE
 * in the table being retracted, under the mmap read lock only.
 */
static void *stall_copier(void *arg)
{
	struct stall_copier *c = arg;
	unsigned int seed = 67;

	while (!atomic_load(&c->sh->stop)) {
		long round = atomic_load(&c->go), stalls;

		if (round == atomic_load(&c->done)) {
			sched_yield();
			continue;
		}
		do {
			stalls = mirror_stalls(c->mirror);
		} while (stalls >= 0 && stalls <= atomic_load(&c->base) &&
			 atomic_load(&c->end) != round);
		if (stalls < 0) {
			atomic_fetch_add(&c->sh->bad, 1);
		} else if (stalls > atomic_load(&c->base)) {
			size_t k = rand_r(&seed) % NR_PAGES;
			struct uffdio_copy copy = {
				.dst = (uintptr_t)c->priv + k * KH_PAGE,
				.src = (uintptr_t)c->src,
				.len = KH_PAGE,
			};

			page_pattern(c->src, k, c->salt);
			if (!ioctl(c->uffd, UFFDIO_COPY, &copy)) {
				atomic_store(&c->page, k);
			} else if (errno != EAGAIN && errno != EEXIST) {
				fprintf(stderr, "# UFFDIO_COPY: %s\n", strerror(errno));
				atomic_fetch_add(&c->sh->bad, 1);
			}
		}
		atomic_store(&c->done, round);
	}
	return NULL;
}

/*
 * retract_page_tables() holds no mmap lock, so a UFFDIO_COPY into a
 * MAP_PRIVATE mapping registered for MISSING faults can give that VMA an
 * anon_vma, and put an anonymous PTE in its table, after retract's first
 * anon_vma check: it must check again under the PTE lock (6.12's
 * "recheck" after taking the locks; the same in Rust) and keep the table.
 * The mapping is new in each round (no anon_vma), with a table from a
 * read fault; the memfd is split by a punched page, and MADV_COLLAPSE of
 * a shared mapping of it (collapse_file()) retracts the private one, with
 * the notifier mirror stalling that invalidation for a few milliseconds
 * while the copier copies a page in. The copied page must then be mapped,
 * with its data.
 */
TEST_F_TIMEOUT(races, uffd_copy_retract, TIMEOUT)
{
	static struct stall_copier c;
	struct counts cnt = { 0 };
	long rounds = 0, raced = 0, lost = 0, torn = 0;
	int pagemap, stall_us = 5000;
	uint8_t want[KH_PAGE];
	unsigned int seed = 71;
	char cmd[64], *col;
	double t0;

	if (access(NOTIFIER_MIRROR, W_OK))
		SKIP(return, "no %s", NOTIFIER_MIRROR);
	memset(&c, 0, sizeof(c));
	c.sh = self->sh;
	c.salt = 20;
	c.src = aligned_alloc(KH_PAGE, KH_PAGE);
	ASSERT_NE(NULL, c.src);
	self->fd = shmem_fd(19);
	ASSERT_GE(self->fd, 0);
	col = aligned_map(PMD_SIZE, PROT_READ, MAP_SHARED, self->fd);
	ASSERT_NE(NULL, col);
	c.priv = (uint8_t *)aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE, self->fd);
	ASSERT_NE(NULL, c.priv);
	c.uffd = kh_uffd_register(c.priv, PMD_SIZE, 0,
				  UFFDIO_REGISTER_MODE_MISSING);
	self->fd2 = c.uffd;
	ASSERT_GE(c.uffd, 0) TH_LOG("userfaultfd: %s", strerror(errno));
	c.mirror = open(NOTIFIER_MIRROR, O_RDWR);
	ASSERT_GE(c.mirror, 0);
	snprintf(cmd, sizeof(cmd), "watch %lx %lx", (unsigned long)c.priv, PMD_SIZE);
	ASSERT_EQ(0, mirror_cmd(c.mirror, cmd));
	snprintf(cmd, sizeof(cmd), "stall %d", stall_us);
	ASSERT_EQ(0, mirror_cmd(c.mirror, cmd));
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_GE(pagemap, 0);
	atomic_store(&c.page, -1);
	ASSERT_EQ(0, start(self, stall_copier, &c));

	t0 = now();
	while (!race_over(t0, least(cnt.ok, raced))) {
		struct uffdio_register reg = {
			.range = { .start = (uintptr_t)c.priv, .len = PMD_SIZE },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		long k, base;
		uint64_t ent;

		/* Small pages in the page cache, for collapse_file(). */
		ASSERT_EQ(0, punch_refill(self->sh, self->fd,
					  rand_r(&seed) % NR_PAGES, 19));
		/* A new VMA (no anon_vma) with a table, registered again. */
		ASSERT_EQ(c.priv, mmap(c.priv, PMD_SIZE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_FIXED, self->fd, 0));
		touch((char *)c.priv, KH_PAGE);
		ASSERT_EQ(0, ioctl(c.uffd, UFFDIO_REGISTER, &reg));
		base = mirror_stalls(c.mirror);
		ASSERT_LE(0, base);
		atomic_store(&c.base, base);
		atomic_store(&c.page, -1);
		atomic_store(&c.go, ++rounds);
		count(&cnt, madvise(col, PMD_SIZE, MADV_COLLAPSE));
		atomic_store(&c.end, rounds);
		while (atomic_load(&c.done) != rounds && !atomic_load(&self->sh->bad))
			sched_yield();
		k = atomic_load(&c.page);
		if (k < 0)
			continue;
		raced++;
		/* Present (bit 63), then its bytes: a lost page reads the file's. */
		ASSERT_EQ(sizeof(ent), pread(pagemap, &ent, sizeof(ent),
					     ((uintptr_t)c.priv / KH_PAGE + k) * sizeof(ent)));
		if (!(ent >> 63)) {
			lost++;
			fprintf(stderr, "# round %ld: the page copied at %ld is not mapped\n",
				rounds, k);
			break;
		}
		page_pattern(want, k, c.salt);
		if (memcmp(c.priv + k * KH_PAGE, want, KH_PAGE)) {
			torn++;
			fprintf(stderr, "# round %ld: page %ld has the wrong bytes\n",
				rounds, k);
			break;
		}
	}
	stop_threads(self);
	close(pagemap);
	close(c.mirror);
	print_counts("uffd_copy_retract", &cnt);
	fprintf(stderr, "# %ld rounds, %ld with a page copied during the stalled invalidation\n",
		rounds, raced);
	EXPECT_EQ(0, lost);
	EXPECT_EQ(0, torn);
	EXPECT_EQ(0, atomic_load(&self->sh->bad));
	EXPECT_EQ(0, disallowed(&cnt, E_AGAIN | E_INVAL));
	EXPECT_GE(cnt.ok, MIN_OK);
	EXPECT_GE(raced, MIN_OK);
	EXPECT_EQ(0, whole_bad((uint8_t *)col, 19));
	EXPECT_EQ(0, file_bad(self->fd, 19));
}

TEST_HARNESS_MAIN
