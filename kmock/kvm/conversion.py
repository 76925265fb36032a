"""Shared/private conversion of guest_memfd pages, and the guest_memfd model of each profile.

Three generations of the UAPI (reference/conversion-and-iommufd.md §1-2):

``linux-6.18`` (:class:`Upstream618`)
    No in-place conversion. Host faults follow GUEST_MEMFD_FLAG_INIT_SHARED; the
    guest's view follows the VM-level KVM_SET_MEMORY_ATTRIBUTES.
``gmem-convert-rfc-v2`` (:class:`RfcV2`)
    KVM_GMEM_CONVERT_SHARED/PRIVATE on the guest_memfd fd; creation flags
    SUPPORT_SHARED / INIT_PRIVATE / HUGETLB (+ page-size encoding); caps 240-242.
``gmem-attributes-v8`` (:class:`AttributesV8`)
    KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd behind the module parameter
    ``kvm.gmem_in_place_conversion``; cap KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES.
``gmem-attributes-v12`` (:class:`AttributesV12`)
    v12 (Aug 2026) as applied to kvm-x86 (v13, Sep 2026): the v8 UAPI, another cap
    number, and every guest_memfd memslot served from guest_memfd while the parameter
    is on (docs/reference/gmem-attributes-v12.md).

Every conversion runs guest_memfd's one sequence (``GmemInode.convert`` ->
``GmemInode.invalidate``, see kmock.notifier): vetoes; invalidate_begin (every
user zaps its mappings of the old kind); on to-private the safe-refcount check
(EAGAIN with the profile's error offset); the architecture's callback; store
(attributes, split or merge of huge folios); invalidate_end. A failed conversion
leaves every page, pin and attribute as it was.
"""

import errno

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import gmem as G
from ..uapi import kvm as K
from .guest_memfd import ConversionError

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
U64 = (1 << 64) - 1
LOFF_MAX = (1 << 63) - 1


# --- guest_memfd models per profile ----------------------------------------------------------


class Upstream618:
    """Linux 6.18: guest_memfd without in-place conversion."""

    name = "linux-6.18"

    def supported_flags(self, vm):
        return vm.vmtype.supported_gmem_flags(vm)

    def check_create(self, vm, size, flags):
        """kvm_gmem_create: flags, then size; both EINVAL."""
        if flags and flags & ~self.supported_flags(vm):  # (no flag: none to refuse)
            raise oserror(errno.EINVAL)
        if size > LOFF_MAX or size <= 0 or size & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)

    def init_inode(self, inode):
        inode.in_place = False
        if inode.flags & K.GUEST_MEMFD_FLAG_INIT_SHARED:
            inode.attrs.set(0, inode.npages, 0)

    def mmap_allowed(self, inode):
        return bool(inode.flags & K.GUEST_MEMFD_FLAG_MMAP)

    def gmem_only(self, inode):
        """KVM_MEMSLOT_GMEM_ONLY: guest faults are always served from guest_memfd."""
        return bool(inode.flags & K.GUEST_MEMFD_FLAG_MMAP)

    def system_caps(self, profile):
        return {}

    def vm_caps(self, profile, vmtype):
        return {}

    def gmem_ioctls(self, profile):
        return {}


class RfcV2(Upstream618):
    """Ackerley Tng's RFC v2 (May 2025): KVM_GMEM_CONVERT_SHARED/PRIVATE."""

    name = "gmem-convert-rfc-v2"
    #: huge page sizes the mock's hugetlb pool offers (log2); 0 in the flags = 2M
    HUGE_SHIFTS = (21, 30)

    def supported_flags(self, vm):
        return G.RFCV2_GUEST_MEMFD_FLAGS

    def check_create(self, vm, size, flags):
        size_bits = flags & (G.GUESTMEM_HUGETLB_FLAG_MASK << G.GUESTMEM_HUGETLB_FLAG_SHIFT)
        valid = G.RFCV2_GUEST_MEMFD_FLAGS
        if flags & G.GUEST_MEMFD_FLAG_HUGETLB:
            valid |= size_bits
        if flags & ~valid:
            raise oserror(errno.EINVAL)
        if flags & G.GUEST_MEMFD_FLAG_INIT_PRIVATE and not flags & G.GUEST_MEMFD_FLAG_SUPPORT_SHARED:
            raise oserror(errno.EINVAL)
        if size > LOFF_MAX or size <= 0 or size & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)
        if flags & G.GUEST_MEMFD_FLAG_HUGETLB:
            huge = self.huge_size(flags)
            if huge is None or size % huge:
                raise oserror(errno.EINVAL)

    def huge_size(self, flags):
        shift = (flags >> G.GUESTMEM_HUGETLB_FLAG_SHIFT) & G.GUESTMEM_HUGETLB_FLAG_MASK
        shift = shift or 21
        return 1 << shift if shift in self.HUGE_SHIFTS else None

    def init_inode(self, inode):
        flags = inode.flags
        inode.in_place = bool(flags & G.GUEST_MEMFD_FLAG_SUPPORT_SHARED)
        if inode.in_place and not flags & G.GUEST_MEMFD_FLAG_INIT_PRIVATE:
            inode.attrs.set(0, inode.npages, 0)  # SHAREABILITY_ALL
        if flags & G.GUEST_MEMFD_FLAG_HUGETLB:
            inode.set_folio_pages(self.huge_size(flags) >> PAGE_SHIFT)

    def mmap_allowed(self, inode):
        return inode.in_place

    def gmem_only(self, inode):
        return inode.in_place

    def system_caps(self, profile):
        return {G.RFCV2_KVM_CAP_GMEM_SHARED_MEM: 1, G.RFCV2_KVM_CAP_GMEM_CONVERSION: 1,
                G.RFCV2_KVM_CAP_GMEM_HUGETLB: 1, K.KVM_CAP_GUEST_MEMFD_FLAGS: 0}

    def vm_caps(self, profile, vmtype):
        return self.system_caps(profile)

    def gmem_ioctls(self, profile):
        return {G.KVM_GMEM_CONVERT_SHARED: rfcv2_convert_shared,
                G.KVM_GMEM_CONVERT_PRIVATE: rfcv2_convert_private}


class AttributesV8(Upstream618):
    """KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd (v8, June 2026)."""

    name = "gmem-attributes-v8"

    def __init__(self, in_place=True):
        #: the module parameter kvm.gmem_in_place_conversion
        self.param = in_place

    def supported_flags(self, vm):
        if not self.param:
            return super().supported_flags(vm)
        return K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED  # INIT_SHARED for CoCo too

    def init_inode(self, inode):
        super().init_inode(inode)
        inode.in_place = self.param

    def system_caps(self, profile):
        cap = profile.caps_named.get("KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES",
                                     G.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)
        caps = {cap: PRIVATE if self.param else 0}
        if self.param:
            caps[K.KVM_CAP_MEMORY_ATTRIBUTES] = 0  # kvm_supported_vm_mem_attributes() == 0
        return caps

    def vm_caps(self, profile, vmtype):
        caps = self.system_caps(profile)
        cap = next(iter(caps))
        if not vmtype.has_private_mem:
            caps[cap] = 0
        if self.param:
            caps[K.KVM_CAP_GUEST_MEMFD_FLAGS] = K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED
        return caps

    def gmem_ioctls(self, profile):
        if not self.param:
            return {}  # kvm_gmem_ioctl: -ENOTTY while the parameter is off
        return {profile.set_memory_attributes2: v8_set_memory_attributes2}


class AttributesV12(AttributesV8):
    """KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd (v12, Aug 2026; as applied, v13).

    The ioctl, its struct, its validation order and its write-back are v8's
    (kvm_gmem_set_attributes in the applied virt/kvm/guest_memfd.c), so the handler is
    shared; the capability number comes from the profile (``caps_named``).
    """

    name = "gmem-attributes-v12"

    def gmem_only(self, inode):
        """2e646bcfcf90 "Always fault from guest_memfd if in-place conversion is enabled":
        kvm_gmem_prepare_memory_region() sets KVM_MEMSLOT_GMEM_ONLY when the parameter is
        on, with or without GUEST_MEMFD_FLAG_MMAP."""
        return self.param or super().gmem_only(inode)


def model_for(profile):
    if profile.conversion == "none":
        return Upstream618()
    if profile.conversion == "rfc-v2":
        return RfcV2()
    if profile.conversion == "attributes-v8":
        if profile.conversion_revision >= 12:
            return AttributesV12(in_place=profile.gmem_in_place_conversion)
        return AttributesV8(in_place=profile.gmem_in_place_conversion)
    raise ValueError(f"unknown conversion UAPI {profile.conversion!r}")


# --- ioctl handlers on the guest_memfd fd ------------------------------------------------------


def _rfcv2_convert(f, arg, to_private):
    """kvm_gmem_ioctl_convert_range (RFC v2 §1.3): on any error the whole struct is
    copied back with error_offset = error_index << PAGE_SHIFT."""
    c = copy_from_user(arg, G.kvm_gmem_convert)
    inode = f.inode
    try:
        if c.error_offset != 0:
            raise ConversionError(errno.EINVAL, 0)
        if c.size == 0:
            return 0
        end = c.offset + c.size
        if end > U64 or c.offset > inode.size or end > inode.size:
            raise ConversionError(errno.EINVAL, 0)
        if c.offset & (PAGE_SIZE - 1) or c.size & (PAGE_SIZE - 1):
            raise ConversionError(errno.EINVAL, 0)
        if not inode.in_place:
            raise ConversionError(errno.EINVAL, 0)  # no SUPPORT_SHARED: nothing to convert
        inode.convert(c.offset >> PAGE_SHIFT, end >> PAGE_SHIFT, to_private,
                      clamp_error_index=False)
        return 0
    except ConversionError as e:
        c.error_offset = e.index << PAGE_SHIFT
        copy_to_user(arg, c)
        raise oserror(e.errno) from None


def rfcv2_convert_shared(f, arg):
    return _rfcv2_convert(f, arg, False)


def rfcv2_convert_private(f, arg):
    return _rfcv2_convert(f, arg, True)


def v8_set_memory_attributes2(f, arg):
    """kvm_gmem_set_attributes (v8 §2.3): validation errors write nothing back; core
    errors copy the struct back with error_offset; success writes nothing back."""
    a = copy_from_user(arg, G.kvm_memory_attributes2)
    if a.flags:
        raise oserror(errno.EINVAL)
    if any(a.reserved):
        raise oserror(errno.EINVAL)
    inode = f.inode
    if not f.vm.vmtype.has_private_mem:
        raise oserror(errno.EINVAL)
    if a.attributes & ~PRIVATE:
        raise oserror(errno.EINVAL)
    end = a.offset + a.size
    if a.size == 0 or end > U64:
        raise oserror(errno.EINVAL)
    if a.offset & (PAGE_SIZE - 1) or a.size & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    if a.offset >= inode.size or end > inode.size:
        raise oserror(errno.EINVAL)
    try:
        inode.convert(a.offset >> PAGE_SHIFT, end >> PAGE_SHIFT, bool(a.attributes & PRIVATE),
                      clamp_error_index=True)
    except ConversionError as e:
        a.error_offset = e.index << PAGE_SHIFT
        copy_to_user(arg, a)
        raise oserror(e.errno) from None
    return 0
