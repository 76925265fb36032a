"""The TD guest's actions (``vcpu.guest.tdx``) through KVM_RUN: MapGPA chunking and RETRY,
ACCEPT on each S-EPT state, RELEASE, ReportFatalError, GetQuote, and plain accesses that
follow the shared bit."""

import errno

import pytest

from kmock.testing.errnos import err
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from kmock_tdx import sept as SE

from ._td import GPA, P, Td

MB2 = 2 << 20


@pytest.fixture
def td(tdx_kernel):
    return Td(tdx_kernel()).launch()


# --- MapGPA ----------------------------------------------------------------------------------


def big_td(tdx_kernel, npages=3 * 512 + 16, **kw):
    return Td(tdx_kernel(**kw), npages=npages).launch()


def test_map_gpa_chunks_of_2mb_from_the_guest_gpa(tdx_kernel):
    t = big_td(tdx_kernel)
    g = t.guest()
    start = GPA + 5 * P  # chunks follow the guest's gpa, not 2M alignment
    size = 2 * MB2 + 3 * P
    a = g.tdx.map_gpa(start | t.shared, size)
    g.stop()
    hc = t.run_struct().hypercall
    seen = []
    while True:
        r = t.run()
        if a.done:
            assert r == K.KVM_EXIT_INTR  # the guest ran on to the stop()
            break
        assert r == K.KVM_EXIT_HYPERCALL
        run = t.run_struct()
        assert run.exit_reason == K.KVM_EXIT_HYPERCALL and hc.nr == K.KVM_HC_MAP_GPA_RANGE
        assert hc.flags == K.KVM_EXIT_HYPERCALL_LONG_MODE and hc.ret == 0
        seen.append((hc.args[0], hc.args[1], hc.args[2]))
        t.set_private(hc.args[0], hc.args[1] * P, private=False)  # as QEMU does
        hc.ret = 0
    assert seen == [(start, 512, 0), (start + MB2, 512, 0), (start + 2 * MB2, 3, 0)]
    assert a.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)
    assert a.exits == [K.KVM_EXIT_HYPERCALL] * 3


def test_map_gpa_retry_on_pending_nmi_then_resume_from_r11(tdx_kernel):
    t = big_td(tdx_kernel)
    g = t.guest()
    a = g.tdx.map_gpa(GPA, 2 * MB2)  # to private: ENCRYPTED
    g.stop()
    assert t.run() == K.KVM_EXIT_HYPERCALL
    hc = t.run_struct().hypercall
    assert hc.args[2] == K.KVM_MAP_GPA_RANGE_ENCRYPTED
    t.k.ioctl(t.vcpu, T.KVM_NMI, 0)
    assert t.vmobj.vcpus[0].arch.pending_event
    assert t.run() == K.KVM_EXIT_INTR  # completes the chunk: an event is pending -> RETRY
    assert a.done and a.result == (T.TDVMCALL_STATUS_RETRY, GPA + MB2)
    assert not t.vmobj.vcpus[0].arch.pending_event  # injected as the guest ran
    b = g.tdx.map_gpa(a.result[1], GPA + 2 * MB2 - a.result[1])
    assert t.run() == K.KVM_EXIT_HYPERCALL
    assert t.run_struct().hypercall.args[0] == GPA + MB2
    t.run_to_stop()
    assert b.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)


def test_map_gpa_immediate_exit_does_not_retry(tdx_kernel):
    t = big_td(tdx_kernel)
    g = t.guest()
    a = g.tdx.map_gpa(GPA | t.shared, 2 * MB2)
    assert t.run() == K.KVM_EXIT_HYPERCALL
    run = t.run_struct()
    run.immediate_exit = 1
    # KVM_RUN completes the pending exit first: the next chunk's exit, KVM_RUN returns 0
    assert t.run() == K.KVM_EXIT_HYPERCALL and run.hypercall.args[0] == GPA + MB2
    assert not a.done
    # the last chunk completes the call; then immediate_exit is honoured
    assert err(t.run) == errno.EINTR
    assert a.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)


@pytest.mark.parametrize("gpa,size,status", [
    (GPA, 0, T.TDVMCALL_STATUS_INVALID_OPERAND),
    ((1 << 64) - P, 2 * P, T.TDVMCALL_STATUS_INVALID_OPERAND),  # wraps
    (1 << 48, P, T.TDVMCALL_STATUS_INVALID_OPERAND),  # beyond MAXPHYADDR (GPAW 48)
    ((1 << 47) - P, 2 * P, T.TDVMCALL_STATUS_INVALID_OPERAND),  # straddles the shared bit
    (GPA + 8, P, T.TDVMCALL_STATUS_ALIGN_ERROR),
    (GPA, P + 1, T.TDVMCALL_STATUS_ALIGN_ERROR),
])
def test_map_gpa_checks(td, gpa, size, status):
    a = td.guest().tdx.map_gpa(gpa, size)
    td.run_to_stop()
    assert a.result == (status, gpa) and a.exits == []


def test_map_gpa_exit_not_enabled(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    t.capabilities()
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    t.memslot()
    t.set_private()
    t.finalize()
    a = t.guest().tdx.map_gpa(GPA, P)
    t.run_to_stop()
    assert a.result == (T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED, GPA)


def test_map_gpa_vmm_failure_names_the_chunk(tdx_kernel):
    t = big_td(tdx_kernel)
    a = t.guest().tdx.map_gpa(GPA | t.shared, 2 * MB2)
    assert t.run() == K.KVM_EXIT_HYPERCALL
    assert t.run() == K.KVM_EXIT_HYPERCALL  # first chunk ok: the second one exits
    t.run_struct().hypercall.ret = 1  # the VMM fails the second chunk
    t.run_to_stop()
    assert a.result == (T.TDVMCALL_STATUS_INVALID_OPERAND, (GPA + MB2) | t.shared)


# --- ACCEPT on each S-EPT state ------------------------------------------------------------------


def test_accept_free_page_augs_then_accepts_zeroed(td):
    k = td.k
    g = td.guest()
    a = g.tdx.accept(GPA + 4 * P)
    td.run_to_stop()
    assert a.result == T.TDX_SUCCESS and td.state(4) == "MAPPED"
    r = g.read(GPA + 4 * P, 16)
    td.run_to_stop()
    assert r.result == bytes(16)
    del k


def test_accept_already_accepted_and_added_pages(td):
    g = td.guest()
    a = g.tdx.accept(GPA)  # PAGE.ADDed at launch: MAPPED
    td.run_to_stop()
    assert a.result == T.TDX_PAGE_ALREADY_ACCEPTED  # level 0 in bits 31:0
    assert a.result == 0x00000B0A00000000


def test_accept_pending_page_from_pre_fault(td):
    pf = K.kvm_pre_fault_memory(gpa=GPA + 6 * P, size=P)
    td.k.ioctl(td.vcpu, K.KVM_PRE_FAULT_MEMORY, pf)
    assert td.state(6) == "PENDING"
    a = td.guest().tdx.accept(GPA + 6 * P)
    td.run_to_stop()
    assert a.result == T.TDX_SUCCESS and td.state(6) == "MAPPED"


def test_accept_of_a_shared_attribute_page_is_a_private_memory_fault(td):
    td.set_private(GPA + 7 * P, P, private=False)
    g = td.guest()
    a = g.tdx.accept(GPA + 7 * P)
    assert err(td.run) == errno.EFAULT
    mf = td.run_struct().memory_fault
    assert td.run_struct().exit_reason == K.KVM_EXIT_MEMORY_FAULT
    assert (mf.gpa, mf.flags) == (GPA + 7 * P, K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
    assert not a.done and td.state(7) == "FREE"
    td.set_private(GPA + 7 * P, P)  # the VMM converts; the accept is retried
    td.run_to_stop()
    assert a.result == T.TDX_SUCCESS


def test_accept_2m_on_4k_mapping_is_size_mismatch(tdx_kernel):
    t = big_td(tdx_kernel)
    g = t.guest()
    a = g.tdx.accept(GPA + MB2, level=1)  # upstream maps 4K only
    t.run_to_stop()
    assert a.result == T.TDX_PAGE_SIZE_MISMATCH | 1
    b = g.tdx.accept(GPA + 4096 * 0 + P * 3, level=1)  # misaligned
    c = g.tdx.accept(GPA | t.shared)  # not a private gpa
    d = g.tdx.accept(GPA, level=2)  # 1G: not accepted by the module
    t.run_to_stop()
    assert b.result == c.result == d.result == SE.OPERAND_INVALID


def test_accept_2m_with_huge_pages_setting(tdx_kernel):
    t = big_td(tdx_kernel, tdx_huge_pages=True)
    a = t.guest().tdx.accept(GPA + MB2, level=1)
    t.run_to_stop()
    assert a.result == T.TDX_SUCCESS
    assert t.td.sept.lookup((GPA + MB2) >> 12)[:2] == (SE.S.MAPPED, 1)
    # a 4K conversion inside the 2M leaf demotes it first
    t.set_private(GPA + MB2 + 5 * P, P, private=False)
    assert t.state(512 + 5) == "FREE" and t.state(512 + 4) == "MAPPED"
    assert t.td.sept.lookup((GPA + MB2) >> 12)[1] == 0


# --- RELEASE, ReportFatalError, GetQuote ---------------------------------------------------------


def test_release_needs_tdx_connect(td):
    a = td.guest().tdx.release(GPA)
    td.run_to_stop()
    assert a.result == SE.RELEASE_NOT_ENABLED


def test_release_makes_the_page_pending_and_removable(tdx_kernel):
    t = Td(tdx_kernel(tdx_connect=True)).launch()
    g = t.guest()
    a = g.tdx.accept(GPA + 3 * P)
    r = g.tdx.release(GPA + 3 * P)
    t.run_to_stop()
    assert a.result == r.result == T.TDX_SUCCESS and t.state(3) == "PENDING"
    t.set_private(GPA + 3 * P, P, private=False)
    assert t.state(3) == "FREE" and not t.k.violations


def test_report_fatal_error_is_a_system_event(td):
    g = td.guest()
    g.tdx.report_fatal_error(error_code=0x1234, data_gpa=0x5000 | td.shared)
    assert td.run() == K.KVM_EXIT_SYSTEM_EVENT
    run = td.run_struct()
    se = run.system_event
    assert run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT
    assert (se.type, se.ndata) == (T.KVM_SYSTEM_EVENT_TDX_FATAL, 16)
    assert se.data[0] == T.EXIT_REASON_TDCALL and se.data[4] == se.data[5] == 0
    assert (se.data[11], se.data[12], se.data[13]) == (T.TDVMCALL_REPORT_FATAL_ERROR, 0x1234,
                                                      0x5000 | td.shared)


def test_get_quote_exit_and_private_buffer(td):
    g = td.guest()
    bad = g.tdx.get_quote(GPA, 2 * P)
    q = g.tdx.get_quote(GPA | td.shared, 2 * P)
    assert td.run() == K.KVM_EXIT_TDX
    assert bad.result == T.TDVMCALL_STATUS_INVALID_OPERAND and bad.exits == []
    run = td.run_struct()
    import ctypes
    x = T.kvm_run_tdx.from_address(ctypes.addressof(run) + 32)
    assert run.exit_reason == K.KVM_EXIT_TDX and x.nr == T.TDVMCALL_GET_QUOTE
    assert (x.get_quote.ret, x.get_quote.gpa, x.get_quote.size) == (
        T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED, GPA, 2 * P)
    x.unknown.ret = 0
    td.run_to_stop()
    assert q.result == 0


# --- plain accesses follow the shared bit ----------------------------------------------------------


def test_read_write_follow_the_shared_bit(td):
    g = td.guest()
    td.set_private(GPA + 9 * P, P, private=False)
    td.shared_mem[9 * P:9 * P + 4] = b"host"
    r = g.read((GPA + 9 * P) | td.shared, 4)  # shared bit set: the shared backing
    w = g.write(GPA, b"priv")  # shared bit clear: private (accepted by PAGE.ADD)
    r2 = g.read(GPA, 4)
    td.run_to_stop()
    assert r.result == b"host" and r2.result == b"priv"
    # a shared-bit access to a private page: KVM_EXIT_MEMORY_FAULT without the PRIVATE flag
    g.read(GPA | td.shared, 4)
    assert err(td.run) == errno.EFAULT
    assert td.run_struct().memory_fault.flags == 0
    del w


def test_setup_event_notify_interrupt(td):
    """tdx_setup_event_notify_interrupt (6.16-6.18 tdx.c): vector outside 32..255 ->
    INVALID_OPERAND without an exit; else KVM_EXIT_TDX (nr 0x10004, ret preset
    SUBFUNC_UNSUPPORTED, the vector), R10 = the VMM's ret on re-entry. KVM_TDX_CAPABILITIES
    says userspace gets it: user_tdvmcallinfo_1_r11 = BIT(1) (init_kvm_tdx_caps)."""
    import ctypes
    caps = td.capabilities()
    assert caps.hdr.user_tdvmcallinfo_1_r11 == 1 << 1
    assert caps.hdr.kernel_tdvmcallinfo_1_r11 == caps.hdr.user_tdvmcallinfo_1_r12 == 0
    g = td.guest()
    low = g.tdx.setup_event_notify_interrupt(31)
    high = g.tdx.setup_event_notify_interrupt(256)
    ok = g.tdx.setup_event_notify_interrupt(0xEC)
    assert td.run() == K.KVM_EXIT_TDX
    assert low.result == high.result == T.TDVMCALL_STATUS_INVALID_OPERAND and low.exits == []
    run = td.run_struct()
    x = T.kvm_run_tdx.from_address(ctypes.addressof(run) + 32)
    assert (x.nr, x.setup_event_notify.ret, x.setup_event_notify.vector) == (
        T.TDVMCALL_SETUP_EVENT_NOTIFY_INTERRUPT, T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED, 0xEC)
    x.unknown.ret = 0
    td.run_to_stop()
    assert ok.result == 0
