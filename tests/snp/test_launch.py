"""The SNP launch UAPI through ioctls only: the order of amd-memory-encryption.rst and every
errno of reference section 2.1 / docs/arch/snp.md section 2 (sev.c 6.18)."""

import ctypes
import errno
import mmap
import os

import pytest

import kmock
import kmock_snp
from kmock.uapi import kvm as K
from kmock.uapi import sev as S
from kmock.uapi import x86 as X

from .snpenv import GFN, GPA, P, POLICY, Snp, enc_op, kernel


def test_platform_profile_types_and_dev_sev():
    k = kernel()
    assert k.profile.platform == "snp" and k.platform.name == "snp"
    kvm = k.open("/dev/kvm", os.O_RDWR)
    types = k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
    assert types & (1 << 4) and types & (1 << 2) and types & (1 << 3)
    # SEV / SEV-ES as the host reports them
    k2 = kernel(sev_vm_types=(K.KVM_X86_SEV_ES_VM,))
    kvm2 = k2.open("/dev/kvm", os.O_RDWR)
    t2 = k2.ioctl(kvm2, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
    assert t2 & (1 << 4) and t2 & (1 << 3) and not t2 & (1 << 2)
    with pytest.raises(OSError) as e:
        k2.ioctl(kvm2, K.KVM_CREATE_VM, K.KVM_X86_SEV_VM)
    assert e.value.errno == errno.EINVAL
    # any x86 profile with platform="snp"; /dev/sev only there
    k3 = kmock.Kernel("linux-6.18", plugins=[kmock_snp], platform="snp")
    assert "/dev/sev" in k3.devices
    k4 = kmock.Kernel("linux-6.18", plugins=[kmock_snp])
    assert "/dev/sev" not in k4.devices
    kvm4 = k4.open("/dev/kvm", os.O_RDWR)
    with pytest.raises(OSError) as e:
        k4.ioctl(kvm4, K.KVM_CREATE_VM, K.KVM_X86_SNP_VM)
    assert e.value.errno == errno.EINVAL


def test_dev_sev_ioctl_checks():
    k = kernel()
    fd = k.open("/dev/sev", os.O_RDWR)
    for request, arg, code in ((0x1234, 0, errno.EINVAL),  # sev_ioctl: not SEV_ISSUE_CMD
                               (S.SEV_ISSUE_CMD, 8, errno.EFAULT),
                               (S.SEV_ISSUE_CMD, S.sev_issue_cmd(cmd=S.SEV_MAX), errno.EINVAL)):
        with pytest.raises(OSError) as e:
            k.ioctl(fd, request, arg)
        assert e.value.errno == code


def test_launch_order_through_ioctls():
    s = Snp(npages=16)
    s.launch(private=8, measured=4)
    vm = s.kvm_vm
    assert vm.vmtype.pre_fault_allowed(vm)
    # measured pages: guest-owned, validated, gpa = their gfn, the source bytes copied
    e = s.rmp.entry(s.inode.pfn(3))
    assert e.assigned and e.validated and e.owner == "guest" and e.gpa == GPA + 3 * P
    # the VMSA of each vCPU was encrypted: guest-owned, VMSA bit, INITIAL_VMSA_GPA
    pfn = vm.arch.vmsa_pfn[0]
    v = s.rmp.entry(pfn)
    assert v.vmsa and v.gpa == S.INITIAL_VMSA_GPA and v.validated
    assert s.vcpu().arch.guest_state_protected


def test_source_bytes_are_copied_and_zero_pages_zeroed():
    s = Snp()
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 4)
    s.src[0:5] = b"hello"
    s.src[P:P + 3] = b"abc"
    u, cmd, e = s.update(0, 1)
    assert e == 0 and u.uaddr == s.src_addr + P and u.gfn_start == GFN + 1 and u.len == 0
    u, cmd, e = s.update(1, 1, type=S.KVM_SEV_SNP_PAGE_TYPE_ZERO, uaddr=0xdead000)
    assert e == 0 and u.uaddr == 0xdead000  # ZERO never reads nor advances uaddr
    assert s.inode.read(0, 5) == b"hello" and s.inode.read(P, 3) == b"\0\0\0"


def test_init2_errnos():
    s = Snp()
    assert s.init2(flags=1)[1] == errno.EINVAL
    assert s.init2(vmsa_features=S.SVM_SEV_FEAT_SNP_ACTIVE)[1] == errno.EINVAL
    assert s.init2(ghcb_version=3)[1] == errno.EINVAL
    cmd = S.kvm_sev_cmd(id=S.KVM_SEV_INIT2, data=8)
    with pytest.raises(OSError) as e:
        s.k.ioctl(s.vm, K.KVM_MEMORY_ENCRYPT_OP, cmd)
    assert e.value.errno == errno.EFAULT
    # before INIT2: KVM_RUN is EINVAL; legacy ids reach their handlers
    s.create_vcpus()
    assert s.run()[0] == errno.EINVAL
    assert s.op(S.KVM_SEV_INIT)[1] == errno.EINVAL
    assert s.op(S.KVM_SEV_LAUNCH_START)[1] == errno.ENOTTY
    # sev_receive_update_data alone answers !sev_guest with EINVAL (sev.c, 6.18)
    assert s.op(S.KVM_SEV_RECEIVE_UPDATE_DATA)[1] == errno.EINVAL
    assert s.op(S.KVM_SEV_ES_INIT)[1] == errno.EINVAL  # sev_guest_init: not a DEFAULT VM
    # vCPUs exist: INIT2 is refused
    assert s.init2()[1] == errno.EINVAL
    s2 = Snp(k=s.k)
    assert s2.init2(vmsa_features=S.SVM_SEV_FEAT_DEBUG_SWAP, ghcb_version=2)[1] == 0
    assert s2.init2()[1] == errno.EPERM  # INIT2 (22) is below 100: EPERM on an SNP guest
    assert s2.kvm_vm.arch.vmsa_features & S.SVM_SEV_FEAT_SNP_ACTIVE


SECURE_TSC = 1 << 9  # SVM_SEV_FEAT_SECURE_TSC (asm/svm.h)


def test_init2_snp_needs_ghcb_v2_and_may_ask_secure_tsc():
    """__sev_guest_init (6.18, Sean's v11 series applied Aug 2025): "KVM: SEV: Enforce
    minimum GHCB version requirement for SEV-SNP guests" (0 becomes 2 first, then an SNP
    VM below 2 is EINVAL) and "KVM: SVM: Enable Secure TSC for SNP guests" (SECURE_TSC in
    sev_supported_vmsa_features when the host has it, masked out for non-SNP types)."""
    s = Snp()
    assert s.init2(ghcb_version=1)[1] == errno.EINVAL
    assert s.init2(vmsa_features=SECURE_TSC)[1] == 0
    sev = s.kvm_vm.arch
    assert sev.ghcb_version == 2 and sev.vmsa_features & SECURE_TSC
    s.create_vcpus()
    assert s.kvm_vm.vmtype.guest_tsc_protected(s.vcpu())  # snp_is_secure_tsc_enabled
    with pytest.raises(OSError) as e:  # the vCPU's KVM_SET_TSC_KHZ (core rule)
        s.k.ioctl(s.vcpu_fds[0], X.KVM_SET_TSC_KHZ, 1000000)
    assert e.value.errno == errno.EINVAL
    assert Snp(k=s.k).init2(vmsa_features=SECURE_TSC)[1] == 0
    k = kernel(snp_secure_tsc=False)  # a host without SNP_SECURE_TSC (Milan)
    assert Snp(k=k).init2(vmsa_features=SECURE_TSC)[1] == errno.EINVAL
    k2 = kernel()
    es = k2.ioctl(k2.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, K.KVM_X86_SEV_ES_VM)
    init = S.kvm_sev_init(vmsa_features=SECURE_TSC)
    assert enc_op(k2, es, S.KVM_SEV_INIT2, init)[1] == errno.EINVAL  # SNP only
    assert enc_op(k2, es, S.KVM_SEV_INIT2, S.kvm_sev_init(ghcb_version=1))[1] == 0
    assert kmock_snp.supported_vmsa_features(k2) == S.SVM_SEV_FEAT_DEBUG_SWAP | SECURE_TSC


def test_init2_sev_vm_and_asids():
    k = kernel(snp_asids=1)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    sev_vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SEV_VM)
    assert enc_op(k, sev_vm, S.KVM_SEV_INIT2, S.kvm_sev_init(ghcb_version=1))[1] == errno.EINVAL
    assert enc_op(k, sev_vm, S.KVM_SEV_INIT2, S.kvm_sev_init())[1] == 0
    assert enc_op(k, sev_vm, S.KVM_SEV_INIT2, S.kvm_sev_init())[1] == errno.EINVAL  # !need_init
    # SNP commands on a non-SNP VM
    assert enc_op(k, sev_vm, S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start())[1] == \
        errno.ENOTTY
    a = Snp(k=k)
    assert a.init2()[1] == 0
    b = Snp(k=k)
    assert b.init2()[1] == errno.EBUSY  # the one SEV-ES/SNP ASID is taken
    k0 = kernel(snp_asids=0)
    assert Snp(k=k0).init2()[1] == errno.ENOTTY


def test_mem_enc_op_dispatch_rules():
    s = Snp()
    assert s.k.ioctl(s.vm, K.KVM_MEMORY_ENCRYPT_OP, 0) == 0  # NULL argp: 0, nothing read
    assert s.op(55)[1] == errno.EINVAL  # unknown id
    s.init2()
    cmd, e = s.op(S.KVM_SEV_LAUNCH_START, error=77)
    assert e == errno.EPERM and cmd.error == 77  # legacy ids on an SNP guest
    assert s.op(S.KVM_SEV_INIT)[1] == errno.EPERM
    # every id below KVM_SEV_SNP_LAUNCH_START is EPERM, unknown ones too; 103
    # (KVM_SEV_SNP_ENABLE_REQ_CERTS, after 6.18) and above reach the default: EINVAL
    assert [s.op(i)[1] for i in (23, 99, 103, 0xFFFFFFFF)] == [errno.EPERM] * 2 + \
        [errno.EINVAL] * 2
    s.create_vcpus()
    with pytest.raises(OSError) as ex:  # SVM has no vCPU-level KVM_MEMORY_ENCRYPT_OP
        s.k.ioctl(s.vcpu_fds[0], K.KVM_MEMORY_ENCRYPT_OP, S.kvm_sev_cmd())
    assert ex.value.errno == errno.ENOTTY


def test_launch_start_errnos_and_sev_fd():
    s = Snp()
    assert s.start()[1] == errno.ENOTTY  # before INIT2
    s.init2()
    # snp_launch_start (6.18): bits outside SNP_POLICY_MASK_VALID (MIGRATE_MA 18, 21+),
    # or RSVD_MBO clear -> EINVAL; SMT and SINGLE_SOCKET are the firmware's to judge
    for policy in (POLICY | 1 << 18, POLICY | 1 << 21, S.SNP_POLICY_MASK_SMT):
        assert s.start(policy)[1] == errno.EINVAL
    bad = s.op(S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start(flags=1))
    assert bad[1] == errno.EINVAL
    kvm_fd = s.kvm
    # sev_fd not /dev/sev: GCTX_CREATE fails -> ENOTTY
    assert s.op(S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start(policy=POLICY),
                sev_fd=kvm_fd)[1] == errno.ENOTTY
    kmock_snp.machine(s.k).fail_next("SNP_LAUNCH_START", S.SEV_RET_INVALID_CONFIG)
    cmd, e = s.start()
    assert e == errno.EIO and cmd.error == S.SEV_RET_INVALID_CONFIG
    assert s.start()[1] == 0  # retried after the firmware failure
    assert s.start()[1] == errno.EINVAL  # only once


@pytest.mark.parametrize("policy, settings, status_at", [
    # SMT = 0 on a host with SMT on: the firmware's SNP_LAUNCH_START refuses
    (S.SNP_POLICY_MASK_RSVD_MBO, {}, "start"),
    (S.SNP_POLICY_MASK_RSVD_MBO, {"snp_host_smt": False}, None),
    # SINGLE_SOCKET: SNP_ACTIVATE refuses on a host with more than one socket
    (POLICY | S.SNP_POLICY_MASK_SINGLE_SOCKET, {}, None),
    (POLICY | S.SNP_POLICY_MASK_SINGLE_SOCKET, {"snp_sockets": 2}, "activate"),
    # an ABI the firmware does not have [U: SNP firmware ABI spec]
    (POLICY | 2 << 8, {}, "start"),
    (POLICY | 1 << 8 | 55, {}, None),
    (POLICY | 1 << 8 | 56, {}, "start"),
    (POLICY | S.SNP_POLICY_MASK_DEBUG, {}, None),
])
def test_launch_start_policy_judged_by_the_firmware(policy, settings, status_at):
    """Tom Lendacky's removal of KVM's SMT / SINGLE_SOCKET checks (May 2025): the PSP
    answers POLICY_FAILURE, which sev_issue_cmd turns into EIO with the status in
    ``error``; the context is decommissioned and START may be retried."""
    s = Snp(**settings)
    s.init2()
    cmd, e = s.start(policy)
    if status_at is None:
        assert e == 0
        return
    assert (e, cmd.error) == (errno.EIO, S.SEV_RET_POLICY_FAILURE)
    assert not s.kvm_vm.arch.snp_context
    assert s.start(POLICY)[1] == 0  # retried with a policy the firmware takes


def test_launch_update_errnos_and_layering():
    s = Snp(npages=16)
    u, cmd, e = s.update(0, 1)
    assert e == errno.EINVAL  # no SNP context yet
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 8)
    for kw in ({"type": S.SNP_PAGE_TYPE_VMSA}, {"type": 7}):
        assert s.update(0, 1, **kw)[2] == errno.EINVAL
    u = S.kvm_sev_snp_launch_update(gfn_start=GFN, len=100, type=1, uaddr=s.src_addr)
    assert s.op(S.KVM_SEV_SNP_LAUNCH_UPDATE, u)[1] == errno.EINVAL  # len not page-aligned
    u = S.kvm_sev_snp_launch_update(gfn_start=GFN, len=P, type=1, flags=1, uaddr=s.src_addr)
    assert s.op(S.KVM_SEV_SNP_LAUNCH_UPDATE, u)[1] == errno.EINVAL
    # no memslot: EINVAL before populate (error untouched)
    u = S.kvm_sev_snp_launch_update(gfn_start=GFN - 100, len=P, type=1, uaddr=s.src_addr)
    cmd, e = s.op(S.KVM_SEV_SNP_LAUNCH_UPDATE, u, error=55)
    assert e == errno.EINVAL and cmd.error == 55
    # a shared gfn: kvm_gmem_populate's EINVAL reaches the VMM as EIO, error 0
    u, cmd, e = s.update(9, 1, error=55)
    assert e == errno.EIO and cmd.error == 0
    # unreadable source: EFAULT -> EIO, error 0
    assert s.update(0, 1, uaddr=8)[2] == errno.EIO
    # partial progress: 2 pages, then a shared gfn: returns 0 with the rest written back
    u, cmd, e = s.update(6, 4)
    assert e == 0 and u.gfn_start == GFN + 8 and u.len == 2 * P and \
        u.uaddr == s.src_addr + 8 * P
    # already populated: EEXIST -> EIO, error 0
    u, cmd, e = s.update(6, 1)
    assert e == errno.EIO and cmd.error == 0
    # the range is clamped to the memslot (here: only 1 private page left of 8? no: slot end)
    # firmware failure on the 2nd page: partial progress, the failed page shared again
    kmock_snp.machine(s.k).fail_next("SNP_LAUNCH_UPDATE", S.SEV_RET_INVALID_PAGE_STATE, after=1)
    u, cmd, e = s.update(0, 3)
    assert e == 0 and u.gfn_start == GFN + 1 and u.len == 2 * P
    assert not s.rmp.entry(s.inode.pfn(1)).assigned
    kmock_snp.machine(s.k).fail_next("SNP_LAUNCH_UPDATE", S.SEV_RET_INVALID_PAGE_STATE)
    u, cmd, e = s.update(1, 1)
    assert e == errno.EIO and cmd.error == S.SEV_RET_INVALID_PAGE_STATE and u.len == P
    # a bad sev_fd: EBADF from the PSP driver -> EIO, error 0
    u = S.kvm_sev_snp_launch_update(gfn_start=GFN + 1, len=P, type=1, uaddr=s.src_addr)
    cmd, e = s.op(S.KVM_SEV_SNP_LAUNCH_UPDATE, u, sev_fd=s.kvm)
    assert e == errno.EIO and cmd.error == 0


def test_range_crossing_the_slot_end_is_clamped():
    s = Snp(npages=4)
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 4)
    u, cmd, e = s.update(2, 5)
    assert e == 0 and u.gfn_start == GFN + 4 and u.len == 3 * P


def test_cpuid_page_copied_back_on_invalid_param():
    s = Snp()
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 2)
    m = kmock_snp.machine(s.k)
    m.cpuid_correction = b"\x07" * P
    m.fail_next("SNP_LAUNCH_UPDATE", S.SEV_RET_INVALID_PARAM)
    u, cmd, e = s.update(1, 1, type=S.KVM_SEV_SNP_PAGE_TYPE_CPUID)
    assert e == errno.EIO and cmd.error == S.SEV_RET_INVALID_PARAM
    assert s.src[P:2 * P] == b"\x07" * P
    # another page type is not copied back
    s.src[0:P] = bytes(P)
    m.fail_next("SNP_LAUNCH_UPDATE", S.SEV_RET_INVALID_PARAM)
    s.update(0, 1)
    assert s.src[0:P] == bytes(P)


def test_in_place_source_v8():
    k = kernel("gmem-attributes-v8", platform="snp")
    s = Snp(k=k, gmem_flags=K.GUEST_MEMFD_FLAG_MMAP)
    s.init2()
    s.create_vcpus()
    s.start()
    s.inode.write(0, b"in place")
    s.inode.convert(0, 2, True)
    u, cmd, e = s.update(0, 1, uaddr=0)
    assert e == 0 and u.len == 0
    assert s.inode.read(0, 8) == b"in place" and s.rmp.entry(s.inode.pfn(0)).validated


def test_finish_errnos_and_update_after_finish():
    s = Snp()
    assert s.finish()[1] == errno.ENOTTY
    s.init2()
    assert s.finish()[1] == errno.EINVAL  # no context
    s.create_vcpus()
    s.start()
    assert s.finish(flags=1)[1] == errno.EINVAL
    assert not s.kvm_vm.vmtype.pre_fault_allowed(s.kvm_vm)
    cmd, e = s.op(S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish(), sev_fd=s.kvm)
    assert e == errno.EBADF  # the VMSA update goes through argp->sev_fd
    s.set_private(0, 4)
    assert s.finish()[1] == 0 and s.kvm_vm.vmtype.pre_fault_allowed(s.kvm_vm)
    # LAUNCH_UPDATE after FINISH: the firmware refuses (guest RUNNING), page reclaimed
    u, cmd, e = s.update(0, 1)
    assert e == errno.EIO and cmd.error == S.SEV_RET_INVALID_GUEST_STATE
    assert not s.rmp.entry(s.inode.pfn(0)).assigned
    # a page the guest already faulted in: EEXIST -> EIO, error 0
    s.vcpu().guest.read(GPA + P, 1, private=True)
    s.run()
    u, cmd, e = s.update(1, 1)
    assert e == errno.EIO and cmd.error == 0


def _started(**settings):
    s = Snp(vcpus=2, **settings)
    s.init2()
    s.create_vcpus()
    s.start()
    return s


def test_finish_refuses_a_vcpu_with_guest_debug_or_dr7():
    """snp_launch_update_vmsa -> sev_es_sync_vmsa: ``vcpu->guest_debug`` or DR7 beyond
    DR7_FIXED_1 -> EINVAL, per vCPU in kvm_for_each_vcpu order: the vCPUs before the
    refused one stay measured (guest_state_protected), the rest are not."""
    s = _started()
    dbg = X.kvm_guest_debug(control=X.KVM_GUESTDBG_ENABLE)
    s.k.ioctl(s.vcpu_fds[1], X.KVM_SET_GUEST_DEBUG, dbg)
    cmd, e = s.finish(error=9)
    assert e == errno.EINVAL and cmd.error == 9
    assert s.vcpu(0).arch.guest_state_protected and not s.vcpu(1).arch.guest_state_protected
    assert not s.kvm_vm.vmtype.pre_fault_allowed(s.kvm_vm)
    # a retry now reaches vCPU 0's guest-owned VMSA: 6.18 oopses (see below)
    assert s.finish()[1] == errno.EIO and s.k.violations.of_kind("kernel_oops")
    s = _started()
    s.k.ioctl(s.vcpu_fds[0], X.KVM_SET_GUEST_DEBUG, dbg)
    assert s.finish()[1] == errno.EINVAL and not s.vcpu(0).arch.guest_state_protected
    s.k.ioctl(s.vcpu_fds[0], X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug())  # ENABLE clear
    s.k.ioctl(s.vcpu_fds[0], X.KVM_SET_DEBUGREGS, X.kvm_debugregs(dr7=0x401))
    assert s.finish()[1] == errno.EINVAL
    s.k.ioctl(s.vcpu_fds[0], X.KVM_SET_DEBUGREGS, X.kvm_debugregs(dr7=0x400))
    assert s.finish()[1] == 0


def test_finish_id_block_goes_through_psp_copy_user_blob():
    """snp_launch_finish copies id_block / id_auth with psp_copy_user_blob (sev-dev.c):
    a NULL address is EINVAL, an unreadable one EFAULT (memdup_user); auth_key_en alone is
    ignored; the VMSAs were measured before (the loop runs first)."""
    s = _started()
    cmd, e = s.finish(id_block_en=1, id_block_uaddr=0, id_auth_uaddr=0)
    assert e == errno.EINVAL and s.vcpu(1).arch.guest_state_protected
    s = _started()
    assert s.finish(id_block_en=1, id_block_uaddr=8, id_auth_uaddr=8)[1] == errno.EFAULT
    s = _started()
    assert s.finish(auth_key_en=1)[1] == 0  # id_block_en clear: nothing is copied
    s = _started()
    assert s.finish(id_block_en=1, id_block_uaddr=s.src_addr, id_auth_uaddr=0)[1] == \
        errno.EINVAL
    s = _started()
    assert s.finish(id_block_en=1, id_block_uaddr=s.src_addr,
                    id_auth_uaddr=s.src_addr)[1] == 0


def test_second_finish_oopses_in_6_18():
    """A second SNP_LAUNCH_FINISH runs sev_es_sync_vmsa on a VMSA that is guest-owned:
    the host kernel takes an RMP #PF and oopses (6.18.0, Jethro Beekman's report "KVM:
    SEV: Track SNP launch state and disallow invalid userspace interactions", 2026). The
    task is killed, kvm->lock stays held: kmock records ``kernel_oops``, kills the VM and
    answers EIO. ``snp_finish_twice="einval"`` is Sean Christopherson's proposed fix
    (sev_es_sync_vmsa returns -EINVAL for a protected vCPU)."""
    s = _started()
    assert s.finish()[1] == 0
    cmd, e = s.finish()
    assert e == errno.EIO
    v = s.k.violations.of_kind("kernel_oops")[-1]
    assert "RMP" in v.explanation and "sev_es_sync_vmsa" in v.explanation and v.vcpu == 0
    assert s.kvm_vm.dead
    s = _started(snp_finish_twice="einval")
    assert s.finish()[1] == 0
    assert s.finish()[1] == errno.EINVAL and not s.kvm_vm.dead
    # with no vCPUs nothing touches a VMSA: the firmware refuses (guest not in LAUNCH)
    s = Snp(vcpus=0)
    s.init2()
    s.start()
    assert s.finish()[1] == 0
    cmd, e = s.finish()
    assert e == errno.EIO and cmd.error == S.SEV_RET_INVALID_GUEST_STATE


def test_failed_rmpupdate_in_cleanup_leaks_and_bugs_the_vm():
    s = Snp()
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 2)
    m = kmock_snp.machine(s.k)
    m.fail_next("SNP_LAUNCH_UPDATE", S.SEV_RET_INVALID_PAGE_STATE)
    # the failed page's rmp_make_private succeeds; its RMPUPDATE back to shared fails
    m.fail_next("RMPUPDATE", S.RMPUPDATE_FAIL_PERMISSION, after=1)
    u, cmd, e = s.update(0, 1)
    assert e == errno.EIO
    leaks = s.k.violations.of_kind("rmp_leak")
    assert leaks and s.rmp.entry(s.inode.pfn(0)).leaked
    assert s.kvm_vm.dead
    with pytest.raises(OSError) as ex:
        s.k.ioctl(s.vm, K.KVM_CHECK_EXTENSION, 0)
    assert ex.value.errno == errno.EIO



def test_pre_fault_memory_only_after_finish_and_prepares_the_rmp():
    s = Snp()
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 4)
    pf = K.kvm_pre_fault_memory(gpa=GPA + 2 * P, size=P)
    with pytest.raises(OSError) as e:
        s.k.ioctl(s.vcpu_fds[0], K.KVM_PRE_FAULT_MEMORY, pf)
    assert e.value.errno == errno.EOPNOTSUPP  # pre_fault_allowed only after FINISH
    assert s.finish()[1] == 0
    s.k.ioctl(s.vcpu_fds[0], K.KVM_PRE_FAULT_MEMORY, pf)
    e2 = s.rmp.entry(s.inode.pfn(2))
    assert e2.assigned and not e2.validated and e2.gpa == GPA + 2 * P  # sev_gmem_prepare


def test_asid_and_vmsa_go_back_when_the_vm_is_destroyed():
    k = kernel(snp_asids=1)
    a = Snp(k=k, npages=4).launch(private=2, measured=1)
    pfn = a.kvm_vm.arch.vmsa_pfn[0]
    gmem_pfn = a.inode.pfn(0)
    assert kmock_snp.machine(k).rmp.entry(pfn).vmsa
    b = Snp(k=k, npages=4)
    assert b.init2()[1] == errno.EBUSY
    for fd in a.vcpu_fds + [a.gmem, a.vm]:
        k.close(fd)
    assert not kmock_snp.machine(k).rmp.entry(pfn).assigned
    assert not kmock_snp.machine(k).rmp.entry(gmem_pfn).assigned  # release: shared
    assert b.init2()[1] == 0


def test_snapshot_lists_assigned_rmp_runs():
    s = Snp(npages=4).launch(private=2, measured=2)
    snap = s.k.snapshot()["snp"]
    assert snap["leaked_frames"] == 0
    assert any("gpa 0x100000000" in text for _, _, text in snap["rmp"])


def test_finish_uses_the_sev_fd_saved_by_start():
    s = Snp()
    s.init2()  # no vCPUs: argp->sev_fd is never looked at by FINISH
    s.start()
    s.k.close(s.sev)
    cmd, e = s.op(S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish(), sev_fd=s.kvm)
    assert e == errno.EBADF  # SNP_LAUNCH_FINISH goes through sev->fd, now closed
    s.sev = s.k.open("/dev/sev", os.O_RDWR)  # the lowest free fd: the same number again
    assert s.finish()[1] == 0


def test_punch_inside_a_2m_entry_psmashes_and_keeps_the_rest_validated():
    s = Snp(npages=1024)
    s.inode.set_folio_pages(512)
    s.launch(private=1024, measured=0)
    g = s.vcpu().guest
    g.snp.pvalidate(GPA, page_size=2 << 20)
    s.run()
    assert s.rmp.entry(s.inode.pfn(5)).pagesize == S.RMP_PG_SIZE_2M
    s.k.fallocate(s.gmem, kmock.file.FALLOC_FL_PUNCH_HOLE | kmock.file.FALLOC_FL_KEEP_SIZE,
                  3 * P, P)
    e3, e4 = s.rmp.entry(s.inode.pfn(3)), s.rmp.entry(s.inode.pfn(4))
    assert not e3.assigned  # made shared after the PSMASH
    assert e4.assigned and e4.validated and e4.pagesize == S.RMP_PG_SIZE_4K


def _region(s, req, addr, size):
    try:
        return s.k.ioctl(s.vm, req, K.kvm_enc_region(addr=addr, size=size))
    except OSError as e:
        return e.errno


def test_enc_regions_on_an_snp_vm():
    """sev_mem_enc_register_region / _unregister_region (sev.c 6.18): ENOTTY before INIT2
    (!sev_guest), then sev_pin_memory's EINVAL (size 0, wrap) and ENOMEM (pages it cannot
    pin); unregister needs the exact (addr, size): EINVAL otherwise; an SNP VM may
    register (it is a sev_guest)."""
    REG, UNREG = K.KVM_MEMORY_ENCRYPT_REG_REGION, K.KVM_MEMORY_ENCRYPT_UNREG_REGION
    s = Snp(npages=4)
    assert _region(s, REG, s.src_addr, P) == errno.ENOTTY
    assert _region(s, UNREG, s.src_addr, P) == errno.ENOTTY
    with pytest.raises(OSError) as e:
        s.k.ioctl(s.vm, REG, 8)
    assert e.value.errno == errno.EFAULT
    s.init2()
    assert _region(s, REG, s.src_addr, 0) == errno.EINVAL
    assert _region(s, REG, (1 << 64) - P, 2 * P) == errno.EINVAL
    assert _region(s, REG, 0x1000, P) == errno.ENOMEM  # nothing mapped there
    assert _region(s, REG, s.src_addr + 5, 2 * P) == 0  # any alignment: 3 pages
    assert _region(s, REG, s.src_addr + 5, 2 * P) == 0  # the same range again
    assert s.kvm_vm.arch.pages_locked == 6
    assert _region(s, UNREG, s.src_addr, 2 * P) == errno.EINVAL  # not that exact range
    assert _region(s, UNREG, s.src_addr + 5, 2 * P) == 0
    assert _region(s, UNREG, s.src_addr + 5, 2 * P) == 0
    assert _region(s, UNREG, s.src_addr + 5, 2 * P) == errno.EINVAL
    assert s.kvm_vm.arch.pages_locked == 0
    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    addr = libc.mmap(None, P, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert _region(s, REG, addr, P) == errno.ENOMEM  # FOLL_WRITE on a read-only mapping
    libc.munmap(addr, P)


def test_run_needs_a_measured_vmsa():
    """6.18: pre_sev_run accepts the KVM page sev_vcpu_create gave every vCPU, but VMRUN
    refuses a VMSA that is not the guest's [U: APM] -> SVM_EXIT_ERR, which svm_handle_exit
    turns into KVM_EXIT_FAIL_ENTRY (KVM_RUN returns 0): before SNP_LAUNCH_FINISH, and for
    a vCPU created after it (the "vCPUs created after SNP_LAUNCH_FINISH won't have a guest
    VMSA" case of Jethro Beekman's 2026 patch)."""
    from kmock_snp.vmtypes import SVM_EXIT_ERR

    s = Snp(npages=4)
    s.init2()
    s.create_vcpus()
    s.start()
    e, run = s.run()
    assert (e, run.exit_reason) == (0, K.KVM_EXIT_FAIL_ENTRY)
    assert run.fail_entry.hardware_entry_failure_reason == SVM_EXIT_ERR
    assert s.k.violations.of_kind("vmrun_failed")[-1].vcpu == 0
    assert s.finish()[1] == 0
    s.vcpu().guest.hlt()
    assert s.run()[1].exit_reason == K.KVM_EXIT_HLT
    s.vcpu_fds.append(s.k.ioctl(s.vm, K.KVM_CREATE_VCPU, 1))  # after FINISH: allowed
    s.vcpu(1).guest.hlt()
    e, run = s.run(1)
    assert (e, run.exit_reason) == (0, K.KVM_EXIT_FAIL_ENTRY)
    s.k.ioctl(s.vcpu_fds[1], K.KVM_SET_REGS, K.kvm_regs(rip=0x1000))  # not protected


def test_launch_update_after_the_guest_memfd_was_closed():
    """kvm_gmem_release clears slot->gmem.file but the slot keeps KVM_MEM_GUEST_MEMFD:
    snp_launch_update's kvm_slot_has_gmem passes, kvm_gmem_populate's kvm_gmem_get_file
    is NULL -> -EFAULT -> EIO with error 0 (not the EINVAL of a slot without gmem)."""
    s = Snp(npages=4)
    s.init2()
    s.create_vcpus()
    s.start()
    s.set_private(0, 4)
    s.k.close(s.gmem)
    u, cmd, e = s.update(0, 1, error=5)
    assert (e, cmd.error) == (errno.EIO, 0)
