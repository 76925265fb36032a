"""kmock.kvm.x86_paging: KVM_TRANSLATE's walk of the guest page tables and the PDPTE load of
KVM_SET_SREGS, in the paging modes this machine's kernel cannot show (its KVM keeps only
long mode: conformance scenario x86_vcpu_translate_paging covers 4-level paging there).

Sources (Linux 6.18): arch/x86/kvm/mmu/paging_tmpl.h FNAME(walk_addr_generic),
FNAME(is_last_gpte), FNAME(update_accessed_dirty_bits), pse36_gfn_delta;
arch/x86/kvm/mmu/mmu.c __reset_rsvds_bits_mask, permission_fault (SMAP);
arch/x86/kvm/x86.c load_pdptrs, __set_sregs_common, __set_sregs2,
kvm_arch_vcpu_ioctl_translate.
"""

import ctypes
import mmap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kmock
from kmock.kvm import x86_state
from kmock.testing.conformance_vcpu import cpuid_table
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

P, W, U, A, D, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
NX = 1 << 63
INVALID = (1 << 64) - 1
PG_PE = X.X86_CR0_PG | X.X86_CR0_PE
CR4_PSE, CR4_PAE, CR4_LA57, CR4_SMAP = 1 << 4, 1 << 5, 1 << 12, 1 << 21
EFER_NXE = 1 << 11
MEM = 0x400000


class Guest:
    """A VM with one memslot of MEM bytes at gpa 0 (the VMM's anonymous memory) and vCPU 0
    with the profile's supported CPUID, ``edit`` applied to it."""

    def __init__(self, k, edit=None, slot_flags=0):
        self.k = k
        self.mem = mmap.mmap(-1, MEM)
        kvm = k.open("/dev/kvm", 2)
        self.vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
            slot=0, flags=slot_flags, memory_size=MEM,
            userspace_addr=ctypes.addressof(ctypes.c_char.from_buffer(self.mem))))
        self.cpu = k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0)
        entries = [list(e) for e in k.profile.cpuid]
        if edit:
            edit(entries)
        k.ioctl(self.cpu, X.KVM_SET_CPUID2, cpuid_table(entries))

    def put(self, addr, value, size=8):
        self.mem[addr:addr + size] = value.to_bytes(size, "little")

    def get(self, addr, size=8):
        return int.from_bytes(self.mem[addr:addr + size], "little")

    def sregs(self, cr0=PG_PE, cr4=0, efer=0, cr3=0, rflags=None):
        s = X.kvm_sregs()
        self.k.ioctl(self.cpu, X.KVM_GET_SREGS, s)
        s.cr0, s.cr4, s.efer, s.cr3 = cr0, cr4, efer, cr3
        if efer & X.EFER_LMA:
            s.cs.l, s.cs.db = 1, 0
        assert self.k.ioctl(self.cpu, X.KVM_SET_SREGS, s) == 0
        if rflags is not None:
            regs = K.kvm_regs()
            self.k.ioctl(self.cpu, K.KVM_GET_REGS, regs)
            regs.rflags = rflags
            self.k.ioctl(self.cpu, K.KVM_SET_REGS, regs)

    def long_mode(self, cr3, cr4=0, efer=0, **kw):
        self.sregs(cr4=CR4_PAE | cr4, efer=X.EFER_LME | X.EFER_LMA | efer, cr3=cr3, **kw)

    def translate(self, la):
        tr = X.kvm_translation(linear_address=la)
        assert self.k.ioctl(self.cpu, X.KVM_TRANSLATE, tr) == 0
        assert (tr.writeable, tr.usermode) == (1, 0)
        assert tr.valid == (tr.physical_address != INVALID)
        return tr.physical_address


def set_bit(fn, index, reg, bit, on=True):
    def edit(entries):
        for e in entries:
            if e[0] == fn and e[1] == index:
                e[3 + reg] = e[3 + reg] | 1 << bit if on else e[3 + reg] & ~(1 << bit)
                return
        if on:
            entries.append([fn, index, 0, 0, 0, 0, 0])
            entries[-1][3 + reg] = 1 << bit
    return edit


@pytest.fixture
def k():
    with kmock.Kernel(profile="linux-6.18") as kernel:
        yield kernel


# --- 32-bit paging ------------------------------------------------------------------------------


def test_32bit_paging_4k_pages_and_accessed_bits(k):
    g = Guest(k)
    g.put(0x1000 + 4 * 1, 0x2000 | W | P, 4)  # PDE[1] -> PT
    g.put(0x2000 + 4 * 3, 0x55000 | P, 4)     # PTE[3]
    g.sregs(cr3=0x1000)
    va = 1 << 22 | 3 << 12 | 0x123
    assert g.translate(va) == 0x55123
    assert g.translate(va | 1 << 40) == 0x55123  # bits above 31 take no part in the walk
    assert g.get(0x1004, 4) == 0x2000 | W | P | A  # 4-byte entries: A set, never D
    assert g.get(0x200C, 4) == 0x55000 | P | A
    assert g.translate(va + 0x1000) == INVALID  # PTE[4] not present
    # CR3 keeps its low 32 bits (the walk's first entry is a u32)
    g.sregs(cr3=1 << 32 | 0x1000)
    assert g.translate(va) == 0x55123


def test_32bit_paging_4m_pages_need_cr4_pse(k):
    g = Guest(k)
    g.put(0x1000 + 4 * 2, 0x00C00000 | PS | P, 4)
    va = 2 << 22 | 0x12345
    g.sregs(cr3=0x1000, cr4=CR4_PSE)
    assert g.translate(va) == 0xC12345
    # without CR4.PSE bit 7 of a PDE is ignored: the PDE names a page table at 0xC00000,
    # outside every memslot
    g.sregs(cr3=0x1000)
    assert g.translate(va) == INVALID


def test_32bit_pse36_bits_and_their_reserved_bits(k):
    g = Guest(k)  # the profile's CPUID has PSE-36
    g.put(0x1000 + 4 * 3, 0x00400000 | 0x5 << 13 | PS | P, 4)
    g.put(0x1000 + 4 * 4, 0x00400000 | 1 << 17 | PS | P, 4)  # bit 17: reserved with PSE-36
    g.sregs(cr3=0x1000, cr4=CR4_PSE)
    assert g.translate(3 << 22 | 0x10) == 0x5_0040_0010
    assert g.translate(4 << 22) == INVALID
    # without PSE-36 in the guest's CPUID bits 13..21 are reserved
    g2 = Guest(k, set_bit(1, 0, x86_state.EDX, 17, on=False))
    g2.put(0x1000 + 4 * 3, 0x00400000 | 0x5 << 13 | PS | P, 4)
    g2.put(0x1000 + 4 * 5, 0x00800000 | PS | P, 4)
    g2.sregs(cr3=0x1000, cr4=CR4_PSE)
    assert g2.translate(3 << 22) == INVALID
    assert g2.translate(5 << 22 | 0x20) == 0x800020


# --- PAE paging: the PDPTE registers ----------------------------------------------------------


def pdptrs(g):
    s2 = X.kvm_sregs2()
    g.k.ioctl(g.cpu, X.KVM_GET_SREGS2, s2)
    return s2.flags, list(s2.pdptrs)


def test_pae_set_sregs_loads_the_pdptes_at_cr3(k):
    g = Guest(k)
    # PDPT at 0x3020 (CR3 bits 11:5 are its offset); PDPTE[1] -> PD 0x4000
    g.put(0x3020 + 8, 0x4000 | P)
    g.put(0x4000 + 8 * 2, 0x5000 | W | P)  # PDE[2] -> PT
    g.put(0x5000 + 8 * 7, 0x77000 | P)
    g.put(0x4000 + 8 * 3, 0x600000 | PS | P)  # a 2M page
    g.sregs(cr4=CR4_PAE, cr3=0x3020)
    assert pdptrs(g) == (X.KVM_SREGS2_FLAGS_PDPTRS_VALID, [0, 0x4000 | P, 0, 0])
    va = 1 << 30 | 2 << 21 | 7 << 12 | 0x45
    assert g.translate(va) == 0x77045
    assert g.translate(1 << 30 | 3 << 21 | 0x1234) == 0x601234
    assert g.translate(va & ~(1 << 30)) == INVALID  # PDPTE[0] not present
    assert g.get(0x3028) == 0x4000 | P  # PDPTEs get no A bit (they are registers)
    assert g.get(0x4010) == 0x5000 | W | P | A
    # the registers, not memory, start the walk until the next load
    g.put(0x3020 + 8, 0)
    assert g.translate(va) == 0x77045
    g.sregs(cr4=CR4_PAE, cr3=0x3020)
    assert g.translate(va) == INVALID


def test_pae_pdpte_load_that_fails_keeps_the_registers(k):
    g = Guest(k)
    g.put(0x3000, 0x4000 | P)
    g.sregs(cr4=CR4_PAE, cr3=0x3000)
    assert pdptrs(g)[1] == [0x4000 | P, 0, 0, 0]
    # a present PDPTE with a reserved bit (bits 1..2, 5..8): load_pdptrs fails, SET_SREGS
    # still succeeds and the registers keep their values
    g.put(0x6000, 0x7000 | 1 << 1 | P)
    g.sregs(cr4=CR4_PAE, cr3=0x6000)
    assert pdptrs(g)[1] == [0x4000 | P, 0, 0, 0]
    # CR3 outside every memslot: the read fails, same
    g.sregs(cr4=CR4_PAE, cr3=0x10000000)
    assert pdptrs(g)[1] == [0x4000 | P, 0, 0, 0]
    # a reserved bit in a PDPTE that is not present is not checked
    g.put(0x6000, 0x7000 | 1 << 1)
    g.sregs(cr4=CR4_PAE, cr3=0x6000)
    assert pdptrs(g)[1] == [0x7000 | 1 << 1, 0, 0, 0]


def test_set_sregs2_with_pdptrs_does_not_read_memory(k):
    g = Guest(k)
    g.put(0x3000, 0x9000 | P)  # what a load from memory would give
    g.put(0x4000, 0x5000 | P)  # PDE[0] -> PT
    g.put(0x5000, 0x88000 | P)
    s2 = X.kvm_sregs2()
    k.ioctl(g.cpu, X.KVM_GET_SREGS2, s2)
    s2.cr0, s2.cr4, s2.cr3 = PG_PE, CR4_PAE, 0x3000
    s2.flags = X.KVM_SREGS2_FLAGS_PDPTRS_VALID
    s2.pdptrs[0] = 0x4000 | P
    assert k.ioctl(g.cpu, X.KVM_SET_SREGS2, s2) == 0
    assert pdptrs(g)[1][0] == 0x4000 | P
    assert g.translate(0x10) == 0x88010


def test_pae_nx_bit_is_reserved_without_efer_nxe(k):
    g = Guest(k)
    g.put(0x3000, 0x4000 | P)
    g.put(0x4000, NX | 0x200000 | PS | P)
    g.sregs(cr4=CR4_PAE, cr3=0x3000)
    assert g.translate(0x1000) == INVALID
    g.sregs(cr4=CR4_PAE, cr3=0x3000, efer=EFER_NXE)
    assert g.translate(0x1000) == 0x201000


# --- 4- and 5-level paging ------------------------------------------------------------------


def four_level(g, va, pa, large=0):
    """Map ``va`` to ``pa`` with tables at 0x1000.. (a 4K page, or 2M / 1G with ``large``)."""
    g.put(0x1000 + 8 * (va >> 39 & 511), 0x2000 | W | P)
    if large == 1 << 30:
        g.put(0x2000 + 8 * (va >> 30 & 511), pa | PS | W | P)
        return
    g.put(0x2000 + 8 * (va >> 30 & 511), 0x3000 | W | P)
    if large == 2 << 20:
        g.put(0x3000 + 8 * (va >> 21 & 511), pa | PS | W | P)
        return
    g.put(0x3000 + 8 * (va >> 21 & 511), 0x4000 | W | P)
    g.put(0x4000 + 8 * (va >> 12 & 511), pa | W | P)


def test_one_gig_pages_follow_the_guest_cpuid(k):
    g = Guest(k)  # the profile has GBPAGES
    four_level(g, 0x40000000, 0x80000000, large=1 << 30)
    g.long_mode(0x1000)
    assert g.translate(0x40012345) == 0x80012345
    g2 = Guest(k, set_bit(0x80000001, 0, x86_state.EDX, 26, on=False))
    four_level(g2, 0x40000000, 0x80000000, large=1 << 30)
    g2.long_mode(0x1000)
    assert g2.translate(0x40012345) == INVALID


def test_address_bits_at_maxphyaddr_are_reserved(k):
    def maxphyaddr_40(entries):
        for e in entries:
            if e[0] == 0x80000008:
                e[3] = e[3] & ~0xFF | 40
    g = Guest(k, maxphyaddr_40)
    four_level(g, 0x1000, 0x7000)
    g.long_mode(0x1000)
    assert g.translate(0x1000) == 0x7000
    g.put(0x4000 + 8, 1 << 40 | 0x7000 | W | P)
    assert g.translate(0x1000) == INVALID
    g.put(0x4000 + 8, 1 << 39 | 0x7000 | W | P)
    assert g.translate(0x1000) == 1 << 39 | 0x7000
    g.put(0x4000 + 8, 1 << 52 | 0x7000 | W | P)  # bits 52..62 are not address bits
    assert g.translate(0x1000) == 0x7000


def test_amd_cpuid_reserves_bit_8_of_a_pml4e(k):
    def amd(entries):
        for e in entries:
            if e[0] == 0:
                e[4], e[6], e[5] = (int.from_bytes(b"AuthenticAMD"[i:i + 4], "little")
                                    for i in (0, 4, 8))
    for edit, ok in ((None, True), (amd, False)):
        g = Guest(k, edit)
        four_level(g, 0x5000, 0x9000)
        g.put(0x1000, 0x2000 | 1 << 8 | W | P)
        g.long_mode(0x1000)
        assert (g.translate(0x5000) == 0x9000) is ok


def test_five_level_paging(k):
    cpuid = tuple(e if (e[0], e[1]) != (7, 0) else e[:5] + (e[5] | 1 << 16,) + e[6:]
                  for e in k.profile.cpuid)  # LA57
    with kmock.Kernel(profile="linux-6.18", cpuid=cpuid) as k57:
        g = Guest(k57)
        four_level(g, 0x405000, 0x123000)
        g.put(0x6000, 0x1000 | W | P)  # PML5[0] -> the PML4
        g.long_mode(0x6000, cr4=CR4_LA57)
        assert g.translate(0x405ABC) == 0x123ABC
        assert g.translate(1 << 48 | 0x405ABC) == INVALID  # PML5[1]
        assert g.translate(1 << 57 | 0x405ABC) == 0x123ABC  # above the top level: unused
        assert g.get(0x6000) == 0x1000 | W | P | A


def test_smap_refuses_user_pages_unless_rflags_ac(k):
    cpuid = tuple(e if (e[0], e[1]) != (7, 0) else e[:4] + (e[4] | 1 << 20,) + e[5:]
                  for e in k.profile.cpuid)  # SMAP
    with kmock.Kernel(profile="linux-6.18", cpuid=cpuid) as ks:
        g = Guest(ks)
        four_level(g, 0x5000, 0x9000)
        for addr in (0x1000, 0x2000, 0x3000, 0x4000 + 8 * 5):
            g.put(addr, g.get(addr) | U)  # a user page: U at every level
        g.long_mode(0x1000, cr4=CR4_SMAP, rflags=0x2)
        assert g.translate(0x5000) == INVALID
        g.long_mode(0x1000, cr4=CR4_SMAP, rflags=0x2 | 1 << 18)
        assert g.translate(0x5000) == 0x9000
        g.put(0x1000, g.get(0x1000) & ~U)  # not user at one level: a supervisor page
        g.long_mode(0x1000, cr4=CR4_SMAP, rflags=0x2)
        assert g.translate(0x5000) == 0x9000
        g.long_mode(0x1000, rflags=0x2)  # no CR4.SMAP
        g.put(0x1000, g.get(0x1000) | U)
        assert g.translate(0x5000) == 0x9000


def test_read_only_memslot_tables_get_no_accessed_bit(k):
    g = Guest(k, slot_flags=K.KVM_MEM_READONLY)
    four_level(g, 0x5000, 0x9000)
    g.long_mode(0x1000)
    assert g.translate(0x5000) == 0x9000
    assert g.get(0x1000) == 0x2000 | W | P


def test_accessed_bits_make_table_pages_dirty_in_the_log(k):
    g = Guest(k, slot_flags=K.KVM_MEM_LOG_DIRTY_PAGES)
    four_level(g, 0x5000, 0x9000)
    g.put(0x2000, g.get(0x2000) | A)  # already accessed: that table is not written
    g.long_mode(0x1000)
    assert g.translate(0x5000) == 0x9000
    bits = ctypes.create_string_buffer(MEM >> 15)
    k.ioctl(g.vm, K.KVM_GET_DIRTY_LOG, K.kvm_dirty_log(slot=0, dirty_bitmap=ctypes.addressof(bits)))
    assert [i for i in range(MEM >> 12) if bits.raw[i >> 3] >> (i & 7) & 1] == [1, 3, 4]


# --- against a model ---------------------------------------------------------------------------

# gpa of each 4K or 2M page the model maps, by virtual page; tables are allocated from 0x100000
pages = st.dictionaries(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 7), st.integers(-1, 7)),
    st.integers(1, 0xFFF), max_size=12)


@settings(max_examples=40, deadline=None)
@given(pages=pages, probes=st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 7), st.integers(0, 7),
              st.integers(0, 0xFFF)), max_size=12))
def test_translate_agrees_with_a_dict_of_mappings(pages, probes):
    """Random 4-level tables: (PML4 i, PDPT i, PD i, PT i or -1 for a 2M page) -> frame. A
    probe translates to the mapped frame plus the offset, or INVALID where nothing maps it;
    after a successful walk every entry it used has A, and no leaf has D."""
    with kmock.Kernel(profile="linux-6.18") as k:
        g = Guest(k)
        nxt = [0x100000]
        tables = {}

        def table(key):
            if key not in tables:
                tables[key] = nxt[0]
                nxt[0] += 0x1000
            return tables[key]

        model = {}
        root = table(())
        for (a, b, c, d), frame in sorted(pages.items(), key=lambda kv: kv[0][3]):
            if d >= 0 and model.get((a, b, c, -1)) is not None:
                continue  # a 2M page already holds this PDE
            if d < 0 and any(key[:3] == (a, b, c) and key[3] >= 0 for key in model):
                continue  # a page table already holds this PDE
            g.put(root + 8 * a, table((a,)) | W | P)
            g.put(table((a,)) + 8 * b, table((a, b)) | W | P)
            if d < 0:
                g.put(table((a, b)) + 8 * c, frame << 21 | PS | W | P)
            else:
                g.put(table((a, b)) + 8 * c, table((a, b, c)) | W | P)
                g.put(table((a, b, c)) + 8 * d, frame << 12 | W | P)
            model[(a, b, c, d)] = frame
        g.long_mode(root)
        for a, b, c, d, off in probes:
            va = a << 39 | b << 30 | c << 21 | d << 12 | off
            if (a, b, c, -1) in model:
                want = model[(a, b, c, -1)] << 21 | (va & ((1 << 21) - 1))
            elif (a, b, c, d) in model:
                want = model[(a, b, c, d)] << 12 | off
            else:
                want = INVALID
            assert g.translate(va) == want
        for a, b, c, d, off in probes:
            if (a, b, c, -1) in model or (a, b, c, d) in model:
                assert g.get(root + 8 * a) & A
                leaf = (table((a, b)) + 8 * c if (a, b, c, -1) in model
                        else table((a, b, c)) + 8 * d)
                assert g.get(leaf) & A and not g.get(leaf) & D
