"""What breaks (reference §1.4), each where the real system surfaces it: KVM_RUN -EIO and a
dead VM, KVM_EXIT_MEMORY_FAULT, SigBus for a host access, DmaFault for a device, and TDX
Connect's refusal before anything is unmapped."""

import errno

import pytest

import kmock
from kmock.testing.errnos import err
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from iommufd._util import Iommufd, vfio_attach, vfio_bind, vfio_open

from ._td import GPA, P, Td

PUNCH = 0x3  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
MMAP_SHARED = K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED


def accepted(t, page):
    a = t.guest().tdx.accept(GPA + page * P)
    t.run_to_stop()
    assert a.result == T.TDX_SUCCESS
    return a


def test_punch_of_an_accepted_page_kills_the_td_at_its_next_access(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    accepted(t, 4)
    t.k.fallocate(t.gmem, PUNCH, 4 * P, P)  # BLOCK, TRACK, REMOVE: no error to the VMM
    assert t.state(4) == "FREE" and not t.k.violations
    r = t.guest().read(GPA + 4 * P, 8)
    assert err(t.run) == errno.EIO
    assert not r.done
    v = t.k.violations[-1]
    assert v.kind == "td_killed" and v.gpa == GPA + 4 * P
    assert "PUNCH_HOLE" in v.explanation and v["pulled_by"].startswith("fallocate(PUNCH_HOLE)")
    assert t.state(4) == "PENDING"  # KVM AUGed a fresh page; the access to it killed the TD
    # the VM is dead: every later VM and vCPU ioctl fails with EIO
    assert err(t.run) == errno.EIO
    assert err(t.k.ioctl, t.vm, K.KVM_CHECK_EXTENSION, 0) == errno.EIO
    assert t.vmobj.dead_reason is v


def test_clearing_private_on_an_accepted_page_then_converting_back(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    accepted(t, 5)
    t.set_private(GPA + 5 * P, P, private=False)
    assert t.state(5) == "FREE"
    g = t.guest()
    g.read(GPA + 5 * P, 8)  # a private access (shared bit clear) to a shared gfn
    assert err(t.run) == errno.EFAULT
    mf = t.run_struct().memory_fault
    assert (mf.gpa, mf.flags) == (GPA + 5 * P, K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
    t.set_private(GPA + 5 * P, P)  # the VMM converts back: KVM AUGs, the access is pending
    assert err(t.run) == errno.EIO
    v = t.k.violations[-1]
    assert v.kind == "td_killed" and "KVM_SET_MEMORY_ATTRIBUTES" in v.explanation


def test_guest_access_to_a_never_accepted_private_page_kills(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    t.guest().write(GPA + 6 * P, b"x")
    assert err(t.run) == errno.EIO
    assert t.k.violations[-1].kind == "td_killed"
    assert t.k.violations[-1]["pulled_by"] is None


def test_without_sept_ve_disable_the_explanation_says_why_it_still_exits(tdx_kernel):
    """A TD without SEPT_VE_DISABLE would get #VE(PENDING) from the TDX module; a Linux guest
    disables pending #VEs itself (TD_CTLS), so the access exits to KVM as with the attribute,
    and the explanation says so instead of naming an attribute the TD does not have."""
    t = Td(tdx_kernel()).launch(attributes=0)
    assert t.td.attributes == 0
    t.guest().write(GPA + 6 * P, b"x")
    assert err(t.run) == errno.EIO
    v = t.k.violations[-1]
    assert v.kind == "td_killed" and "lacks SEPT_VE_DISABLE" in v.explanation
    t2 = Td(tdx_kernel()).launch()
    t2.guest().write(GPA + 6 * P, b"x")
    err(t2.run)
    assert "(SEPT_VE_DISABLE)" in t2.k.violations[-1].explanation


def test_pre_faulted_but_unaccepted_page_kills_on_access(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    t.k.ioctl(t.vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=GPA + 7 * P, size=P))
    assert t.state(7) == "PENDING"
    t.guest().read(GPA + 7 * P, 1)
    assert err(t.run) == errno.EIO


def test_reaccept_after_host_pull_is_a_fresh_zeroed_page(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    accepted(t, 4)
    g = t.guest()
    g.write(GPA + 4 * P, b"secret")
    t.run_to_stop()
    t.k.fallocate(t.gmem, PUNCH, 4 * P, P)
    accepted(t, 4)  # the guest re-accepts (it knows): no harm
    r = g.read(GPA + 4 * P, 6)
    t.run_to_stop()
    assert r.result == bytes(6) and not t.k.violations


# --- host and device accesses to private memory (v8: guest_memfd is mappable) -------------------


def v8_td(tdx_kernel, **kw):
    k = tdx_kernel("gmem-attributes-v8", platform="tdx", **kw)
    t = Td(k, gmem_flags=MMAP_SHARED)
    t.capabilities()
    t.split_irqchip()
    t.enable_map_gpa_exit()
    t.init_vm()
    t.create_vcpus()
    t.memslot()
    t.finalize()
    return t


def gmem_attrs(t, offset, size, private):
    a = G.kvm_memory_attributes2(offset=offset, size=size,
                                 attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
    try:
        t.k.ioctl(t.gmem, t.k.profile.set_memory_attributes2, a)
    except OSError as e:
        return e.errno, a.error_offset
    return 0, 0


def test_host_write_to_private_memory_is_sigbus_with_the_machine_check_hazard(tdx_kernel):
    t = v8_td(tdx_kernel)
    m = t.k.mmap(t.gmem, 8 * P, 3, 1)
    m[2 * P:2 * P + 4] = b"host"
    assert gmem_attrs(t, 2 * P, P, True) == (0, 0)
    accepted(t, 2)
    with pytest.raises(kmock.SigBus):
        m[2 * P:2 * P + 4] = b"evil"
    v = [v for v in t.k.violations if v.kind == "host_access_fault"][-1]
    assert "machine-check hazard" in v.explanation and "TD-private" in v.explanation
    m.close()


def test_to_shared_conversion_clears_the_page_for_the_host(tdx_kernel):
    t = v8_td(tdx_kernel)
    gmem_attrs(t, 3 * P, P, True)
    accepted(t, 3)
    g = t.guest()
    g.write(GPA + 3 * P, b"td secret")
    t.run_to_stop()
    assert gmem_attrs(t, 3 * P, P, False) == (0, 0)
    m = t.k.mmap(t.gmem, 8 * P, 3, 1)
    assert m[3 * P:3 * P + 9] == bytes(9)  # KVM cleared the removed page (MOVDIR64B)
    m.close()


class Dev:
    def __init__(self, t, policy):
        k = t.k
        self.ictx = Iommufd(k)
        self.dev = k.add_vfio_device()
        vfd = vfio_open(k, self.dev)
        vfio_bind(k, vfd, self.ictx.fd)
        self.ioas = self.ictx.ioas_alloc()
        vfio_attach(k, vfd, self.ioas)
        self.iova = 1 << 30
        self.ictx.map_file(self.ioas, t.gmem, 0, 8 * P, iova=self.iova)

    def read(self, page):
        try:
            return self.dev.dma_read(self.iova + page * P, 4)
        except kmock.DmaFault as e:
            return e


def test_dma_into_private_memory_is_refused_and_recorded(tdx_kernel):
    t = v8_td(tdx_kernel, iommufd_gmem_policy="notifier")
    gmem_attrs(t, 1 * P, P, True)  # private before the IOMMU maps it
    d = Dev(t, "notifier")
    assert d.read(0) == bytes(4)  # shared page: the DMA goes through
    r = d.read(1)
    assert isinstance(r, kmock.DmaFault)
    v = [v for v in t.k.violations if v.kind == "dma_blocked"][-1]
    assert "TD-private" in v.explanation and "machine-check hazard" in v.explanation
    # the TDX conversion policy zaps the IOMMU entries of a page converted under them
    assert t.vmobj.vmtype.iommu_conversion_policy == "zap"
    gmem_attrs(t, 0, P, True)
    assert isinstance(d.read(0), kmock.DmaFault)


def test_stale_dma_without_notifier_is_a_machine_check(tdx_kernel):
    t = v8_td(tdx_kernel, iommufd_gmem_policy="rfc-2026-02")
    d = Dev(t, "rfc-2026-02")
    gmem_attrs(t, 0, P, True)
    assert isinstance(d.read(0), kmock.DmaFault)
    assert [v for v in t.k.violations if v.kind == "dma_blocked"]


# --- TDX Connect ------------------------------------------------------------------------------


def test_tdx_connect_refuses_unmapping_an_accepted_page_until_release(tdx_kernel):
    t = Td(tdx_kernel(tdx_connect=True)).launch()
    accepted(t, 4)
    g = t.guest()
    g.write(GPA + 4 * P, b"dma target")
    t.run_to_stop()
    before = (t.state(4), t.vmobj.stage2_lookup((GPA >> 12) + 4))
    # clearing PRIVATE: refused before anything is unmapped
    assert err(t.set_private, GPA + 4 * P, P, False) == errno.EAGAIN
    assert err(t.k.fallocate, t.gmem, PUNCH, 4 * P, P) == errno.EAGAIN
    assert (t.state(4), t.vmobj.stage2_lookup((GPA >> 12) + 4)) == before
    assert t.vmobj.gfn_is_private((GPA >> 12) + 4)
    r = g.read(GPA + 4 * P, 10)
    t.run_to_stop()
    assert r.result == b"dma target"  # nothing changed for the guest
    # pages added at launch are accepted too (PAGE.ADD maps them MAPPED)
    assert err(t.set_private, GPA, P, False) == errno.EAGAIN
    # the guest releases the page: now the host may take it
    rel = g.tdx.release(GPA + 4 * P)
    t.run_to_stop()
    assert rel.result == T.TDX_SUCCESS
    t.set_private(GPA + 4 * P, P, private=False)
    assert t.state(4) == "FREE" and not t.k.violations


def test_tdx_connect_v8_reports_the_first_pinned_page(tdx_kernel):
    t = v8_td(tdx_kernel, tdx_connect=True)
    gmem_attrs(t, 0, 8 * P, True)
    accepted(t, 5)
    assert gmem_attrs(t, 2 * P, 6 * P, False) == (errno.EAGAIN, 5 * P)
    assert t.state(5) == "MAPPED"
    assert t.k.file(t.gmem).inode.is_private(2)  # nothing converted
    # without TDX Connect the same conversion goes through
    t2 = v8_td(tdx_kernel)
    gmem_attrs(t2, 0, 8 * P, True)
    accepted(t2, 5)
    assert gmem_attrs(t2, 2 * P, 6 * P, False) == (0, 0)


def test_map_gpa_conversion_loop_as_qemu_does_it(tdx_kernel):
    """The guest shares a page with MapGPA; the VMM clears PRIVATE (and punches the old
    private page, as QEMU's discard does); the guest shares it back and accepts it."""
    t = Td(tdx_kernel()).launch()
    accepted(t, 8)
    g = t.guest()
    a = g.tdx.map_gpa((GPA + 8 * P) | t.shared, P)
    assert t.run() == K.KVM_EXIT_HYPERCALL
    hc = t.run_struct().hypercall
    t.set_private(hc.args[0], hc.args[1] * P, private=False)
    t.k.fallocate(t.gmem, PUNCH, 8 * P, P)
    hc.ret = 0
    w = g.write((GPA + 8 * P) | t.shared, b"shared!")
    t.run_to_stop()
    assert a.result[0] == T.TDVMCALL_STATUS_SUCCESS and w.done
    assert bytes(t.shared_mem[8 * P:8 * P + 7]) == b"shared!"
    b = g.tdx.map_gpa(GPA + 8 * P, P)
    assert t.run() == K.KVM_EXIT_HYPERCALL
    t.set_private(hc.args[0], hc.args[1] * P)
    hc.ret = 0
    c = g.tdx.accept(GPA + 8 * P)
    t.run_to_stop()
    assert b.result[0] == 0 and c.result == T.TDX_SUCCESS and not t.k.violations


def test_tdx_connect_does_not_stop_teardown_or_memory_failure(tdx_kernel):
    t = Td(tdx_kernel(tdx_connect=True)).launch()
    accepted(t, 4)
    inode = t.k.file(t.gmem).inode
    inode.memory_failure(4)  # cannot be refused: the page goes, the guest's next use dies
    assert t.state(4) == "FREE" and not t.vmobj.dead
    accepted(t, 5)
    t.k.close(t.gmem)  # the release of the guest_memfd removes every page
    assert t.td.sept.leaves(0, t.td.sept.npages) == [] and not t.vmobj.dead


def test_tdx_connect_without_precheck_kvm_bug_on(tdx_kernel):
    """tdx_connect_precheck=False: KVM unmaps, the module refuses RANGE.BLOCK of the pinned
    page, KVM_BUG_ON: the VM is bugged and the next ioctl fails with EIO."""
    t = Td(tdx_kernel(tdx_connect=True, tdx_connect_precheck=False)).launch()
    accepted(t, 4)
    t.set_private(GPA + 4 * P, P, private=False)  # this call itself returns
    v = t.k.violations[-1]
    assert v.kind == "td_bugged" and "TDH.MEM.RANGE.BLOCK" in v.explanation
    assert v["status"] == T.TDX_EPT_ENTRY_STATE_INCORRECT | T.TDX_OPERAND_ID_RCX
    assert t.state(4) == "MAPPED"  # the module kept the page
    assert err(t.run) == errno.EIO


def delete_slot(t):
    t.k.ioctl(t.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=0,
        guest_memfd=t.gmem))


def test_memslot_deletion_removes_the_slots_s_ept_leaves(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    accepted(t, 4)
    # a pre-faulted page is PENDING and leaves the mirror at the next KVM_RUN
    t.k.ioctl(t.vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=GPA + 5 * P, size=P))
    t.run_to_stop()
    assert [t.state(i) for i in (0, 4, 5)] == ["MAPPED", "MAPPED", "PENDING"]
    delete_slot(t)
    assert t.td.sept.leaves(0, t.td.sept.npages) == [] and not t.k.violations


def test_memslot_deletion_of_pinned_pages_is_kvm_bug_on(tdx_kernel):
    """Deleting a memslot is not a guest_memfd request that can be refused: the zap of a
    TD-DMA-pinned page fails in the module (RANGE.BLOCK) and KVM_BUG_ON kills the VM."""
    t = Td(tdx_kernel(tdx_connect=True)).launch()
    accepted(t, 4)
    delete_slot(t)
    assert t.k.violations[-1].kind == "td_bugged" and t.vmobj.dead
    assert err(t.run) == errno.EIO


def test_host_access_to_a_page_the_s_ept_still_maps_is_sigbus(tdx_kernel):
    """Without the precheck the module refuses the zap (KVM_BUG_ON) yet the attribute says
    shared: the host may map the page while the TD's S-EPT still holds it."""
    t = v8_td(tdx_kernel, tdx_connect=True, tdx_connect_precheck=False)
    gmem_attrs(t, 3 * P, P, True)
    accepted(t, 3)
    assert gmem_attrs(t, 3 * P, P, False) == (0, 0)
    assert t.k.violations[-1].kind == "td_bugged" and t.state(3) == "MAPPED"
    m = t.k.mmap(t.gmem, 8 * P, 3, 1)
    m[2 * P:2 * P + 2] = b"ok"  # a shared page the S-EPT does not map
    with pytest.raises(kmock.SigBus):
        m[3 * P:3 * P + 4] = b"evil"
    v = t.k.violations[-1]
    assert v.kind == "host_access_fault" and "machine-check hazard" in v.explanation
    m.close()


def test_dma_over_several_pages_stops_at_the_first_td_private_page(tdx_kernel):
    """dma_access answers for a range: a DMA of pages 0-7 with page 5 private transfers
    pages 0-4 and faults at page 5 (the explanation names page 5)."""
    t = v8_td(tdx_kernel, iommufd_gmem_policy="notifier")
    gmem_attrs(t, 5 * P, P, True)
    d = Dev(t, "notifier")
    with pytest.raises(kmock.DmaFault) as e:
        d.dev.dma_write(d.iova, b"\xab" * (8 * P))
    assert e.value.iova == d.iova + 5 * P
    v = [v for v in t.k.violations if v.kind == "dma_blocked"][-1]
    assert "page 5" in v.explanation
    m = t.k.mmap(t.gmem, 8 * P, 3, 1)
    assert m[0:5 * P] == b"\xab" * (5 * P)  # the pages before the fault were written
    assert m[6 * P:8 * P] == bytes(2 * P)  # the pages after it were not
    m.close()
    vm = t.vmobj
    inode = t.k.file(t.gmem).inode
    assert vm.vmtype.dma_access(vm, inode, 0, 5, True) is None
    assert "page 5" in vm.vmtype.dma_access(vm, inode, 0, 8, True)
