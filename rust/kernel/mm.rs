// SPDX-License-Identifier: GPL-2.0

//! Memory management.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/rmap.h`](srctree/include/linux/rmap.h),
//! [`include/linux/pgtable.h`](srctree/include/linux/pgtable.h).
//!
//! For now this holds [`guard`], the lock guards of the mm lock order that
//! the Rust khugepaged (`mm/khugepaged/`) is written against.

pub mod guard;
