"""KVM_MEMORY_ENCRYPT_OP on SEV-family VMs: KVM_SEV_INIT2 and the SNP launch commands.

arch/x86/kvm/svm/sev.c (6.18): sev_mem_enc_ioctl, sev_guest_init2 / __sev_guest_init,
snp_launch_start, snp_launch_update + sev_gmem_post_populate, snp_launch_finish. The check
order of each, and the sources, are in docs/arch/snp.md §2. Sub-commands are registered
through the VM type's KVM_MEMORY_ENCRYPT_OP registry (kmock.kvm.mem_enc); each handler
copies the whole kvm_sev_cmd back whatever its result, as sev_mem_enc_ioctl does.
"""

import errno
import weakref

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from kmock.kvm.populate import gmem_populate
from kmock.kvm.stage2 import probe_user
from kmock.kvm.x86_state import state as x86_state
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from .sevdev import is_sev_file
from .state import SevInfo, sev_of

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
SNP_FIRST_ID = S.KVM_SEV_SNP_LAUNCH_START  # ids below are the legacy SEV commands
PAGE_TYPES = (S.KVM_SEV_SNP_PAGE_TYPE_NORMAL, S.KVM_SEV_SNP_PAGE_TYPE_ZERO,
              S.KVM_SEV_SNP_PAGE_TYPE_UNMEASURED, S.KVM_SEV_SNP_PAGE_TYPE_SECRETS,
              S.KVM_SEV_SNP_PAGE_TYPE_CPUID)


class FwError(OSError):
    """A failed PSP command: EIO (or the errno of the fd check) plus the firmware status."""

    def __init__(self, code, status=0):
        super().__init__(code, errno.errorcode.get(code, str(code)))
        self.status = status


def _copy_back(handler):
    """sev_mem_enc_ioctl: the whole kvm_sev_cmd goes back to the caller, result or not."""

    def op(f, cmd, arg):
        try:
            return handler(f, cmd, arg)
        finally:
            copy_to_user(arg, cmd)

    return op


def _fw(sev, kernel, fd, command):
    """A firmware command issued through ``fd`` (the PSP's errors: EBADF, EIO + status)."""
    if not is_sev_file(kernel, fd):
        raise FwError(errno.EBADF)
    code = sev.machine.fw_injected(command)
    if code:
        raise FwError(errno.EIO, code)


def _data(cmd, ctype):
    return copy_from_user(cmd.data, ctype)


# --- KVM_SEV_INIT2 ---------------------------------------------------------------------


def sev_init2(f, cmd, arg):
    vm = f.vm
    sev = sev_of(vm)
    kernel = vm.kernel
    if not sev.need_init:
        raise oserror(errno.EINVAL)
    data = _data(cmd, S.kvm_sev_init)
    with vm.slots_lock:
        if vm.vcpus:
            raise oserror(errno.EINVAL)  # kvm->created_vcpus
        if data.flags:
            raise oserror(errno.EINVAL)
        supported = supported_vmsa_features(kernel) if sev.es else 0
        if not sev.snp:  # SNP-only features (6.18: SECURE_TSC)
            supported &= ~S.SVM_SEV_FEAT_SECURE_TSC
        if data.vmsa_features & ~supported:
            raise oserror(errno.EINVAL)
        if data.ghcb_version > S.GHCB_VERSION_MAX or (not sev.es and data.ghcb_version):
            raise oserror(errno.EINVAL)
        # INIT2 defaults SEV-ES/SNP to version 2; an SNP guest needs >= 2 ("KVM: SEV:
        # Enforce minimum GHCB version requirement for SEV-SNP guests", 6.18)
        ghcb_version = data.ghcb_version or (S.GHCB_VERSION_MAX if sev.es else 0)
        if sev.snp and ghcb_version < 2:
            raise oserror(errno.EINVAL)
        if sev.active:
            raise oserror(errno.EINVAL)
        size = kernel.setting("snp_asids" if sev.es else "sev_asids")
        asid = sev.machine.take_asid(sev.es)
        if not asid:
            raise oserror(errno.ENOTTY if not size else errno.EBUSY)
        sev.asid = asid
        sev.active = True
        sev.need_init = False
        sev.vmsa_features = data.vmsa_features | (S.SVM_SEV_FEAT_SNP_ACTIVE if sev.snp else 0)
        sev.ghcb_version = ghcb_version
    return 0


def supported_vmsa_features(kernel):
    """sev_supported_vmsa_features (sev_hardware_setup, 6.18): DEBUG_SWAP when the host
    has DebugSwap and NO_NESTED_DATA_BP (setting ``snp_debug_swap``), SECURE_TSC when it
    has SNP Secure TSC ("KVM: SVM: Enable Secure TSC for SNP guests", setting
    ``snp_secure_tsc``). Also what /dev/kvm's KVM_GET_DEVICE_ATTR(KVM_X86_GRP_SEV,
    KVM_X86_SEV_VMSA_FEATURES) reports (sev_dev_get_attr)."""
    v = 0
    if kernel.setting("snp_debug_swap"):
        v |= S.SVM_SEV_FEAT_DEBUG_SWAP
    if kernel.setting("snp_secure_tsc"):
        v |= S.SVM_SEV_FEAT_SECURE_TSC
    return v


def sev_dev_get_attr(kernel, attr):
    """/dev/kvm KVM_GET_DEVICE_ATTR / KVM_HAS_DEVICE_ATTR, group KVM_X86_GRP_SEV
    (svm_x86_ops.dev_get_attr = sev_dev_get_attr, sev.c 6.18): KVM_X86_SEV_VMSA_FEATURES
    is sev_supported_vmsa_features; any other attribute ENXIO (6.18 has no
    KVM_X86_SNP_POLICY_BITS yet). QEMU reads it before KVM_SEV_INIT2."""
    if attr != S.KVM_X86_SEV_VMSA_FEATURES:
        raise oserror(errno.ENXIO)
    return supported_vmsa_features(kernel)


# --- KVM_SEV_SNP_LAUNCH_START ------------------------------------------------------------------


def snp_launch_start(f, cmd, arg):
    vm = f.vm
    sev = sev_of(vm)
    kernel = vm.kernel
    if not sev.snp_active:
        raise oserror(errno.ENOTTY)
    params = _data(cmd, S.kvm_sev_snp_launch_start)
    with sev.machine.lock:
        if sev.snp_context:
            raise oserror(errno.EINVAL)
        if params.flags:
            raise oserror(errno.EINVAL)
        policy = params.policy
        if policy & ~kernel.setting("snp_supported_policy"):
            raise oserror(errno.EINVAL)
        # only RSVD_MBO is KVM's to require: its SMT and SINGLE_SOCKET checks were removed
        # (Tom Lendacky, "KVM: SVM: Allow SNP guest policy disallow running with SMT
        # enabled" and its SINGLE_SOCKET twin, May 2025; absent from upstream sev.c before
        # 6.18): the firmware judges them (fw_policy_failure)
        if not policy & S.SNP_POLICY_MASK_RSVD_MBO:
            raise oserror(errno.EINVAL)
        # snp_context_create: SNP_GCTX_CREATE through argp->sev_fd; any failure -> ENOTTY
        try:
            _fw(sev, kernel, cmd.sev_fd, "SNP_GCTX_CREATE")
        except FwError:
            raise oserror(errno.ENOTTY) from None
        try:
            _fw(sev, kernel, cmd.sev_fd, "SNP_LAUNCH_START")
            fw_policy_failure(kernel, policy, "SNP_LAUNCH_START")
            sev.fd = cmd.sev_fd
            _fw(sev, kernel, sev.fd, "SNP_ACTIVATE")  # snp_bind_asid
            fw_policy_failure(kernel, policy, "SNP_ACTIVATE")
        except FwError as e:
            cmd.error = e.status  # the context is decommissioned: START may be retried
            raise oserror(e.errno) from None
        sev.snp_context = True
        sev.policy = policy
        sev.state = "launch"
    return 0


def fw_policy_failure(kernel, policy, command):
    """What the PSP checks of the guest policy (SEV_RET_POLICY_FAILURE -> EIO):
    SNP_LAUNCH_START refuses SMT = 0 on a host with SMT enabled (per the commit message
    that removed KVM's own check) and an ABI major.minor above the firmware's [U: SNP
    firmware ABI spec, LAUNCH_START]; SNP_ACTIVATE refuses SINGLE_SOCKET on a host with
    more than one socket (per the commit message that removed KVM's check). The host is
    the platform settings ``snp_host_smt``, ``snp_sockets`` and ``snp_fw_api``."""
    if command == "SNP_LAUNCH_START":
        smt_refused = kernel.setting("snp_host_smt") and not policy & S.SNP_POLICY_MASK_SMT
        major, minor = policy >> 8 & 0xFF, policy & 0xFF
        if smt_refused or (major, minor) > tuple(kernel.setting("snp_fw_api")):
            raise FwError(errno.EIO, S.SEV_RET_POLICY_FAILURE)
    elif policy & S.SNP_POLICY_MASK_SINGLE_SOCKET and kernel.setting("snp_sockets") > 1:
        raise FwError(errno.EIO, S.SEV_RET_POLICY_FAILURE)


# --- KVM_SEV_SNP_LAUNCH_UPDATE ---------------------------------------------------------------


def snp_launch_update(f, cmd, arg):
    vm = f.vm
    sev = sev_of(vm)
    kernel = vm.kernel
    if not sev.snp_active or not sev.snp_context:
        raise oserror(errno.EINVAL)
    params = _data(cmd, S.kvm_sev_snp_launch_update)
    if params.len & (PAGE_SIZE - 1) or params.flags or params.type not in PAGE_TYPES:
        raise oserror(errno.EINVAL)
    npages = params.len >> PAGE_SHIFT
    zero = params.type == S.KVM_SEV_SNP_PAGE_TYPE_ZERO
    with vm.slots_lock:
        slot = vm.lookup_memslot(params.gfn_start)
        if slot is None or not slot.flags & K.KVM_MEM_GUEST_MEMFD:
            raise oserror(errno.EINVAL)  # !kvm_slot_has_gmem
        if slot.gmem_file is None:
            # the guest_memfd was closed (kvm_gmem_release cleared slot->gmem.file):
            # kvm_gmem_populate's kvm_gmem_get_file is NULL -> -EFAULT, reported as EIO
            cmd.error = 0
            raise oserror(errno.EIO)
        inode = slot.gmem_file.inode
        # gmem in-place conversion (v8): no source means the page already holds its bytes
        in_place = bool(inode.in_place) and params.uaddr == 0 and \
            kernel.setting("snp_populate_in_place")
        src = None if zero or in_place else params.uaddr
        populate = _Populate(vm, sev, inode, slot, params, cmd.sev_fd, zero)
        try:
            count = gmem_populate(vm, params.gfn_start, src, npages, populate)
        except OSError:
            count = -1
    if count < 0:
        cmd.error = populate.fw_error
        raise oserror(errno.EIO)
    params.gfn_start += count
    params.len -= count << PAGE_SHIFT
    if not zero:
        params.uaddr += count << PAGE_SHIFT
    copy_to_user(cmd.data, params)
    return 0


class _Populate:
    """sev_gmem_post_populate for one LAUNCH_UPDATE: called once per run of pages."""

    def __init__(self, vm, sev, inode, slot, params, sev_fd, zero):
        self.vm = vm
        self.sev = sev
        self.inode = inode
        self.delta = slot.gmem_pgoff - slot.base_gfn
        self.params = params
        self.sev_fd = sev_fd
        self.zero = zero
        self.fw_error = 0

    def __call__(self, gfn, pfn, src, n):
        with self.sev.machine.lock:  # under the inode's invalidate lock
            self._run(gfn, pfn, src, n)

    def _run(self, gfn, pfn, src, n):
        sev, rmp = self.sev, self.sev.machine.rmp
        kernel = self.vm.kernel
        stop, err = n, 0
        # RMP entries already assigned: EEXIST
        bad = rmp.find_assigned(pfn, n)
        if bad != -1:
            stop, err = bad - pfn, errno.EEXIST
        data = b""
        if src is not None and stop:
            got = probe_user(src, stop << PAGE_SHIFT) >> PAGE_SHIFT
            if got < stop:
                stop, err = got, errno.EFAULT
            if stop:
                data = read_user_at(src, 0, stop << PAGE_SHIFT)
        # rmp_make_private(immutable) of the run's first page (kernel.faults, one check
        # per run): -EFAULT, which snp_launch_update reports as EIO with error 0
        if stop and sev.machine.faults.should_fail("snp.rmpupdate", errno.EIO):
            stop, err = 0, errno.EFAULT
        # the firmware, page by page with argp->sev_fd
        fw_at, fw_code, fw_errno = None, 0, errno.EIO
        if stop:
            if not is_sev_file(kernel, self.sev_fd):
                fw_at, fw_errno = 0, errno.EBADF
            elif sev.state != "launch":
                fw_at, fw_code = 0, S.SEV_RET_INVALID_GUEST_STATE  # guest is RUNNING
            else:
                fw_at, fw_code = sev.machine.fw_update_failure(stop)
        done = stop if fw_at is None else fw_at
        index = gfn + self.delta
        if done:
            rmp.launch_pages(pfn, done, gfn, sev.asid)
            if self.zero:
                self.inode.write(index << PAGE_SHIFT, bytes(done << PAGE_SHIFT))
            elif src is not None:
                self.inode.write(index << PAGE_SHIFT, data[:done << PAGE_SHIFT])
        if fw_at is not None:
            self._fw_failed(pfn + done, gfn + done, fw_code, fw_errno, src, done, data)
            err = fw_errno
        if err:
            e = OSError(err, errno.errorcode.get(err, str(err)))
            e.done = done
            raise e

    def _fw_failed(self, pfn, gfn, code, code_errno, src, i, data):
        """The page's firmware command failed: it had been made private (immutable); it is
        reclaimed and made shared again (leaked if that fails); a refused CPUID page is
        copied back to the VMM with the firmware's corrections."""
        sev, rmp, vm = self.sev, self.sev.machine.rmp, self.vm
        self.fw_error = code
        rmp.rmp_make_private(pfn, gfn << PAGE_SHIFT, S.RMP_PG_SIZE_4K, sev.asid, True)
        reclaim = sev.machine.fw_injected("SNP_PAGE_RECLAIM")
        if reclaim:
            # snp_page_reclaim: KVM_BUG (VM bugged) + snp_leak_pages + -EIO [C sev.c]
            rmp.snp_leak_pages(pfn, 1)
            leak(vm, pfn, 1, f"SNP_PAGE_RECLAIM failed with status {reclaim:#x}", kill=True)
        else:
            rmp.fw_page_reclaim(pfn)
            rc, _ = rmp.kvm_rmp_make_shared(pfn, 1)
            if rc:
                leak(vm, pfn, 1, "RMPUPDATE refused to make a launch page shared", kill=True)
        if self.params.type == S.KVM_SEV_SNP_PAGE_TYPE_CPUID and \
                code == S.SEV_RET_INVALID_PARAM and src is not None:
            page = sev.machine.cpuid_correction
            if page is None:
                page = data[i << PAGE_SHIFT:(i + 1) << PAGE_SHIFT] or \
                    read_user_at(src, i << PAGE_SHIFT, PAGE_SIZE)
            try:
                write_user_at(src, i << PAGE_SHIFT, bytes(page)[:PAGE_SIZE])
            except OSError:
                pass  # the kernel only logs a failed copy-back


def leak(vm, pfn, npages, why, kill):
    """snp_leak_pages (+ KVM_BUG_ON when ``kill``): record it; a bugged VM is dead."""
    kernel = vm.kernel
    v = kernel.violations.record(
        "rmp_leak", f"{why}: {npages} frame(s) from pfn {pfn:#x} leaked (never reused)"
        + ("; KVM_BUG_ON marks the VM bugged" if kill else ""),
        vm=vm, pfn=pfn, npages=npages)
    if kill:
        vm.kill(v)
    return v


# --- KVM_SEV_SNP_LAUNCH_FINISH -------------------------------------------------------------


def snp_launch_finish(f, cmd, arg):
    vm = f.vm
    sev = sev_of(vm)
    kernel = vm.kernel
    if not sev.snp_active:
        raise oserror(errno.ENOTTY)
    if not sev.snp_context:
        raise oserror(errno.EINVAL)
    params = _data(cmd, S.kvm_sev_snp_launch_finish)
    if params.flags:
        raise oserror(errno.EINVAL)
    machine = sev.machine
    with vm.slots_lock, machine.lock:
        for vcpu_id, vcpu in list(vm.vcpus.items()):  # kvm_for_each_vcpu: creation order
            sev_es_sync_vmsa(vm, vcpu)
            pfn = sev.vmsa_pfn.get(vcpu_id)
            if pfn is None:
                pfn = sev.vmsa_pfn[vcpu_id] = kernel.physmem.alloc_range(1)
            rmp = machine.rmp
            if rmp.rmp_make_private(pfn, S.INITIAL_VMSA_GPA, S.RMP_PG_SIZE_4K, sev.asid, True):
                raise oserror(errno.EFAULT)
            try:
                _fw(sev, kernel, cmd.sev_fd, "SNP_LAUNCH_UPDATE_VMSA")
                if sev.state != "launch":
                    raise FwError(errno.EIO, S.SEV_RET_INVALID_GUEST_STATE)
            except FwError as e:
                rmp.fw_page_reclaim(pfn)
                rmp.kvm_rmp_make_shared(pfn, 1)
                cmd.error = e.status
                raise oserror(e.errno) from None
            rmp.fw_launch_update(pfn, vmsa=True)
            vcpu.arch.guest_state_protected = True
        if params.id_block_en:  # (auth_key_en only counts with it)
            psp_copy_user_blob(params.id_block_uaddr, S.KVM_SEV_SNP_ID_BLOCK_SIZE)
            psp_copy_user_blob(params.id_auth_uaddr, S.KVM_SEV_SNP_ID_AUTH_SIZE)
        try:
            _fw(sev, kernel, sev.fd, "SNP_LAUNCH_FINISH")
            if sev.state != "launch":
                raise FwError(errno.EIO, S.SEV_RET_INVALID_GUEST_STATE)
        except FwError as e:
            cmd.error = e.status
            raise oserror(e.errno) from None
        sev.state = "running"
        sev.pre_fault_allowed = True
    return 0


#: DR7_FIXED_1: the only DR7 bit sev_es_sync_vmsa lets through
DR7_FIXED_1 = 0x400
#: SEV_FW_BLOB_MAX_SIZE (psp-sev.h): the largest blob psp_copy_user_blob copies
SEV_FW_BLOB_MAX_SIZE = 0x4000


def sev_es_sync_vmsa(vm, vcpu):
    """sev_es_sync_vmsa's checks before the VMSA page is written (sev.c, 6.18):
    ``vcpu->guest_debug`` (KVM_SET_GUEST_DEBUG with ENABLE) or DR7 beyond DR7_FIXED_1
    (KVM_SET_DEBUGREGS) -> EINVAL. A vCPU whose VMSA is already guest-owned (a second
    SNP_LAUNCH_FINISH) is written anyway in 6.18: the host takes an RMP #PF and oopses
    (Jethro Beekman's report, 2026: "BUG: unable to handle page fault ... RMP violation",
    RIP sev_es_sync_vmsa, 6.18.0). Platform setting ``snp_finish_twice``: "oops" (6.18)
    or "einval" (Sean Christopherson's proposed fix: -EINVAL for a protected vCPU)."""
    if vcpu.arch.guest_state_protected:
        if vm.kernel.setting("snp_finish_twice") == "einval":
            raise oserror(errno.EINVAL)
        v = vm.kernel.violations.record(
            "kernel_oops",
            f"SNP_LAUNCH_FINISH again: sev_es_sync_vmsa writes vCPU {vcpu.id}'s VMSA, which "
            f"the first FINISH made guest-owned; the host kernel takes an RMP #PF (BUG: "
            f"unable to handle page fault ... RMP violation) and oopses: the calling task "
            f"is killed and kvm->lock stays held", vm=vm, vcpu=vcpu.id)
        vm.kill(v)
        raise oserror(errno.EIO)
    st = x86_state(vcpu)
    if st.guest_debug or st.dr7 & ~DR7_FIXED_1:
        raise oserror(errno.EINVAL)


def psp_copy_user_blob(uaddr, length):
    """psp_copy_user_blob (drivers/crypto/ccp/sev-dev.c): a NULL address or length, or a
    length above SEV_FW_BLOB_MAX_SIZE -> EINVAL; else memdup_user (EFAULT)."""
    if not uaddr or not length or length > SEV_FW_BLOB_MAX_SIZE:
        raise oserror(errno.EINVAL)
    return read_user_at(uaddr, 0, length)


# --- legacy SEV ids --------------------------------------------------------------------------


def sev_legacy(f, cmd, arg):
    """The legacy ids sev_mem_enc_ioctl's switch has (0..21 but 10, 14, 19) on a VM that
    is not an SNP guest (an SNP guest answers EPERM before this). KVM_SEV_INIT /
    KVM_SEV_ES_INIT are sev_guest_init; the other handlers start with
    ``!sev_guest(kvm)`` -> ENOTTY, except sev_receive_update_data's EINVAL (and
    LAUNCH_UPDATE_VMSA's !sev_es_guest, ENOTTY too). The legacy SEV launch flow itself
    is not modelled (ENOTTY on an SEV guest as well: docs/arch/snp.md)."""
    if cmd.id in (S.KVM_SEV_INIT, S.KVM_SEV_ES_INIT):
        return sev_guest_init(f.vm, cmd.id == S.KVM_SEV_ES_INIT)
    if cmd.id == S.KVM_SEV_RECEIVE_UPDATE_DATA and not sev_of(f.vm).active:
        raise oserror(errno.EINVAL)
    raise oserror(errno.ENOTTY)


def sev_guest_init(vm, es):
    """sev_guest_init (KVM_SEV_INIT, KVM_SEV_ES_INIT): only a KVM_X86_DEFAULT_VM (EINVAL),
    then __sev_guest_init with vmsa_features 0 and, for SEV-ES, GHCB version 1: vCPUs
    created -> EINVAL, already active -> EINVAL, no ASID -> ENOTTY (an empty range) or
    EBUSY. The VM becomes an SEV (SEV-ES) guest: the VM's SevInfo. kmock models what the
    VM ioctls see of that (KVM_MEMORY_ENCRYPT_REG_REGION, a second INIT); the vCPU side of
    a legacy SEV-ES guest is not modelled. The ASID goes back when the VM object does
    (the core has no VM-destroy callback for a type the plugin does not own)."""
    kernel = vm.kernel
    if vm.type != K.KVM_X86_DEFAULT_VM:
        raise oserror(errno.EINVAL)
    with vm.slots_lock:
        if vm.vcpus:
            raise oserror(errno.EINVAL)  # kvm->created_vcpus
        if sev_of(vm).active:
            raise oserror(errno.EINVAL)
        sev = SevInfo(vm, es, False)
        size = kernel.setting("snp_asids" if es else "sev_asids")
        asid = sev.machine.take_asid(es)
        if not asid:
            raise oserror(errno.ENOTTY if not size else errno.EBUSY)
        weakref.finalize(vm, sev.machine.put_asid, asid, es)
        sev.asid = asid
        sev.active = True
        sev.need_init = False
        sev.ghcb_version = 1 if es else 0  # GHCB_VERSION_MIN for KVM_SEV_ES_INIT
        vm.arch = sev
    return 0


def sev_es_enabled(kernel):
    """sev_es_enabled: the host has SEV-ES (the KVM_X86_SEV_ES_VM type is offered)."""
    return K.KVM_X86_SEV_ES_VM in kernel.setting("sev_vm_types")


def _es_init(f, cmd, arg):
    """sev_mem_enc_ioctl: KVM_SEV_ES_INIT without SEV-ES is ENOTTY, and ``goto out``
    skips the copy back."""
    if not sev_es_enabled(f.vm.kernel):
        raise oserror(errno.ENOTTY)
    return _copy_back(sev_legacy)(f, cmd, arg)


#: enum sev_cmd_id values below SEND_CANCEL that sev_mem_enc_ioctl's switch lacks: its
#: default, EINVAL without the copy back (kmock.kvm.mem_enc's unknown id)
UNHANDLED_LEGACY_IDS = (S.KVM_SEV_SEND_UPDATE_VMSA, S.KVM_SEV_RECEIVE_UPDATE_VMSA,
                        S.KVM_SEV_CERT_EXPORT)


def mem_enc_ops():
    """sev_mem_enc_ioctl's switch, for every VM on the snp platform (SEV-family or not)."""
    ops = {i: _copy_back(sev_legacy) for i in range(S.KVM_SEV_SEND_CANCEL + 1)
           if i not in UNHANDLED_LEGACY_IDS}
    ops[S.KVM_SEV_ES_INIT] = _es_init
    ops[S.KVM_SEV_INIT2] = _copy_back(sev_init2)
    ops[S.KVM_SEV_SNP_LAUNCH_START] = _copy_back(snp_launch_start)
    ops[S.KVM_SEV_SNP_LAUNCH_UPDATE] = _copy_back(snp_launch_update)
    ops[S.KVM_SEV_SNP_LAUNCH_FINISH] = _copy_back(snp_launch_finish)
    return ops


def mem_enc_check(f, cmd):
    """sev_mem_enc_ioctl before the switch: legacy ids on an SNP guest are EPERM."""
    if sev_of(f.vm).snp_active and cmd.id < SNP_FIRST_ID:
        raise oserror(errno.EPERM)


def null_arg_wrapper(handler):
    """sev_mem_enc_ioctl: ``if (!argp) return 0;`` before anything is read."""

    def ioctl(f, arg):
        if type(arg) is int and arg == 0:
            f.vm.check_caller()
            return 0
        return handler(f, arg)

    return ioctl

