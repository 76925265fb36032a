"""The guest page-table walk KVM does on the VMM's behalf (x86, Linux 6.18).

Two ioctls read the guest's own page tables from guest memory:

- KVM_TRANSLATE: kvm_arch_vcpu_ioctl_translate -> kvm_mmu_gva_to_gpa_system, a supervisor
  read (access 0) through arch/x86/kvm/mmu/paging_tmpl.h ``walk_addr_generic`` in the
  vCPU's paging mode: 4- or 5-level (long mode, CR4.LA57), PAE (3 levels, the first from
  the PDPTE registers) or 32-bit (2 levels of 4-byte entries, 4M pages with CR4.PSE).
- KVM_SET_SREGS with PAE paging: ``load_pdptrs`` (arch/x86/kvm/x86.c) reads the four PDPTEs
  at CR3.

Facts kept from those functions (conformance scenario x86_vcpu_translate_paging compares
the long-mode ones with the real kernel):

- Tables are read through the memslot's userspace address (``gfn_to_hva_memslot_prot``),
  so the walk sees the VMM's memory as it is now; a table outside every user memslot, or
  an unreadable address, fails the walk.
- An entry fails the walk when not present, or when it sets a bit that
  ``__reset_rsvds_bits_mask`` reserves: address bits at or above the guest's MAXPHYADDR,
  bit 63 without EFER.NXE, PS in a PML4E/PML5E (and bit 8 there on AMD-compatible CPUID),
  PS in a PDPTE without 1G pages in the CPUID, bits 13..20 (2M) / 13..29 (1G) of a large
  page. Bits of the linear address above the top level's are ignored (no canonical check).
- Permission for a supervisor read fails only with SMAP: CR4.SMAP, a user page (U at every
  level) and RFLAGS.AC clear. Protection keys (CR4.PKE, CR4.PKS) are not modelled [kmock].
- A walk that succeeds sets the Accessed bit of every entry it used that lacks it
  (``update_accessed_dirty_bits``; never Dirty: the access is a read), except in a
  read-only memslot, and marks each table page it wrote dirty in the memslot's dirty log.
  KVM writes with a compare-and-exchange and walks again when the entry changed under it;
  kmock compares the entry again before writing it.
- The walk fails with INVALID_GPA (all ones); the ioctl still succeeds (valid = 0).
"""

from .. import _libc
from ..uapi import kvm as K
from . import dirty_log
from .x86_state import EDX, U64, cpuid_entry, cpuid_has, guest_maxphyaddr

INVALID_GPA = U64
PAGE_SHIFT = 12

_P, _U, _A, _PS = 1, 1 << 2, 1 << 5, 1 << 7
_NX = 1 << 63
_RFLAGS_AC = 1 << 18
_CR0_PG = 1 << 31
_CR4_PSE, _CR4_PAE, _CR4_LA57, _CR4_SMAP = 1 << 4, 1 << 5, 1 << 12, 1 << 21
_EFER_NXE, _EFER_LMA = 1 << 11, 1 << 10
#: PT64_BASE_ADDR_MASK: bits 51:12; the 32-bit one is bits 31:12 of a 4-byte entry
_BASE64 = ((1 << 52) - 1) & ~0xFFF
_BASE32 = 0xFFFFF000
#: PT32_DIR_PSE36_MASK: bits 16:13 of a 4M PDE give bits 35:32 of the address
_PSE36 = 0xF << 13
#: the vendors guest_cpuid_is_amd_compatible accepts (CPUID leaf 0 EBX, EDX, ECX)
_AMD_VENDORS = {b"AuthenticAMD", b"HygonGenuine"}


def _rsvd(lo, hi):
    return ((1 << (hi - lo + 1)) - 1) << lo


class _Mode:
    """The walk's parameters for the vCPU's paging mode (kvm_mmu cpu_role + guest_rsvd_check)."""

    __slots__ = ("levels", "size", "bits", "nx_mask", "rsvd", "pse")

    def __init__(self, st):
        s = st.sregs
        cpuid, supported = st.cpuid, st.supported

        def cap(fn, reg, bit):  # guest_cpu_cap_has: the guest's CPUID and KVM's support
            return cpuid_has(cpuid, fn, 0, reg, bit) and cpuid_has(supported, fn, 0, reg, bit)

        nx = bool(s.efer & _EFER_NXE)
        if s.efer & _EFER_LMA:
            self.levels = 5 if s.cr4 & _CR4_LA57 else 4
        elif s.cr4 & _CR4_PAE:
            self.levels = 3
        else:
            self.levels = 2
        self.size, self.bits = (4, 10) if self.levels == 2 else (8, 9)
        self.nx_mask = _NX if self.levels > 2 else 0
        self.pse = bool(s.cr4 & _CR4_PSE)
        pa_rsvd = _rsvd(guest_maxphyaddr(cpuid), 63)
        m0, m1 = [0] * 5, [0] * 5  # rsvd_bits_mask[bit 7 of the entry][level - 1]
        if self.levels == 2:
            if self.pse:
                m1[1] = _rsvd(17, 21) if cap(1, EDX, 17) else _rsvd(13, 21)  # PSE36
        else:
            high = pa_rsvd & (_rsvd(0, 62) if self.levels == 3 else _rsvd(0, 51))
            if not nx:
                high |= _NX
            m0[0] = m0[1] = m1[0] = high
            m1[1] = high | _rsvd(13, 20)
            if self.levels >= 4:
                gb = 0 if cap(0x80000001, EDX, 26) else _PS
                leaf0 = cpuid_entry(cpuid, 0)
                vendor = b"".join(
                    r.to_bytes(4, "little") for r in (leaf0[4], leaf0[6], leaf0[5])
                ) if leaf0 else b""
                nonleaf8 = (1 << 8) if vendor in _AMD_VENDORS else 0
                m0[2] = high | gb
                m1[2] = high | gb | _rsvd(13, 29)
                m0[3] = m1[3] = m0[4] = m1[4] = high | nonleaf8 | _PS
        self.rsvd = (m0, m1)

    def is_last(self, level, pte):
        """is_last_gpte: level 1 always; bit 7 above it (reserved where it is no page
        size), except 32-bit paging without CR4.PSE, where bit 7 of a PDE is ignored."""
        if level == 1:
            return True
        if self.levels == 2 and not self.pse:
            return False
        return bool(pte & _PS)


def _table_hva(vcpu, st, gfn):
    """(memslot, hva, writable) of a page-table page, or None: kvm_vcpu_gfn_to_memslot in the
    vCPU's address space (1 in SMM), kvm_is_visible_memslot, gfn_to_hva_memslot_prot."""
    vm = vcpu.vm
    as_id = 1 if st.smm and vm.kernel.profile.nr_memslot_as_ids > 1 else 0
    slot = vm.lookup_memslot(gfn, as_id)
    if slot is None or slot.id >= K.KVM_USER_MEM_SLOTS:
        return None
    hva = slot.userspace_addr + ((gfn - slot.base_gfn) << PAGE_SHIFT)
    return slot, hva, not slot.flags & K.KVM_MEM_READONLY


def _read(hva, size):
    try:
        return int.from_bytes(_libc.copy_from_user(hva, size), "little")
    except OSError:
        return None  # __get_user faulted


def gva_to_gpa(vcpu, st, gva):
    """kvm_mmu_gva_to_gpa_system: the gpa of linear address ``gva`` for a supervisor read,
    or INVALID_GPA. ``st`` is the vCPU's kmock.kvm.x86_state.X86State."""
    if not st.sregs.cr0 & _CR0_PG:
        return gva  # nonpaging_gva_to_gpa: all 64 bits
    mode = _Mode(st)
    for _ in range(8):  # walk again when an entry changed before its A bit was written
        walked = _walk(vcpu, st, mode, gva)
        if walked is None:
            return INVALID_GPA
        gpa, used = walked
        if _set_accessed(used, mode.size):
            return gpa
    return INVALID_GPA


def _walk(vcpu, st, mode, gva):
    """walk_addr_generic for access 0: (gpa, entries used) or None when the walk fails.
    Entries are (memslot, hva, writable, table gfn, pte) from the top level down."""
    level = mode.levels
    if level == 3:
        pte = st.pdptrs[(gva >> 30) & 3]  # mmu->get_pdptr: the PDPTE registers
        if not pte & _P:
            return None
        level = 2
    else:
        pte = st.sregs.cr3 & (U64 if mode.size == 8 else 0xFFFFFFFF)
    base = _BASE64 if mode.size == 8 else _BASE32
    access = U64  # pte_access: the AND of every level's entry (NX inverted)
    used = []
    while True:
        shift = PAGE_SHIFT + mode.bits * (level - 1)
        index = (gva >> shift) & ((1 << mode.bits) - 1)
        table_gfn = (pte & base) >> PAGE_SHIFT
        where = _table_hva(vcpu, st, table_gfn)
        if where is None:
            return None
        slot, hva, writable = where
        hva += index * mode.size
        pte = _read(hva, mode.size)
        if pte is None:
            return None
        access &= pte ^ mode.nx_mask
        if not pte & _P:
            return None
        if pte & mode.rsvd[(pte >> 7) & 1][level - 1]:
            return None
        used.append((slot, hva, writable, table_gfn, pte))
        if mode.is_last(level, pte):
            break
        level -= 1
    if st.sregs.cr4 & _CR4_SMAP and access & _U and not st.regs.rflags & _RFLAGS_AC:
        return None  # permission_fault: SMAP on a supervisor read of a user page
    page_mask = (1 << shift) - 1
    gpa = (pte & base & ~page_mask) | (gva & page_mask)
    if mode.size == 4 and level == 2 and (
            cpuid_has(st.cpuid, 1, 0, EDX, 17) and cpuid_has(st.supported, 1, 0, EDX, 17)):
        gpa += (pte & _PSE36) << (32 - 13)  # pse36_gfn_delta
    return gpa, used


def _set_accessed(used, size):
    """update_accessed_dirty_bits for a read: the A bit of each entry lacking it, unless
    its memslot is read-only; the table page is then dirty. False when an entry changed
    since the walk read it (KVM's cmpxchg failed: walk again)."""
    for slot, hva, writable, table_gfn, pte in used:
        if pte & _A or not writable:
            continue
        if _read(hva, size) != pte:
            return False
        try:
            _libc.copy_to_user(hva, (pte | _A).to_bytes(size, "little"))
        except OSError:
            return True  # __try_cmpxchg_user faulted: the walk fails in KVM; seen as done
        dirty_log.mark(slot, table_gfn, 1, by_kernel=True)
    return True


def load_pdptrs(vcpu, st):
    """load_pdptrs(vcpu, CR3) for PAE paging: the four PDPTEs at CR3 (page CR3 >> 12, offset
    CR3 bits 11:5) become the PDPTE registers unless the read fails or a present entry
    sets a reserved bit (guest MAXPHYADDR and up, bits 5..8 and 1..2); then nothing
    changes. Returns whether they were loaded."""
    cr3 = st.sregs.cr3
    where = _table_hva(vcpu, st, (cr3 & U64) >> PAGE_SHIFT)
    if where is None:
        return False
    try:
        raw = _libc.copy_from_user(where[1] + (cr3 & 0xFE0), 32)
    except OSError:
        return False
    pdptes = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, 32, 8)]
    rsvd = _rsvd(guest_maxphyaddr(st.cpuid), 63) | _rsvd(5, 8) | _rsvd(1, 2)
    if any(e & _P and e & rsvd for e in pdptes):
        return False
    st.pdptrs = pdptes
    return True

