"""VmType: what one KVM_CREATE_VM type number means. Plugins declare them.

Per-VM-type behaviour lives here, and the core calls it only for VMs of the type
(never a global hook every plugin must filter). The core asks a VmType the
questions the kernel answers in arch code; a plugin subclasses it, overrides what
its architecture does, and returns instances from the ``kmock_vm_types`` hook.

Dispatch stays precomputed: ``ioctls`` and ``mem_enc_ops`` are read once per
Kernel into per-file-type tables; the ``has_*`` flags below are computed once per
class from which methods it overrides, so a VM type that does not implement a
callback costs nothing on the paths that would call it.

What a VM type may override (every method is called once per operation, never per
page; the ones that may refuse raise ``OSError(errno)`` before anything changed):

dispatch     ``ioctls(kernel, file_type)``: {request: handler(file, arg)} for "vm",
             "vcpu", "gmem"; they override the core's handlers for this type.
             ``mem_enc_cmd`` (ctypes struct of KVM_MEMORY_ENCRYPT_OP's argument,
             starting with ``u32 id``), ``mem_enc_ops(kernel, file_type)``:
             {id: handler(file, cmd, arg)}, ``mem_enc_check(file, cmd)``: the checks
             before the sub-command is looked up, ``mem_enc_unknown``: the errno of
             an unknown id.
lifecycle    ``vm_init(vm)`` (may refuse KVM_CREATE_VM), ``vm_destroy(vm)``,
             ``vcpu_create(vcpu)`` (may refuse), ``memslot_prepare(vm, old, new,
             change)`` (may refuse), ``memslot_commit(vm, old, new, change)``,
             ``run_enter(vcpu)`` (return an int to end KVM_RUN before the guest runs,
             after writing an exit), ``run_exit(vcpu, result)``.
memory       ``gmem_create(vm, size, flags)`` (may refuse), ``gmem_veto(vm, event)``
             (an errno refuses the whole invalidation), ``gmem_invalidate(vm,
             event)`` (the arch step of every invalidation: S-EPT removal, RMPUPDATE,
             RIPAS), ``gmem_make_shared(vm, inode, start, end, pfn)`` (to-shared,
             per run of allocated pages), ``gmem_make_private(vm, inode, start, end,
             pfn)`` (lazily, on the guest's first private use), ``stage2_map(vm,
             gfn, pfn, npages, private)`` and ``stage2_zap(vm, runs)``.
access       ``guest_access(vcpu, action, segments)``: the hardware's own check of a
             guest memory access, after KVM resolved it (SNP's RMP, TDX's PENDING).
             ``guest_access_early(vcpu, start, end, private, write)``: the verdict of
             a stage-2 the hardware owns, before KVM's fault path (CCA's RTT).
gpa          ``gpa_alias(vm, gpa)`` -> (canonical gpa, private or None): TDX's shared
             bit, CCA's unprotected half (called before the access takes mmu_lock).
             ``access_is_private``.
host, DMA    ``host_access(vm, inode, start, end, write)`` (an explanation refuses a host
             access as kmock.SigBus), ``dma_access(vm, inode, start, end, write)`` (an
             explanation refuses a DMA as kmock.DmaFault), ``explain_host_fault(vm,
             inode, index)``, ``judge_stale_dma``, ``iommu_conversion_policy``.
caps         ``capabilities()``: VM-level KVM_CHECK_EXTENSION overrides.
vCPU state   ``has_protected_state`` (class attribute), ``guest_state_protected(vcpu)``,
             ``fpu_confidential(vcpu)``, ``guest_tsc_protected(vcpu)``: which x86 vCPU
             state ioctls refuse (see below);
             ``msr_allowed(vcpu, index, write, data)``: the vendor's get_msr/set_msr
             refusal.
guest        ``guest_actions``: {name: factory(script)}; ``vcpu.guest.<name>`` is the
             architecture's script actions (``vcpu.guest.tdx.accept(gpa)``).
"""

import errno

from ..uapi import kvm as K

#: VmType methods whose override turns on a path of the core (see VmType.__init_subclass__)
_FLAGS = {
    "has_gmem_callbacks": ("gmem_veto", "gmem_invalidate", "gmem_make_shared"),
    "has_make_private": ("gmem_make_private",),
    "has_stage2_hooks": ("stage2_map", "stage2_zap"),
    "has_gpa_alias": ("gpa_alias",),
    "has_run_hooks": ("run_enter", "run_exit"),
    "has_run_exit": ("run_exit",),
    "has_host_access": ("host_access",),
    "has_dma_access": ("dma_access",),
    "has_guest_access": ("guest_access",),
    "has_guest_access_early": ("guest_access_early",),
    "has_gmem_create": ("gmem_create",),
    "has_vcpu_state_hooks": ("guest_state_protected", "fpu_confidential",
                             "guest_tsc_protected", "guest_apic_protected"),
    "has_msr_hook": ("msr_allowed",),
}


class VmType:
    #: the KVM_CREATE_VM argument (without arm64's IPA-size bits 7:0)
    type = K.KVM_X86_DEFAULT_VM
    name = "KVM_X86_DEFAULT_VM"
    #: "x86" or "arm64": the architecture of the profiles that may offer this type
    arch = "x86"
    #: the platforms ("none", "tdx", "snp", "cca", or a plugin's own) that offer this
    #: type; None = every platform of ``arch``
    platforms = None
    #: kvm_arch_has_private_mem(): the VM has private (guest_memfd-only) memory
    has_private_mem = False
    #: guest script namespaces: {name: factory(script)} (see kmock.kvm.guest)
    guest_actions = {}
    #: KVM_MEMORY_ENCRYPT_OP's argument struct (None: the ioctl is ENOTTY for this type)
    mem_enc_cmd = None
    #: errno of an unknown KVM_MEMORY_ENCRYPT_OP sub-command id
    mem_enc_unknown = errno.EINVAL
    #: errno of a VM ioctl nobody handles: kvm_arch_vm_ioctl's default (x86 ENOTTY,
    #: arm64 EINVAL)
    unknown_vm_ioctl_errno = errno.ENOTTY
    #: kvm->arch.has_protected_state (x86): once a vCPU's state is protected the x86
    #: state ioctls refuse with EINVAL instead of pretending to work (TDX: tdx_vm_init;
    #: SEV-ES and SNP VM types: svm_vm_init; not the legacy SEV_ES_INIT on a default VM)
    has_protected_state = False
    #: the architecture's in-kernel irqchip as irqfds and GSI routing see it
    #: (kmock.kvm.eventfds.IrqchipModel: kvm_arch_irqfd_allowed, kvm_set_routing_entry,
    #: kvm_arch_set_irq_inatomic ...); None: x86's on x86 profiles, the kernel's __weak
    #: defaults elsewhere (kmock_arm64 names the vGIC's)
    irqchip_model = None

    has_gmem_callbacks = False
    has_make_private = False
    has_stage2_hooks = False
    has_gpa_alias = False
    has_run_hooks = False
    has_run_exit = False
    has_host_access = False
    has_dma_access = False
    has_guest_access = False
    has_guest_access_early = False
    has_gmem_create = False
    has_vcpu_state_hooks = False
    has_msr_hook = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for flag, methods in _FLAGS.items():
            setattr(cls, flag, any(getattr(cls, m) is not getattr(VmType, m) for m in methods))

    # --- questions the core asks ----------------------------------------------------------

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

    def guest_state_protected(self, vcpu):
        """vcpu->arch.guest_state_protected: the hardware holds the vCPU's registers (TDX
        from tdx_vcpu_create unless the TD has DEBUG; SEV-ES after LAUNCH_UPDATE_VMSA; SNP
        after SNP_LAUNCH_FINISH encrypted the VMSAs). With ``has_protected_state``,
        KVM_GET/SET_REGS, SREGS, XCRS and DEBUGREGS are EINVAL (arch/x86/kvm/x86.c)."""
        return False

    def fpu_confidential(self, vcpu):
        """fpstate_is_confidential(&vcpu->arch.guest_fpu): KVM cannot see the FPU state
        (TDX: tdx_vcpu_create; SEV-ES: __sev_launch_update_vmsa). KVM_GET/SET_FPU and
        KVM_GET/SET_XSAVE(2) are then EINVAL with ``has_protected_state``, else they
        succeed doing nothing (a GET returns zeros)."""
        return False

    def guest_tsc_protected(self, vcpu):
        """vcpu->arch.guest_tsc_protected: the TSC offset and multiplier belong to the
        hardware (TDX: tdx_vcpu_create; SNP with Secure TSC): the vCPU's KVM_SET_TSC_KHZ
        is EINVAL before anything is recorded (x86.c, "KVM: x86: Reject KVM_SET_TSC_KHZ
        vCPU ioctl for TSC protected guest", 2025)."""
        return False

    def guest_apic_protected(self, vcpu):
        """vcpu->arch.apic->guest_apic_protected (TDX: tdx_vcpu_create): the local APIC
        belongs to the hardware; KVM_GET/SET_LAPIC are EINVAL (kvm_vcpu_ioctl_get_lapic /
        _set_lapic)."""
        return False

    def msr_allowed(self, vcpu, index, write, data):
        """A host-initiated KVM_GET_MSRS/KVM_SET_MSRS of MSR ``index`` (``data``: the value
        to write, 0 for a read) reaches the vendor's get_msr/set_msr (TDX:
        tdx_get_msr/tdx_set_msr refuse what the TDX module owns). False refuses it: the loop stops there, as for any MSR KVM refuses. Called once
        per MSR, before kmock's own rules, only when a VM type overrides it."""
        return True

    def capabilities(self):
        """VM-level KVM_CHECK_EXTENSION overrides for this type: {cap: value}."""
        return {}

    def access_is_private(self, vm, gfn, requested):
        """Whether a guest access to ``gfn`` is a private access (fault->is_private).

        ``requested`` is what the guest script asked for (True/False, or what
        ``gpa_alias`` said), or None to let the VM type decide. The default (and
        SW_PROTECTED) follows the page's memory attribute.
        """
        if requested is not None:
            return requested
        return vm.gfn_is_private(gfn)

    # --- dispatch (read once per Kernel) ----------------------------------------------------

    def ioctls(self, kernel, file_type):
        """{request: handler(file, arg)} for ``file_type`` ("vm", "vcpu", "gmem")."""
        return {}

    def mem_enc_ops(self, kernel, file_type):
        """KVM_MEMORY_ENCRYPT_OP sub-commands: {id: handler(file, cmd, arg)} for "vm"
        or "vcpu". ``cmd`` is the decoded ``mem_enc_cmd``; the handler writes back with
        kmock.kernel_util.copy_to_user(arg, cmd) as the kernel does."""
        return {}

    def mem_enc_check(self, file, cmd):
        """Checks before the sub-command is looked up (raise OSError to refuse)."""

    # --- lifecycle ---------------------------------------------------------------------------

    def vm_init(self, vm):
        """KVM_CREATE_VM, before the fd exists: set ``vm.arch``; raise OSError to refuse."""

    def vm_destroy(self, vm):
        """The VM's last reference went (kvm_destroy_vm), after its memslots were freed."""

    def vcpu_create(self, vcpu):
        """KVM_CREATE_VCPU, before the fd exists: set ``vcpu.arch``; raise OSError to refuse."""

    def max_vcpus(self, vm):
        """kvm->max_vcpus: how many vCPUs KVM_CREATE_VCPU creates before EINVAL, and what
        KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPUS) on the VM fd answers. KVM_MAX_VCPUS (the
        profile's) unless the VM type lowers it when the VM is created."""
        return vm.kernel.profile.max_vcpus

    def memslot_prepare(self, vm, old, new, change):
        """kvm_arch_prepare_memory_region: ``change`` is "create", "move", "flags" or
        "delete" (``new`` is None); raise OSError to refuse. Runs under slots_lock."""

    def memslot_commit(self, vm, old, new, change):
        """kvm_arch_commit_memory_region, after the change is visible."""

    def run_enter(self, vcpu):
        """KVM_RUN, after the pending exit was completed, before the guest runs. Return
        an int to end KVM_RUN there (after writing an exit into ``vcpu.run``)."""
        return None

    def run_exit(self, vcpu, result):
        """KVM_RUN is returning ``result`` (0, or the OSError about to be raised)."""

    # --- memory ------------------------------------------------------------------------------

    def gmem_create(self, vm, size, flags):
        """KVM_CREATE_GUEST_MEMFD after the generic checks; raise OSError to refuse."""

    def gmem_veto(self, vm, event):
        """Refuse an invalidation of this VM's guest_memfd (a kmock.notifier event):
        return an errno, or None. Nothing has changed yet."""
        return None

    def gmem_invalidate(self, vm, event):
        """The architecture's step of an invalidation (after the checks, before the store).
        ``event.reason`` says why; must not fail."""

    def gmem_make_shared(self, vm, inode, start, end, pfn):
        """kvm_arch_gmem_make_shared: allocated pages [start, end) (frames from ``pfn``)
        become shared."""

    def gmem_make_private(self, vm, inode, start, end, pfn):
        """kvm_arch_gmem_make_private: the guest's first private use of pages
        [start, end) (frames from ``pfn``), from the fault path (under mmu_lock). May
        raise OSError (``index``: the page that failed, else ``start``): the pages from
        there stay unprepared and the guest's fault fails, KVM_RUN returning that errno
        with a KVM_EXIT_MEMORY_FAULT (kvm_mmu_faultin_pfn_private)."""

    def stage2_map(self, vm, gfn, pfn, npages, private):
        """Stage-2 now maps gfns [gfn, gfn + npages) to frames from ``pfn``. Raising
        OSError fails the fault (KVM_RUN or KVM_PRE_FAULT_MEMORY returns the errno): the
        core removes the new mapping without calling ``stage2_zap``, so the VM type undoes
        whatever it did of the mapping before it raises."""

    def stage2_zap(self, vm, runs):
        """Stage-2 dropped ``runs``: (gfn, pfn, npages, private, writable) tuples."""

    # --- addresses -----------------------------------------------------------------------------

    def gpa_alias(self, vm, gpa):
        """(canonical gpa, private) for a guest access at ``gpa``: private is True/False
        when an alias bit decides the kind (TDX's shared bit, CCA's top IPA bit), else
        None."""
        return gpa, None

    def guest_access(self, vcpu, action, segments):
        """A guest memory access (``action``: a kmock.kvm.guest Read or Write) resolved
        to ``segments`` (kmock.kvm.stage2.Segment, mapped in stage-2, nothing copied
        yet), under mmu_lock. Return None to let it copy, or kmock.kvm.guest.EXIT
        after writing an exit into ``vcpu.run``: the hardware refused the access (an
        RMP #VC, a #VE ...); the action does not retire. May raise
        kmock.kvm.stage2.MemoryFault, or OSError(EIO) after ``vm.kill(...)`` (the
        hardware killed the guest). Called once per access (segments are runs), only
        when a VM type overrides it."""
        return None

    def guest_access_early(self, vcpu, start, end, private, write):
        """A guest access to canonical gpas [start, end) of kind ``private`` (after
        ``gpa_alias``), before KVM's fault path: what a stage-2 the hardware owns does
        with it first, before KVM ever sees a fault (CCA's RTT, walked by the RMM: an
        SEA for RIPAS EMPTY, an abort for DESTROYED). ``guest_access`` is the check
        after KVM resolved the access.

        Return None to let the access go on, or a string: the hardware injected an
        abort into the guest and the action completes without touching memory
        (``action.aborted`` is the string). Raise OSError to end KVM_RUN (after
        writing an exit into ``vcpu.run``); the action is retried on the next KVM_RUN.
        Called once per access, only when a VM type overrides it."""
        return None

    # --- host and devices ------------------------------------------------------------------------

    def host_access(self, vm, inode, start, end, write):
        """A host access through a mapping to guest_memfd pages [start, end) that the
        page state allows: return an explanation to refuse it as kmock.SigBus (recorded
        as a violation; e.g. an RMP #PF on a guest-owned page), or None. Called only
        when a VM type overrides it."""
        return None

    def dma_access(self, vm, inode, start, end, write):
        """A device DMA through an IOMMU entry reaches guest_memfd pages [start, end):
        return an explanation to refuse it as kmock.DmaFault (recorded; e.g. the RMP
        blocks DMA to an assigned page, an SMMU granule protection fault), or None.
        Called only when a VM type overrides it."""
        return None

    def explain_host_fault(self, vm, inode, index):
        """A host access to guest_memfd page ``index`` faulted: return an explanation to
        record as a violation (an RMP #PF, a granule protection fault ...), or None."""
        return None

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

