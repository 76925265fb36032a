"""The SEV-family VM types of the snp platform: KVM_X86_SEV_VM (2), KVM_X86_SEV_ES_VM (3)
and KVM_X86_SNP_VM (4), and what the hardware does to an SNP VM's memory.

Memory (arch/x86/kvm/svm/sev.c): a guest_memfd page's first private use runs
sev_gmem_prepare (``gmem_make_private``: the frame becomes guest-owned, not validated);
a page leaving guest_memfd runs sev_gmem_invalidate (``gmem_invalidate`` on punch and
release, ``gmem_make_shared`` on an in-place to-shared conversion: PSMASH a partial 2M
entry, make it shared, Validated lost). The RMP then judges every access: host writes
(``host_access``: RMP #PF -> SIGBUS), device DMA (``dma_access``: IOMMU RMP_FAULT), guest
C=1 accesses (``guest_access``: #VC PAGE_NOT_VALIDATED -> the guest terminates) and guest
C=0 writes (NPF). Conversions keep IOMMU entries: each DMA is checked against the RMP.
"""

import errno

from kmock.errors import oserror
from kmock.kvm.guest import EXIT
from kmock.kvm.stage2 import MemoryFault
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from . import launch, svm_ops
from .guest import SnpGuest, terminate_exit
from .msrs import sev_es_prevent_msr_access
from .state import SevInfo, VcpuInfo

PAGE_SHIFT = 12


class SevFamilyVm(VmType):
    arch = "x86"
    platforms = ("snp",)
    mem_enc_cmd = S.kvm_sev_cmd
    mem_enc_unknown = errno.EINVAL
    es = False
    snp = False
    #: svm_vm_init: has_protected_state for KVM_X86_SEV_ES_VM and KVM_X86_SNP_VM
    has_protected_state = False

    def guest_state_protected(self, vcpu):
        """vcpu->arch.guest_state_protected: set when the VMSA was encrypted (SNP:
        snp_launch_update_vmsa, run by SNP_LAUNCH_FINISH; SEV-ES: LAUNCH_UPDATE_VMSA, not
        modelled). Then KVM_GET/SET_REGS, SREGS, XCRS, DEBUGREGS are EINVAL."""
        return vcpu.arch.guest_state_protected

    def guest_tsc_protected(self, vcpu):
        """sev_vcpu_create: guest_tsc_protected = snp_is_secure_tsc_enabled (SECURE_TSC in
        the VM's vmsa_features, 6.18)."""
        return self.snp and bool(vcpu.vm.arch.vmsa_features & S.SVM_SEV_FEAT_SECURE_TSC)

    def fpu_confidential(self, vcpu):
        """Only SEV-ES's __sev_launch_update_vmsa marks the fpstate confidential; SNP's
        snp_launch_update_vmsa does not, so an SNP vCPU's FPU/XSAVE ioctls keep working
        on KVM's (unused) copy."""
        return self.es and not self.snp and vcpu.arch.guest_state_protected

    def msr_allowed(self, vcpu, index, write, data):
        """svm_get_msr / svm_set_msr: sev_es_prevent_msr_access -> -EINVAL (these types
        have protected state): the MSRs the VMSA holds (kmock_snp.msrs)."""
        return not (self.es and sev_es_prevent_msr_access(vcpu, index))

    def vm_init(self, vm):
        vm.arch = SevInfo(vm, self.es, self.snp)

    def vm_destroy(self, vm):
        sev = vm.arch
        m = sev.machine
        with m.lock:
            for pfn in sev.vmsa_pfn.values():  # sev_free_vcpu: the VMSA goes back shared
                rc, _ = m.rmp.kvm_rmp_make_shared(pfn, 1)
                if rc:
                    launch.leak(vm, pfn, 1, "RMPUPDATE refused to make a VMSA shared", kill=False)
            if sev.asid:
                m.put_asid(sev.asid, sev.es)
                sev.asid = 0

    def vcpu_create(self, vcpu):
        vcpu.arch = VcpuInfo()

    def ioctls(self, kernel, file_type):
        if file_type == "vm":
            return svm_ops.vm_ioctls()  # the table every VM of the platform has
        if file_type == "vcpu":
            return {K.KVM_MEMORY_ENCRYPT_OP: _vcpu_mem_enc}  # SVM has no vcpu_mem_enc_ioctl
        return {}

    def mem_enc_ops(self, kernel, file_type):
        return launch.mem_enc_ops() if file_type == "vm" else {}

    def mem_enc_check(self, file, cmd):
        launch.mem_enc_check(file, cmd)

    def run_enter(self, vcpu):
        if vcpu.vm.arch.need_init:
            raise oserror(errno.EINVAL)  # svm_vcpu_pre_run
        if self.snp and not vcpu.arch.guest_state_protected:
            return _vmrun_invalid_vmsa(vcpu)
        if vcpu.arch.terminated:
            # a Linux guest halts forever after its termination request
            vcpu.run.exit_reason = K.KVM_EXIT_HLT
            return 0
        return None


#: SVM_EXIT_ERR (-1) as svm_handle_exit copies it from the u32 vmcb exit_code
SVM_EXIT_ERR = 0xFFFFFFFF


def _vmrun_invalid_vmsa(vcpu):
    """An SNP vCPU whose VMSA SNP_LAUNCH_FINISH never measured (KVM_RUN before FINISH, or
    a vCPU created after it: 6.18's sev_vcpu_create still gives it a KVM page, which
    pre_sev_run accepts): VMRUN refuses a VMSA that is not a guest-owned VMSA page of the
    guest's ASID and exits with VMEXIT_INVALID [U: APM, VMRUN's SNP checks];
    svm_handle_exit turns SVM_EXIT_ERR into KVM_EXIT_FAIL_ENTRY, KVM_RUN returns 0."""
    vm = vcpu.vm
    vm.kernel.violations.record(
        "vmrun_failed", f"KVM_RUN of SNP vCPU {vcpu.id}, whose VMSA SNP_LAUNCH_FINISH did not "
        f"encrypt: VMRUN refuses a VMSA page that is not the guest's (VMEXIT_INVALID); "
        f"KVM_EXIT_FAIL_ENTRY", vm=vm, vcpu=vcpu.id)
    run = vcpu.run
    run.exit_reason = K.KVM_EXIT_FAIL_ENTRY
    fe = run.fail_entry
    fe.hardware_entry_failure_reason = SVM_EXIT_ERR
    fe.cpu = 0
    return 0


def _vcpu_mem_enc(f, arg):
    f.vm.check_caller()
    raise oserror(errno.ENOTTY)


class SevVm(SevFamilyVm):
    type = K.KVM_X86_SEV_VM
    name = "KVM_X86_SEV_VM"


class SevEsVm(SevFamilyVm):
    type = K.KVM_X86_SEV_ES_VM
    name = "KVM_X86_SEV_ES_VM"
    es = True
    has_protected_state = True


class SnpVm(SevFamilyVm):
    type = K.KVM_X86_SNP_VM
    name = "KVM_X86_SNP_VM"
    es = True
    snp = True
    has_protected_state = True
    has_private_mem = True
    guest_actions = {"snp": SnpGuest}
    #: conversions keep IOMMU entries; the IOMMU checks each DMA against the RMP
    iommu_conversion_policy = "keep"

    def pre_fault_allowed(self, vm):
        return vm.arch.pre_fault_allowed  # set by SNP_LAUNCH_FINISH

    # --- memory -------------------------------------------------------------------------

    def gmem_make_private(self, vm, inode, start, end, pfn):
        """sev_gmem_prepare on the guest's first private use of pages [start, end)."""
        slot = inode.slot_at(start)
        if slot is None:
            return
        gfn = slot.base_gfn + start - slot.gmem_pgoff
        max_order = 9 if inode.folio_pages >= 512 else 0
        m = vm.arch.machine
        lock = m.lock
        lock.acquire()
        try:
            # sev_gmem_prepare: an RMPUPDATE that fails is -EINVAL whatever the instruction
            # returned (arch/x86/kvm/svm/sev.c, 6.11-6.18); one failure point per call
            faults = m.faults  # (armed first: no call while no fault is armed)
            if faults.armed and faults.should_fail("snp.rmpupdate", errno.EINVAL):
                raise oserror(errno.EINVAL)
            m.rmp.gmem_prepare_range(pfn, end - start, gfn, vm.arch.asid, max_order)
        finally:
            lock.release()

    def gmem_invalidate(self, vm, event):
        if event.reason in ("punch_hole", "release"):
            inode = event.inode
            what = ("fallocate(PUNCH_HOLE)" if event.reason == "punch_hole" else
                    "the last close of the guest_memfd")
            self._make_shared(vm, inode, event.start, event.end, what)

    def gmem_make_shared(self, vm, inode, start, end, pfn):
        self._make_shared(vm, inode, start, end, "an in-place conversion to shared")

    def _make_shared(self, vm, inode, start, end, what):
        """sev_gmem_invalidate over pages [start, end): failures only WARN (the frames stay
        assigned): recorded."""
        m = vm.arch.machine
        base = inode.pfn_base  # (inode.pfn(i) is pfn_base + i: two calls less per punch)
        lo, hi = base + start, base + end
        lock = m.lock
        lock.acquire()
        try:
            if m.rmp.find_assigned(lo, hi - lo) == -1:
                return
            failures = m.rmp.gmem_invalidate(lo, hi)
            m.note_lost(lo, hi, what, start, end)
        finally:
            lock.release()
        for s, e, op, code in failures:
            vm.kernel.violations.record(
                "rmp_invalidate_failed",
                f"sev_gmem_invalidate: {op.upper()} failed ({code}) on frames [{s:#x}, {e:#x}) "
                f"during {what}; they go back to the host still assigned", vm=vm, pfn=s,
                npages=e - s, code=code)

    # --- accesses ------------------------------------------------------------------------

    def host_access(self, vm, inode, start, end, write):
        if not write:
            return None
        m = vm.arch.machine
        fault = m.rmp.host_write(inode.pfn(start), end - start)
        if fault is None:
            return None
        return f"RMP #PF (error code {fault.code:#x}): {fault.reason}; {fault.entry}"

    def dma_access(self, vm, inode, start, end, write):
        m = vm.arch.machine
        fault = m.rmp.dma(inode.pfn(start), end - start, write)
        if fault is None:
            return None
        return f"IOMMU event RMP_FAULT ({fault.code:#x}): {fault.reason}; {fault.entry}"

    def explain_host_fault(self, vm, inode, index):
        if not inode.is_private(index):
            return None
        entry = vm.arch.machine.rmp.entry(inode.pfn(index))
        return f"guest_memfd page {index:#x} is private; {entry}"

    def guest_access(self, vcpu, action, segments):
        with vcpu.vm.arch.machine.lock:
            return self._guest_access(vcpu, action, segments)

    def _guest_access(self, vcpu, action, segments):
        vm = vcpu.vm
        sev = vm.arch
        rmp = sev.machine.rmp
        for seg in segments:
            if seg.kind != "gmem":
                continue
            mapped = vm.stage2_lookup(seg.gfn)
            if mapped is None:
                continue
            pfn, private, _ = mapped
            if private:
                # stage-2 maps guest_memfd at 4K: an access under a 2M RMP entry takes
                # NPF(SIZEM), which sev_handle_rmp_fault resolves by PSMASH + zap of the 2M
                # range; the guest's retry faults the same 4K mappings back, so the zap
                # leaves nothing to see here
                rmp.smash_range(pfn, seg.npages)
                fault = rmp.guest_private_range(pfn, seg.npages, seg.gfn, sev.asid, action.write)
            elif action.write:
                fault = _first_shared_write_fault(rmp, pfn, seg)
            else:
                fault = None
            if fault is None:
                continue
            gpa = (seg.gfn << PAGE_SHIFT) + ((fault.pfn - pfn) << PAGE_SHIFT)
            if fault.kind == "vc":
                return self._not_validated(vcpu, action, gpa, fault)
            vm.kernel.violations.record(
                "rmp_npf", f"nested page fault (error code {fault.code:#x}): {fault.reason}; "
                f"{fault.entry}", vm=vm, vcpu=vcpu.id, gpa=gpa, entry=str(fault.entry),
                error_code=fault.code)
            raise MemoryFault(errno.EFAULT, gpa >> PAGE_SHIFT, bool(private))
        return None

    def _not_validated(self, vcpu, action, gpa, fault):
        vm = vcpu.vm
        by = vm.arch.machine.lost_by(fault.pfn)
        why = f"; Validated was lost by {by}" if by else ""
        vm.kernel.violations.record(
            "rmp_not_validated",
            f"#VC PAGE_NOT_VALIDATED ({S.VC_PAGE_NOT_VALIDATED:#x}): guest private access to "
            f"gpa {gpa:#x}, {fault.entry}{why}; the guest requests termination",
            vm=vm, vcpu=vcpu.id, gpa=gpa, entry=str(fault.entry), invalidated_by=by,
            vc_code=S.VC_PAGE_NOT_VALIDATED)
        action.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
        terminate_exit(vcpu, S.SEV_TERM_SET_GEN, 0)
        return EXIT

    def run_exit(self, vcpu, result):
        """A C=0 write that KVM turned into a shared memory-fault exit: when the frame
        behind the gfn is guest-assigned, the hardware's NPF had the RMP bit: recorded."""
        if not isinstance(result, MemoryFault) or result.private:
            return
        action = vcpu.guest.current
        if action is None or not getattr(action, "write", False):
            return
        vm = vcpu.vm
        slot = vm.lookup_memslot(result.gfn)
        if slot is None or slot.gmem_file is None:
            return
        inode = slot.gmem_file.inode
        index = result.gfn - slot.base_gfn + slot.gmem_pgoff
        entry = vm.arch.machine.rmp.entry(inode.pfn(index))
        if entry.assigned:
            vm.kernel.violations.record(
                "rmp_npf", f"guest C=0 write to gpa {result.gpa:#x} of a {entry.owner}-owned page "
                f"(NPF, RMP bit); KVM exits with KVM_EXIT_MEMORY_FAULT (shared); {entry}",
                vm=vm, vcpu=vcpu.id, gpa=result.gpa, entry=str(entry),
                error_code=S.PFERR_GUEST_RMP_MASK | 2)


def _first_shared_write_fault(rmp, pfn, seg):
    bad = rmp.find_assigned(pfn, seg.npages)
    if bad == -1:
        return None
    return rmp.guest_shared_access(bad, (seg.gfn + bad - pfn) << PAGE_SHIFT, True)


def vm_types(kernel):
    """The types this host offers: SNP, plus SEV and SEV-ES as the host reports them."""
    types = [SnpVm()]
    legacy = kernel.setting("sev_vm_types")
    if K.KVM_X86_SEV_VM in legacy:
        types.append(SevVm())
    if K.KVM_X86_SEV_ES_VM in legacy:
        types.append(SevEsVm())
    return types
