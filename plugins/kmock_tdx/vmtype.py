"""KVM_X86_TDX_VM (type 5): what a TD is to the core (kmock.kvm.vmtype.VmType)."""

import errno

from kmock.errors import oserror
from kmock.kvm import x86_vm
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T
from kmock.uapi import x86 as X

from . import launch, msr, vcpu_events
from .vcpu_events import inject_pending_nmi
from .guest import TdxGuest
from .td import INITIALIZED, RUNNABLE, Td, TdxVcpu, zero_pages



#: invalidations a TDX Connect TD refuses while a page is pinned: the host's own requests.
#: The release of the guest_memfd (TD teardown) and memory failure cannot be refused.
_VETOABLE = ("convert_shared", "vm_attributes", "punch_hole")


class TdxVm(VmType):
    type = K.KVM_X86_TDX_VM
    name = "KVM_X86_TDX_VM"
    arch = "x86"
    platforms = ("tdx",)
    has_private_mem = True
    #: tdx_vm_init: the TDX module owns the EOI bitmap, so a full in-kernel irqchip is
    #: refused (KVM_CREATE_IRQCHIP: ENOTTY, arch/x86/kvm/x86.c, 6.18)
    has_protected_eoi = True
    #: tdx_vm_init sets kvm->arch.has_protected_state: the x86 state ioctls of a TD vCPU
    #: refuse with EINVAL (see guest_state_protected, fpu_confidential)
    has_protected_state = True
    mem_enc_cmd = T.kvm_tdx_cmd
    mem_enc_unknown = errno.EINVAL  # tdx_vm_ioctl's default (TERMINATE_VM is not upstream)
    guest_actions = {"tdx": TdxGuest}
    #: the IOMMU must not keep translating a page that changed kind (shared KeyID DMA into
    #: private memory poisons it): zap on conversion
    iommu_conversion_policy = "zap"

    # --- dispatch -----------------------------------------------------------------------------

    def mem_enc_ops(self, kernel, file_type):
        return launch.vm_ops() if file_type == "vm" else {}

    def mem_enc_check(self, file, cmd):
        launch.check_cmd(file, cmd)

    def ioctls(self, kernel, file_type):
        if file_type == "vcpu":
            return {K.KVM_MEMORY_ENCRYPT_OP: launch.vcpu_mem_enc_op,
                    T.KVM_NMI: vcpu_events.nmi,
                    X.KVM_GET_MSRS: msr.get_msrs,
                    X.KVM_SET_MP_STATE: vcpu_events.set_mp_state,
                    X.KVM_GET_VCPU_EVENTS: vcpu_events.get_vcpu_events,
                    X.KVM_SET_VCPU_EVENTS: vcpu_events.set_vcpu_events}
        return {}

    def pre_fault_allowed(self, vm):
        """kvm->arch.pre_fault_allowed: set by a successful KVM_TDX_FINALIZE_VM."""
        return vm.arch.state == RUNNABLE

    # --- lifecycle ----------------------------------------------------------------------------

    def vm_init(self, vm):
        vm.arch = Td(vm)

    def max_vcpus(self, vm):
        """tdx_vm_init: kvm->max_vcpus = min(KVM_MAX_VCPUS, num_present_cpus()), so that the
        TD's MAX_VCPUS (TD_PARAMS, at INIT_VM) fits the machine. The mocked machine's
        present CPUs are its online CPUs: the profile's KVM_CAP_NR_VCPUS [kmock]."""
        nr = vm.kernel.caps.get(K.KVM_CAP_NR_VCPUS)
        limit = vm.kernel.profile.max_vcpus
        return limit if nr is None else min(limit, nr)

    def vcpu_create(self, vcpu):
        """tdx_vcpu_create: after INIT_VM and before FINALIZE (-EIO), split irqchip (-EINVAL)."""
        td = vcpu.vm.arch
        if td.state != INITIALIZED:
            raise oserror(errno.EIO)
        if x86_vm.state(vcpu.vm).irqchip_mode != "split":
            raise oserror(errno.EINVAL)  # KVM_CAP_SPLIT_IRQCHIP first (kmock.kvm.x86_vm)
        vcpu.arch = TdxVcpu()

    def guest_state_protected(self, vcpu):
        """tdx_vcpu_create: guest_state_protected unless the TD's attributes (INIT_VM) have
        DEBUG, from creation on: KVM_GET/SET_REGS, SREGS, XCRS, DEBUGREGS are EINVAL."""
        return not vcpu.vm.arch.attributes & T.TDX_TD_ATTR_DEBUG

    def fpu_confidential(self, vcpu):
        """tdx_vcpu_create: fpstate_set_confidential for every TD vCPU (DEBUG or not):
        KVM_GET/SET_FPU and KVM_GET/SET_XSAVE(2) are EINVAL."""
        return True

    def guest_tsc_protected(self, vcpu):
        """tdx_vcpu_create sets guest_tsc_protected (the TDX module owns the TSC offset and
        multiplier): the vCPU's KVM_SET_TSC_KHZ is EINVAL; the VM ioctl sets the rate."""
        return True

    def guest_apic_protected(self, vcpu):
        """tdx_vcpu_create: vcpu->arch.apic->guest_apic_protected for every TD vCPU: the TDX
        module virtualizes the APIC (KVM_GET/SET_LAPIC are EINVAL)."""
        return True

    def msr_allowed(self, vcpu, index, write, data):
        """tdx_get_msr/tdx_set_msr: only the MSRs KVM emulates for a TD (kmock_tdx.msr)."""
        return msr.allowed(index, write, data)

    def memslot_prepare(self, vm, old, new, change):
        """A memslot must lie below the shared bit (kvm_mmu_max_gfn() of a TD) [U]."""
        td = vm.arch
        if change in ("create", "move") and td.sept is not None and new.end_gfn > td.sept.npages:
            raise oserror(errno.EINVAL)
        if change in ("delete", "move"):
            td.reason = "memslot"

    def memslot_commit(self, vm, old, new, change):
        vm.arch.reason = None

    def run_enter(self, vcpu):
        """tdx_vcpu_pre_run: the vCPU must be initialised (KVM_TDX_INIT_VCPU) and the TD
        RUNNABLE, else -EINVAL. Pending events are injected as the guest enters."""
        return tdx_vcpu_pre_run(vcpu)

    def guest_access(self, vcpu, action, segments):
        """The TDX module's check of a guest access KVM resolved: a private access to a page
        the TD did not accept kills the TD (raises TdKilled: KVM_RUN fails with EIO)."""
        td = vcpu.vm.arch
        private = action.private
        if private is None:
            private = not action.gpa & td.shared_bit
        if private:
            for seg in segments:
                if seg.kind == "gmem":
                    td.guest_access(vcpu.id, seg.gfn, seg.npages)
        return None

    # --- memory -------------------------------------------------------------------------------

    def gmem_veto(self, vm, event):
        """TDX Connect: a page the TD accepted and did not release is TD-DMA pinned; the
        module would refuse its RANGE.BLOCK, so the unmap is refused before anything is
        unmapped: (EAGAIN, that page). kmock's choice, see docs/arch/tdx.md."""
        return tdx_gmem_veto(vm, event)

    def gmem_invalidate(self, vm, event):
        """The arch step of an invalidation: the S-EPT leaves of the range went with the
        mirror's zap (stage2_zap, in invalidate_begin); the host call is over."""
        vm.arch.reason = None

    def gmem_make_shared(self, vm, inode, start, end, pfn):
        """KVM cleared each removed private page (tdx_clear_page, MOVDIR64B): the host sees
        zeros in pages converted to shared."""
        zero_pages(inode, start, end - start)

    def stage2_map(self, vm, gfn, pfn, npages, private):
        if private:
            tdx_sept_map(vm, gfn, pfn, npages)

    def stage2_zap(self, vm, runs):
        tdx_sept_zap(vm, runs)

    # --- addresses ----------------------------------------------------------------------------

    def gpa_alias(self, vm, gpa):
        """The shared bit (47 or 51) names the kind of a guest access, and is not part of the
        memslot address (gfn_direct_bits)."""
        bit = vm.arch.shared_bit
        if not bit:
            return gpa, None
        return gpa & ~bit, not gpa & bit

    # --- host and devices ---------------------------------------------------------------------

    def explain_host_fault(self, vm, inode, index):
        return ("the page is TD-private memory: guest_memfd refuses the host fault (SIGBUS). "
                "A host write there with the host's KeyID would break the TDX memory integrity "
                "of the line (machine-check hazard: the TD's next read of it takes a #MC; on "
                "parts with the partial-write erratum the host takes it, "
                "Documentation/arch/x86/tdx.rst)")

    def host_access(self, vm, inode, start, end, write):
        """A host access through a mapping to guest_memfd pages the attributes call shared,
        but that the TD's S-EPT still maps (a zap the module refused, KVM_BUG_ON): the
        host's KeyID would hit TD-private memory. kmock refuses it (SigBus) and records the
        machine-check hazard."""
        td = vm.arch
        if td.sept is None:
            return None
        with td.lock:
            for gs, ge, index in td.gfn_ranges(inode, start, end):
                leaves = td.sept.leaves(gs, min(ge, td.sept.npages) - gs) if gs < td.sept.npages \
                    else []
                if leaves:
                    page = index + leaves[0][0] - gs
                    return (f"host {'write' if write else 'read'} of guest_memfd page {page}, "
                            f"which the TD's S-EPT still maps privately: with the host's KeyID "
                            f"a write breaks the line's TDX integrity (machine-check hazard: the "
                            f"TD's next read of it takes a #MC) and a read gets no plaintext")
        return None

    def dma_access(self, vm, inode, start, end, write):
        """A device DMA into TD-private memory: without a TDISP-bound (trusted) device the
        IOMMU uses a shared KeyID, so a write poisons the line (machine-check hazard) and a
        read returns no plaintext; kmock refuses it (DmaFault) and records it."""
        page = _first_td_private(vm, inode, start, end)
        if page is None:
            return None
        return (f"device DMA {'write' if write else 'read'} into TD-private memory (guest_memfd "
                f"page {page}): an untrusted device uses a shared KeyID, so a write poisons "
                f"the cacheline's integrity (machine-check hazard when the TD reads it) and a "
                f"read returns no plaintext")

    def judge_stale_dma(self, entry_private, page_private, write):
        return "machine_check" if page_private else "allow"


# --- the hooks' bodies, as functions with typed locals when compiled (vmtype.pxd) ---------


def tdx_vcpu_pre_run(vcpu):
    """TdxVm.run_enter."""
    vm = vcpu.vm
    td = vm.arch
    tv = vcpu.arch
    if td.state != RUNNABLE or not tv.initialized:
        raise oserror(errno.EINVAL)
    tv.pending_event = False
    inject_pending_nmi(vcpu)
    return None


def tdx_sept_map(vm, gfn, pfn, npages):
    """TdxVm.stage2_map of a private run."""
    td = vm.arch
    td.sept_map(gfn, pfn, npages)


def tdx_sept_zap(vm, runs):
    """TdxVm.stage2_zap."""
    td = vm.arch
    if td.sept is None:
        return
    for gfn, _pfn, n, private, _w in runs:
        if private:
            td.sept_remove(gfn, gfn + n)


def tdx_gmem_veto(vm, event):
    """TdxVm.gmem_veto."""
    td = vm.arch
    if event.reason == "vm_attributes" and event.vm is not vm:
        return None
    td.reason = event.reason
    if not td.connect or not td.connect_precheck or td.state != RUNNABLE or \
            event.to_private is True or \
            event.reason not in _VETOABLE:
        return None
    for gs, ge, index in td.gfn_ranges(event.inode, event.start, event.end):
        with td.lock:
            g = td.first_pinned([(gs, ge)])
        if g is not None:
            return errno.EAGAIN, index + (g - gs)
    return None


def _first_private_page(inode, start, end):
    for s, _e, private in inode.private_runs(start, end):
        if private:
            return s
    return None


def _first_td_private(vm, inode, start, end):
    """The first guest_memfd page of [start, end) that is TD-private memory, or None:
    where this TD's memslot binds it, private by the attributes or mapped by the S-EPT;
    elsewhere, by the guest_memfd's attribute. By runs, in page order."""
    td = vm.arch
    sept = td.sept
    pos = start
    for gs, ge, index in sorted(td.gfn_ranges(inode, start, end), key=lambda r: r[2]):
        if pos < index:
            p = _first_private_page(inode, pos, index)
            if p is not None:
                return p
        hits = []
        g = vm.first_private_gfn(gs, ge)
        if g is not None:
            hits.append(g)
        if sept is not None and gs < sept.npages:
            leaves = sept.leaves(gs, min(ge, sept.npages) - gs)
            if leaves:
                hits.append(leaves[0][0])
        if hits:
            return index + min(hits) - gs
        pos = index + ge - gs
    return _first_private_page(inode, pos, end) if pos < end else None
