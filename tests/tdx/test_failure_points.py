"""The SEAMCALL failure points of kmock_tdx through kernel.faults: each fails as tdx.c
answers that SEAMCALL's failure (td.FAILURE_POINTS)."""

import errno

from kmock_tdx.td import FAILURE_POINTS

from kmock.testing.errnos import err

from ._td import GPA, P, Td


def test_every_point_is_named_tdx_seamcall():
    assert all(p.startswith("tdx.seamcall.") for p, _ in FAILURE_POINTS.values())


def test_mng_create_eio_or_eagain_for_no_entropy(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    k.faults.fail("tdx.seamcall.mng_create")
    assert err(t.init_vm) == errno.EIO
    k.faults.fail("tdx.seamcall.mng_create", errno=errno.EAGAIN)
    assert err(t.init_vm) == errno.EAGAIN
    assert t.td.state == "UNINITIALIZED"
    t.init_vm()  # nothing was left half done
    assert t.td.state == "INITIALIZED"


def test_mng_init_eio_and_operand_invalid_einval(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    k.faults.fail("tdx.seamcall.mng_init")
    assert err(t.init_vm) == errno.EIO
    k.faults.fail("tdx.seamcall.mng_init", errno=errno.EINVAL)
    assert err(t.init_vm) == errno.EINVAL
    t.init_vm()


def test_finalize_busy_is_ebusy_and_can_be_retried(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    k.faults.fail("tdx.seamcall.mr_finalize")
    assert err(t.finalize) == errno.EBUSY
    assert t.td.state == "INITIALIZED" and not t.vmobj.dead
    t.finalize()
    assert t.td.state == "RUNNABLE"


def test_finalize_other_error_bugs_the_vm(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    k.faults.fail("tdx.seamcall.mr_finalize", errno=errno.EIO)
    assert err(t.finalize) == errno.EIO
    assert t.vmobj.dead and k.violations[-1].kind == "td_bugged"


def test_page_add_failure_is_eio(tdx_kernel):
    import ctypes
    import mmap

    k = tdx_kernel()
    t = Td(k)
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    t.memslot()
    t.set_private()
    src = mmap.mmap(-1, P)
    k.faults.fail("tdx.seamcall.mem_page_add")
    addr = ctypes.addressof(ctypes.c_char.from_buffer(src))
    assert err(t.init_mem_region, GPA, addr, 1) == errno.EIO
    assert t.state(0) == "FREE"
    assert t.td.nr_premapped == 1  # 6.16-6.18: the SPTE was installed before the ADD


def test_aug_failure_bugs_the_td_and_kvm_run_fails_eio(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    k = t.k
    t.guest().tdx.accept(GPA + 6 * P)
    k.faults.fail("tdx.seamcall.mem_page_aug")
    assert err(t.run) == errno.EIO
    assert t.vmobj.dead
    assert [v.kind for v in k.violations] == ["td_bugged"]
    assert "TDH.MEM.PAGE.AUG" in str(k.violations[0])
    assert t.state(6) == "FREE"  # the module changed nothing
    assert err(t.run) == errno.EIO


def test_remove_or_block_failure_bugs_the_td(tdx_kernel):
    for point, left in (("tdx.seamcall.mem_range_block", "MAPPED"),
                        ("tdx.seamcall.mem_page_remove", "BLOCKED")):
        t = Td(tdx_kernel()).launch()
        k = t.k
        k.faults.fail(point)
        t.set_private(GPA, P, private=False)  # zaps the ADDed page 0
        assert t.vmobj.dead and k.violations[-1].kind == "td_bugged"
        assert t.state(0) == left  # the failed SEAMCALL changed nothing (BLOCK did run)
        assert err(t.run) == errno.EIO


def test_sept_add_failure_bugs_the_td_on_a_new_2m_region(tdx_kernel):
    k = tdx_kernel()
    t = Td(k, npages=1024).launch()  # the image is in the first 2M; 2M..4M has no S-EPT page
    t.guest().tdx.accept(GPA + 600 * P)
    assert t.td.sept.walk_missing((GPA >> 12) + 600, 1)
    assert not t.td.sept.walk_missing(GPA >> 12, 1)
    k.faults.fail("tdx.seamcall.mem_sept_add")
    assert err(t.run) == errno.EIO
    assert "TDH.MEM.SEPT.ADD" in str(k.violations[-1]) and t.vmobj.dead


def test_track_failure_bugs_the_td_and_nothing_is_removed(tdx_kernel):
    t = Td(tdx_kernel()).launch()
    t.k.faults.fail("tdx.seamcall.mem_track")
    t.set_private(GPA, P, private=False)
    assert t.vmobj.dead and "TDH.MEM.TRACK" in str(t.k.violations[-1])
    assert t.state(0) == "BLOCKED"
