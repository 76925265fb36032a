"""KVM_VM_TYPE_ARM_PROTECTED: a protected VM (pVM) under pKVM, as a kmock VM type.

What it models (Documentation/virt/kvm/arm/pkvm.rst of Will Deacon's 2026 series
"KVM: arm64: Add support for protected guest memory with pKVM", and the 2022
version of the same file), on guest_memfd memory:

* private memory lives in guest_memfd; the VMM converts pages with the guest_memfd's
  own attributes (the in-place conversion UAPI the profile names): pKVM's upstream
  series isolates anonymous memory for now and moves to guest_memfd as that work
  lands, so this model takes guest_memfd as given;
* a page the guest touches privately is donated to it: unmapped from the host's
  stage-2 (``stage2_map`` -> kmock_pkvm.ownership);
* the guest shares and unshares pages with hypercalls (kmock_pkvm.guest);
* a host access to a page the guest owns and did not share is a host stage-2 fault
  (pkvm.rst: the host task gets SIGSEGV; kmock's contract reports host faults as
  kmock.SigBus, recorded as ``host_access_fault`` with the explanation);
* a device DMA to such a page is refused when the platform setting
  ``pkvm_dma_isolation`` is on (Android's pKVM IOMMU driver); upstream's pkvm.rst
  lists "DMA isolation using an IOMMU" as unimplemented, so with the setting off the
  DMA goes through and is recorded (``pkvm_dma_not_isolated``);
* PUNCH_HOLE of a page the guest owns makes the hypervisor reclaim it (zeroed); a
  later guest access to it makes KVM_RUN fail with EFAULT (pkvm.rst: "a subsequent
  attempt to access it in the pVM will return -EFAULT from the VCPU_RUN ioctl()");
* memslots cannot be moved or deleted once the pVM has run (EPERM, pkvm.rst 2022),
  and read-only or dirty-logged memslots are refused (EPERM: syzkaller's pKVM
  description says so; the errno is not in the kernel's documentation);
* the host may not pre-fault guest memory (``pre_fault_allowed`` is False).

Locks: ``stage2_map`` runs under the VM's mmu_lock, ``gmem_invalidate`` and
``host_access`` under the inode's invalidate lock, ``dma_access`` under the iommu
lock, the hypercalls under the vCPU mutex; the ownership table has its own lock.
"""

import errno

from kmock.errors import oserror
from kmock.kvm.vmtype import VmType
from kmock.mm import RangeMap
from kmock.uapi import kvm as K

from . import arm64
from . import ownership as O
from .guest import PkvmGuest

GFN_SPACE = 1 << 52


class PkvmVm:
    """``vm.arch`` of a protected VM."""

    def __init__(self, ipa_bits):
        self.ipa_bits = ipa_bits
        self.owner = O.Ownership()
        #: gfns whose page the hypervisor reclaimed while the guest owned it
        self.reclaimed = RangeMap(GFN_SPACE)
        #: the first KVM_RUN happened (__pkvm_init_vm runs then)
        self.started = False

    @staticmethod
    def frame_of(vm, gfn):
        """The host frame behind ``gfn`` when guest_memfd backs it, else None."""
        slot = vm.lookup_memslot(gfn)
        if slot is None or slot.gmem_file is None:
            return None
        return slot.gmem_file.inode.pfn(slot.gmem_pgoff + gfn - slot.base_gfn)


class ProtectedVm(VmType):
    name = "KVM_VM_TYPE_ARM_PROTECTED"
    arch = "arm64"
    platforms = ("pkvm",)
    has_private_mem = True
    guest_actions = {"pkvm": PkvmGuest}

    def __init__(self, type_bit):
        self.type = 1 << type_bit

    def pre_fault_allowed(self, vm):
        return False

    # [guide:ioctls]
    def ioctls(self, kernel, file_type):
        if file_type == "vm":
            return arm64.vm_ioctls()
        if file_type == "vcpu":
            return arm64.vcpu_ioctls()
        return {}
    # [/guide:ioctls]

    # --- lifecycle ------------------------------------------------------------------------------

    # [guide:vm_init]
    def vm_init(self, vm):
        vm.arch = PkvmVm(arm64.check_ipa_size(vm))  # EINVAL refuses KVM_CREATE_VM

    def vcpu_create(self, vcpu):
        vcpu.arch = arm64.VcpuRegs()
    # [/guide:vm_init]

    # [guide:memslot_prepare]
    def memslot_prepare(self, vm, old, new, change):
        if new is not None and new.flags & (K.KVM_MEM_READONLY | K.KVM_MEM_LOG_DIRTY_PAGES):
            raise oserror(errno.EPERM)
        if vm.arch.started and change in ("move", "delete"):
            raise oserror(errno.EPERM)
    # [/guide:memslot_prepare]

    # [guide:run_enter]
    def run_enter(self, vcpu):
        if not vcpu.arch.initialised:
            raise oserror(errno.ENOEXEC)  # kvm_vcpu_first_run_init
        pvm = vcpu.vm.arch
        pvm.started = True
        action = vcpu.guest.current
        if action is not None and action.kind in ("read", "write"):
            first, last = action.gpa >> 12, (action.gpa + max(action.size, 1) - 1) >> 12
            g = pvm.reclaimed.find(first, last + 1, 1)
            if g != -1:
                vcpu.vm.kernel.violations.record(
                    "pkvm_access_reclaimed",
                    "the guest accessed a page the hypervisor reclaimed (zeroed) after the "
                    "host punched it out of guest_memfd: KVM_RUN fails with EFAULT",
                    vm=vcpu.vm, vcpu=vcpu.id, gpa=g << 12)
                raise oserror(errno.EFAULT)
        return None
    # [/guide:run_enter]

    # --- memory -----------------------------------------------------------------------------------

    # [guide:stage2_map]
    def stage2_map(self, vm, gfn, pfn, npages, private):
        if private:
            vm.arch.owner.donate(pfn, npages)  # unmapped from the host's stage-2
    # [/guide:stage2_map]

    # [guide:gmem_invalidate]
    def gmem_invalidate(self, vm, event):
        if event.reason not in ("punch_hole", "release"):
            return  # conversions do not change who owns the page
        inode, owner = event.inode, vm.arch.owner
        pfn, n = inode.pfn(event.start), event.end - event.start
        with owner.lock:
            taken = owner.first_guest_owned(pfn, n)
            owner.set(pfn, n, O.HOST)  # reclaimed: zeroed, back to the host
        if taken is None or event.reason == "release":
            return
        for slot in inode.bound_slots(event.start, event.end):
            if slot.vm is not vm:
                continue
            lo = max(event.start, slot.gmem_pgoff)
            hi = min(event.end, slot.gmem_pgoff + slot.npages)
            gfn = slot.base_gfn + lo - slot.gmem_pgoff
            vm.arch.reclaimed.set(gfn, gfn + hi - lo, 1)
            vm.kernel.violations.record(
                "pkvm_reclaim",
                "the host punched guest_memfd pages the protected guest owns: the hypervisor "
                "reclaimed and zeroed them; the guest's next access fails KVM_RUN with EFAULT",
                vm=vm, gpa=gfn << 12, pages=hi - lo)
    # [/guide:gmem_invalidate]

    # --- host and devices ---------------------------------------------------------------------------

    # [guide:host_access]
    def host_access(self, vm, inode, start, end, write):
        f = vm.arch.owner.first_guest_owned(inode.pfn(start), end - start)
        if f is None:
            return None
        return (f"host stage-2 fault: guest_memfd page {f - inode.pfn_base} belongs to the "
                f"protected guest, which did not share it (MEM_SHARE); pKVM gives the "
                f"host task SIGSEGV")
    # [/guide:host_access]

    def explain_host_fault(self, vm, inode, index):
        if vm.arch.owner.state(inode.pfn(index)) == O.GUEST:
            return f"guest_memfd page {index} is private and owned by the protected guest"
        return None

    # [guide:dma_access]
    def dma_access(self, vm, inode, start, end, write):
        f = vm.arch.owner.first_guest_owned(inode.pfn(start), end - start)
        if f is None:
            return None
        why = (f"a device {'wrote' if write else 'read'} guest_memfd page "
               f"{f - inode.pfn_base}, owned by the protected guest")
        if vm.kernel.setting("pkvm_dma_isolation"):
            return why + ": the hypervisor's IOMMU refuses it"
        vm.kernel.violations.record("pkvm_dma_not_isolated",
                                    why + " (DMA isolation is unimplemented upstream)",
                                    vm=vm, index=f - inode.pfn_base, write=write)
        return None
    # [/guide:dma_access]
