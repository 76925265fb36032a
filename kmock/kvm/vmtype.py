"""VmType: what one KVM_CREATE_VM type number means. Plugins declare them.

The core asks a VmType the per-VM-type questions the kernel answers in arch code
(``kvm_arch_has_private_mem``, ``kvm_arch_supports_gmem_init_shared``,
``pre_fault_allowed``, which guest accesses are private). Plugins subclass it and
return instances from the ``kmock_vm_types`` hook; its methods are called directly
(they are part of the dispatch tables built at registration, not a hook chain).
"""

from ..uapi import kvm as K


class VmType:
    #: the KVM_CREATE_VM argument
    type = K.KVM_X86_DEFAULT_VM
    name = "KVM_X86_DEFAULT_VM"
    #: kvm_arch_has_private_mem(): the VM has private (guest_memfd-only) memory
    has_private_mem = False

    def supports_gmem_init_shared(self, vm):
        """x86 kvm_arch_supports_gmem_init_shared(): only VMs without private memory."""
        return not self.has_private_mem

    def supported_gmem_flags(self, vm):
        """kvm_gmem_get_supported_flags() for this VM."""
        flags = K.GUEST_MEMFD_FLAG_MMAP
        if self.supports_gmem_init_shared(vm):
            flags |= K.GUEST_MEMFD_FLAG_INIT_SHARED
        return flags

    def pre_fault_allowed(self, vm):
        """kvm->arch.pre_fault_allowed (SNP/TDX set it only after launch finishes)."""
        return True

    def capabilities(self):
        """VM-level KVM_CHECK_EXTENSION overrides for this type: {cap: value}."""
        return {}

    def access_is_private(self, vm, gfn, requested):
        """Whether a guest access to ``gfn`` is a private access (fault->is_private).

        ``requested`` is what the guest script asked for (True/False), or None to let
        the VM type decide. The default (and SW_PROTECTED) follows the page's
        memory attribute; TDX would look at the shared GPA bit, SNP at the C-bit.
        """
        if requested is not None:
            return requested
        return vm.gfn_is_private(gfn)

    #: what the IOMMU does with entries of guest memory converted under them, when
    #: guest_memfd notifies iommufd (profile iommufd_gmem_policy "notifier"):
    #: "zap" (drop them: TDX must, and the software VM type does), "keep" (keep them;
    #: the hardware checks each DMA: SNP's RMP), "split" (the entry follows the new
    #: kind: CCA's split IPA space)
    iommu_conversion_policy = "zap"

    def judge_stale_dma(self, entry_private, page_private, write):
        """A DMA used an IOMMU entry made when the page was of the other kind.

        Returns "allow" (recorded as a violation; the DMA goes through), "fault"
        (the IOMMU refuses: kmock.DmaFault) or "machine_check" (recorded; the DMA is
        refused as kmock.DmaFault, standing for a host machine check). Without
        confidential hardware nothing stops the DMA.
        """
        return "allow"

    def __repr__(self):
        return f"<VmType {self.name} ({self.type})>"


class DefaultVm(VmType):
    """KVM_X86_DEFAULT_VM: no private memory."""
