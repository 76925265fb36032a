"""kernel.faults points of the SNP plugin: each firmware step fails as the kernel surfaces it."""

import errno

import kmock_snp
from kmock.uapi import kvm as K
from kmock.uapi import sev as S
from kmock_snp.state import FW_FAULT_STATUS, POINTS

from .snpenv import GPA, P, Snp


def _started():
    s = Snp()
    assert s.init2()[1] == 0
    s.create_vcpus()
    return s


def test_gctx_create_failure_is_enotty():
    """snp_context_create() returns NULL on any failure: snp_launch_start -> ENOTTY."""
    s = _started()
    s.k.faults.fail("snp.fw.gctx_create")
    cmd, e = s.start()
    assert e == errno.ENOTTY
    assert not s.kvm_vm.arch.snp_context
    assert s.start()[1] == 0  # nothing was kept: START may be retried


def test_launch_start_failure_is_eio_with_the_status():
    s = _started()
    s.k.faults.fail("snp.fw.launch_start")
    cmd, e = s.start()
    assert (e, cmd.error) == (errno.EIO, FW_FAULT_STATUS)
    assert not s.kvm_vm.arch.snp_context
    assert s.start()[1] == 0


def test_activate_failure_is_eio():
    s = _started()
    s.k.faults.fail("snp.fw.activate")
    cmd, e = s.start()
    assert (e, cmd.error) == (errno.EIO, FW_FAULT_STATUS)


def test_launch_update_failure_is_eio_and_reclaims_the_page():
    s = _started()
    assert s.start()[1] == 0
    s.set_private(0, 4)
    s.k.faults.fail("snp.fw.launch_update")
    u, cmd, e = s.update(0, 4)
    assert (e, cmd.error) == (errno.EIO, FW_FAULT_STATUS)
    assert u.len == 4 * 4096  # nothing done: the caller's struct unchanged
    assert s.rmp.find_assigned(s.inode.pfn(0), 4) == -1  # made shared again
    assert not list(s.k.violations)
    u, cmd, e = s.update(0, 4)
    assert e == 0 and u.len == 0


def test_launch_update_failing_at_page_i_leaves_its_folio_only():
    """kvm_gmem_populate (6.18) gets each page's folio before sev_gmem_post_populate runs
    for it: the firmware failing at the 3rd page leaves pages 0-1 launched, page 2's folio
    allocated but not prepared, page 3 never reached (virt/kvm/guest_memfd.c)."""
    s = _started()
    assert s.start()[1] == 0
    s.set_private(0, 4)
    kmock_snp.machine(s.k).fail_next("SNP_LAUNCH_UPDATE", S.SEV_RET_INVALID_PAGE_STATE,
                                     after=2)
    u, cmd, e = s.update(0, 4)
    assert e == 0 and u.len == 2 * 4096  # partial progress, the rest written back
    assert list(s.inode.allocated.ranges(0, 4)) == [(0, 3, 1), (3, 4, 0)]
    assert [r for r in s.inode.prepared.ranges(0, 4) if r[2]] == [(0, 2, 1)]


def test_page_reclaim_failure_leaks_the_page():
    """snp_page_reclaim: a failed SNP_PAGE_RECLAIM is KVM_BUG (VM bugged) + snp_leak_pages
    + -EIO (arch/x86/kvm/svm/sev.c snp_page_reclaim)."""
    s = _started()
    assert s.start()[1] == 0
    s.set_private(0, 1)
    s.k.faults.fail("snp.fw.launch_update")
    s.k.faults.fail("snp.fw.page_reclaim")
    u, cmd, e = s.update(0, 1)
    assert e == errno.EIO
    assert s.rmp.leaked_count() == 1
    assert [v.kind for v in s.k.violations] == ["rmp_leak"]
    assert s.finish()[1] == errno.EIO  # KVM_BUG: the VM is bugged


def test_launch_finish_failures():
    s = _started()
    assert s.start()[1] == 0
    s.k.faults.fail("snp.fw.launch_update_vmsa")
    cmd, e = s.finish()
    assert (e, cmd.error) == (errno.EIO, FW_FAULT_STATUS)
    s.k.faults.fail("snp.fw.launch_finish")
    cmd, e = s.finish()
    assert (e, cmd.error) == (errno.EIO, FW_FAULT_STATUS)
    assert not s.kvm_vm.arch.pre_fault_allowed
    # the VMSAs are guest-owned now: a retry writes them again and 6.18 oopses
    # (sev_es_sync_vmsa; docs/arch/snp.md), so a failed FINISH cannot be retried
    assert s.finish()[1] == errno.EIO and s.k.violations.of_kind("kernel_oops")
    assert not s.kvm_vm.arch.pre_fault_allowed


def test_rmpupdate_point_fails_the_vmsa_make_private_with_efault():
    """snp_launch_update_vmsa: rmp_make_private failing -> -EFAULT."""
    s = _started()
    assert s.start()[1] == 0
    s.k.faults.fail("snp.rmpupdate")
    assert s.finish()[1] == errno.EFAULT
    assert s.finish()[1] == 0


def test_points_are_recorded_and_documented():
    s = _started()
    s.k.faults.start_recording()
    s.start()
    s.set_private(0, 2)
    s.update(0, 2)
    s.finish()
    hits = set(s.k.faults.hits)
    assert {"snp.fw.gctx_create", "snp.fw.launch_start", "snp.fw.activate",
            "snp.fw.launch_update", "snp.fw.launch_update_vmsa", "snp.fw.launch_finish",
            "snp.rmpupdate"} <= hits
    assert {h for h in hits if h.startswith("snp.")} <= set(POINTS)


def test_old_knob_is_an_alias_with_its_own_status():
    s = _started()
    kmock_snp.machine(s.k).fail_next("SNP_LAUNCH_START", S.SEV_RET_INVALID_PARAM)
    cmd, e = s.start()
    assert (e, cmd.error) == (errno.EIO, S.SEV_RET_INVALID_PARAM)


def test_rmpupdate_point_in_populate_is_eio_with_error_zero():
    """sev_gmem_post_populate: rmp_make_private failing -> -EFAULT, which
    snp_launch_update reports as EIO with error 0; nothing measured."""
    s = _started()
    assert s.start()[1] == 0
    s.set_private(0, 2)
    s.k.faults.fail("snp.rmpupdate")
    u, cmd, e = s.update(0, 2, error=0x55)
    assert (e, cmd.error, u.len) == (errno.EIO, 0, 2 * 4096)
    assert s.rmp.find_assigned(s.inode.pfn(0), 2) == -1
    u, cmd, e = s.update(0, 2)
    assert e == 0 and u.len == 0


def test_psmash_point_in_invalidate_only_warns():
    """sev_gmem_invalidate: a failed PSMASH only WARNs; the 4K RMPUPDATE then fails on
    the 2M entry and the frames go back to the host still assigned (recorded)."""
    import kmock

    s = Snp(npages=1024)
    s.inode.set_folio_pages(512)
    s.launch(private=1024, measured=0)
    s.vcpu().guest.snp.pvalidate(GPA, page_size=2 << 20)
    s.run()
    s.k.faults.fail("snp.psmash")
    s.k.fallocate(s.gmem, kmock.file.FALLOC_FL_PUNCH_HOLE | kmock.file.FALLOC_FL_KEEP_SIZE,
                  3 * 4096, 4096)  # the syscall succeeds: the kernel only WARNs
    assert s.k.faults.injected == [("snp.psmash", errno.EFAULT)]
    e3 = s.rmp.entry(s.inode.pfn(3))
    assert e3.assigned and e3.pagesize == S.RMP_PG_SIZE_2M
    ops = {v.detail["code"] for v in s.k.violations.of_kind("rmp_invalidate_failed")}
    assert ops == {S.PSMASH_FAIL_INUSE, S.RMPUPDATE_FAIL_OVERLAP}


def test_gmem_prepare_rmpupdate_failure_fails_the_fault_with_einval():
    """sev_gmem_prepare: a failed RMPUPDATE is -EINVAL (arch/x86/kvm/svm/sev.c); the folio
    is not marked prepared, and kvm_mmu_faultin_pfn_private turns the error into KVM_RUN's
    errno with a KVM_EXIT_MEMORY_FAULT at the page. The next fault prepares it."""
    s = Snp(npages=16).launch(private=8, measured=4)
    pfn = s.inode.pfn(5)
    assert not s.rmp.entry(pfn).assigned  # never used by the guest yet
    g = s.vcpu().guest
    g.read(GPA + 5 * P, 4, private=True)
    s.k.faults.fail("snp.rmpupdate")
    err, run = s.run()
    assert err == errno.EINVAL and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT
    assert (run.memory_fault.gpa, run.memory_fault.flags) == (
        GPA + 5 * P, K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
    assert not s.rmp.entry(pfn).assigned and not s.inode.prepared.get(5)
    assert s.run()[0] == 0  # the guest retries the access: prepared now
    assert s.rmp.entry(pfn).assigned and s.inode.prepared.get(5)
