// SPDX-License-Identifier: GPL-2.0
/*
 * A log of one process's MMU-notifier invalidations, for the khugepaged
 * selftests: every collapse and every page-table retraction must be
 * bracketed by invalidate_range_start()/end() over the PMD range it
 * changes, whichever implementation (C or Rust) runs it.
 *
 * open() of /sys/kernel/debug/khugepaged/notifier_log registers an MMU
 * notifier on the opener's mm; read() returns what it received since the
 * last write(), one line per callback:
 *
 *	start|end <event> <start> <end> <blockable>
 *
 * (event as enum mmu_notifier_event, addresses in hex), after a first line
 * "dropped <n>" if the log overflowed.  write() of anything empties the
 * log; close() unregisters the notifier.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>

#include "notifier_aids.h"

#define NOTIFIER_LOG_RECORDS	4096
/* "start 255 0xffffffffffffffff 0xffffffffffffffff 1\n" is 51 bytes. */
#define NOTIFIER_LOG_LINE	64

struct notifier_record {
	bool end;
	bool blockable;
	u8 event;
	unsigned long start, last;
};

struct notifier_log {
	struct mmu_notifier mn;
	struct mm_struct *mm;
	spinlock_t lock;		/* protects nr, dropped and rec */
	unsigned int nr;
	unsigned long dropped;
	struct mutex read_lock;		/* protects text and text_len */
	char *text;			/* snapshot being read, or NULL */
	size_t text_len;
	struct notifier_record rec[NOTIFIER_LOG_RECORDS];
};

static void notifier_log_add(struct mmu_notifier *mn,
			     const struct mmu_notifier_range *range, bool end)
{
	struct notifier_log *log = container_of(mn, struct notifier_log, mn);

	/* May be called with spinlocks held (non-blockable ranges). */
	spin_lock(&log->lock);
	if (log->nr < NOTIFIER_LOG_RECORDS) {
		log->rec[log->nr++] = (struct notifier_record) {
			.end = end,
			.blockable = mmu_notifier_range_blockable(range),
			.event = range->event,
			.start = range->start,
			.last = range->end,
		};
	} else {
		log->dropped++;
	}
	spin_unlock(&log->lock);
}

static int notifier_log_start(struct mmu_notifier *mn,
			      const struct mmu_notifier_range *range)
{
	notifier_log_add(mn, range, false);
	return 0;
}

static void notifier_log_end(struct mmu_notifier *mn,
			     const struct mmu_notifier_range *range)
{
	notifier_log_add(mn, range, true);
}

static const struct mmu_notifier_ops notifier_log_ops = {
	.invalidate_range_start = notifier_log_start,
	.invalidate_range_end = notifier_log_end,
};

static int notifier_log_open(struct inode *inode, struct file *file)
{
	struct notifier_log *log;
	int ret;

	if (!current->mm)
		return -EINVAL;
	log = kvzalloc(sizeof(*log), GFP_KERNEL);
	if (!log)
		return -ENOMEM;
	spin_lock_init(&log->lock);
	mutex_init(&log->read_lock);
	log->mn.ops = &notifier_log_ops;
	/* mmu_notifier_register() holds a reference to the mm until unregister. */
	log->mm = current->mm;
	ret = mmu_notifier_register(&log->mn, log->mm);
	if (ret) {
		kvfree(log);
		return ret;
	}
	file->private_data = log;
	return 0;
}

static int notifier_log_release(struct inode *inode, struct file *file)
{
	struct notifier_log *log = file->private_data;

	/* Waits for callbacks in flight; drops the mm reference. */
	mmu_notifier_unregister(&log->mn, log->mm);
	kvfree(log->text);
	kvfree(log);
	return 0;
}

/* Formats the log into a new text buffer; the records stay. */
static int notifier_log_snapshot(struct notifier_log *log)
{
	unsigned int nr, i;
	unsigned long dropped;
	struct notifier_record *rec;
	size_t size, len = 0;
	char *text;

	rec = kvmalloc_array(NOTIFIER_LOG_RECORDS, sizeof(*rec), GFP_KERNEL);
	if (!rec)
		return -ENOMEM;
	spin_lock(&log->lock);
	nr = log->nr;
	dropped = log->dropped;
	memcpy(rec, log->rec, nr * sizeof(*rec));
	spin_unlock(&log->lock);

	size = (size_t)(nr + 1) * NOTIFIER_LOG_LINE;
	text = kvmalloc(size, GFP_KERNEL);
	if (!text) {
		kvfree(rec);
		return -ENOMEM;
	}
	if (dropped)
		len += scnprintf(text + len, size - len, "dropped %lu\n",
				 dropped);
	for (i = 0; i < nr; i++)
		len += scnprintf(text + len, size - len, "%s %u %#lx %#lx %d\n",
				 rec[i].end ? "end" : "start", rec[i].event,
				 rec[i].start, rec[i].last, rec[i].blockable);
	kvfree(rec);
	kvfree(log->text);
	log->text = text;
	log->text_len = len;
	return 0;
}

static ssize_t notifier_log_read(struct file *file, char __user *buf,
				 size_t count, loff_t *ppos)
{
	struct notifier_log *log = file->private_data;
	ssize_t ret = 0;

	mutex_lock(&log->read_lock);
	if (*ppos == 0 || !log->text)
		ret = notifier_log_snapshot(log);
	if (!ret)
		ret = simple_read_from_buffer(buf, count, ppos, log->text,
					      log->text_len);
	mutex_unlock(&log->read_lock);
	return ret;
}

static ssize_t notifier_log_write(struct file *file, const char __user *buf,
				  size_t count, loff_t *ppos)
{
	struct notifier_log *log = file->private_data;

	spin_lock(&log->lock);
	log->nr = 0;
	log->dropped = 0;
	spin_unlock(&log->lock);
	return count;
}

static const struct file_operations notifier_log_fops = {
	.owner = THIS_MODULE,
	.open = notifier_log_open,
	.release = notifier_log_release,
	.read = notifier_log_read,
	.write = notifier_log_write,
	.llseek = default_llseek,
};

static int __init notifier_log_init(void)
{
	/* Shared with impl_stats (mm/khugepaged.c), whichever comes first. */
	struct dentry *dir = debugfs_lookup("khugepaged", NULL);

	/* debugfs pins its directories: the lookup's reference is not needed. */
	if (dir)
		dput(dir);
	else
		dir = debugfs_create_dir("khugepaged", NULL);
	debugfs_create_file("notifier_log", 0600, dir, NULL,
			    &notifier_log_fops);
	debugfs_create_file("notifier_mirror", 0600, dir, NULL,
			    &notifier_mirror_fops);
	return 0;
}
late_initcall(notifier_log_init);
