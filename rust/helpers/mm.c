// SPDX-License-Identifier: GPL-2.0
/*
 * mm helpers for rust/kernel/mm/ and the Rust khugepaged (mm/khugepaged/):
 * static inlines and macros of the mm headers, wrapped so that Rust can
 * call them.
 */

#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/huge_mm.h>
#include <linux/hugetlb.h>
#include <linux/ksm.h>
#include <linux/mm.h>
#include <linux/mm_inline.h>
#include <linux/mmu_notifier.h>
#include <linux/page_table_check.h>
#include <linux/pagemap.h>
#include <linux/pgalloc.h>
#include <linux/pgtable.h>
#include <linux/rcupdate.h>
#include <linux/rcupdate_wait.h>
#include <linux/rmap.h>
#include <linux/rwsem.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/swap.h>
#include <linux/swapops.h>
#include <linux/userfaultfd_k.h>
#include <linux/vmstat.h>
#include <linux/xarray.h>
#include <asm/tlbflush.h>

#include "../../mm/internal.h"
#include "../../mm/khugepaged_scan.h"

#ifdef CONFIG_TRANSPARENT_HUGEPAGE

/* mm_struct, VMA */

bool rust_helper_vma_is_dax(const struct vm_area_struct *vma)
{
	return vma_is_dax(vma);
}

/*
 * The PMD entry for @address in @mm, as mm_find_pmd() (mm/rmap.c) finds it,
 * but NULL as well when the PUD entry is a leaf (hugetlb, DAX, huge PFNMAP):
 * its "PMD table" would be the user's data.  For kernel::mm's Vma::find_pmd().
 */
pmd_t *rust_helper_mm_find_pmd_table(struct mm_struct *mm,
				     unsigned long address)
{
	pgd_t *pgd = pgd_offset(mm, address);
	p4d_t *p4d;
	pud_t *pud, pude;

	if (!pgd_present(*pgd))
		return NULL;
	p4d = p4d_offset(pgd, address);
	if (!p4d_present(*p4d))
		return NULL;
	pud = pud_offset(p4d, address);
	pude = READ_ONCE(*pud);
	if (!pud_present(pude) || pud_leaf(pude))
		return NULL;
	return pmd_offset(pud, address);
}

void rust_helper_mmap_assert_locked(struct mm_struct *mm)
{
	mmap_assert_locked(mm);
}

void rust_helper_mmap_read_lock(struct mm_struct *mm)
{
	mmap_read_lock(mm);
}

bool rust_helper_mmap_read_trylock(struct mm_struct *mm)
{
	return mmap_read_trylock(mm);
}

void rust_helper_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
}

void rust_helper_mmap_write_lock(struct mm_struct *mm)
{
	mmap_write_lock(mm);
}

void rust_helper_mmap_write_unlock(struct mm_struct *mm)
{
	mmap_write_unlock(mm);
}

struct vm_area_struct *rust_helper_vma_lookup(struct mm_struct *mm,
					      unsigned long addr)
{
	return vma_lookup(mm, addr);
}

bool rust_helper_thp_vma_allowable_order(struct vm_area_struct *vma,
					 unsigned long vm_flags,
					 unsigned long tva_flags, int order)
{
	return thp_vma_allowable_order(vma, vm_flags, tva_flags, order);
}

bool rust_helper_userfaultfd_wp(struct vm_area_struct *vma)
{
	return userfaultfd_wp(vma);
}

bool rust_helper_userfaultfd_armed(struct vm_area_struct *vma)
{
	return userfaultfd_armed(vma);
}

pgoff_t rust_helper_linear_page_index(struct vm_area_struct *vma,
				      unsigned long address)
{
	return linear_page_index(vma, address);
}

void rust_helper_add_mm_counter(struct mm_struct *mm, int member, long value)
{
	add_mm_counter(mm, member, value);
}

void rust_helper_mm_dec_nr_ptes(struct mm_struct *mm)
{
	mm_dec_nr_ptes(mm);
}

void rust_helper_flush_tlb_mm(struct mm_struct *mm)
{
	/*
	 * bindgen parses the helpers with -DMODULE, and x86 hides its TLB
	 * flush API from modules: bindgen only needs the prototype.
	 */
#ifndef __BINDGEN__
	flush_tlb_mm(mm);
#endif
}

/* address_space, anon_vma */

void rust_helper_flush_tlb_range(struct vm_area_struct *vma,
				 unsigned long start, unsigned long end)
{
	/* As in rust_helper_flush_tlb_mm(). */
#ifndef __BINDGEN__
	flush_tlb_range(vma, start, end);
#endif
}

void rust_helper_flush_cache_range(struct vm_area_struct *vma,
				   unsigned long start, unsigned long end)
{
	flush_cache_range(vma, start, end);
}

void rust_helper_update_hiwater_rss(struct mm_struct *mm)
{
	update_hiwater_rss(mm);
}

void rust_helper_i_mmap_lock_read(struct address_space *mapping)
{
	i_mmap_lock_read(mapping);
}

void rust_helper_i_mmap_unlock_read(struct address_space *mapping)
{
	i_mmap_unlock_read(mapping);
}

void rust_helper_i_mmap_lock_write(struct address_space *mapping)
{
	i_mmap_lock_write(mapping);
}

void rust_helper_i_mmap_unlock_write(struct address_space *mapping)
{
	i_mmap_unlock_write(mapping);
}

void rust_helper_anon_vma_lock_write(struct anon_vma *anon_vma)
{
	anon_vma_lock_write(anon_vma);
}

void rust_helper_anon_vma_unlock_write(struct anon_vma *anon_vma)
{
	anon_vma_unlock_write(anon_vma);
}

/* folio, page */

bool rust_helper_folio_test_locked(const struct folio *folio)
{
	return folio_test_locked(folio);
}

/* The warning points here; its backtrace at the Rust caller. */
bool rust_helper_warn_on_once(bool cond)
{
	return WARN_ON_ONCE(cond);
}

struct folio *rust_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

bool rust_helper_folio_is_zone_device(const struct folio *folio)
{
	return folio_is_zone_device(folio);
}

bool rust_helper_folio_likely_mapped_shared(struct folio *folio)
{
	return folio_likely_mapped_shared(folio);
}

bool rust_helper_folio_test_young(const struct folio *folio)
{
	return folio_test_young(folio);
}

bool rust_helper_folio_test_referenced(const struct folio *folio)
{
	return folio_test_referenced(folio);
}

bool rust_helper_folio_test_lru(const struct folio *folio)
{
	return folio_test_lru(folio);
}

bool rust_helper_folio_test_anon(const struct folio *folio)
{
	return folio_test_anon(folio);
}

bool rust_helper_folio_test_swapcache(const struct folio *folio)
{
	return folio_test_swapcache(folio);
}

bool rust_helper_folio_test_mlocked(const struct folio *folio)
{
	return folio_test_mlocked(folio);
}

bool rust_helper_folio_test_ksm(const struct folio *folio)
{
	return folio_test_ksm(folio);
}

bool rust_helper_folio_test_unevictable(const struct folio *folio)
{
	return folio_test_unevictable(folio);
}

void rust_helper_folio_clear_active(struct folio *folio)
{
	folio_clear_active(folio);
}

bool rust_helper_folio_test_private(const struct folio *folio)
{
	return folio_test_private(folio);
}

int rust_helper_folio_mapcount(const struct folio *folio)
{
	return folio_mapcount(folio);
}

long rust_helper_folio_nr_pages(const struct folio *folio)
{
	return folio_nr_pages(folio);
}

int rust_helper_folio_ref_count(const struct folio *folio)
{
	return folio_ref_count(folio);
}

unsigned long rust_helper_folio_pfn(struct folio *folio)
{
	return folio_pfn(folio);
}

int rust_helper_folio_nid(const struct folio *folio)
{
	return folio_nid(folio);
}

/* Page cache walks */

void rust_helper_xa_state_init(struct xa_state *xas, struct xarray *xa,
			       unsigned long index)
{
	XA_STATE(init, xa, index);

	*xas = init;
}

void *rust_helper_xas_next_entry(struct xa_state *xas, unsigned long max)
{
	return xas_next_entry(xas, max);
}

bool rust_helper_xas_retry(struct xa_state *xas, const void *entry)
{
	return xas_retry(xas, entry);
}

bool rust_helper_xa_is_value(const void *entry)
{
	return xa_is_value(entry);
}

/* Scheduling, statistics */

bool rust_helper_need_resched(void)
{
	return need_resched();
}

void rust_helper_cond_resched_rcu(void)
{
	cond_resched_rcu();
}

int rust_helper_cond_resched(void)
{
	return cond_resched();
}

struct file *rust_helper_get_file(struct file *file)
{
	return get_file(file);
}

bool rust_helper_hpage_collapse_scan_abort(int nid,
					   struct collapse_control *cc)
{
	return hpage_collapse_scan_abort(nid, cc);
}

void rust_helper_count_vm_event(enum vm_event_item item)
{
	count_vm_event(item);
}

struct folio *rust_helper_filemap_lock_folio(struct address_space *mapping,
					     pgoff_t index)
{
	return filemap_lock_folio(mapping, index);
}

unsigned int rust_helper_folio_order(struct folio *folio)
{
	return folio_order(folio);
}

struct page *rust_helper_folio_page(struct folio *folio, unsigned long n)
{
	return folio_page(folio, n);
}

void rust_helper_folio_get(struct folio *folio)
{
	folio_get(folio);
}

void rust_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

void rust_helper_folio_ref_sub(struct folio *folio, int nr)
{
	folio_ref_sub(folio, nr);
}

int rust_helper_mm_counter_file(struct folio *folio)
{
	return mm_counter_file(folio);
}

bool rust_helper_page_is_anon(const struct page *page)
{
	return PageAnon(page);
}

bool rust_helper_page_warn_zone_device(struct page *page)
{
	return WARN_ON_ONCE(page && is_zone_device_page(page));
}

/* Page tables */

pmd_t rust_helper_pmdp_get_lockless(pmd_t *pmdp)
{
	return pmdp_get_lockless(pmdp);
}

void rust_helper_pmdp_get_lockless_sync(void)
{
	pmdp_get_lockless_sync();
}

int rust_helper_pmd_none(pmd_t pmd)
{
	return pmd_none(pmd);
}

int rust_helper_pmd_present(pmd_t pmd)
{
	return pmd_present(pmd);
}

int rust_helper_pmd_trans_huge(pmd_t pmd)
{
	return pmd_trans_huge(pmd);
}

int rust_helper_pmd_devmap(pmd_t pmd)
{
	return pmd_devmap(pmd);
}

int rust_helper_pmd_bad(pmd_t pmd)
{
	return pmd_bad(pmd);
}

pgtable_t rust_helper_pmd_pgtable(pmd_t pmd)
{
	return pmd_pgtable(pmd);
}

spinlock_t *rust_helper_pmd_lock(struct mm_struct *mm, pmd_t *pmd)
{
	return pmd_lock(mm, pmd);
}

pte_t rust_helper_ptep_get(pte_t *ptep)
{
	return ptep_get(ptep);
}

int rust_helper_is_zero_pfn(unsigned long pfn)
{
	return is_zero_pfn(pfn);
}

unsigned long rust_helper_pte_pfn(pte_t pte)
{
	return pte_pfn(pte);
}

bool rust_helper_pte_swp_uffd_wp_any(pte_t pte)
{
	return pte_swp_uffd_wp_any(pte);
}

bool rust_helper_pte_uffd_wp(pte_t pte)
{
	return pte_uffd_wp(pte);
}

int rust_helper_pte_write(pte_t pte)
{
	return pte_write(pte);
}

int rust_helper_pte_dirty(pte_t pte)
{
	return pte_dirty(pte);
}

int rust_helper_pte_young(pte_t pte)
{
	return pte_young(pte);
}

int rust_helper_pte_none(pte_t pte)
{
	return pte_none(pte);
}

int rust_helper_pte_present(pte_t pte)
{
	return pte_present(pte);
}

spinlock_t *rust_helper_pte_lockptr(struct mm_struct *mm, pmd_t *pmd)
{
	return pte_lockptr(mm, pmd);
}

void rust_helper_pte_unmap(pte_t *pte)
{
	pte_unmap(pte);
}

void rust_helper_ptep_clear(struct mm_struct *mm, unsigned long addr,
			    pte_t *ptep)
{
	ptep_clear(mm, addr, ptep);
}

pte_t rust_helper_ptep_get_and_clear(struct mm_struct *mm,
				     unsigned long addr, pte_t *ptep)
{
	return ptep_get_and_clear(mm, addr, ptep);
}

void rust_helper_pte_install_uffd_wp_if_needed(struct vm_area_struct *vma,
					       unsigned long addr, pte_t *pte,
					       pte_t pteval)
{
	pte_install_uffd_wp_if_needed(vma, addr, pte, pteval);
}

/* Declared in mm/internal.h, which bindgen does not read. */
void rust_helper_mlock_drain_local(void)
{
	mlock_drain_local();
}

void rust_helper_page_table_check_pte_clear_range(struct mm_struct *mm,
						  unsigned long addr,
						  pmd_t pmd)
{
	page_table_check_pte_clear_range(mm, addr, pmd);
}

/* Locks */

void rust_helper_spin_lock_nested(spinlock_t *lock, int subclass)
{
	spin_lock_nested(lock, subclass);
}

void rust_helper_spin_assert_held(spinlock_t *lock)
{
	lockdep_assert_held(lock);
}

int rust_helper_spin_trylock(spinlock_t *lock)
{
	return spin_trylock(lock);
}

int rust_helper_rwsem_is_locked(struct rw_semaphore *sem)
{
	return rwsem_is_locked(sem);
}

void rust_helper_rcu_read_lock(void)
{
	rcu_read_lock();
}

void rust_helper_rcu_read_unlock(void)
{
	rcu_read_unlock();
}

/* Detached PTE tables and new anonymous huge PMDs (kernel::mm::pgtable) */

void rust_helper_vma_start_write(struct vm_area_struct *vma)
{
	vma_start_write(vma);
}

void rust_helper_pmd_populate(struct mm_struct *mm, pmd_t *pmd,
			      pgtable_t pgtable)
{
	pmd_populate(mm, pmd, pgtable);
}

/*
 * The huge PMD entry for a new anonymous THP at @page in @vma: dirty, and
 * writable if the VMA is (maybe_pmd_mkwrite(), in mm/internal.h).
 */
pmd_t rust_helper_mk_huge_pmd_dirty(struct page *page,
				    struct vm_area_struct *vma)
{
	pmd_t entry = pmd_mkdirty(mk_huge_pmd(page, vma->vm_page_prot));

	if (likely(vma->vm_flags & VM_WRITE))
		entry = pmd_mkwrite(entry, vma);
	return entry;
}

void rust_helper_folio_add_new_anon_rmap_exclusive(struct folio *folio,
						   struct vm_area_struct *vma,
						   unsigned long address)
{
	folio_add_new_anon_rmap(folio, vma, address, RMAP_EXCLUSIVE);
}

void rust_helper_set_pmd_at(struct mm_struct *mm, unsigned long addr,
			    pmd_t *pmdp, pmd_t pmd)
{
	set_pmd_at(mm, addr, pmdp, pmd);
}

void rust_helper_update_mmu_cache_pmd(struct vm_area_struct *vma,
				      unsigned long addr, pmd_t *pmd)
{
	update_mmu_cache_pmd(vma, addr, pmd);
}

void rust_helper___folio_mark_uptodate(struct folio *folio)
{
	__folio_mark_uptodate(folio);
}

bool rust_helper_folio_test_large(struct folio *folio)
{
	return folio_test_large(folio);
}

bool rust_helper_folio_trylock(struct folio *folio)
{
	return folio_trylock(folio);
}

int rust_helper_folio_is_file_lru(struct folio *folio)
{
	return folio_is_file_lru(folio);
}

void rust_helper_node_stat_mod_folio(struct folio *folio,
				     enum node_stat_item item, int nr)
{
	node_stat_mod_folio(folio, item, nr);
}

void rust_helper_clear_user_highpage(struct page *page, unsigned long vaddr)
{
	clear_user_highpage(page, vaddr);
}

/* Machine-check safe where the arch has copy_mc_to_kernel(). */
int rust_helper_copy_mc_user_highpage(struct page *to, struct page *from,
				      unsigned long vaddr,
				      struct vm_area_struct *vma)
{
	return copy_mc_user_highpage(to, from, vaddr, vma);
}

void rust_helper_ksm_might_unmap_zero_page(struct mm_struct *mm, pte_t pte)
{
	ksm_might_unmap_zero_page(mm, pte);
}

void rust_helper_folio_remove_rmap_pte(struct folio *folio, struct page *page,
				       struct vm_area_struct *vma)
{
	folio_remove_rmap_pte(folio, page, vma);
}

/* A function with CONFIG_SWAP, an inline without. */
void rust_helper_mm_free_swap_cache(struct folio *folio)
{
	free_swap_cache(folio);
}

/* A list of isolated folios through their lru, as compound_pagelist. */
void rust_helper_folio_list_init(struct list_head *list)
{
	INIT_LIST_HEAD(list);
}

void rust_helper_folio_list_add_tail(struct folio *folio,
				     struct list_head *list)
{
	list_add_tail(&folio->lru, list);
}

struct folio *rust_helper_folio_list_next(struct list_head *list,
					  struct folio *prev)
{
	struct list_head *next = prev ? prev->lru.next : list->next;

	return next == list ? NULL : list_entry(next, struct folio, lru);
}

struct folio *rust_helper_folio_list_prev(struct list_head *list,
					  struct folio *next)
{
	struct list_head *prev = next ? next->lru.prev : list->prev;

	return prev == list ? NULL : list_entry(prev, struct folio, lru);
}

void rust_helper_folio_list_del(struct folio *folio)
{
	list_del(&folio->lru);
}

/* mmu_notifier: these are empty inlines without CONFIG_MMU_NOTIFIER. */

void rust_helper_mmu_notifier_range_init(struct mmu_notifier_range *range,
					 enum mmu_notifier_event event,
					 unsigned int flags,
					 struct mm_struct *mm,
					 unsigned long start,
					 unsigned long end)
{
	mmu_notifier_range_init(range, event, flags, mm, start, end);
}

void rust_helper_mmu_notifier_invalidate_range_start(struct mmu_notifier_range *range)
{
	mmu_notifier_invalidate_range_start(range);
}

int rust_helper_mmu_notifier_test_young(struct mm_struct *mm,
					unsigned long address)
{
	return mmu_notifier_test_young(mm, address);
}

void rust_helper_mmu_notifier_invalidate_range_end(struct mmu_notifier_range *range)
{
	mmu_notifier_invalidate_range_end(range);
}

#endif /* CONFIG_TRANSPARENT_HUGEPAGE */

void rust_helper_folio_put_refs(struct folio *folio, int refs)
{
	folio_put_refs(folio, refs);
}

struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

/*
 * folio_pte_batch() of mm/internal.h: the run of entries from @start_ptep
 * that map consecutive pages of @folio with the same bits but for dirty
 * and soft-dirty, at most @max_nr.
 */
int rust_helper_folio_pte_batch(struct folio *folio, unsigned long addr,
				pte_t *start_ptep, pte_t pte, int max_nr)
{
	return folio_pte_batch(folio, addr, start_ptep, pte, max_nr,
			       FPB_IGNORE_DIRTY | FPB_IGNORE_SOFT_DIRTY,
			       NULL, NULL, NULL);
}

/* ptep_clear() of @nr entries from @ptep, mapping from @addr on. */
void rust_helper_ptep_clear_range(struct mm_struct *mm, unsigned long addr,
				  pte_t *ptep, unsigned int nr)
{
	for (; nr; nr--, ptep++, addr += PAGE_SIZE)
		ptep_clear(mm, addr, ptep);
}
