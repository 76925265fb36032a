"""Conformance scenario of kmock.kvm.x86_paging: KVM_TRANSLATE walking the guest's 4-level
page tables in long mode (kvm_mmu_gva_to_gpa_system -> paging_tmpl.h walk_addr_generic).

The tables live in an ordinary memslot (the VMM's memory); the vCPU gets the supported CPUID
(long mode needs CPUID.LM) and long-mode control registers by KVM_SET_SREGS, and never runs.
Host-dependent facts (1G pages, SMAP) are recorded as properties of the supported CPUID."""

import ctypes
import mmap

from ..uapi import kvm as K
from ..uapi import x86 as X
from .conformance import create_vm, open_kvm, scenario
from .conformance_x86_vm import vcpu
from .conformance_x86_vm_misc import cpuid_buf

P, A, PS, U, W = 1, 1 << 5, 1 << 7, 1 << 2, 1 << 1
NX = 1 << 63
PML4, PDPT, PD, PT, PT_U, PML5 = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000
MEM = 0x400000
#: a read-only memslot holding one page table (PD[8] -> PT_RO; PT_RO[0] -> 0x126000)
PT_RO = 0x800000


def _entry(mem, table, index, value=None):
    off = table + 8 * index
    if value is not None:
        mem[off:off + 8] = value.to_bytes(8, "little")
    return int.from_bytes(mem[off:off + 8], "little")


def _tables(mem):
    """PML4[0] -> PDPT; PDPT[0] -> PD; PD[2] -> PT (PT[5] = 4K page 0x123000, PT[6] not
    present, PT[7] NX); PD[3] = 2M page 0x200000; PD[5] -> a table outside every memslot;
    PD[6] -> PT_U (user at every level below PD: not user at PDPT/PML4, so not a user
    page); PDPT[1] = 1G page 0x40000000; PDPT[2] -> PD with bit 8 set; PML4[1] has PS
    (reserved); PML4[2] -> PDPT_U, a user-only walk: PML4[2], PDPT[3] -> PD[7] -> PT_U[1]."""
    _entry(mem, PML4, 0, PDPT | W | P)
    _entry(mem, PDPT, 0, PD | W | P)
    _entry(mem, PD, 2, PT | W | P)
    _entry(mem, PT, 5, 0x123000 | W | P)
    _entry(mem, PT, 7, NX | 0x124000 | W | P)
    _entry(mem, PD, 3, 0x200000 | PS | W | P)
    _entry(mem, PD, 5, 0x10000000 | W | P)
    _entry(mem, PDPT, 1, 0x40000000 | PS | W | P)
    _entry(mem, PML4, 1, PDPT | PS | W | P)
    _entry(mem, PML4, 2, PDPT | U | W | P)
    _entry(mem, PDPT, 3, PD | U | W | P)
    _entry(mem, PD, 7, PT_U | U | W | P)
    _entry(mem, PT_U, 1, 0x125000 | U | W | P)
    _entry(mem, PD, 8, PT_RO | W | P)
    _entry(mem, PML5, 0, PML4 | W | P)


ADDRESSES = (
    ("4K page", 0x405ABC),
    ("4K page, non-canonical alias (bit 48)", 0x1000000405ABC),
    ("not present PTE", 0x406000),
    ("NX PTE", 0x407010),
    ("2M page", 0x601234),
    ("table outside memslots", 0xA00000),
    ("1G page", 0x40005678),
    ("PS in a PML4E", 0x8000000000),
    ("user page", 0x100C0E01000 + 0x10),
)


def _cpuid_has(sup, fn, index, reg, bit):
    for i in range(int.from_bytes(sup[0:4], "little")):
        e = K.kvm_cpuid_entry2.from_buffer_copy(sup, 8 + i * ctypes.sizeof(K.kvm_cpuid_entry2))
        if e.function == fn and e.index == index:
            return bool((e.eax, e.ebx, e.ecx, e.edx)[reg] >> bit & 1)
    return False


def _translate(sys, rec, cpu, label, la):
    tr = X.kvm_translation(linear_address=la)
    rec.call(f"{label}: TRANSLATE {la:#x}", sys.ioctl, cpu, X.KVM_TRANSLATE, tr)
    rec.record(f"{label}: gpa, valid", (hex(tr.physical_address), tr.valid))


def _long_mode(sys, rec, kvm, cpu, label="SET_SREGS long mode"):
    """The supported CPUID (long mode needs CPUID.LM) and 4-level long-mode control
    registers with CR3 at PML4; returns (the supported CPUID buffer, the sregs set)."""
    sup = cpuid_buf(256)
    rec.call("GET_SUPPORTED_CPUID", sys.ioctl, kvm, K.KVM_GET_SUPPORTED_CPUID, sup)
    rec.call("SET_CPUID2 (supported)", sys.ioctl, cpu, X.KVM_SET_CPUID2, sup)
    s = X.kvm_sregs()
    rec.call("GET_SREGS", sys.ioctl, cpu, X.KVM_GET_SREGS, s)
    s.cr0 = X.X86_CR0_PE | X.X86_CR0_PG | 1 << 16  # WP
    s.cr4 = X.X86_CR4_PAE
    s.efer = X.EFER_LME | X.EFER_LMA
    s.cr3 = PML4
    s.cs.l, s.cs.db = 1, 0
    rec.call(label, sys.ioctl, cpu, X.KVM_SET_SREGS, s)
    return sup, s


def _ring_vm(sys, rec, ring_bytes):
    """A VM with a dirty ring of ``ring_bytes``, the tables of ``_tables`` in a dirty-logged
    memslot at gpa 0, one vCPU in long mode and its ring mapped: (mem, kvm, vm, cpu, ring),
    cpu and ring None when refused."""
    from .conformance_dirty_ring import RING_PGOFF, enable

    mem = mmap.mmap(-1, MEM)
    _tables(mem)
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    enable(sys, rec, vm, f"DIRTY_LOG_RING {ring_bytes:#x}", K.KVM_CAP_DIRTY_LOG_RING, ring_bytes)
    region = K.kvm_userspace_memory_region(
        slot=0, flags=K.KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr=0, memory_size=MEM,
        userspace_addr=ctypes.addressof(ctypes.c_char.from_buffer(mem)))
    rec.call("logged memslot", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    cpu = vcpu(sys, rec, vm, 0, "KVM_CREATE_VCPU 0")
    ring = None
    if cpu is not None:
        ring = rec.call("mmap the ring", sys.mmap, cpu, ring_bytes,
                        mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, RING_PGOFF * 4096)
        if ring is not None:
            _long_mode(sys, rec, kvm, cpu)
    return mem, kvm, vm, cpu, ring


@scenario("x86_vcpu_translate_paging",
          "KVM_TRANSLATE with 4-level paging (walk_addr_generic): 4K, 2M and 1G (when the CPUID "
          "has it) pages, the non-canonical bits ignored, a not-present entry, NX reserved "
          "without EFER.NXE, PS in a PML4E reserved, a table outside every memslot; the "
          "walk sets the Accessed bit of every entry it used (not Dirty); SMAP refuses a "
          "user page unless RFLAGS.AC; with CR4.LA57 (when the CPUID has it) a 5-level walk")
def x86_vcpu_translate_paging(sys, rec):
    mem = mmap.mmap(-1, MEM)
    _tables(mem)
    ro = mmap.mmap(-1, 0x1000)
    _entry(ro, 0, 0, 0x126000 | W | P)
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for slot, gpa, m, flags in ((0, 0, mem, K.KVM_MEM_LOG_DIRTY_PAGES),
                                (1, PT_RO, ro, K.KVM_MEM_READONLY)):
        region = K.kvm_userspace_memory_region(
            slot=slot, flags=flags, guest_phys_addr=gpa, memory_size=len(m),
            userspace_addr=ctypes.addressof(ctypes.c_char.from_buffer(m)))
        rec.call(f"memslot {slot}", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    cpu = vcpu(sys, rec, vm, 0, "KVM_CREATE_VCPU 0")
    if cpu is None:
        return
    sup, s = _long_mode(sys, rec, kvm, cpu, "SET_SREGS long mode, no NXE")
    gbpages = _cpuid_has(sup, 0x80000001, 0, 3, 26)
    smap = _cpuid_has(sup, 7, 0, 1, 20)
    la57 = _cpuid_has(sup, 7, 0, 2, 16)
    rec.record("CPUID has 1G pages", gbpages)
    rec.record("CPUID has SMAP", smap)
    rec.record("CPUID has LA57", la57)
    for label, la in ADDRESSES[:4]:
        _translate(sys, rec, cpu, label, la)
    rec.record("A bits after the 4K walk (PML4[0], PDPT[0], PD[2], PT[5])",
               [hex(_entry(mem, t, i)) for t, i in ((PML4, 0), (PDPT, 0), (PD, 2), (PT, 5))])
    rec.record("PT[7] (NX, refused) untouched", hex(_entry(mem, PT, 7)))
    bits = ctypes.create_string_buffer(128)
    rec.call("GET_DIRTY_LOG", sys.ioctl, vm, K.KVM_GET_DIRTY_LOG,
             K.kvm_dirty_log(slot=0, dirty_bitmap=ctypes.addressof(bits)))
    rec.record("dirty pages: the tables whose entries got the A bit",
               [i for i in range(MEM >> 12) if bits.raw[i >> 3] >> (i & 7) & 1])
    s.efer |= 1 << 11  # NXE
    rec.call("SET_SREGS with EFER.NXE", sys.ioctl, cpu, X.KVM_SET_SREGS, s)
    for label, la in ADDRESSES[3:]:
        if label == "1G page":
            tr = X.kvm_translation(linear_address=la)
            sys.ioctl(cpu, X.KVM_TRANSLATE, tr)
            rec.record("1G page: valid iff the CPUID has 1G pages",
                       tr.valid == gbpages and (not gbpages or tr.physical_address == 0x40005678))
            continue
        _translate(sys, rec, cpu, label, la)
    rec.record("PT[7] after its walk with NXE", hex(_entry(mem, PT, 7)))
    rec.record("PD[3] (2M) after its walk", hex(_entry(mem, PD, 3)))
    rec.record("PD[5] (its table has no memslot) after", hex(_entry(mem, PD, 5)))
    rec.record("PML4[1] (reserved PS) after", hex(_entry(mem, PML4, 1)))
    rec.record("PDPT[1] (1G) after", hex(_entry(mem, PDPT, 1)) if not gbpages else "n/a")
    _translate(sys, rec, cpu, "table in a read-only memslot", 0x1000000)
    rec.record("PD[8] and PT_RO[0] after (no A bit written to read-only memory)",
               (hex(_entry(mem, PD, 8)), hex(_entry(ro, 0, 0))))
    # a change of the tables is seen by the next walk (no TLB between the VMM and the walk)
    _entry(mem, PT, 5, 0x321000 | W | P)
    _translate(sys, rec, cpu, "4K page after the PTE changed", 0x405ABC)
    if smap:
        s.cr4 |= 1 << 21
        rec.call("SET_SREGS with CR4.SMAP", sys.ioctl, cpu, X.KVM_SET_SREGS, s)
        for ac in (0, 1):
            regs = K.kvm_regs()
            sys.ioctl(cpu, K.KVM_GET_REGS, regs)
            regs.rflags = 2 | ac << 18
            rec.call(f"SET_REGS RFLAGS.AC={ac}", sys.ioctl, cpu, K.KVM_SET_REGS, regs)
            _translate(sys, rec, cpu, f"SMAP, AC={ac}: user page", 0x100C0E01010)
            _translate(sys, rec, cpu, f"SMAP, AC={ac}: supervisor page", 0x405ABC)
    else:
        rec.record("SMAP, AC=0: user page: gpa, valid", "host has no SMAP")
    rec.record("user walk entries after (PML4[2], PDPT[3], PD[7], PT_U[1])",
               [hex(_entry(mem, t, i)) for t, i in ((PML4, 2), (PDPT, 3), (PD, 7), (PT_U, 1))])
    if la57:  # 5-level paging: PML5[0] -> the same PML4; bit 48 now selects PML5[1]
        s.cr4 |= 1 << 12
        s.cr3 = PML5
        if rec.call("SET_SREGS with CR4.LA57", sys.ioctl, cpu, X.KVM_SET_SREGS, s) is None:
            la57 = False  # refused (the probe host's KVM does)
    if la57:
        _translate(sys, rec, cpu, "5-level: 4K page", 0x405ABC)
        _translate(sys, rec, cpu, "5-level: bit 48 (PML5[1], not present)", 0x1000000405ABC)
        _translate(sys, rec, cpu, "5-level: bit 57 ignored", 0x200000000405ABC)
        rec.record("5-level: PML5[0] after", hex(_entry(mem, PML5, 0)))
    sys.close(cpu)
    sys.close(vm)
    sys.close(kvm)


@scenario("x86_vcpu_translate_dirty_ring",
          "KVM_TRANSLATE on a VM with a dirty ring: each Accessed bit the walk writes marks "
          "its table page dirty through mark_page_dirty_in_slot with the vCPU loaded, so it "
          "is pushed to that vCPU's ring, once per write (no write protection dedups a "
          "kernel write); a walk that writes nothing pushes nothing")
def x86_vcpu_translate_dirty_ring(sys, rec):
    from .conformance_dirty_ring import _ring_entries

    mem, kvm, vm, cpu, ring = _ring_vm(sys, rec, 4096)
    if ring is None:
        return
    rec.record("ring before any walk", _ring_entries(ring, 6))
    _translate(sys, rec, cpu, "4K page", 0x405ABC)
    rec.record("ring after the first walk (flags, slot, gfn)", _ring_entries(ring, 6))
    _translate(sys, rec, cpu, "4K page again (every A bit set)", 0x405ABC)
    _translate(sys, rec, cpu, "2M page (PD[3] gets its A bit)", 0x600000 + 0x1234)
    rec.record("ring after the second and third walks", _ring_entries(ring, 8))
    _translate(sys, rec, cpu, "a not-present PTE (PT[6])", 0x406000)
    rec.record("ring after a walk that failed", _ring_entries(ring, 8))
    ring.close()
    sys.close(cpu)
    sys.close(vm)
    sys.close(kvm)


@scenario("x86_vcpu_translate_dirty_ring_full",
          "KVM_TRANSLATE's Accessed-bit pushes count toward the dirty ring's soft limit: "
          "1008 walks of four fresh table entries (4032 pushes into a 4096-entry ring) raise "
          "KVM_REQ_DIRTY_RING_SOFT_FULL, and the next KVM_RUN exits with "
          "KVM_EXIT_DIRTY_RING_FULL before entering the guest")
def x86_vcpu_translate_dirty_ring_full(sys, rec):
    mem, kvm, vm, cpu, ring = _ring_vm(sys, rec, 65536)
    if ring is None:
        return
    run = rec.call("mmap kvm_run", sys.mmap, cpu, 4096, mmap.PROT_READ | mmap.PROT_WRITE,
                   mmap.MAP_SHARED, 0)
    if run is None:
        return
    valid = 0
    for _ in range(1008):
        _tables(mem)  # the four entries of the walk lose their A bits again
        tr = X.kvm_translation(linear_address=0x405ABC)
        sys.ioctl(cpu, X.KVM_TRANSLATE, tr)
        valid += tr.valid
    rec.record("walks that translated", valid)
    dirty = sum(1 for i in range(4096) if ring[16 * i] & K.KVM_DIRTY_GFN_F_DIRTY)
    rec.record("ring entries pushed", dirty)
    rec.call("KVM_RUN", sys.ioctl, cpu, K.KVM_RUN, 0)
    rec.record("exit_reason", int.from_bytes(run[8:12], "little"))
    ring.close()
    run.close()
    sys.close(cpu)
    sys.close(vm)
    sys.close(kvm)
