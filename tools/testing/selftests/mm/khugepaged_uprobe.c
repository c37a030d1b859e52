// SPDX-License-Identifier: GPL-2.0
/*
 * uprobe breakpoint removal "heals" a file THP: the breakpoint CoWs one
 * page and splits the PMD mapping; removing the probe puts the original
 * page back and calls collapse_pte_mapped_thp(mm, addr, false), so the
 * next fault maps the THP by PMD again.
 *
 * The file is 2 MiB of the architecture's return instruction, so calling
 * any 4-byte aligned offset of the mapping returns at once: that is how
 * the test hits the probe.
 *
 * Environment: KHUGEPAGED_FILE_DIR (ext4, READ_ONLY_THP_FOR_FS) and
 * KHUGEPAGED_SHMEM_DIR (tmpfs huge=always); a case whose directory is
 * missing is skipped, and every case skips without tracefs uprobe events.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "khugepaged_util.h"

#define PROBE_OFF	0x1000UL

static char *map_aligned(int fd)
{
	return aligned_map(PMD_SIZE, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd);
}

typedef void (*probe_fn)(void);

static void call_probe(const char *p)
{
	probe_fn fn = (probe_fn)(uintptr_t)(p + PROBE_OFF);

	fn();
}

FIXTURE(uprobe)
{
	char path[512];
	char event[64];
	int fd;
	char *p;
};

FIXTURE_VARIANT(uprobe)
{
	const char *dir_env;
	const char *field;
	int procs;
};

FIXTURE_VARIANT_ADD(uprobe, file)
{
	.dir_env = "KHUGEPAGED_FILE_DIR",
	.field = "FilePmdMapped:",
	.procs = 1,
};

FIXTURE_VARIANT_ADD(uprobe, shmem)
{
	.dir_env = "KHUGEPAGED_SHMEM_DIR",
	.field = "ShmemPmdMapped:",
	.procs = 1,
};

FIXTURE_VARIANT_ADD(uprobe, file_two_processes)
{
	.dir_env = "KHUGEPAGED_FILE_DIR",
	.field = "FilePmdMapped:",
	.procs = 2,
};

FIXTURE_SETUP(uprobe)
{
	const char *dir = getenv(variant->dir_env);
	uint8_t *buf;

	self->fd = -1;
	self->p = NULL;
	self->path[0] = 0;
	if (access(TRACEFS "uprobe_events", W_OK))
		SKIP(return, "no uprobe events in tracefs");
	if (!dir || !*dir)
		SKIP(return, "%s not set", variant->dir_env);

	snprintf(self->path, sizeof(self->path), "%s/uprobe_text.%d", dir,
		 getpid());
	snprintf(self->event, sizeof(self->event), "heal_%d", getpid());
	buf = malloc(PMD_SIZE);
	ASSERT_NE(NULL, buf);
	for (size_t i = 0; i < PMD_SIZE; i += sizeof(kh_ret_insn))
		memcpy(buf + i, kh_ret_insn, sizeof(kh_ret_insn));
	/* Kept: the uprobe names the file by its path. */
	self->fd = ro_file(self->path, buf, PMD_SIZE, true);
	free(buf);
	ASSERT_GE(self->fd, 0);
	self->p = map_aligned(self->fd);
	ASSERT_NE(NULL, self->p);
	touch(self->p, PMD_SIZE);
	ASSERT_EQ(0, madvise(self->p, PMD_SIZE, MADV_HUGEPAGE));
	ASSERT_EQ(0, kh_collapse(self->p, PMD_SIZE))
		TH_LOG("MADV_COLLAPSE: %s", strerror(errno));
	ASSERT_EQ(2048, smaps_field(self->p, variant->field));
}

FIXTURE_TEARDOWN(uprobe)
{
	if (self->path[0]) {
		kh_uprobe_clear(self->event);
		unlink(self->path);
	}
	if (self->p)
		munmap(self->p, PMD_SIZE);
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(uprobe, removal_heals_pmd)
{
	int go[2], done[2], status;
	long calls, hits;
	pid_t child = -1;
	char c;

	/* A second process maps the same THP and checks its own healing. */
	ASSERT_EQ(0, pipe(go));
	ASSERT_EQ(0, pipe(done));
	if (variant->procs > 1) {
		child = fork();
		ASSERT_GE(child, 0);
		if (!child) {
			char *q = map_aligned(self->fd);
			int ok;

			touch(q, PMD_SIZE);
			ok = smaps_field(q, variant->field) == 2048;
			c = ok;
			write(done[1], &c, 1);
			read(go[0], &c, 1);	/* probe set */
			ok = smaps_field(q, variant->field) == 0;
			call_probe(q);
			c = ok;
			write(done[1], &c, 1);
			read(go[0], &c, 1);	/* probe removed */
			touch(q, PMD_SIZE);
			ok = smaps_field(q, variant->field) == 2048 &&
			     !memcmp(q + PROBE_OFF, kh_ret_insn, sizeof(kh_ret_insn));
			_exit(ok ? 0 : 1);
		}
		ASSERT_EQ(1, read(done[0], &c, 1));
		ASSERT_EQ(1, c);
	}

	ASSERT_EQ(0, kh_uprobe_set(self->event, self->path, PROBE_OFF));

	/* The breakpoint CoWed a page: PMD split, the VMA has an anon_vma. */
	EXPECT_EQ(0, smaps_field(self->p, variant->field));
	EXPECT_GT(smaps_field(self->p, "Anonymous:"), 0);
	EXPECT_NE(0, memcmp(self->p + PROBE_OFF, kh_ret_insn, sizeof(kh_ret_insn)));
	call_probe(self->p);
	call_probe(self->p);
	if (child > 0) {
		c = 1;
		ASSERT_EQ(1, write(go[1], &c, 1));
		ASSERT_EQ(1, read(done[0], &c, 1));
		EXPECT_EQ(1, c);
	}
	hits = kh_probe_hits(self->event);
	EXPECT_EQ(variant->procs + 1, hits);

	/* Removal restores the page and retracts the page table. */
	calls = kh_pte_mapped_calls();
	ASSERT_EQ(0, kh_uprobe_clear(self->event));
	EXPECT_GE(kh_pte_mapped_calls(), calls + variant->procs);
	EXPECT_EQ(0, memcmp(self->p + PROBE_OFF, kh_ret_insn, sizeof(kh_ret_insn)));
	touch(self->p, PMD_SIZE);
	EXPECT_EQ(2048, smaps_field(self->p, variant->field));
	call_probe(self->p);

	if (child > 0) {
		ASSERT_EQ(1, write(go[1], &c, 1));
		ASSERT_EQ(child, waitpid(child, &status, 0));
		EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

TEST_HARNESS_MAIN
