"""Per-VM stage-2 (kmock.kvm.stage2): what guest faults and KVM_PRE_FAULT_MEMORY map, what
attribute changes, memslot deletion and PUNCH_HOLE zap (reference §4.6-4.8, §6.4 ST-PF)."""

import errno
import random

import pytest

from kmock import _libc
from kmock.kvm.stage2 import USER_PFN_BASE, Stage2, private_runs, user_hva, user_pfn
from kmock.uapi import kvm as K

from ._guest import M2, PRIVATE, GuestVM, P

SLOT_SIZE = M2 + P  # pre_fault_memory_test's TEST_SIZE
GPAS = {"4G": 1 << 32, "top": ((1 << 52) - SLOT_SIZE) & ~(M2 - 1)}
PUNCH = _libc.FALLOC_FL_PUNCH_HOLE | _libc.FALLOC_FL_KEEP_SIZE


def pre_fault(gvm, gpa, size):
    r = K.kvm_pre_fault_memory(gpa=gpa, size=size)
    try:
        rc = gvm.k.ioctl(gvm.vcpu_fds[0], K.KVM_PRE_FAULT_MEMORY, r)
    except OSError as e:
        rc = e.errno
    return rc, r.gpa, r.size


# --- KVM_PRE_FAULT_MEMORY (pre_fault_memory_test) ----------------------------------------------


@pytest.fixture(params=[(s, g) for s in ("default", "sw_protected", "sw_protected+gmem+private")
                        for g in GPAS], ids=lambda p: f"{p[0]}@{p[1]}")
def pf(request, k):
    kind, where = request.param
    gpa = GPAS[where]
    vm_type = K.KVM_X86_DEFAULT_VM if kind == "default" else K.KVM_X86_SW_PROTECTED_VM
    g = GuestVM(k, vm_type)
    private = kind.endswith("private")
    if private:
        g.add_slot(1, gpa, SLOT_SIZE, gmem=g.gmem(SLOT_SIZE))
        g.set_attrs(gpa, SLOT_SIZE, PRIVATE)
    else:
        g.add_slot(1, gpa, SLOT_SIZE)
    return g, gpa, private


def test_pre_fault_selftest_sequence_maps_stage2(pf):
    g, gpa, private = pf
    gfn = gpa >> 12
    assert pre_fault(g, gpa, M2) == (0, gpa + M2, 0)
    entries = g.vm.stage2.entries()
    assert sum(e[2] for e in entries) == 512 and entries[0][0] == gfn
    assert {e[3] for e in entries} == {private} and {e[4] for e in entries} == {True}
    if private:
        inode = g.k.file(g.slots[1]["gmem"]).inode
        assert g.vm.stage2_lookup(gfn + 7)[0] == inode.pfn_base + 7
        assert inode.allocated.count(1) == 512  # kvm_gmem_get_pfn allocated them
        assert g.vm.stage2.counts()[P] == 512  # 6.18 guest_memfd folios are 4K
    else:
        assert g.vm.stage2_lookup(gfn + 7)[0] == user_pfn(g.slots[1]["hva"] + 7 * P)

    assert pre_fault(g, gpa + M2, 2 * P) == (0, gpa + M2 + P, P)  # progress, then no memslot
    assert g.vm.stage2_lookup(gfn + 512) is not None
    assert pre_fault(g, gpa + M2 + P, P) == (errno.ENOENT, gpa + M2 + P, P)
    assert g.vm.stage2.mapped_pages() == 513
    assert g.audit() == []

    # the guest then reads every page: no exit but the final HLT
    reads = [g.guest().read(gpa + i * P, 8) for i in range(SLOT_SIZE // P)]
    assert g.run() == (0, K.KVM_EXIT_HLT)
    assert all(r.result == bytes(8) for r in reads)
    assert g.vm.stage2.mapped_pages() == 513


def test_pre_fault_private_without_gmem_efault_fills_memory_fault(k):
    g = GuestVM(k)
    g.add_slot(1, 1 << 32, 2 * P)
    g.set_attrs((1 << 32) + P, P, PRIVATE)
    assert pre_fault(g, 1 << 32, 2 * P) == (0, (1 << 32) + P, P)  # page 0 mapped: success
    assert pre_fault(g, (1 << 32) + P, P) == (errno.EFAULT, (1 << 32) + P, P)
    assert g.views[0].exit_reason == K.KVM_EXIT_MEMORY_FAULT
    assert g.views[0].memory_fault() == {"flags": K.KVM_MEMORY_EXIT_FLAG_PRIVATE,
                                         "gpa": (1 << 32) + P, "size": P}
    assert g.vm.stage2.mapped_pages() == 1


def test_pre_fault_shared_bad_hva_efault(k):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    g.add_slot(1, 1 << 32, 2 * P, mem=False)
    assert pre_fault(g, 1 << 32, 2 * P) == (errno.EFAULT, 1 << 32, 2 * P)
    assert g.vm.stage2.mapped_pages() == 0


def test_pre_fault_gmem_only_slot_maps_gmem_shared(k):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    gm = g.gmem(4 * P, K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)
    g.add_slot(1, 1 << 32, 4 * P, gmem=gm, mem=False)
    assert pre_fault(g, 1 << 32, 4 * P) == (0, (1 << 32) + 4 * P, 0)
    pfn, private, writable = g.vm.stage2_lookup((1 << 32 >> 12) + 2)
    assert pfn == g.k.file(gm).inode.pfn_base + 2 and not private and writable
    assert g.audit() == []


def test_user_memory_maps_huge_leaves_when_aligned(k):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    raw = _libc.mmap(None, 2 * M2, _libc.PROT_READ | _libc.PROT_WRITE,
                     _libc.MAP_SHARED | _libc.MAP_ANONYMOUS, -1, 0)
    try:
        hva = (raw + M2 - 1) & ~(M2 - 1)
        g.add_slot(1, 1 << 32, M2, hva=hva)
        assert pre_fault(g, 1 << 32, M2)[0] == 0
        assert g.vm.stage2.counts()[M2] == 1
        assert g.vm.stage2.leaf_size(1 << 20) == M2
        # an attribute change on one page splits the leaf and zaps only that page
        g.vm.zap_gfn_range((1 << 20) + 3, (1 << 20) + 4)
        assert g.vm.stage2.mapped_pages() == 511 and g.vm.stage2.counts()[M2] == 0
    finally:
        g.delete_slot(1)
        _libc.munmap(raw, 2 * M2)


# --- zaps -----------------------------------------------------------------------------------------


@pytest.fixture
def mixed(k):
    """SW_PROTECTED VM, one 8-page gmem slot at 4G; pages 0-3 faulted shared, 4-7 private."""
    g = GuestVM(k)
    gm = g.gmem(8 * P)
    g.add_slot(1, 1 << 32, 8 * P, gmem=gm)
    g.set_attrs((1 << 32) + 4 * P, 4 * P, PRIVATE)
    g.guest().write(1 << 32, b"s" * 8 * P)  # private=None: each page by its attribute
    assert g.run() == (0, K.KVM_EXIT_HLT)
    return g, gm, (1 << 32) >> 12


def kinds(g, base):
    return [None if (x := g.vm.stage2_lookup(base + i)) is None else ("P" if x[1] else "S")
            for i in range(8)]


def test_faults_map_each_page_by_its_attribute(mixed):
    g, gm, base = mixed
    assert kinds(g, base) == ["S"] * 4 + ["P"] * 4
    assert g.host_read(1 << 32, 4 * P) == b"s" * 4 * P
    assert g.host_read((1 << 32) + 4 * P, 4 * P) == bytes(4 * P)  # private data is not there
    assert g.audit() == []


def test_set_memory_attributes_zaps_the_range(mixed):
    g, gm, base = mixed
    # pages 2-5 to private: x86 zaps only the mappings of the old kind (attr_filter
    # KVM_FILTER_SHARED), so the private mappings of pages 4-5 stay
    g.set_attrs((1 << 32) + 2 * P, 4 * P, PRIVATE)
    assert kinds(g, base) == ["S", "S", None, None, "P", "P", "P", "P"]
    g.set_attrs((1 << 32) + 3 * P, 4 * P, PRIVATE)  # pages 3-6 already private: a no-op
    assert kinds(g, base) == ["S", "S", None, None, "P", "P", "P", "P"]
    g.set_attrs((1 << 32) + 6 * P, P, 0)  # to shared zaps the private page
    assert kinds(g, base) == ["S", "S", None, None, "P", "P", None, "P"]
    assert g.audit() == []


def test_memslot_delete_zaps_everything_in_it(mixed):
    g, gm, base = mixed
    g.delete_slot(1)
    assert g.vm.stage2.mapped_pages() == 0


def test_punch_hole_zaps_and_private_memory_reads_back_zero(mixed):
    g, gm, base = mixed
    g.k.fallocate(gm, PUNCH, 5 * P, 2 * P)
    assert kinds(g, base) == ["S"] * 4 + ["P", None, None, "P"]
    inode = g.k.file(gm).inode
    assert inode.allocated.get(5) == 0
    r = g.guest().read((1 << 32) + 4 * P, 4 * P)
    assert g.run() == (0, K.KVM_EXIT_HLT)
    assert r.result == b"s" * P + bytes(2 * P) + b"s" * P
    assert kinds(g, base) == ["S"] * 4 + ["P"] * 4
    assert g.audit() == []


def test_zap_by_kind(mixed):
    g, gm, base = mixed
    removed = g.vm.zap_gfn_range(base, base + 8, "shared")
    assert [(r[0] - base, r[2], r[3]) for r in removed] == [(0, 4, False)]
    assert kinds(g, base) == [None] * 4 + ["P"] * 4
    g.vm.zap_gfn_range(base, base + 6, "private")
    assert kinds(g, base) == [None] * 6 + ["P"] * 2
    with pytest.raises(ValueError):
        g.vm.zap_gfn_range(base, base + 8, "both")


def test_gmem_invalidate_zaps_through_the_binding_offset(k):
    """vm.gmem_invalidate(slot, start, end, kind) takes guest_memfd page indexes."""
    g = GuestVM(k)
    gm = g.gmem(16 * P)
    g.add_slot(1, 1 << 32, 8 * P, gmem=gm, offset=8 * P)
    g.set_attrs(1 << 32, 8 * P, PRIVATE)
    g.guest().read(1 << 32, 8 * P)
    assert g.run() == (0, K.KVM_EXIT_HLT)
    slot = g.vm.lookup_memslot((1 << 32) >> 12)
    g.vm.gmem_invalidate(slot, 10, 12, "shared")
    assert g.vm.stage2.mapped_pages() == 8
    g.vm.gmem_invalidate(slot, 10, 12, "private")
    base = (1 << 32) >> 12
    assert [g.vm.stage2_lookup(base + i) is None for i in range(4)] == [False, False, True, True]


def test_gmem_close_zaps(mixed):
    g, gm, base = mixed
    g.k.close(gm)
    assert kinds(g, base) == [None] * 8  # kvm_gmem_release invalidates every binding


# --- Stage2 unit ----------------------------------------------------------------------------------


def test_stage2_map_replaces_and_is_idempotent():
    s = Stage2()
    s.map(10, 100, 4, private=True)
    s.map(10, 100, 4, private=True)
    assert s.entries() == [(10, 100, 4, True, True)]
    s.map(12, user_pfn(0x7F0000000000), 1, private=False, writable=False)
    assert s.entries() == [(10, 100, 2, True, True),
                           (12, user_pfn(0x7F0000000000), 1, False, False),
                           (13, 103, 1, True, True)]
    assert user_hva(s.lookup(12)[0]) == 0x7F0000000000 and user_hva(100) is None
    assert USER_PFN_BASE == 1 << 44


def test_private_runs_agree_with_gfn_is_private(k):
    g = GuestVM(k)
    g.add_slot(1, 0, 64 * P, gmem=g.gmem(64 * P))
    rnd = random.Random(7)
    for _ in range(20):
        a = rnd.randrange(64)
        b = rnd.randrange(a + 1, 65)
        g.set_attrs(a * P, (b - a) * P, rnd.choice([0, PRIVATE]))
    slot = g.vm.lookup_memslot(0)
    runs = private_runs(g.vm, slot, 3, 61)
    assert runs[0][0] == 3 and runs[-1][1] == 61
    flat = [p for s, e, p in runs for _ in range(s, e)]
    assert flat == [g.vm.gfn_is_private(i) for i in range(3, 61)]


# --- in-place conversion profiles: stage-2 follows vm.gmem_invalidate -----------------------------


@pytest.mark.parametrize("profile", ["gmem-attributes-v8", "gmem-convert-rfc-v2"])
def test_in_place_conversion_zaps_and_serves_shared_from_gmem(profile):
    """With in-place conversion a shared page is the guest_memfd page itself (gmem-only
    slot), a conversion zaps the old kind through vm.gmem_invalidate, and a private
    access after to-private maps the same frame private."""
    import kmock
    from kmock.uapi import gmem as G

    with kmock.Kernel(profile=profile) as k:
        g = GuestVM(k)
        flags = K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED
        if profile == "gmem-convert-rfc-v2":
            flags = G.GUEST_MEMFD_FLAG_SUPPORT_SHARED
        gm = g.gmem(4 * P, flags)
        g.add_slot(1, 1 << 32, 4 * P, gmem=gm, mem=False)
        base = (1 << 32) >> 12
        pfn0 = k.file(gm).inode.pfn_base
        w = g.guest().write(1 << 32, b"shared!" + bytes(P) + b"x")
        assert g.run() == (0, K.KVM_EXIT_HLT) and w.done
        assert g.vm.stage2_lookup(base) == (pfn0, False, True)
        m = k.mmap(gm, 4 * P, _libc.PROT_READ | _libc.PROT_WRITE, _libc.MAP_SHARED, 0)
        assert m[0:7] == b"shared!"  # the host sees the guest's shared write in place

        def convert(to_private, offset, size):
            if profile == "gmem-attributes-v8":
                a = G.kvm_memory_attributes2(offset=offset, size=size,
                                             attributes=PRIVATE if to_private else 0)
                k.ioctl(gm, G.KVM_SET_MEMORY_ATTRIBUTES2, a)
            else:
                c = G.kvm_gmem_convert(offset=offset, size=size)
                k.ioctl(gm, G.KVM_GMEM_CONVERT_PRIVATE if to_private
                        else G.KVM_GMEM_CONVERT_SHARED, c)

        convert(True, 0, P)
        assert g.vm.stage2_lookup(base) is None  # the shared mapping was zapped
        assert g.vm.stage2_lookup(base + 1) is not None
        assert g.audit() == []
        s = g.guest().read(1 << 32, 7, private=False)  # wrong kind now
        assert g.run() == (errno.EFAULT, K.KVM_EXIT_MEMORY_FAULT)
        g.guest().clear()
        r = g.guest().read(1 << 32, 7)
        assert g.run() == (0, K.KVM_EXIT_HLT) and not s.done
        assert g.vm.stage2_lookup(base) == (pfn0, True, True)
        convert(False, 0, P)
        assert g.vm.stage2_lookup(base) is None
        assert g.audit() == []
        assert r.result is not None
        m.close()
