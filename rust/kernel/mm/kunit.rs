// SPDX-License-Identifier: GPL-2.0

//! A user address space of its own for a kernel thread, the mm the doctests
//! of [`crate::mm`] run against.

use crate::error::{code::*, Result};
use crate::mm::{Mm, MmapReadGuard, MmapWriteGuard};
use crate::{bindings, ffi::c_ulong};
use core::{marker::PhantomData, ptr::NonNull};

/// A user address space of its own for the current kernel thread: the mm
/// the doctests of this module run against.
///
/// # Invariants
///
/// `mm` came from `mm_alloc()`, this guard owns its `mm_users` reference,
/// and it is the current kthread's mm (`kthread_use_mm()`) until drop.
#[cfg(CONFIG_KUNIT)]
pub struct KthreadMm {
    mm: NonNull<bindings::mm_struct>,
    // Not `Send`: tied to the current kthread.
    _not_send: PhantomData<*mut ()>,
}

#[cfg(CONFIG_KUNIT)]
impl KthreadMm {
    /// Allocates an empty mm and makes it the current kthread's.
    ///
    /// Fails with `EINVAL` outside a kthread or in one that already uses
    /// an mm.
    pub fn new() -> Result<Self> {
        // SAFETY: `current` is always valid.
        let (flags, cur_mm) = unsafe {
            let task = bindings::get_current();
            ((*task).flags, (*task).mm)
        };
        if flags & bindings::PF_KTHREAD == 0 || !cur_mm.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: no requirements.
        let mm = NonNull::new(unsafe { bindings::mm_alloc() }).ok_or(ENOMEM)?;
        // SAFETY: a kthread without an mm (checked above); `mm` is live.
        unsafe { bindings::kthread_use_mm(mm.as_ptr()) };
        // INVARIANT: allocated and adopted just now.
        Ok(Self {
            mm,
            _not_send: PhantomData,
        })
    }

    /// Maps `len` bytes of private (or, if `shared`, shmem-backed shared)
    /// anonymous memory read-write at `addr`, with `vm_mmap()`.
    pub fn map_anon(&self, addr: usize, len: usize, shared: bool) -> Result {
        let flags = bindings::MAP_ANONYMOUS
            | bindings::MAP_FIXED_NOREPLACE
            | if shared {
                bindings::MAP_SHARED
            } else {
                bindings::MAP_PRIVATE
            };
        // SAFETY: the mm is the current one (type invariant) and no mmap
        // lock is held here.
        let ret = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                addr as c_ulong,
                len as c_ulong,
                (bindings::PROT_READ | bindings::PROT_WRITE) as c_ulong,
                flags as c_ulong,
                0,
            )
        };
        if ret != addr as c_ulong {
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Writes `data` at user address `addr`, faulting the pages in.
    pub fn write(&self, addr: usize, data: &[u8]) -> Result {
        crate::uaccess::UserSlice::new(addr, data.len())
            .writer()
            .write_slice(data)
    }

    /// The mm, borrowed.
    pub fn mm(&self) -> &Mm {
        // SAFETY: the fixture owns a reference on the mm (type invariant).
        unsafe { Mm::from_raw(self.mm.as_ptr()) }
    }

    /// Takes the mmap lock for reading.
    pub fn mmap_read(&self) -> MmapReadGuard<'_> {
        self.mm().mmap_read_lock()
    }

    /// Takes the mmap lock for reading, without waiting.
    pub fn mmap_try_read(&self) -> Option<MmapReadGuard<'_>> {
        self.mm().mmap_read_trylock()
    }

    /// Takes the mmap lock for writing.
    pub fn mmap_write(&self) -> MmapWriteGuard<'_> {
        self.mm().mmap_write_lock()
    }

    /// Returns `&mm->page_table_lock`.
    pub fn raw_page_table_lock(&self) -> *mut bindings::spinlock_t {
        // SAFETY: the mm is live (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.mm.as_ptr()).__bindgen_anon_1.page_table_lock) }
    }

    /// Returns `&mm->mmap_lock`, for assertions.
    pub fn raw_mmap_lock(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: the mm is live (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.mm.as_ptr()).__bindgen_anon_1.mmap_lock) }
    }
}

#[cfg(CONFIG_KUNIT)]
impl Drop for KthreadMm {
    fn drop(&mut self) {
        // SAFETY: adopted in `new` and still current; our `mm_users`
        // reference is dropped last, which tears the mappings down.
        unsafe {
            bindings::kthread_unuse_mm(self.mm.as_ptr());
            bindings::mmput(self.mm.as_ptr());
        }
    }
}
