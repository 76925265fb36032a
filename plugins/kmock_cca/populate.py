"""KVM_ARM_RMI_POPULATE: the launch-time copy of initial contents into a NEW realm.

Order (v14 26/44 ``kvm_arm_rmi_populate``; v12 20/46):
1. the VM is not a realm -> ENXIO (v12: EPERM): ``cca_populate_non_realm_errno``;
2. copy_from_user -> EFAULT;
3. ``reserved`` != 0, unknown flags, ``base`` or ``base + size`` not page aligned, and
   (v13+) ``source_uaddr`` not page aligned -> EINVAL;
4. realm_ensure_created: NONE -> create the RD; DEAD -> ENXIO; ACTIVE / DYING -> EBUSY;
5. kvm_gmem_populate (kmock.kvm.populate.gmem_populate) under slots_lock: its own
   errnos (EINVAL not a guest_memfd slot or not PRIVATE, EEXIST already populated,
   EFAULT a closed guest_memfd); a NULL source -> EOPNOTSUPP; the callback delegates the
   pages and calls RTT_DATA_MAP_INIT (v12: DATA_CREATE) with RMI_MEASURE_CONTENT iff
   FLAGS_MEASURE; the destination becomes RIPAS RAM implicitly; an RMI failure -> ENXIO;
6. v13+: base, source_uaddr advance and size shrinks by the bytes done, the struct is
   copied back (also when the call failed, then unchanged), 0 is returned: the VMM
   repeats until size == 0. v12 returns the bytes done and leaves the struct alone.
"""

import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user, read_user_at
from kmock.kvm.populate import gmem_populate
from kmock.uapi import cca as C

from . import kvm_rmi
from .rtt import GRANULE_SHIFT, GRANULE_SIZE

PAGE_MASK = GRANULE_SIZE - 1
U64 = (1 << 64) - 1


def rmi_populate_ioctl(series):
    """The VM ioctl handler for the Kernel's series revision."""

    def rmi_populate(f, arg):
        vm = f.vm
        vm.check_caller()
        vmtype = vm.vmtype
        if not getattr(vmtype, "is_realm", False):
            raise oserror(series.populate_non_realm_errno)
        args = copy_from_user(arg, C.kvm_arm_rmi_populate)
        if args.reserved or args.flags & ~C.KVM_ARM_RMI_POPULATE_FLAGS_MEASURE:
            raise oserror(errno.EINVAL)
        base, size, src = args.base, args.size, args.source_uaddr
        if base & PAGE_MASK or (base + size) & PAGE_MASK or base + size > U64:
            raise oserror(errno.EINVAL)
        if series.populate_checks_source_alignment and src & PAGE_MASK:
            raise oserror(errno.EINVAL)
        vmtype.ensure_created(vm)
        measure = bool(args.flags & C.KVM_ARM_RMI_POPULATE_FLAGS_MEASURE)
        try:
            with vm.slots_lock:
                done = _populate(vm, vmtype, base, src, size >> GRANULE_SHIFT, measure) if size else 0
        except OSError:
            if series.populate_inout:
                copy_to_user(arg, args)
            raise
        nbytes = done << GRANULE_SHIFT
        if not series.populate_inout:
            return nbytes
        args.base += nbytes
        args.size -= nbytes
        args.source_uaddr = (src + nbytes) & U64
        copy_to_user(arg, args)
        return 0

    return rmi_populate


def _populate(vm, vmtype, base, src, npages, measure):
    arch = vm.arch

    def post_populate(gfn, pfn, src_addr, n):
        if src_addr is None:
            raise oserror(errno.EOPNOTSUPP)
        data = read_user_at(src_addr, 0, n << GRANULE_SHIFT)  # EFAULT if unreadable
        slot = vm.lookup_memslot(gfn)
        slot.gmem_file.inode.write((gfn - slot.base_gfn + slot.gmem_pgoff) << GRANULE_SHIFT, data)
        ipa = gfn << GRANULE_SHIFT
        with arch.lock:
            src_pa = _user_pa(src_addr & ~PAGE_MASK)
            kvm_rmi.populate(arch.realm, vmtype.pool, ipa, pfn << GRANULE_SHIFT, src_pa,
                             n << GRANULE_SHIFT, measure)

    return gmem_populate(vm, base >> GRANULE_SHIFT, src or None, npages, post_populate)


def _user_pa(hva):
    """The NS physical address the RMM reads the source from (kmock.physmem.user_pfn)."""
    from kmock.physmem import user_pfn

    return user_pfn(hva) << GRANULE_SHIFT
