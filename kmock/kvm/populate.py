"""kvm_gmem_populate: how launch updates put initial contents into private memory.

TDX's KVM_TDX_INIT_MEM_REGION, SNP's KVM_SEV_SNP_LAUNCH_UPDATE and CCA's
KVM_ARM_RMI_POPULATE all go through this (virt/kvm/guest_memfd.c, 6.18):

1. the gfn's memslot must be able to hold private memory (bound to a guest_memfd),
   else EINVAL; a guest_memfd that was closed gives EFAULT;
2. the range is clamped to the end of that memslot;
3. page by page (here: run by run), under the guest_memfd's invalidate lock: the page's
   folio is got first (allocated if absent; EFAULT once the file is released, EHWPOISON
   for a poisoned page); then a page already prepared (populated, or made private by a
   guest access) stops the loop with EEXIST; a gfn whose attribute is not PRIVATE stops
   it with EINVAL (its folio stays allocated); else the architecture's
   ``post_populate`` runs and, if it succeeded, the page becomes prepared;
4. the result is the number of pages done, or the error when none was.

6.18's ``__kvm_gmem_get_pfn`` always reports ``max_order`` 0, so the kernel's step is one
page: when ``post_populate`` fails at page i, the pages before it stay populated, page
i's folio stays allocated (only ``folio_put``; not prepared) and the pages after it were
never reached. kmock gets the same end state run by run: the run's first folio before
``post_populate`` (its errors come first, as the kernel's), the others up to the page it
reached after it, in one allocation (``post_populate`` of the plugins does not look at the
allocation; the frame of page ``index`` is fixed, ``inode.pfn(index)``).

``post_populate(gfn, pfn, src, npages)`` is called once per run (never per page);
``src`` is the user address of the run's source bytes, or None. It returns None or
raises OSError; an OSError with a ``done`` attribute says how many pages of the run
it completed before failing (the page at ``done`` is the one that failed).
"""

import errno

from ..errors import oserror
from ..uapi import kvm as K

PAGE_SHIFT = 12
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE


def gmem_populate(vm, start_gfn, src, npages, post_populate):
    """Populate ``npages`` private pages from ``start_gfn``; returns the pages done."""
    slot = vm.lookup_memslot(start_gfn)
    if slot is None or not slot.flags & K.KVM_MEM_GUEST_MEMFD:
        raise oserror(errno.EINVAL)  # !kvm_slot_has_gmem(slot)
    if slot.gmem_file is None:
        raise oserror(errno.EFAULT)  # kvm_gmem_get_file: the guest_memfd was closed
    inode = slot.gmem_file.inode
    if inode.backing < 0:
        raise oserror(errno.EFAULT)
    npages = min(slot.end_gfn - start_gfn, npages)
    done = 0
    err = 0
    delta = slot.gmem_pgoff - slot.base_gfn
    with inode.invalidate_lock:
        while done < npages and not err:
            gfn = start_gfn + done
            index = gfn + delta
            # the run stops before the first prepared page, the first gfn that is not
            # private and the first poisoned page
            stop = npages - done
            prepared = inode.prepared
            if prepared is not None:
                p = prepared.find_not(index, index + stop, 0)
                if p != -1:
                    stop = p - index
            q = _first_not_private(vm, slot, gfn, gfn + stop)
            if q is not None:
                stop = q - gfn
            if inode.poisoned is not None:
                p = inode.poisoned.find(index, index + stop, 1)
                if p != -1:
                    stop = p - index
            try:
                pfn = inode.get_pfn(index)  # the first page's folio: EFAULT, EHWPOISON
            except OSError as e:
                err = e.errno
                break
            if stop == 0:
                already = prepared is not None and prepared.get(index)
                err = errno.EEXIST if already else errno.EINVAL
                break
            try:
                post_populate(gfn, pfn, None if src is None else src + (done << PAGE_SHIFT), stop)
                ran = stop
            except OSError as e:
                ran = getattr(e, "done", 0)
                err = e.errno
            # the folios of the pages done and of the one that failed; none after it
            reached = min(stop, ran + 1) if err else ran
            if reached > 1:
                inode.allocate(index + 1, index + reached)
            inode.mark_prepared(index, index + ran)
            done += ran
    if err and done == 0:
        raise oserror(err)
    return done


def _first_not_private(vm, slot, start, end):
    """The first gfn of [start, end) whose attribute is not PRIVATE, or None."""
    from .stage2 import private_runs

    for s, e, private in private_runs(vm, slot, start, end):
        if not private:
            return s
    return None
