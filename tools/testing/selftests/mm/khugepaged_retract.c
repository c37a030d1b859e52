// SPDX-License-Identifier: GPL-2.0
/*
 * retract_page_tables() across processes: once MADV_COLLAPSE has put a THP
 * in the page cache, exactly the mappings that can map it by PMD lose their
 * page table, and refault by PMD; the others keep theirs, and every
 * process still reads the same data.
 *
 * Five processes map the same 2 MiB of a file (ext4) or of shmem (memfd):
 *
 *   collapser   the parent, PMD-aligned, runs MADV_COLLAPSE     retracted
 *   peer        PMD-aligned, read only                          retracted
 *   anon        PMD-aligned, one page written (has an anon_vma)  kept
 *   uffd_wp     PMD-aligned, registered for uffd-wp             kept
 *   misaligned  at a PMD-aligned address + 4 KiB                kept
 *
 * The children map the file themselves after fork(), so that each process
 * has exactly one mapping of it. "Retracted" is checked twice: the
 * retract_page_tables line of <debugfs>/khugepaged/impl_stats for the running
 * implementation grows by exactly 2 tables, and after the collapse only
 * the collapser and the peer are PMD-mapped (a refault maps a PMD only
 * where the PMD entry is empty).
 *
 * Environment: KHUGEPAGED_FILE_DIR (ext4, READ_ONLY_THP_FOR_FS); the file
 * case is skipped without it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

enum role { COLLAPSER, PEER, ANON, UFFD_WP, MISALIGNED, NR_ROLES };

static const char * const role_names[NR_ROLES] = {
	"collapser", "peer", "anon", "uffd_wp", "misaligned",
};

/* PMD-mapped after the collapse and a refault? */
static const bool retracted[NR_ROLES] = { true, true, false, false, false };

#define ANON_PAGE	7
#define ANON_BYTE	0xa5

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + i / KH_PAGE);
}

/* What a child reports after the collapse. */
struct report {
	int role;
	long pmd_kb;	/* (File|Shmem)PmdMapped of its mapping after refault */
	long bad;	/* bytes that differ from what it should read, or -1 */
};

/* Maps the file for @role and faults it in; NULL on failure. */
static char *map_role(enum role role, int fd)
{
	char *p, *hole;

	switch (role) {
	case ANON:
		p = aligned_map(PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
		if (p) {
			touch(p, PMD_SIZE);
			p[ANON_PAGE * KH_PAGE] = ANON_BYTE;
		}
		return p;
	case MISALIGNED:
		hole = aligned_hole(PMD_SIZE + KH_PAGE);
		if (!hole)
			return NULL;
		p = mmap(hole + KH_PAGE, PMD_SIZE, PROT_READ,
			 MAP_PRIVATE | MAP_FIXED, fd, 0);
		break;
	default:
		p = aligned_map(PMD_SIZE, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd);
		break;
	}
	if (!p || p == MAP_FAILED)
		return NULL;
	touch(p, PMD_SIZE);
	return p;
}

/* Bytes of @p that differ from what @role should read. */
static long bad_bytes(enum role role, const char *p)
{
	long bad = 0;

	for (size_t i = 0; i < PMD_SIZE; i++) {
		uint8_t want = pattern(i);

		if (role == ANON && i == ANON_PAGE * KH_PAGE)
			want = ANON_BYTE;
		bad += (uint8_t)p[i] != want;
	}
	return bad;
}

/*
 * A child: map, fault in, say ready, wait for the collapse, refault and
 * report. Never returns.
 */
static void child(enum role role, int fd, const char *field, int ready,
		  int go, int out)
{
	struct report r = { .role = role, .pmd_kb = -1, .bad = -1 };
	char *p = map_role(role, fd);
	int uffd = -1;
	char c = p ? 1 : 0;

	if (p && role == UFFD_WP) {
		uffd = kh_uffd_register(p, PMD_SIZE, UFFD_FEATURE_WP_ASYNC,
					UFFDIO_REGISTER_MODE_WP);
		c = uffd >= 0;
	}
	if (write(ready, &c, 1) != 1 || !c)
		_exit(1);
	if (read(go, &c, 1) != 1)
		_exit(1);
	touch(p, PMD_SIZE);
	r.bad = bad_bytes(role, p);
	r.pmd_kb = smaps_field(p, field);
	if (write(out, &r, sizeof(r)) != sizeof(r))
		_exit(1);
	if (uffd >= 0)
		close(uffd);
	_exit(0);
}

FIXTURE(retract)
{
	int fd;
	char path[512];
};

FIXTURE_VARIANT(retract)
{
	bool file;
	const char *field;
};

FIXTURE_VARIANT_ADD(retract, file)
{
	.file = true,
	.field = "FilePmdMapped:",
};

FIXTURE_VARIANT_ADD(retract, shmem)
{
	.file = false,
	.field = "ShmemPmdMapped:",
};

FIXTURE_SETUP(retract)
{
	uint8_t *buf = malloc(PMD_SIZE);

	ASSERT_NE(NULL, buf);
	for (size_t i = 0; i < PMD_SIZE; i++)
		buf[i] = pattern(i);
	self->path[0] = 0;
	if (variant->file) {
		const char *dir = getenv("KHUGEPAGED_FILE_DIR");

		if (!dir || !*dir) {
			free(buf);
			SKIP(return, "KHUGEPAGED_FILE_DIR not set");
		}
		snprintf(self->path, sizeof(self->path), "%s/retract.%d", dir,
			 getpid());
		self->fd = ro_file(self->path, buf, PMD_SIZE, false);
	} else {
		self->fd = memfd_create("khugepaged_retract", 0);
		if (self->fd >= 0 &&
		    write(self->fd, buf, PMD_SIZE) != (ssize_t)PMD_SIZE) {
			close(self->fd);
			self->fd = -1;
		}
	}
	free(buf);
	ASSERT_GE(self->fd, 0);
}

FIXTURE_TEARDOWN(retract)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(retract, only_eligible_vmas_lose_their_table)
{
	long calls0, tables0, calls1, tables1;
	int ready[2], go[2], out[2], status;
	pid_t pids[NR_ROLES] = { 0 };
	struct report r;
	char impl[16], c;
	char *p;

	ASSERT_EQ(0, current_impl(impl, sizeof(impl)));
	ASSERT_EQ(0, pipe(ready));
	ASSERT_EQ(0, pipe(go));
	ASSERT_EQ(0, pipe(out));
	for (int role = PEER; role < NR_ROLES; role++) {
		pids[role] = fork();
		ASSERT_GE(pids[role], 0);
		if (!pids[role])
			child(role, self->fd, variant->field, ready[1], go[0],
			      out[1]);
	}
	for (int role = PEER; role < NR_ROLES; role++) {
		ASSERT_EQ(1, read(ready[0], &c, 1));
		ASSERT_EQ(1, c) TH_LOG("a child could not set up its mapping");
	}

	ASSERT_EQ(0, impl_stat(impl, "retract_page_tables", &calls0, &tables0));
	p = map_role(COLLAPSER, self->fd);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, kh_collapse(p, PMD_SIZE)) {
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	}
	ASSERT_EQ(0, impl_stat(impl, "retract_page_tables", &calls1, &tables1));
	EXPECT_EQ(1, calls1 - calls0);
	EXPECT_EQ(2, tables1 - tables0) {
		TH_LOG("%s removed %ld tables, want 2: collapser, peer",
		       impl, tables1 - tables0);
	}
	EXPECT_EQ(2048, smaps_field(p, variant->field));
	EXPECT_EQ(0, bad_bytes(COLLAPSER, p));

	c = 1;
	for (int role = PEER; role < NR_ROLES; role++)
		ASSERT_EQ(1, write(go[1], &c, 1));
	for (int role = PEER; role < NR_ROLES; role++) {
		ASSERT_EQ(0, waitpid(pids[role], &status, 0) < 0);
		ASSERT_EQ(0, status) TH_LOG("%s exited with %d", role_names[role],
					    status);
	}
	close(out[1]);
	for (int i = PEER; i < NR_ROLES; i++) {
		ASSERT_EQ((ssize_t)sizeof(r), read(out[0], &r, sizeof(r)));
		ASSERT_TRUE(r.role >= PEER && r.role < NR_ROLES);
		EXPECT_EQ(0, r.bad) {
			TH_LOG("%s: %ld bytes differ", role_names[r.role], r.bad);
		}
		EXPECT_EQ(retracted[r.role] ? 2048 : 0, r.pmd_kb) {
			TH_LOG("%s: %s %ld kB after refault", role_names[r.role],
			       variant->field, r.pmd_kb);
		}
	}
	munmap(p, PMD_SIZE);
}

TEST_HARNESS_MAIN
