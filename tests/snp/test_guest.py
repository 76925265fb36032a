"""The guest side (vcpu.guest.snp: PVALIDATE codes, PSC MSR/NAE with coalescing and errors,
terminate) and what breaks (section 2.4) through the consequences API."""

import ctypes
import errno
import os

import pytest

import kmock
import kmock_snp
from kmock.uapi import iommufd as I
from kmock.uapi import vfio as V
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from .snpenv import GFN, GPA, P, Snp

HUGE = 2 << 20


@pytest.fixture
def s():
    return Snp(npages=16).launch(private=8, measured=4)


def test_pvalidate_codes(s):
    g = s.vcpu().guest
    a = g.snp.pvalidate(GPA + 5 * P)  # faulted in (prepare: assigned, not validated)
    b = g.snp.pvalidate(GPA + 5 * P)  # already validated: no update
    c = g.snp.pvalidate(GPA + 5 * P, validate=False)
    d = g.snp.pvalidate(GPA, page_size=HUGE)  # 2M on (measured) 4K entries
    e = g.snp.pvalidate(GPA + P + 8, page_size=P)  # misaligned
    assert s.run()[0] == 0
    assert (a.result, b.result, c.result, d.result, e.result) == (
        0, S.PVALIDATE_FAIL_NOUPDATE, 0, S.PVALIDATE_FAIL_SIZEMISMATCH, S.PVALIDATE_FAIL_INPUT)
    assert not s.rmp.entry(s.inode.pfn(5)).validated


def test_pvalidate_4k_on_2m_entry_takes_npf_psmash_retry():
    s = Snp(npages=1024)
    s.inode.set_folio_pages(512)  # a hugetlb-backed guest_memfd: 2M folios
    s.launch(private=1024, measured=0)
    g = s.vcpu().guest
    a = g.snp.pvalidate(GPA + 3 * P)
    assert s.run()[0] == 0
    assert a.result == 0 and len(a.npfs) == 1 and a.npfs[0].code & S.PFERR_GUEST_SIZEM_MASK
    e0, e3 = s.rmp.entry(s.inode.pfn(0)), s.rmp.entry(s.inode.pfn(3))
    assert e0.pagesize == S.RMP_PG_SIZE_4K and e3.validated and not e0.validated


def test_pvalidate_on_a_shared_gfn_is_a_memory_fault_exit(s):
    g = s.vcpu().guest
    g.snp.pvalidate(GPA + 10 * P)
    err, run = s.run()
    assert err == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT
    assert run.memory_fault.flags == K.KVM_MEMORY_EXIT_FLAG_PRIVATE


def test_psc_msr_one_exit_and_response(s):
    g = s.vcpu().guest
    a = g.snp.psc_msr(GPA + 6 * P, False)
    err, run = s.run()
    assert run.exit_reason == K.KVM_EXIT_HYPERCALL and run.hypercall.nr == K.KVM_HC_MAP_GPA_RANGE
    assert (run.hypercall.args[0], run.hypercall.args[1]) == (GPA + 6 * P, 1)
    assert run.hypercall.args[2] == K.KVM_MAP_GPA_RANGE_DECRYPTED | K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
    run.hypercall.ret = 0
    s.run()
    assert a.result == S.GHCB_MSR_PSC_RESP
    b = g.snp.psc_msr(GPA, True)
    s.run()
    s.vcpu().run.hypercall.ret = 1
    s.run()
    assert b.result == S.GHCB_MSR_PSC_RESP_ERROR


def test_psc_msr_without_hypercall_exit_is_an_error_response():
    s = Snp()
    s.init2()
    s.create_vcpus()
    s.start()
    s.finish()
    a = s.vcpu().guest.snp.psc_msr(GPA, True)
    s.run()
    assert a.result == S.GHCB_MSR_PSC_RESP_ERROR and not a.exits


def test_psc_coalescing_skips_and_cur_entry(s):
    g = s.vcpu().guest
    entries = [(GFN + 8, True), (GFN + 9, True), (GFN + 10, True), (GFN + 11, "psmash"),
               (GFN + 12, False), (GFN + 13, False), (GFN + 20, False)]
    a = g.snp.psc(entries)
    exits = []
    err, run = s.run()
    while run.exit_reason == K.KVM_EXIT_HYPERCALL:
        exits.append((run.hypercall.args[0], run.hypercall.args[1], run.hypercall.args[2]))
        run.hypercall.ret = 0
        err, run = s.run()
    enc = K.KVM_MAP_GPA_RANGE_ENCRYPTED | K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
    dec = K.KVM_MAP_GPA_RANGE_DECRYPTED | K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
    assert exits == [(GPA + 8 * P, 3, enc), (GPA + 12 * P, 2, dec), (GPA + 20 * P, 1, dec)]
    assert a.result == 0 and a.desc.hdr.cur_entry == 7


def test_psc_2m_entries_coalesce_with_page_sz_2m(s):
    a = s.vcpu().guest.snp.psc([(GFN + 512, True, HUGE), (GFN + 1024, True, HUGE)])
    err, run = s.run()
    assert (run.hypercall.args[0], run.hypercall.args[1]) == (GPA + 512 * P, 1024)
    assert run.hypercall.args[2] & K.KVM_MAP_GPA_RANGE_PAGE_SZ_2M
    run.hypercall.ret = 0
    s.run()
    assert a.result == 0


def test_psc_errors(s):
    g = s.vcpu().guest
    a = g.snp.psc([(GFN + 1, True, HUGE)])  # not 2M-aligned
    b = g.snp.psc(desc=kmock_snp.psc.psc_desc([(GFN, 1, 0)], end_entry=S.VMGEXIT_PSC_MAX_COUNT))
    c = g.snp.psc([(GFN, True)])
    s.run()
    assert a.result == S.VMGEXIT_PSC_ERROR_INVALID_ENTRY
    assert b.result == S.VMGEXIT_PSC_ERROR_INVALID_HDR
    s.vcpu().run.hypercall.ret = 5
    s.run()
    assert c.result == S.VMGEXIT_PSC_ERROR_GENERIC and c.desc.hdr.cur_entry == 0
    with pytest.raises(ValueError):
        g.snp.psc([(GFN + i, True) for i in range(254)])


def test_terminate(s):
    g = s.vcpu().guest
    t = g.snp.terminate(1, 2)
    after = g.hlt()
    err, run = s.run()
    assert run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT
    assert run.system_event.type == S.KVM_SYSTEM_EVENT_SEV_TERM
    assert run.system_event.ndata == 1 and run.system_event.data[0] == t.result
    assert t.result == S.ghcb_sev_term_reason(1, 2)
    assert after not in g.actions and s.run()[1].exit_reason == K.KVM_EXIT_HLT


# --- what breaks ------------------------------------------------------------------------------


def test_punched_page_not_validated_vc_terminates(s):
    g = s.vcpu().guest
    g.write(GPA + 2 * P, b"secret", private=True)  # a measured (validated) page
    assert s.run()[0] == 0
    s.k.fallocate(s.gmem, kmock.file.FALLOC_FL_PUNCH_HOLE | kmock.file.FALLOC_FL_KEEP_SIZE,
                  2 * P, P)
    assert not s.rmp.entry(s.inode.pfn(2)).assigned  # sev_gmem_invalidate: shared
    r = g.read(GPA + 2 * P, 4, private=True)
    err, run = s.run()
    assert err == 0 and run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT
    assert run.system_event.type == S.KVM_SYSTEM_EVENT_SEV_TERM and not r.done
    v = s.k.violations.of_kind("rmp_not_validated")[-1]
    assert v.gpa == GPA + 2 * P and "not validated" in v.detail["entry"]
    assert "PUNCH_HOLE" in v.detail["invalidated_by"] and v.detail["vc_code"] == 0x404
    assert s.run()[1].exit_reason == K.KVM_EXIT_HLT  # the guest halts forever


def test_host_write_to_guest_page_is_sigbus_with_rmp_entry():
    k = kmock.Kernel("gmem-attributes-v8", plugins=[kmock_snp], platform="snp")
    s = Snp(k=k, gmem_flags=K.GUEST_MEMFD_FLAG_MMAP).launch(private=0, measured=0)
    s.inode.convert(0, 1, True)
    g = s.vcpu().guest
    g.snp.pvalidate(GPA)
    s.run()
    # to shared with a failing RMPUPDATE: the frame stays guest-assigned (WARN only)
    kmock_snp.machine(k).fail_next("RMPUPDATE", S.RMPUPDATE_FAIL_PERMISSION)
    s.inode.convert(0, 1, False)
    assert k.violations.of_kind("rmp_invalidate_failed")
    m = k.mmap(s.gmem, P, 3, 1)
    assert m[0:4] == bytes(4)  # host reads are not checked
    with pytest.raises(kmock.SigBus) as e:
        m[0:4] = b"evil"
    assert "RMP #PF" in str(e.value) and "guest-owned" in str(e.value)
    assert k.violations.of_kind("host_access_fault")


def test_guest_shared_write_to_assigned_page_is_npf(s):
    g = s.vcpu().guest
    g.write(GPA + P, b"x", private=False)  # gfn 1 is private: C=0 write
    err, run = s.run()
    assert err == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT
    assert run.memory_fault.flags == 0
    v = s.k.violations.of_kind("rmp_npf")[-1]
    assert v.gpa == GPA + P and v.detail["error_code"] & S.PFERR_GUEST_RMP_MASK


def test_iommu_conversion_policy_is_keep(s):
    assert s.kvm_vm.vmtype.iommu_conversion_policy == "keep"


def test_dma_to_assigned_page_is_blocked(s):
    vm, inode = s.kvm_vm, s.inode
    why = vm.vmtype.dma_access(vm, inode, 1, 2, True)
    assert why.startswith("IOMMU event RMP_FAULT (0xd)") and "guest-owned" in why
    assert vm.vmtype.dma_access(vm, inode, 10, 11, True) is None  # never assigned


def _iommufd_device(k, gmem, size):
    """A VFIO device attached to an IOAS that maps the guest_memfd at IOVA 1G."""
    ictx = k.open("/dev/iommu", os.O_RDWR)
    alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
    k.ioctl(ictx, I.IOMMU_IOAS_ALLOC, alloc)
    dev = k.add_vfio_device()
    vfd = k.open(dev.path, os.O_RDWR)
    k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD, V.vfio_device_bind_iommufd(argsz=24, iommufd=ictx))
    k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
    rw = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE | I.IOMMU_IOAS_MAP_FIXED_IOVA
    k.ioctl(ictx, I.IOMMU_IOAS_MAP_FILE, I.iommu_ioas_map_file(
        size=40, flags=rw, ioas_id=alloc.out_ioas_id, fd=gmem, start=0, length=size,
        iova=1 << 30))
    return dev


def test_device_dma_into_a_page_the_guest_made_private_is_an_rmp_fault():
    """Shared gmem mapped into the IOMMU (notifier policy); the guest converts page 1 to
    private in place: SNP keeps the IOMMU entry, the RMP blocks the DMA."""
    k = kmock.Kernel("gmem-attributes-v8", plugins=[kmock_snp], platform="snp",
                     iommufd_gmem_policy="notifier")
    s = Snp(k=k, npages=4, gmem_flags=K.GUEST_MEMFD_FLAG_MMAP).launch(private=0, measured=0)
    dev = _iommufd_device(k, s.gmem, 4 * P)
    dev.dma_write((1 << 30) + P, b"ok")  # shared, hypervisor-owned: allowed
    s.inode.convert(1, 2, True)
    s.vcpu().guest.snp.pvalidate(GPA + P)
    s.run()
    assert s.rmp.entry(s.inode.pfn(1)).validated
    with pytest.raises(kmock.DmaFault) as e:
        dev.dma_write((1 << 30) + P, b"evil")
    assert "RMP_FAULT (0xd)" in str(e.value)
    v = k.violations.of_kind("dma_blocked")[-1]
    assert v.detail["device"] == dev.path and "guest-owned" in v.explanation
    assert any(f[0] is dev and "RMP_FAULT" in f[2] for f in k.dma_faults)
    assert dev.dma_read((1 << 30) + 2 * P, 2) is not None  # other pages still reachable


def test_host_fault_on_a_private_page_names_the_rmp_entry():
    s = Snp(npages=4, gmem_flags=K.GUEST_MEMFD_FLAG_MMAP).launch(private=2, measured=1)
    m = s.k.mmap(s.gmem, P, 3, 1)
    with pytest.raises(kmock.SigBus):
        m[0:1]
    v = s.k.violations.of_kind("host_access_fault")[-1]
    assert "RMP[pfn" in v.explanation and "guest-owned" in v.explanation


def test_psc_exits_zero_ret_and_leave_flags_as_kvm_run_held_them(s):
    """snp_begin_psc_msr / snp_begin_psc (sev.c, since 9a1dfeff "KVM: x86: clear
    vcpu->run->hypercall.ret before exiting for KVM_EXIT_HYPERCALL", 6.14): ret is written
    0 (QEMU <= 9.2 never set it); flags are not written."""
    run = s.vcpu().run
    for action in (lambda g: g.psc_msr(GPA + 6 * P, False),
                   lambda g: g.psc([(GFN + 7, False, P)])):
        run.hypercall.ret = 0x77
        run.hypercall.flags = 0x55
        action(s.vcpu().guest.snp)
        s.run()
        assert run.exit_reason == K.KVM_EXIT_HYPERCALL
        assert (run.hypercall.ret, run.hypercall.flags) == (0, 0x55)


def test_c_bit_access_under_a_2m_rmp_entry_psmashes_first():
    """stage-2 maps guest_memfd at 4K: the access takes NPF(SIZEM), KVM PSMASHes (the size
    check outranks the Validated one), then the 4K entry's Validated bit decides."""
    s = Snp(npages=1024)
    s.inode.set_folio_pages(512)
    s.launch(private=1024, measured=0)
    g = s.vcpu().guest
    g.snp.pvalidate(GPA, page_size=2 << 20)  # 2M entry, validated
    w = g.write(GPA + 7 * P, b"ok", private=True)
    s.run()
    assert w.done
    e = s.rmp.entry(s.inode.pfn(7))
    assert e.pagesize == S.RMP_PG_SIZE_4K and e.validated


def test_the_record_of_invalidations_is_bounded_by_log_limit():
    """Each host call that takes Validated away is remembered for the #VC explanation, the
    newest ``log_limit`` of them: a long run's punches do not grow memory."""
    s = Snp(npages=16, log_limit=4).launch(private=16, measured=16)
    m = s.kvm_vm.arch.machine
    punch = kmock.file.FALLOC_FL_PUNCH_HOLE | kmock.file.FALLOC_FL_KEEP_SIZE
    for i in range(10):  # each a measured (assigned) page: each punch is recorded
        s.k.fallocate(s.gmem, punch, i * P, P)
    assert len(m.invalidations) == 4
    assert "[0x9, 0xa)" in m.lost_by(s.inode.pfn(9))  # the newest are kept
    assert "record was dropped" in m.lost_by(s.inode.pfn(0))
    assert m.lost_by(s.inode.pfn(12)) is None  # never lost


def _msr(s, value):
    a = s.vcpu().guest.snp.ghcb_msr(value)
    e, run = s.run()
    return a, e, run


def test_ghcb_msr_protocol_answers(s):
    """sev_handle_vmgexit_msr_protocol (sev.c 6.18), one request per VMGEXIT; no exit for
    any but PSC and termination."""
    from kmock_snp import guest as G

    # SEV_INFO: GHCB_MSR_SEV_INFO(sev->ghcb_version (INIT2's default 2), 1, sev_enc_bit)
    a, _, _ = _msr(s, 0x002)
    assert a.result == 2 << 48 | 1 << 32 | 51 << 24 | 0x001
    # HV features: SNP | SNP_AP_CREATION
    a, _, _ = _msr(s, 0x080)
    assert a.result == 0b11 << 12 | 0x081
    # preferred GHCB GPA: none; registration echoes the gfn
    a, _, _ = _msr(s, 0x010)
    assert a.result == ((1 << 52) - 1) << 12 | 0x011
    a, _, _ = _msr(s, (GFN + 3) << 12 | 0x012)
    assert a.result == (GFN + 3) << 12 | 0x013
    assert s.vcpu().arch.ghcb_registered_gpa == GPA + 3 * P
    # an unknown request leaves the MSR as written
    a, _, _ = _msr(s, 0xABC000 | 0x0FE)
    assert a.result == 0xABC000 | 0x0FE
    # CPUID: the vCPU's entry, register in bits 31:30, value in 63:32 (zeros without one)
    a, _, _ = _msr(s, 0x8000001F << 32 | 1 << 30 | 0x004)
    assert a.result == 1 << 30 | 0x005
    G.x86_state(s.vcpu()).cpuid = ((0x8000001F, 0, 0, 0x1B, 0x4033, 0, 0),)
    a, _, _ = _msr(s, 0x8000001F << 32 | 1 << 30 | 0x004)
    assert a.result == 0x4033 << 32 | 1 << 30 | 0x005
    # termination: SEV_TERM with the MSR as written (reason set / code and any other bits)
    a, e, run = _msr(s, 1 << 12 | 7 << 16 | 0x100)
    assert e == 0 and run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT
    assert run.system_event.type == S.KVM_SYSTEM_EVENT_SEV_TERM
    assert (run.system_event.ndata, run.system_event.data[0]) == (1, 1 << 12 | 7 << 16 | 0x100)


def test_ghcb_msr_sev_info_reports_version_2_and_the_c_bit_setting():
    """An SNP VM's ghcb_version is 2 (INIT2 refuses 1 since 6.18); sev_enc_bit is the
    host's CPUID 0x8000001F EBX[5:0]."""
    s = Snp(npages=4, sev_enc_bit=47)
    assert s.init2(ghcb_version=2)[1] == 0
    s.create_vcpus()
    s.start()
    s.finish()
    a = s.vcpu().guest.snp.ghcb_msr(0x002)
    s.run()
    assert a.result >> 48 == 2 and a.result >> 32 & 0xFFFF == 1 and a.result >> 24 & 0xFF == 47


def test_ghcb_msr_psc_goes_through_the_psc_path(s):
    a = s.vcpu().guest.snp.ghcb_msr(S.ghcb_msr_psc_req(GFN + 6, S.SNP_PAGE_STATE_SHARED))
    e, run = s.run()
    assert run.exit_reason == K.KVM_EXIT_HYPERCALL and run.hypercall.args[0] == GPA + 6 * P
    run.hypercall.ret = 0
    s.run()
    assert a.result == S.GHCB_MSR_PSC_RESP


def test_ghcb_msr_ap_reset_hold_without_an_in_kernel_lapic(s):
    """GHCB_MSR_AP_RESET_HOLD_REQ: kvm_emulate_ap_reset_hold -> __kvm_emulate_halt: no
    in-kernel LAPIC -> KVM_EXIT_AP_RESET_HOLD (32); the MSR is preset to 0x007, result 0."""
    a, e, run = _msr(s, 0x006)
    assert (e, run.exit_reason) == (0, 32) and a.result == 0x007
