"""KVM_RUN exits of scripted guests (reference §2.4, §3 kvm_run layout, §4.10; ST-PMX).

Every exit is read the way a VMM reads it: through the vCPU fd mapped with
Kernel.mmap, with ctypes at the reference offsets (RunView).
"""

import ctypes
import errno

import pytest

from kmock.errors import EHWPOISON
from kmock.uapi import kvm as K

from ._guest import M2, PRIVATE, GuestVM, P

GPA = 0xC0000000  # EXITS_TEST_GPA of private_mem_kvm_exits_test
U64 = (1 << 64) - 1
ENOSYS = -K.KVM_ENOSYS & U64
EINVAL = -K.KVM_EINVAL & U64


@pytest.fixture
def sw(k):
    g = GuestVM(k, K.KVM_X86_SW_PROTECTED_VM)
    yield g


@pytest.fixture
def dflt(k):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    yield g


# --- private_mem_kvm_exits_test (ST-PMX) ------------------------------------------------------


def assert_private_fault_at(gvm, gpa):
    mf = gvm.views[0].memory_fault()
    assert gvm.views[0].exit_reason == K.KVM_EXIT_MEMORY_FAULT == 39
    assert mf == {"flags": K.KVM_MEMORY_EXIT_FLAG_PRIVATE, "gpa": gpa, "size": P}


def test_pmx_private_access_memslot_deleted(sw):
    """ST-PMX (1): a private gmem slot at 0xc0000000 read in a loop; the host deletes the
    slot; the next read -> KVM_RUN -1/EFAULT, KVM_EXIT_MEMORY_FAULT, PRIVATE, gpa, 4096."""
    gm = sw.gmem(P)
    sw.add_slot(10, GPA, P, gmem=gm)
    sw.set_attrs(GPA, P, PRIVATE)
    g = sw.guest()
    first = g.read(GPA, 8)
    g.outb(0xE7, 1)  # the point where the host thread deletes the slot
    again = g.read(GPA, 8)
    assert sw.run() == (0, K.KVM_EXIT_IO)
    assert first.done and first.result == bytes(8)
    assert sw.vm.stage2_lookup(GPA >> 12)[1] is True  # mapped private
    sw.delete_slot(10)
    assert sw.vm.stage2_lookup(GPA >> 12) is None  # deletion zapped it
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert_private_fault_at(sw, GPA)
    assert not again.done
    # nothing changed: the retried read faults the same way
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert again.exits == [K.KVM_EXIT_MEMORY_FAULT] * 2


def test_pmx_private_access_memslot_not_private(sw):
    """ST-PMX (2): a non-gmem slot (flags 0) marked private -> the same exit."""
    sw.add_slot(10, GPA, P)
    sw.set_attrs(GPA, P, PRIVATE)
    r = sw.guest().read(GPA, 8)
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert_private_fault_at(sw, GPA)
    assert not r.done and sw.vm.stage2.mapped_pages() == 0


def test_private_access_with_no_memslot_at_all(sw):
    sw.set_attrs(GPA, P, PRIVATE)
    sw.guest().read(GPA + 8, 8)
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert_private_fault_at(sw, GPA)


# --- kind mismatches (implicit conversion requests) -----------------------------------------


@pytest.mark.parametrize("private", [True, False])
def test_mismatch_exits_with_the_access_kind(sw, private):
    gm = sw.gmem(4 * P)
    sw.add_slot(1, GPA, 4 * P, gmem=gm)
    if not private:
        sw.set_attrs(GPA, 4 * P, PRIVATE)
    w = sw.guest().write(GPA + 2 * P + 5, b"x", private=private)
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert sw.views[0].memory_fault() == {
        "flags": K.KVM_MEMORY_EXIT_FLAG_PRIVATE if private else 0, "gpa": GPA + 2 * P, "size": P}
    # the VMM converts the page as asked, and the write is retried and lands
    sw.set_attrs(GPA + 2 * P, P, PRIVATE if private else 0)
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert w.done
    if private:
        assert sw.host_read(GPA + 2 * P + 5, 1) == b"\0"  # not visible to the host
    else:
        assert sw.host_read(GPA + 2 * P + 5, 1) == b"x"


def test_default_vm_private_access_is_a_mismatch(dflt):
    dflt.add_slot(1, GPA, P)
    dflt.guest().read(GPA, 1, private=True)
    assert dflt.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert dflt.views[0].memory_fault()["flags"] == K.KVM_MEMORY_EXIT_FLAG_PRIVATE


def test_access_spanning_pages_exits_at_the_first_bad_page_and_retries_whole(sw):
    gm = sw.gmem(4 * P)
    mem = sw.add_slot(1, GPA, 4 * P, gmem=gm)
    mem.fill(0, 4 * P, 0x5A)
    sw.set_attrs(GPA + 2 * P, P, PRIVATE)  # page 2 private, pages 0, 1, 3 shared
    w = sw.guest().write(GPA + P - 2, b"ABCD" + bytes(P) + b"EF", private=False)
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert sw.views[0].memory_fault() == {"flags": 0, "gpa": GPA + 2 * P, "size": P}
    assert mem.read(P - 2, 2) == b"\x5a\x5a"  # nothing was written: retried as a whole
    gfn = GPA >> 12
    # the pages before the faulting one were faulted in (shared, writable); page 2 was not
    assert [sw.vm.stage2_lookup(gfn + i) is not None for i in range(4)] == [
        True, True, False, False]
    assert sw.vm.stage2_lookup(gfn)[1:] == (False, True)
    sw.set_attrs(GPA + 2 * P, P, 0)
    assert sw.run() == (0, K.KVM_EXIT_HLT) and w.done
    assert mem.read(P - 2, 4) == b"ABCD" and mem.read(2 * P + 2, 2) == b"EF"
    r = sw.guest().read(GPA + P - 2, 4)
    assert sw.run() == (0, K.KVM_EXIT_HLT) and r.result == b"ABCD"


def test_access_spanning_memslots_and_kinds(sw):
    """One access over a shared userspace page, a private gmem page and a gmem-only page."""
    gm = sw.gmem(2 * P)
    mem = sw.add_slot(1, GPA, 2 * P, gmem=gm)
    gm2 = sw.gmem(P, K.GUEST_MEMFD_FLAG_MMAP)
    sw.add_slot(2, GPA + 2 * P, P, gmem=gm2)
    sw.set_attrs(GPA + P, P, PRIVATE)
    mem.fill(0, P, 0x11)
    w = sw.guest().write(GPA + P - 1, b"ab")
    w2 = sw.guest().write(GPA + 2 * P, b"c")
    r = sw.guest().read(GPA + P - 1, P + 2)
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert w.done and w2.done and r.result == b"ab" + bytes(P - 1) + b"c"
    assert mem.read(P - 1, 2) == b"a\0"  # the private byte is not in userspace memory
    # the gmem-only page was served from guest_memfd (on SW_PROTECTED, without INIT_SHARED,
    # the host cannot fault it in 6.18, so look at the file's contents from the kernel side)
    assert sw.k.file(gm2).inode.read(0, 1) == b"c"
    kinds = [(e[0] - (GPA >> 12), e[3]) for e in sw.vm.stage2.entries()]
    assert kinds == [(0, False), (1, True), (2, False)]
    assert sw.audit() == []


# --- bad backing ---------------------------------------------------------------------------


def test_private_access_after_gmem_closed(sw):
    gm = sw.gmem(P)
    sw.add_slot(1, GPA, P, gmem=gm)
    sw.set_attrs(GPA, P, PRIVATE)
    sw.guest().read(GPA, 1)
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert sw.vm.stage2.mapped_pages() == 1
    sw.k.close(gm)
    assert sw.vm.stage2.mapped_pages() == 0  # kvm_gmem_release invalidated stage-2
    sw.guest().read(GPA, 1)
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert_private_fault_at(sw, GPA)


def test_private_access_to_poisoned_page_ehwpoison(sw):
    gm = sw.gmem(2 * P)
    sw.add_slot(1, GPA, 2 * P, gmem=gm)
    sw.set_attrs(GPA, 2 * P, PRIVATE)
    sw.k.memory_failure(gm, P)  # page 1
    sw.guest().read(GPA, 2 * P)
    assert sw.run() == (EHWPOISON, K.KVM_EXIT_MEMORY_FAULT)
    assert_private_fault_at(sw, GPA + P)
    assert sw.vm.stage2_lookup(GPA >> 12) is not None  # page 0 was faulted in before
    assert sw.vm.stage2_lookup((GPA >> 12) + 1) is None


def test_shared_access_bad_hva_memory_fault_efault(sw):
    sw.add_slot(1, GPA, 2 * P, mem=False)  # userspace_addr 0: nothing mapped there
    sw.guest().read(GPA + P, 4)
    assert sw.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
    assert sw.views[0].memory_fault() == {"flags": 0, "gpa": GPA + P, "size": P}
    assert sw.vm.stage2.mapped_pages() == 0


# --- MMIO ------------------------------------------------------------------------------------


def test_mmio_write_and_read(dflt):
    g = dflt.guest()
    w = g.write(0xFEE00000, b"\x01\x02\x03\x04")
    r = g.read(0xFEE00010, 4)
    assert dflt.run() == (0, K.KVM_EXIT_MMIO)
    assert dflt.views[0].mmio() == {"phys_addr": 0xFEE00000, "data": b"\x01\x02\x03\x04" + bytes(4),
                                    "len": 4, "is_write": 1}
    assert not w.done
    assert dflt.run() == (0, K.KVM_EXIT_MMIO)
    assert w.done
    m = dflt.views[0].mmio()
    assert (m["phys_addr"], m["len"], m["is_write"]) == (0xFEE00010, 4, 0)
    ctypes.memmove(dflt.views[0].base + 40, b"\xAA\xBB\xCC\xDD", 4)  # the device's answer
    assert dflt.run() == (0, K.KVM_EXIT_HLT)
    assert r.result == b"\xAA\xBB\xCC\xDD"
    assert dflt.vm.stage2.mapped_pages() == 0


def test_mmio_read_without_an_answer_returns_the_stale_bytes(dflt):
    """KVM does not clear mmio.data for a read: the guest gets what is there."""
    r = dflt.guest().read(0x1000, 2)
    assert dflt.run() == (0, K.KVM_EXIT_MMIO)
    stale = dflt.views[0].mmio()["data"][:2]
    assert dflt.run() == (0, K.KVM_EXIT_HLT)
    assert r.result == stale


def test_mmio_splits_into_8_byte_fragments_that_do_not_cross_pages(dflt):
    r = dflt.guest().read(P - 4, 16)
    seen = []
    while True:
        rc, reason = dflt.run()
        if reason != K.KVM_EXIT_MMIO:
            break
        m = dflt.views[0].mmio()
        seen.append((m["phys_addr"], m["len"]))
        ctypes.memmove(dflt.views[0].base + 40, bytes([len(seen)] * 8), 8)
    assert seen == [(P - 4, 4), (P, 8), (P + 8, 4)]
    assert r.result == b"\1" * 4 + b"\2" * 8 + b"\3" * 4


def test_ram_then_mmio_in_one_access(dflt):
    mem = dflt.add_slot(1, 0, P)
    mem.write(P - 2, b"hi")
    r = dflt.guest().read(P - 2, 4)
    assert dflt.run() == (0, K.KVM_EXIT_MMIO)
    assert dflt.views[0].mmio()["phys_addr"] == P
    ctypes.memmove(dflt.views[0].base + 40, b"!?", 2)
    assert dflt.run() == (0, K.KVM_EXIT_HLT)
    assert r.result == b"hi!?"


def test_write_to_readonly_slot_is_mmio(dflt):
    mem = dflt.add_slot(1, GPA, P, flags=K.KVM_MEM_READONLY)
    mem.write(0, b"rom")
    g = dflt.guest()
    r = g.read(GPA, 3)
    w = g.write(GPA, b"xyz")
    assert dflt.run() == (0, K.KVM_EXIT_MMIO)
    assert r.result == b"rom"
    assert dflt.views[0].mmio()["is_write"] == 1 and dflt.views[0].mmio()["data"][:3] == b"xyz"
    assert dflt.run() == (0, K.KVM_EXIT_HLT) and w.done
    assert mem.read(0, 3) == b"rom"
    assert dflt.vm.stage2_lookup(GPA >> 12)[2] is False  # mapped read-only
    assert dflt.audit() == []


# --- IO, HLT, hypercalls ----------------------------------------------------------------------


def test_outb_inb_hlt(dflt):
    g = dflt.guest()
    o = g.outb(0x3F8, 0x41)
    i = g.inb(0x3F9)
    h = g.hlt()
    v = dflt.views[0]
    assert dflt.run() == (0, K.KVM_EXIT_IO)
    assert v.io() == {"direction": K.KVM_EXIT_IO_OUT, "size": 1, "port": 0x3F8, "count": 1,
                      "data_offset": 4096}
    assert v.u8(4096) == 0x41 and not o.done
    assert dflt.run() == (0, K.KVM_EXIT_IO)
    assert o.done and v.io()["direction"] == K.KVM_EXIT_IO_IN and v.io()["port"] == 0x3F9
    v.set_u8(4096, 0x99)
    assert dflt.run() == (0, K.KVM_EXIT_HLT)
    assert i.result == 0x99 and h.done
    assert dflt.run() == (0, K.KVM_EXIT_HLT)  # nothing left: halts again


def test_empty_script_halts(dflt):
    assert dflt.run() == (0, K.KVM_EXIT_HLT)


def test_map_gpa_range_exit_payload_and_ret(sw):
    sw.enable_map_gpa_range_exit()
    h = sw.guest().map_gpa_range(GPA, 512, private=True, page_size=M2)
    assert sw.run() == (0, K.KVM_EXIT_HYPERCALL)
    hc = sw.views[0].hypercall()
    assert hc["nr"] == K.KVM_HC_MAP_GPA_RANGE == 12
    assert hc["args"][:3] == [GPA, 512, K.KVM_MAP_GPA_RANGE_ENCRYPTED |
                              K.KVM_MAP_GPA_RANGE_PAGE_SZ_2M]
    assert hc["ret"] == 0 and hc["flags"] == K.KVM_EXIT_HYPERCALL_LONG_MODE
    assert not h.done
    sw.views[0].set_u64(88, 0x1234)  # the VMM's answer
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert h.done and h.result == 0x1234


def test_map_gpa_range_without_enable_cap_enosys_no_exit(sw):
    h = sw.guest().map_gpa_range(GPA, 1, private=True)
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert h.result == ENOSYS == (1 << 64) - 1000 and h.exits == []


@pytest.mark.parametrize("gpa,npages", [(GPA + 1, 1), (GPA, 0), (GPA, (1 << 64) - (GPA >> 12))])
def test_map_gpa_range_bad_arguments_einval_no_exit(sw, gpa, npages):
    sw.enable_map_gpa_range_exit()
    h = sw.guest().map_gpa_range(gpa, npages, private=False)
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert h.result == EINVAL and h.exits == []


def test_other_hypercalls_enosys(sw):
    sw.enable_map_gpa_range_exit()
    h = sw.guest().hypercall(5, 1, 2)
    assert sw.run() == (0, K.KVM_EXIT_HLT)
    assert h.result == ENOSYS


def test_attrs_are_passed_through_unchecked(sw):
    """KVM does not validate a2: the selftest's own flag bits reach the VMM."""
    sw.enable_map_gpa_range_exit()
    sw.guest().map_gpa_range(GPA, 1, None, attrs=0x7)
    assert sw.run() == (0, K.KVM_EXIT_HYPERCALL)
    assert sw.views[0].hypercall()["args"][2] == 0x7


# --- immediate_exit, EIO ---------------------------------------------------------------------


def test_immediate_exit_eintr_runs_nothing(dflt):
    o = dflt.guest().outb(1, 2)
    dflt.views[0].set_u8(1, 1)
    assert dflt.run() == (errno.EINTR, 0)  # exit_reason untouched (fact_vcpu_ioctls)
    assert o.exits == []
    dflt.views[0].set_u8(1, 0)
    assert dflt.run() == (0, K.KVM_EXIT_IO)


def test_immediate_exit_still_completes_the_last_exit(sw):
    """complete_userspace_io runs before the immediate_exit check (api.rst)."""
    sw.enable_map_gpa_range_exit()
    h = sw.guest().map_gpa_range(GPA, 1, private=False)
    assert sw.run() == (0, K.KVM_EXIT_HYPERCALL)
    sw.views[0].set_u64(88, 0)
    sw.views[0].set_u8(1, 1)
    # EINTR; exit_reason keeps the last exit's value (the kernel does not write it)
    assert sw.run() == (errno.EINTR, K.KVM_EXIT_HYPERCALL)
    assert h.done and h.result == 0


def test_dead_vm_eio_first(dflt):
    dflt.guest().outb(1, 2)
    dflt.views[0].set_u8(1, 1)
    dflt.vm.dead = True
    assert dflt.run()[0] == errno.EIO


def test_two_vcpus_have_their_own_scripts(k):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM, nr_vcpus=2)
    g.guest(0).outb(1, 1)
    g.guest(1).outb(2, 2)
    assert g.run(1) == (0, K.KVM_EXIT_IO) and g.views[1].io()["port"] == 2
    assert g.run(0) == (0, K.KVM_EXIT_IO) and g.views[0].io()["port"] == 1
