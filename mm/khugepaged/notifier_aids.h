/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The khugepaged selftests' MMU-notifier aids (CONFIG_KHUGEPAGED_NOTIFIER_LOG):
 * notifier_log.c creates both debugfs files.
 */
#ifndef _MM_KHUGEPAGED_NOTIFIER_AIDS_H
#define _MM_KHUGEPAGED_NOTIFIER_AIDS_H

#include <linux/fs.h>

/* notifier_mirror.c: a model secondary MMU of a range of the opener's mm. */
extern const struct file_operations notifier_mirror_fops;

#endif /* _MM_KHUGEPAGED_NOTIFIER_AIDS_H */
