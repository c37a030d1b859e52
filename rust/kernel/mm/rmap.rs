// SPDX-License-Identifier: GPL-2.0

//! Reverse maps: a file's page cache and its i_mmap lock, a VMA's anon_vma
//! and its lock.
//!
//! C header: [`include/linux/rmap.h`](srctree/include/linux/rmap.h).
//! See the [lock order](crate::mm#lock-order).

use crate::mm::folio::Folio;
use crate::mm::virt::{Rmap, Vma};
use crate::sync::rcu;
use crate::{bindings, ffi::c_ulong};
use core::{marker::PhantomData, ptr::NonNull};

/// The page cache of a file (`struct address_space`), pinned.
///
/// # Invariants
///
/// `mapping` points to an `address_space` that stays live for `'a`.
#[derive(Clone, Copy)]
pub struct Mapping<'a> {
    pub(super) mapping: NonNull<bindings::address_space>,
    pub(super) _pin: PhantomData<&'a ()>,
}

impl<'a> Mapping<'a> {
    /// Wraps an `address_space` that the caller keeps live.
    ///
    /// # Safety
    ///
    /// `mapping` must point to an `address_space` that stays live for `'a`
    /// (the caller holds a reference on its inode, a file or a locked folio
    /// of it).
    #[inline]
    pub unsafe fn from_raw(mapping: NonNull<bindings::address_space>) -> Self {
        // INVARIANT: by the safety requirements.
        Self {
            mapping,
            _pin: PhantomData,
        }
    }

    /// Returns the raw `address_space` pointer.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::address_space {
        self.mapping.as_ptr()
    }

    /// Starts a walk of the page cache at `index`, in an RCU read-side
    /// section of its own.
    #[inline]
    pub fn walk(&self, index: c_ulong) -> PageCacheWalk<'a> {
        let mut xas = bindings::xa_state::default();
        // SAFETY: `xas` is ours; the mapping is live (type invariant).
        unsafe {
            bindings::xa_state_init(
                &mut xas,
                core::ptr::addr_of_mut!((*self.as_ptr()).i_pages),
                index,
            )
        };
        // INVARIANT: the mapping lives for `'a`; the section starts here.
        PageCacheWalk {
            xas,
            rcu: rcu::read_lock(),
            _mapping: PhantomData,
        }
    }

    /// Takes `i_mmap_rwsem` for reading (`i_mmap_lock_read()`).
    #[inline]
    pub fn i_mmap_read(&self) -> IMmapReadGuard<'_> {
        // SAFETY: the mapping is live (type invariant).
        unsafe { bindings::i_mmap_lock_read(self.as_ptr()) };
        // INVARIANT: locked just now.
        IMmapReadGuard { mapping: *self }
    }

    /// Takes `i_mmap_rwsem` for writing (`i_mmap_lock_write()`).
    #[inline]
    pub fn i_mmap_write(&self) -> IMmapWriteGuard<'_> {
        // SAFETY: the mapping is live (type invariant).
        unsafe { bindings::i_mmap_lock_write(self.as_ptr()) };
        // INVARIANT: locked just now.
        IMmapWriteGuard { mapping: *self }
    }

    /// Returns `&mapping->i_mmap_rwsem`, for assertions.
    #[inline]
    pub fn raw_i_mmap_rwsem(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: the mapping is live (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.as_ptr()).i_mmap_rwsem) }
    }

    /// The VMAs of the interval tree whose file range meets
    /// `[first, last]` (pages), while the caller holds `i_mmap_rwsem`.
    fn vmas<'g>(&self, first: c_ulong, last: c_ulong) -> VmaIter<'g> {
        VmaIter {
            // SAFETY: the mapping is live and i_mmap_rwsem is held by the
            // guard that borrows it for `'g`.
            next: unsafe {
                bindings::vma_interval_tree_iter_first(
                    core::ptr::addr_of_mut!((*self.as_ptr()).i_mmap),
                    first,
                    last,
                )
            },
            first,
            last,
            _lock: PhantomData,
        }
    }
}

/// An entry of a page-cache walk ([`Mapping::walk`]), valid until the
/// walk moves on.
pub enum PageCacheEntry<'w> {
    /// A folio, live while the walk's RCU section keeps it: its
    /// reference count may drop to zero meanwhile (it is being freed or
    /// split), which the checks of a scan must allow for, as in C.
    Folio(&'w Folio),
    /// A value entry (a swapped-out shmem page, a shadow entry) covering
    /// `1 << order` indices.
    Value {
        /// `xas_get_order()` of the entry.
        order: u32,
    },
}

/// A walk of a file's page cache (`struct xa_state` on `i_pages`) inside
/// its own RCU read-side section (`rcu_read_lock()`, `XA_STATE()`,
/// `xas_for_each()`).
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm, mm::rmap::PageCacheEntry};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// // Shared anonymous memory: shmem, so a page cache.
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, true)?;
/// mm.write(ADDR + 3 * 4096, &[1])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let mapping = vma.mapping().ok_or(EINVAL)?;
/// let mut walk = mapping.walk(0);
/// // SAFETY: only looks at the flag.
/// let rcu_held = || unsafe { bindings::rcu_read_lock_held() } != 0;
/// assert!(rcu_held());
/// // The one page written, at index 3, then nothing up to index 511.
/// match walk.next(511).ok_or(EINVAL)? {
///     PageCacheEntry::Folio(folio) => assert_eq!(folio.index(), 3),
///     PageCacheEntry::Value { .. } => return Err(EINVAL),
/// }
/// assert!(walk.next(511).is_none());
/// drop(walk);
/// assert!(!rcu_held());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `xas` walks the `i_pages` of a mapping that stays live for `'a`, and
/// `rcu` is the section the entries it returns are found under.
#[must_use = "the RCU read-side section ends when the walk is dropped"]
pub struct PageCacheWalk<'a> {
    xas: bindings::xa_state,
    rcu: rcu::Guard,
    _mapping: PhantomData<&'a ()>,
}

impl PageCacheWalk<'_> {
    /// The next present entry up to index `max`, retry entries skipped
    /// (`xas_retry()`): `xas_next_entry()`, the step of `xas_for_each()`,
    /// which moves to the next slot of the same node inline and falls back
    /// to `xas_find()` for the first entry, after a retry or a pause, and at
    /// the end of a node.
    #[inline]
    pub fn next(&mut self, max: c_ulong) -> Option<PageCacheEntry<'_>> {
        loop {
            // SAFETY: a live walk inside its RCU section (type invariant).
            let entry = NonNull::new(unsafe { bindings::xas_next_entry(&mut self.xas, max) })?;
            // SAFETY: as above; `xas_retry()` resets the walk if needed.
            if unsafe { bindings::xas_retry(&mut self.xas, entry.as_ptr()) } {
                continue;
            }
            // SAFETY: `xa_is_value()` only looks at the pointer value.
            if unsafe { bindings::xa_is_value(entry.as_ptr()) } {
                // SAFETY: a live walk, at the entry just found.
                let order = unsafe { bindings::xas_get_order(&mut self.xas) } as u32;
                return Some(PageCacheEntry::Value { order });
            }
            // SAFETY: any other entry of `i_pages` is a folio, which the RCU
            // section keeps from being freed until the walk moves on (the
            // borrow of `self`).
            return Some(PageCacheEntry::Folio(unsafe {
                Folio::from_raw(entry.as_ptr().cast())
            }));
        }
    }

    /// If `need_resched()`: `xas_pause()` and `cond_resched_rcu()`, which
    /// lets the CPU go, leaving the RCU section for a moment; the walk goes
    /// on from the next index.
    ///
    /// # Safety
    ///
    /// No other RCU read-side section may be open in this task (see
    /// [`rcu::Guard::cond_resched`]).
    #[inline]
    pub unsafe fn pause_resched(&mut self) {
        // SAFETY: no requirements.
        if !unsafe { bindings::need_resched() } {
            return;
        }
        // SAFETY: a live walk (type invariant).
        unsafe { bindings::xas_pause(&mut self.xas) };
        // SAFETY: the walk's section is the only one open (safety
        // requirements), and no entry outlives this call (`&mut self`).
        unsafe { self.rcu.cond_resched() };
    }
}

/// A held `i_mmap_rwsem`, read side.
///
/// # Invariants
///
/// This guard holds `mapping`'s `i_mmap_rwsem` for reading.
///
/// # Examples
///
/// A shared anonymous mapping is backed by a shmem file: its VMA is in
/// that file's interval tree.
///
/// ```
/// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, true)?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let mapping = vma.mapping().ok_or(EINVAL)?;
/// let sem = mapping.raw_i_mmap_rwsem();
/// // SAFETY: `sem` lives in the mapping, pinned by `vma`.
/// let locked = |s| unsafe { bindings::rwsem_is_locked(s) } != 0;
/// {
///     let i_mmap = mapping.i_mmap_read();
///     assert!(locked(sem));
///     let mut vmas = i_mmap.vmas(0, 0);
///     assert_eq!(vmas.next().map(|v| v.as_ptr()), Some(vma.as_ptr()));
///     assert!(vmas.next().is_none());
///     // Page 512 is past the mapping.
///     assert!(i_mmap.vmas(512, 1023).next().is_none());
/// }
/// assert!(!locked(sem));
/// {
///     let i_mmap = mapping.i_mmap_write();
///     assert!(locked(sem));
///     assert_eq!(i_mmap.vmas(0, 511).count(), 1);
/// }
/// assert!(!locked(sem));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the i_mmap lock is released when the guard is dropped"]
pub struct IMmapReadGuard<'a> {
    pub(super) mapping: Mapping<'a>,
}

impl IMmapReadGuard<'_> {
    /// The VMAs mapping any page of `[first, last]` (file offsets in
    /// pages), as `vma_interval_tree_foreach()`.
    #[inline]
    pub fn vmas(&self, first: c_ulong, last: c_ulong) -> VmaIter<'_> {
        self.mapping.vmas(first, last)
    }
}

impl Drop for IMmapReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for reading by this guard (type invariant).
        unsafe { bindings::i_mmap_unlock_read(self.mapping.as_ptr()) };
    }
}

/// A held `i_mmap_rwsem`, write side.
///
/// # Invariants
///
/// This guard holds `mapping`'s `i_mmap_rwsem` for writing.
#[must_use = "the i_mmap lock is released when the guard is dropped"]
pub struct IMmapWriteGuard<'a> {
    pub(super) mapping: Mapping<'a>,
}

impl IMmapWriteGuard<'_> {
    /// As [`IMmapReadGuard::vmas`].
    #[inline]
    pub fn vmas(&self, first: c_ulong, last: c_ulong) -> VmaIter<'_> {
        self.mapping.vmas(first, last)
    }
}

impl Drop for IMmapWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for writing by this guard (type invariant).
        unsafe { bindings::i_mmap_unlock_write(self.mapping.as_ptr()) };
    }
}

/// Iterator over the VMAs of a file's interval tree, under `i_mmap_rwsem`.
///
/// # Invariants
///
/// `next` is NULL or a VMA in the tree, whose `i_mmap_rwsem` is held for
/// `'a`.
pub struct VmaIter<'a> {
    pub(super) next: *mut bindings::vm_area_struct,
    pub(super) first: c_ulong,
    pub(super) last: c_ulong,
    pub(super) _lock: PhantomData<&'a ()>,
}

impl<'a> Iterator for VmaIter<'a> {
    type Item = Vma<'a, Rmap>;

    #[inline]
    fn next(&mut self) -> Option<Vma<'a, Rmap>> {
        let vma = NonNull::new(self.next)?;
        // SAFETY: `vma` is in the tree, locked for `'a` (type invariant).
        self.next =
            unsafe { bindings::vma_interval_tree_iter_next(vma.as_ptr(), self.first, self.last) };
        // INVARIANT: a VMA leaves the tree only under the write lock.
        Some(Vma {
            vma,
            _lock: PhantomData,
        })
    }
}

/// The `anon_vma` of a [`Vma`].
///
/// # Invariants
///
/// `av` points to an `anon_vma` that stays live for `'a`.
#[derive(Clone, Copy)]
pub struct AnonVma<'a> {
    pub(super) av: NonNull<bindings::anon_vma>,
    pub(super) _vma: PhantomData<&'a ()>,
}

impl AnonVma<'_> {
    /// Takes the anon_vma's root rwsem for writing (`anon_vma_lock_write()`).
    #[inline]
    pub fn lock_write(&self) -> AnonVmaWriteGuard<'_> {
        // SAFETY: the anon_vma is live (type invariant).
        unsafe { bindings::anon_vma_lock_write(self.av.as_ptr()) };
        // INVARIANT: locked just now.
        AnonVmaWriteGuard { av: *self }
    }

    /// Returns `&anon_vma->root->rwsem`, the lock [`Self::lock_write`]
    /// takes, for assertions.
    #[inline]
    pub fn raw_rwsem(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: the anon_vma is live (type invariant) and so is its root,
        // which it holds a reference on.
        unsafe { core::ptr::addr_of_mut!((*(*self.av.as_ptr()).root).rwsem) }
    }
}

/// A held anon_vma write lock.
///
/// # Invariants
///
/// This guard holds `av`'s root rwsem for writing.
///
/// # Examples
///
/// ```
/// use kernel::{bindings, mm::HPAGE_PMD_SIZE, mm::kunit::KthreadMm};
///
/// const ADDR: usize = 0x4000_0000;
/// let mm = KthreadMm::new()?;
/// mm.map_anon(ADDR, HPAGE_PMD_SIZE, false)?;
/// {
///     let mmap = mm.mmap_read();
///     let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
///     // No anon_vma before the first write fault.
///     assert!(!vma.has_anon_vma() && mmap.anon_vma(&vma).is_none());
/// }
/// mm.write(ADDR, &[1])?;
/// let mmap = mm.mmap_read();
/// let vma = mmap.vma_lookup(ADDR as _).ok_or(EINVAL)?;
/// let av = mmap.anon_vma(&vma).ok_or(EINVAL)?;
/// let sem = av.raw_rwsem();
/// // SAFETY: `sem` lives in the anon_vma root, pinned by `vma`.
/// let locked = |s| unsafe { bindings::rwsem_is_locked(s) } != 0;
/// assert!(!locked(sem));
/// let guard = av.lock_write();
/// assert!(locked(sem));
/// drop(guard);
/// assert!(!locked(sem));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the anon_vma lock is released when the guard is dropped"]
pub struct AnonVmaWriteGuard<'a> {
    pub(super) av: AnonVma<'a>,
}

impl AnonVmaWriteGuard<'_> {
    /// Whether this guard holds the lock of `vma`'s anon_vma.
    #[inline]
    pub fn locks_anon_vma_of(&self, vma: &Vma<'_>) -> bool {
        vma.raw_anon_vma() == self.av.av.as_ptr()
    }
}

impl Drop for AnonVmaWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: held for writing by this guard (type invariant).
        unsafe { bindings::anon_vma_unlock_write(self.av.av.as_ptr()) };
    }
}
