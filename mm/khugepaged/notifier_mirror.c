// SPDX-License-Identifier: GPL-2.0
/*
 * A model secondary MMU for the khugepaged selftests: what a device that
 * mirrors the CPU page tables of a range (KVM, a GPU through HMM) would
 * cache, and whether it would have been told to drop it.  A translation
 * that changes without an MMU-notifier invalidation of it is one such a
 * device keeps using: the CVE-2022-48991 class (f268f6cf875f), for a
 * collapse or page-table retraction under any load.
 *
 * open() of /sys/kernel/debug/khugepaged/notifier_mirror (created beside
 * notifier_log, by notifier_log.c) ties the file to
 * the opener's mm; then, by write():
 *
 *	watch <start> <length>	an interval notifier on the range (once)
 *	snapshot		record, for each page of the range, the pfn it
 *				maps now (0 if none) and its PMD entry: the
 *				PTE table's pfn, or the huge page's (0 if
 *				none), valid until an invalidation of the
 *				range starts
 *	check			walk the range again: if the snapshot is still
 *				valid, a page it had mapped that now maps
 *				another pfn or none, or a PMD entry it had that
 *				now points elsewhere or nowhere, is a violation
 *	stall <usecs>		make each blockable invalidation of a whole
 *				PMD range of it sleep that long (at most
 *				100 ms; 0, the default, does not): a device
 *				slow to flush its TLB, which widens the window
 *				between a caller's checks before
 *				mmu_notifier_invalidate_range_start() and its
 *				page table locks
 *
 * The PMD entries model a device that caches paging structures (an IOMMU
 * walking the CPU's tables for SVA): a PTE table retracted without an
 * invalidation is one it may still walk after it was freed, although the
 * table was empty and no page's translation changed.
 *
 * and read() returns one line:
 *
 *	checks <n> invalidated <n> changed <n> violations <n> first <addr> stalls <n>
 *
 * (the checks, those that found the snapshot invalidated, those that
 * found a mapped page changed, invalidated or not, and the violations,
 * with the first address of the first; the invalidations that stalled).
 * Only the opener's threads may snapshot, check and stall.
 */
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/pagewalk.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>

#include "../internal.h"
#include "notifier_aids.h"

/* The largest range watched: two PMDs. */
#define NOTIFIER_MIRROR_MAX_PAGES	(2 * PTRS_PER_PMD)
/* The longest stall of an invalidation. */
#define NOTIFIER_MIRROR_MAX_STALL_US	100000

/* What a page's translation was: its pfn, and its PMD entry's. */
struct notifier_mirror_entry {
	unsigned long pfn;
	unsigned long pmd;	/* pfn << 1 | leaf, or 0 */
};

struct notifier_mirror {
	struct mm_struct *mm;
	struct mmu_interval_notifier mni;
	bool watching;
	unsigned long start, nr;
	struct mutex op_lock;	/* serializes the writes; protects now[] */
	spinlock_t lock;	/* protects valid, snap[] and the counters */
	bool valid;
	struct notifier_mirror_entry *snap, *now;
	unsigned long checks, invalidated, changed, violations, first;
	unsigned int stall_us;	/* read without the locks */
	unsigned long stalls;
};

static bool notifier_mirror_invalidate(struct mmu_interval_notifier *mni,
				       const struct mmu_notifier_range *range,
				       unsigned long cur_seq)
{
	struct notifier_mirror *m = container_of(mni, struct notifier_mirror,
						 mni);

	unsigned int stall_us = READ_ONCE(m->stall_us);
	bool stall = stall_us && mmu_notifier_range_blockable(range) &&
		     range->end - range->start >= PMD_SIZE;

	/* May be called with spinlocks held (non-blockable ranges). */
	spin_lock(&m->lock);
	mmu_interval_set_seq(mni, cur_seq);
	m->valid = false;
	m->stalls += stall;
	spin_unlock(&m->lock);
	if (stall)
		fsleep(stall_us);
	return true;
}

static const struct mmu_interval_notifier_ops notifier_mirror_ops = {
	.invalidate = notifier_mirror_invalidate,
};

/* Each page's translation now, into @e. */
static void notifier_mirror_walk(struct notifier_mirror *m,
				 struct notifier_mirror_entry *e)
{
	unsigned long i;

	mmap_read_lock(m->mm);
	for (i = 0; i < m->nr; i++) {
		unsigned long addr = m->start + i * PAGE_SIZE;
		struct vm_area_struct *vma = vma_lookup(m->mm, addr);
		pmd_t *pmdp = mm_find_pmd(m->mm, addr);
		struct folio_walk fw;

		e[i].pfn = 0;
		e[i].pmd = 0;
		if (pmdp) {
			pmd_t pmd = pmdp_get_lockless(pmdp);

			/* The upper levels are stable under the mmap lock. */
			if (pmd_present(pmd))
				e[i].pmd = page_to_pfn(pmd_page(pmd)) << 1 |
					   pmd_leaf(pmd);
		}
		if (vma && folio_walk_start(&fw, vma, addr, 0)) {
			e[i].pfn = page_to_pfn(fw.page);
			folio_walk_end(&fw, vma);
		}
	}
	mmap_read_unlock(m->mm);
}

static int notifier_mirror_watch(struct notifier_mirror *m, const char *arg)
{
	unsigned long start, len;
	int ret;

	if (m->watching)
		return -EBUSY;
	if (sscanf(arg, "%lx %lx", &start, &len) != 2 || !len ||
	    !PAGE_ALIGNED(start) || !PAGE_ALIGNED(len) ||
	    len / PAGE_SIZE > NOTIFIER_MIRROR_MAX_PAGES)
		return -EINVAL;
	m->nr = len / PAGE_SIZE;
	kvfree(m->snap);
	kvfree(m->now);
	m->snap = kvcalloc(m->nr, sizeof(*m->snap), GFP_KERNEL);
	m->now = kvcalloc(m->nr, sizeof(*m->now), GFP_KERNEL);
	if (!m->snap || !m->now)
		return -ENOMEM;
	ret = mmu_interval_notifier_insert(&m->mni, m->mm, start, len,
					   &notifier_mirror_ops);
	if (ret)
		return ret;
	m->start = start;
	m->watching = true;
	return 0;
}

/*
 * The snapshot is what a device would map after faulting the range in: a
 * walk between mmu_interval_read_begin() and a retry check under the lock
 * the invalidation takes, as HMM's users do.
 */
static int notifier_mirror_snapshot(struct notifier_mirror *m)
{
	int tries;

	for (tries = 0; tries < 100; tries++) {
		unsigned long seq = mmu_interval_read_begin(&m->mni);

		notifier_mirror_walk(m, m->now);
		spin_lock(&m->lock);
		if (!mmu_interval_read_retry(&m->mni, seq)) {
			memcpy(m->snap, m->now, m->nr * sizeof(*m->snap));
			m->valid = true;
			spin_unlock(&m->lock);
			return 0;
		}
		spin_unlock(&m->lock);
		cond_resched();
	}
	return -EBUSY;
}

static void notifier_mirror_check(struct notifier_mirror *m)
{
	bool changed = false;
	unsigned long i;

	notifier_mirror_walk(m, m->now);
	spin_lock(&m->lock);
	m->checks++;
	for (i = 0; i < m->nr; i++) {
		const struct notifier_mirror_entry *was = &m->snap[i];
		const struct notifier_mirror_entry *is = &m->now[i];

		if ((!was->pfn || is->pfn == was->pfn) &&
		    (!was->pmd || is->pmd == was->pmd))
			continue;
		changed = true;
		/*
		 * Still valid: no invalidation of the range started before
		 * now, so none before the change the walk saw.
		 */
		if (m->valid && !m->violations++)
			m->first = m->start + i * PAGE_SIZE;
	}
	m->changed += changed;
	m->invalidated += !m->valid;
	spin_unlock(&m->lock);
}

static int notifier_mirror_stall(struct notifier_mirror *m, const char *arg)
{
	unsigned int us;

	if (kstrtouint(arg, 10, &us) || us > NOTIFIER_MIRROR_MAX_STALL_US)
		return -EINVAL;
	WRITE_ONCE(m->stall_us, us);
	return 0;
}

static ssize_t notifier_mirror_write(struct file *file,
				     const char __user *ubuf, size_t count,
				     loff_t *ppos)
{
	struct notifier_mirror *m = file->private_data;
	char buf[64];
	int ret = 0;

	if (current->mm != m->mm)
		return -EINVAL;
	if (count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = 0;

	mutex_lock(&m->op_lock);
	if (!strncmp(buf, "watch ", 6))
		ret = notifier_mirror_watch(m, buf + 6);
	else if (!m->watching)
		ret = -EINVAL;
	else if (sysfs_streq(buf, "snapshot"))
		ret = notifier_mirror_snapshot(m);
	else if (sysfs_streq(buf, "check"))
		notifier_mirror_check(m);
	else if (!strncmp(buf, "stall ", 6))
		ret = notifier_mirror_stall(m, buf + 6);
	else
		ret = -EINVAL;
	mutex_unlock(&m->op_lock);
	return ret ? ret : count;
}

static ssize_t notifier_mirror_read(struct file *file, char __user *ubuf,
				    size_t count, loff_t *ppos)
{
	struct notifier_mirror *m = file->private_data;
	char buf[256];
	int len;

	spin_lock(&m->lock);
	len = scnprintf(buf, sizeof(buf),
			"checks %lu invalidated %lu changed %lu violations %lu first %#lx stalls %lu\n",
			m->checks, m->invalidated, m->changed, m->violations,
			m->first, m->stalls);
	spin_unlock(&m->lock);
	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static int notifier_mirror_open(struct inode *inode, struct file *file)
{
	struct notifier_mirror *m;

	if (!current->mm)
		return -EINVAL;
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	m->mm = current->mm;
	mmgrab(m->mm);
	mutex_init(&m->op_lock);
	spin_lock_init(&m->lock);
	file->private_data = m;
	return 0;
}

static int notifier_mirror_release(struct inode *inode, struct file *file)
{
	struct notifier_mirror *m = file->private_data;

	/* Waits for invalidations in flight. */
	if (m->watching)
		mmu_interval_notifier_remove(&m->mni);
	mmdrop(m->mm);
	kvfree(m->snap);
	kvfree(m->now);
	kfree(m);
	return 0;
}

const struct file_operations notifier_mirror_fops = {
	.owner = THIS_MODULE,
	.open = notifier_mirror_open,
	.release = notifier_mirror_release,
	.read = notifier_mirror_read,
	.write = notifier_mirror_write,
	.llseek = default_llseek,
};
