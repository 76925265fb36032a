"""The TD launch through ioctls only (intel-tdx.rst's order) and every errno of reference §1.1,
in tdx.c's check order (docs/arch/tdx.md, "KVM_MEMORY_ENCRYPT_OP")."""

import ctypes
import errno
import hashlib
import mmap
import os

import pytest

from kmock.testing.errnos import err, errno_or_0
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T
from kmock.uapi import x86 as X

from ._td import GPA, NPAGES, P, Td, cmd, cpuid_entry, init_vm_arg

ENC = K.KVM_MEMORY_ENCRYPT_OP


def test_platform_offers_the_td_type(tdx_kernel):
    k = tdx_kernel()
    kvm = k.open("/dev/kvm", os.O_RDWR)
    types = k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
    assert types & (1 << K.KVM_X86_TDX_VM) and k.profile.platform == "tdx"
    assert k.setting("tdx_connect") is False and k.setting("tdx_post_populate_cleanups") is False
    # any x86 profile with platform="tdx"; without it the type is not offered
    k2 = tdx_kernel("gmem-attributes-v8", platform="tdx", tdx_connect=True)
    assert k2.setting("tdx_connect") is True
    k3 = tdx_kernel("linux-6.18")
    kvm3 = k3.open("/dev/kvm", os.O_RDWR)
    assert not k3.ioctl(kvm3, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) & (1 << 5)
    assert err(k3.ioctl, kvm3, K.KVM_CREATE_VM, K.KVM_X86_TDX_VM) == errno.EINVAL


def test_full_launch_in_intel_tdx_rst_order(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    caps = t.capabilities()
    assert caps.hdr.supported_attrs & T.TDX_TD_ATTR_SEPT_VE_DISABLE
    gpaw_entry = [caps.entries[i] for i in range(caps.hdr.cpuid.nent)
                  if caps.entries[i].function == 0x80000008][0]
    assert (gpaw_entry.eax >> 16) & 0xFF == 0xFF  # GPAW configurable
    t.split_irqchip()
    c = t.init_vm()
    assert c.hw_error == 0 and t.td.state == "INITIALIZED" and t.td.shared_bit == 1 << 47
    t.create_vcpus()
    t.memslot()
    t.set_private()
    src = mmap.mmap(-1, 2 * P)
    src[:] = b"\xab" * (2 * P)
    r = t.init_mem_region(GPA, ctypes.addressof(ctypes.c_char.from_buffer(src)), 2)
    assert (r.gpa, r.nr_pages) == (GPA + 2 * P, 0)  # written back advanced
    assert t.state(0) == t.state(1) == "MAPPED" and t.state(2) == "FREE"
    assert t.td.mrtd.digest() != hashlib.sha384().digest()  # measured
    t.finalize()
    assert t.td.state == "RUNNABLE"
    g = t.guest()
    rd = g.read(GPA, 4)
    assert t.run_to_stop() == K.KVM_EXIT_INTR and rd.result == b"\xab" * 4
    # vCPU sub-commands are refused once RUNNABLE, and so is a new vCPU
    assert err(k.ioctl, t.vcpu, ENC, cmd(T.KVM_TDX_GET_CPUID)) == errno.EINVAL
    assert err(k.ioctl, t.vm, K.KVM_CREATE_VCPU, 5) == errno.EIO


def test_enotty_on_a_vm_that_is_not_a_td(tdx_kernel):
    k = tdx_kernel()
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    assert err(k.ioctl, vm, ENC, cmd(T.KVM_TDX_CAPABILITIES)) == errno.ENOTTY
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vcpu, ENC, cmd(T.KVM_TDX_INIT_VCPU)) == errno.EINVAL


def test_hw_error_must_be_zero_and_unknown_ids(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    c = cmd(T.KVM_TDX_CAPABILITIES, hw_error=1)
    assert err(k.ioctl, t.vm, ENC, c) == errno.EINVAL and c.hw_error == 1
    for bad in (T.KVM_TDX_INIT_VCPU, T.KVM_TDX_INIT_MEM_REGION, T.KVM_TDX_GET_CPUID,
                T.KVM_TDX_TERMINATE_VM, 99):
        assert err(k.ioctl, t.vm, ENC, cmd(bad)) == errno.EINVAL
    assert err(k.ioctl, t.vm, ENC, 0) == errno.EFAULT  # the cmd itself unreadable


def test_capabilities_errnos(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    assert err(k.ioctl, t.vm, ENC, cmd(T.KVM_TDX_CAPABILITIES, flags=1)) == errno.EINVAL
    assert err(k.ioctl, t.vm, ENC, cmd(T.KVM_TDX_CAPABILITIES, 0)) == errno.EFAULT
    small = T.with_cpuid_entries(T.kvm_tdx_capabilities, 1)()
    small.hdr.cpuid.nent = 1
    c = cmd(T.KVM_TDX_CAPABILITIES, ctypes.addressof(small))
    assert err(k.ioctl, t.vm, ENC, c) == errno.E2BIG
    assert small.hdr.cpuid.nent == 1  # not written back
    t.capabilities()  # valid before INIT_VM ...
    t.split_irqchip()
    t.init_vm()
    assert t.capabilities().hdr.cpuid.nent == 4  # ... and after


def test_capabilities_cmd_copy_back_differs_by_setting(tdx_kernel):
    """TDX-A copies the cmd back after CAPABILITIES (a read-only cmd: EFAULT); TDX-B does
    not copy it back at all."""
    for cleanups, expect in ((False, errno.EFAULT), (True, 0)):
        k = tdx_kernel(tdx_post_populate_cleanups=cleanups)
        t = Td(k)
        caps = T.with_cpuid_entries(T.kvm_tdx_capabilities, 8)()
        caps.hdr.cpuid.nent = 8
        ro = mmap.mmap(-1, P)
        ro[:24] = bytes(cmd(T.KVM_TDX_CAPABILITIES, ctypes.addressof(caps)))
        addr = ctypes.addressof(ctypes.c_char.from_buffer(ro))
        libc = ctypes.CDLL(None)
        libc.mprotect(ctypes.c_void_p(addr), P, 1)  # PROT_READ
        try:
            assert errno_or_0(k.ioctl, t.vm, ENC, addr) == expect
            assert caps.hdr.cpuid.nent == 4  # the capabilities were written either way
        finally:
            libc.mprotect(ctypes.c_void_p(addr), P, 3)


@pytest.mark.parametrize("case,expect", [
    ("flags", errno.EINVAL), ("data0", errno.EFAULT), ("nent", errno.E2BIG),
    ("reserved", errno.EINVAL), ("padding", errno.EINVAL), ("attrs", errno.EINVAL),
    ("xfam", errno.EINVAL), ("no_gpaw", errno.EINVAL), ("gpaw50", errno.EINVAL),
    ("tsx", errno.EINVAL), ("waitpkg", errno.EINVAL), ("not_configurable", errno.EINVAL),
])
def test_init_vm_errnos(tdx_kernel, case, expect):
    k = tdx_kernel()
    t = Td(k)
    t.split_irqchip()
    entries = [cpuid_entry(0x80000008, eax=48 << 16)]
    if case == "no_gpaw":
        entries = [cpuid_entry(1)]
    elif case == "gpaw50":
        entries = [cpuid_entry(0x80000008, eax=50 << 16)]
    elif case == "tsx":
        entries.append(cpuid_entry(7, flags=1, ebx=1 << 11))
    elif case == "waitpkg":
        entries.append(cpuid_entry(7, flags=1, ecx=1 << 5))
    elif case == "not_configurable":
        entries.append(cpuid_entry(0x40000000))
    arg = init_vm_arg(entries=entries)
    if case == "reserved":
        arg.hdr.reserved[11] = 1
    elif case == "padding":
        arg.hdr.cpuid.padding = 1
    elif case == "attrs":
        arg.hdr.attributes |= T.TDX_TD_ATTR_DEBUG
    elif case == "xfam":
        arg.hdr.xfam = 1 << 60
    elif case == "nent":
        arg.hdr.cpuid.nent = T.KVM_MAX_CPUID_ENTRIES + 1
    c = cmd(T.KVM_TDX_INIT_VM, 0 if case == "data0" else ctypes.addressof(arg),
            flags=1 if case == "flags" else 0)
    assert err(k.ioctl, t.vm, ENC, c) == expect
    assert t.td.state == "UNINITIALIZED"
    t.init_vm()  # nothing half-done: a correct INIT_VM still works


def test_init_vm_state_and_vcpu_order(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    # a vCPU before INIT_VM: -EIO (TD not INITIALIZED)
    assert err(k.ioctl, t.vm, K.KVM_CREATE_VCPU, 0) == errno.EIO
    t.init_vm()
    assert err(t.init_vm) == errno.EINVAL  # TD state != UNINITIALIZED
    # split irqchip is checked at KVM_CREATE_VCPU
    assert err(k.ioctl, t.vm, K.KVM_CREATE_VCPU, 0) == errno.EINVAL
    cap = K.kvm_enable_cap(cap=T.KVM_CAP_SPLIT_IRQCHIP, flags=1)
    assert err(k.ioctl, t.vm, K.KVM_ENABLE_CAP, cap) == errno.EINVAL
    cap = K.kvm_enable_cap(cap=T.KVM_CAP_SPLIT_IRQCHIP)
    cap.args[0] = 4097  # > MAX_NR_RESERVED_IOAPIC_PINS
    assert err(k.ioctl, t.vm, K.KVM_ENABLE_CAP, cap) == errno.EINVAL
    t.split_irqchip()
    assert err(t.split_irqchip) == errno.EEXIST
    k.ioctl(t.vm, K.KVM_CREATE_VCPU, 0)
    # a TD's EOIs are protected: a full in-kernel irqchip is ENOTTY (x86.c, 6.18), before
    # the EEXIST of an existing (split) irqchip
    assert err(k.ioctl, Td(k).vm, K.KVM_CREATE_IRQCHIP, 0) == errno.ENOTTY
    assert err(k.ioctl, t.vm, K.KVM_CREATE_IRQCHIP, 0) == errno.EEXIST


def test_init_vm_busy_with_vcpus_and_gpaw52(tdx_kernel):
    k = tdx_kernel()
    t = Td(k, gpaw=52)
    t.split_irqchip()
    t.init_vm()
    assert t.td.shared_bit == 1 << 51
    # GPAW 52 without 5-level EPT (a profile with 48-bit GPAs)
    k2 = tdx_kernel(max_gpa_bits=48)
    t2 = Td(k2, gpaw=52)
    assert err(t2.init_vm) == errno.EINVAL


def test_init_vm_seamcall_failures(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    t.td.seamcall_faults["TDH.MNG.CREATE"] = T.TDX_RND_NO_ENTROPY
    assert err(t.init_vm) == errno.EAGAIN
    t.td.seamcall_faults["TDH.MNG.CREATE"] = T.TDX_OPERAND_BUSY
    assert err(t.init_vm) == errno.EIO
    status = T.TDX_OPERAND_INVALID | 0x1E
    t.td.seamcall_faults["TDH.MNG.INIT"] = status
    arg = init_vm_arg()
    c = cmd(T.KVM_TDX_INIT_VM, ctypes.addressof(arg))
    assert err(k.ioctl, t.vm, ENC, c) == errno.EINVAL and c.hw_error == status
    t.init_vm()


def test_vcpu_subcommands(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    t.split_irqchip()
    t.init_vm()
    v = k.ioctl(t.vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_INIT_VCPU, hw_error=1)) == errno.EINVAL
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_INIT_VCPU, flags=1)) == errno.EINVAL
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_CAPABILITIES)) == errno.EINVAL  # a VM id
    # INIT_MEM_REGION before INIT_VCPU
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_INIT_MEM_REGION)) == errno.EINVAL
    t.set_cpuid(v)  # x2APIC in the CPUID first (tests/tdx/test_init_vcpu.py)
    k.ioctl(v, ENC, cmd(T.KVM_TDX_INIT_VCPU, 0x1234))
    assert k.vm(t.vm).vcpus[0].arch.rcx == 0x1234
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_INIT_VCPU)) == errno.EINVAL  # twice
    # GET_CPUID: too small -> E2BIG with the needed nent written back
    cp = T.with_cpuid_entries(K.kvm_cpuid2, 1)()
    cp.hdr.nent = 1
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_GET_CPUID, ctypes.addressof(cp))) == errno.E2BIG
    assert cp.hdr.nent == 4  # leaves 0, 1, 0x80000000, 0x80000008
    cp = T.with_cpuid_entries(K.kvm_cpuid2, 4)()
    cp.hdr.nent = 4
    k.ioctl(v, ENC, cmd(T.KVM_TDX_GET_CPUID, ctypes.addressof(cp)))
    gpaw = [cp.entries[i] for i in range(4) if cp.entries[i].function == 0x80000008][0]
    assert (gpaw.eax >> 16) & 0xFF == 48


def test_vcpu_fd_checks_td_state_before_reading_the_cmd(tdx_kernel):
    # TDX-A: before INIT_VM there is no HKID: EINVAL even with an unreadable cmd
    for cleanups, expect in ((False, errno.EINVAL), (True, errno.EFAULT)):
        k = tdx_kernel(tdx_post_populate_cleanups=cleanups)
        t = Td(k)
        t.split_irqchip()
        t.init_vm()
        v = k.ioctl(t.vm, K.KVM_CREATE_VCPU, 0)
        t.td.state = "RUNNABLE"  # as after FINALIZE
        assert err(k.ioctl, v, ENC, 0) == expect


def _td_for_region(k, **kw):
    t = Td(k, **kw)
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    t.memslot()
    t.set_private()
    t.src = mmap.mmap(-1, 8 * P)
    t.src[:] = b"\x5a" * (8 * P)
    t.srcaddr = ctypes.addressof(ctypes.c_char.from_buffer(t.src))
    return t


@pytest.mark.parametrize("case", ["flags", "src_align", "gpa_align", "zero", "wrap", "shared_first",
                                  "shared_last", "data0"])
def test_init_mem_region_einval(tdx_kernel, case):
    k = tdx_kernel()
    t = _td_for_region(k)
    src, gpa, n, flags = t.srcaddr, GPA, 1, 0
    if case == "flags":
        flags = 2
    elif case == "src_align":
        src += 8
    elif case == "gpa_align":
        gpa += 8
    elif case == "zero":
        n = 0
    elif case == "wrap":
        n = (1 << 52) - 1
    elif case == "shared_first":
        gpa |= t.shared
    elif case == "shared_last":
        gpa, n = t.shared - P, 2
    if case == "data0":
        c = cmd(T.KVM_TDX_INIT_MEM_REGION, 0)
        assert err(k.ioctl, t.vcpu, ENC, c) == errno.EFAULT
        return
    assert err(t.init_mem_region, gpa, src, n, flags) == errno.EINVAL
    assert t.state(0) == "FREE"


def test_init_mem_region_gmem_rules(tdx_kernel):
    k = tdx_kernel()
    t = _td_for_region(k)
    # not private (attribute cleared): EINVAL from kvm_gmem_populate
    t.set_private(GPA + 4 * P, P, private=False)
    assert err(t.init_mem_region, GPA + 4 * P, t.srcaddr, 1) == errno.EINVAL
    # no memslot there: EINVAL
    assert err(t.init_mem_region, GPA + NPAGES * P, t.srcaddr, 1) == errno.EINVAL
    # the same GPA twice: EEXIST, and the S-EPT entry is no longer FREE
    t.init_mem_region(GPA, t.srcaddr, 2)
    assert err(t.init_mem_region, GPA + P, t.srcaddr, 1) == errno.EEXIST
    assert t.state(1) == "MAPPED"
    # a run that reaches an added page stops there: progress is written back
    assert err(t.init_mem_region, GPA + 2 * P, t.srcaddr, 4) == errno.EINVAL  # page 4 shared
    assert (t.region.gpa, t.region.nr_pages) == (GPA + 4 * P, 2)
    # TDX-B: source_addr 0 is refused up front
    k2 = tdx_kernel(tdx_post_populate_cleanups=True)
    t2 = _td_for_region(k2)
    assert err(t2.init_mem_region, GPA, 0, 1) == errno.EINVAL


def test_init_mem_region_after_the_guest_memfd_was_closed_is_efault(tdx_kernel):
    """kvm_gmem_populate: the memslot keeps KVM_MEM_GUEST_MEMFD, but kvm_gmem_get_file
    finds no file once the VMM closed its guest_memfd: -EFAULT (not kvm_slot_has_gmem's
    -EINVAL), and tdx_vcpu_init_mem_region returns it."""
    k = tdx_kernel()
    t = _td_for_region(k)
    k.close(t.gmem)
    assert err(t.init_mem_region, GPA, t.srcaddr, 1) == errno.EFAULT
    assert t.state(0) == "FREE"


def test_init_mem_region_unreadable_source_efault_with_progress(tdx_kernel):
    k = tdx_kernel()
    t = _td_for_region(k)
    m = mmap.mmap(-1, 3 * P)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    import kmock._libc as libc  # noqa: F401  (test-side only: make the third page unreadable)
    ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + 2 * P), P, 0)
    assert err(t.init_mem_region, GPA, base, 3) == errno.EFAULT
    assert (t.region.nr_pages, t.region.gpa) == (1, GPA + 2 * P)
    assert t.state(1) == "MAPPED" and t.state(2) == "FREE"
    ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + 2 * P), P, 3)


def test_init_mem_region_eintr_writes_back_progress(tdx_kernel):
    k = tdx_kernel()
    t = _td_for_region(k)
    k.vm(t.vm).vcpus[0].arch.signal_after_pages = 3
    assert err(t.init_mem_region, GPA, t.srcaddr, 5) == errno.EINTR
    r = t.region
    assert (r.source_addr, r.gpa, r.nr_pages) == (t.srcaddr + 3 * P, GPA + 3 * P, 2)
    assert [t.state(i) for i in range(5)] == ["MAPPED"] * 3 + ["FREE"] * 2
    # the VMM restarts from the written-back struct
    t.init_mem_region(r.gpa, r.source_addr, r.nr_pages)
    assert t.state(4) == "MAPPED"


def test_nr_premapped_blocks_finalize_until_zapped(tdx_kernel):
    k = tdx_kernel()
    t = _td_for_region(k)
    t.td.seamcall_faults["TDH.MEM.PAGE.ADD"] = T.TDX_OPERAND_BUSY
    assert err(t.init_mem_region, GPA, t.srcaddr, 1) == errno.EBUSY
    assert t.td.nr_premapped == 1
    assert err(t.finalize) == errno.EINVAL
    # zapping the premapped page (PUNCH_HOLE) brings the counter back to 0
    k.fallocate(t.gmem, 3, 0, P)
    assert t.td.nr_premapped == 0
    t.init_mem_region(GPA, t.srcaddr, 1)
    t.finalize()
    # TDX-B: no counter, a failed ADD leaves nothing mapped
    k2 = tdx_kernel(tdx_post_populate_cleanups=True)
    t2 = _td_for_region(k2)
    t2.td.seamcall_faults["TDH.MEM.PAGE.ADD"] = 0xC000000000000000
    assert err(t2.init_mem_region, GPA, t2.srcaddr, 1) == errno.EIO
    assert t2.td.nr_premapped == 0 and t2.vmobj.stage2_lookup(GPA >> 12) is None
    t2.finalize()


def test_finalize_rules_and_pre_fault(tdx_kernel):
    k = tdx_kernel()
    t = Td(k)
    assert err(t.finalize) == errno.EINVAL  # no HKID
    t2 = _td_for_region(k)
    pf = K.kvm_pre_fault_memory(gpa=GPA + 8 * P, size=P)
    assert err(k.ioctl, t2.vcpu, K.KVM_PRE_FAULT_MEMORY, pf) == errno.EOPNOTSUPP
    t2.td.seamcall_faults["TDH.MR.FINALIZE"] = T.TDX_OPERAND_BUSY
    c = cmd(T.KVM_TDX_FINALIZE_VM)
    assert err(k.ioctl, t2.vm, ENC, c) == errno.EBUSY and c.hw_error == T.TDX_OPERAND_BUSY
    c = cmd(T.KVM_TDX_FINALIZE_VM, data=5, flags=7)  # flags and data are not checked
    k.ioctl(t2.vm, ENC, c)
    assert err(t2.finalize) == errno.EINVAL  # already RUNNABLE
    k.ioctl(t2.vcpu, K.KVM_PRE_FAULT_MEMORY, pf)
    assert t2.state(8) == "PENDING"  # pre-fault after FINALIZE AUGs


def test_finalize_seamcall_error_bugs_the_vm(tdx_kernel):
    k = tdx_kernel()
    t = _td_for_region(k)
    t.td.seamcall_faults["TDH.MR.FINALIZE"] = T.TDX_OPERAND_INVALID
    assert err(t.finalize) == errno.EIO
    assert err(k.ioctl, t.vm, K.KVM_CHECK_EXTENSION, 0) == errno.EIO
    assert k.violations[-1].kind == "td_bugged"


def test_kvm_run_before_finalize_is_einval(tdx_kernel):
    k = tdx_kernel()
    t = _td_for_region(k)
    assert err(t.run) == errno.EINVAL


def test_init_mem_region_in_place_source_under_v8(tdx_kernel):
    """v8 with kvm.gmem_in_place_conversion=1: source_addr 0 adds the pages' own contents,
    written by the VMM while they were shared (reference conversion §2.2)."""
    from kmock.uapi import gmem as G

    k = tdx_kernel("gmem-attributes-v8", platform="tdx")
    t = Td(k, gmem_flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    t.memslot()
    m = k.mmap(t.gmem, NPAGES * P, 3, 1)
    m[0:8] = b"firmware"
    m.close()
    k.ioctl(t.gmem, k.profile.set_memory_attributes2, G.kvm_memory_attributes2(
        offset=0, size=2 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    r = t.init_mem_region(GPA, 0, 2)
    assert (r.source_addr, r.gpa, r.nr_pages) == (0, GPA + 2 * P, 0)
    assert t.state(0) == t.state(1) == "MAPPED"
    t.finalize()
    rd = t.guest().read(GPA, 8)
    t.run_to_stop()
    assert rd.result == b"firmware"
    # without in-place conversion a NULL source is a bad user address (TDX-A) or refused
    # up front (TDX-B)
    for cleanups, expect in ((False, errno.EFAULT), (True, errno.EINVAL)):
        t2 = _td_for_region(tdx_kernel(tdx_post_populate_cleanups=cleanups))
        assert err(t2.init_mem_region, GPA, 0, 1) == expect


def test_snapshot_names_each_td(tdx_kernel):
    k = tdx_kernel()
    t = Td(k).launch()
    snap = k.snapshot()
    assert snap["tdx"]["tds"] == [{"vm": 0, "state": "RUNNABLE", "gpaw": 48, "connect": False,
                                   "sept": {"MAPPED": 2, "FREE": t.td.sept.npages - 2}}]
    assert [t["name"] for t in snap["tdx"]["tables"]] == ["S-EPT"]  # as under capture


def test_capture_has_the_sept_table(tdx_kernel):
    from kmock import snapshot as snapmod

    k = tdx_kernel()
    t = Td(k).launch()
    full = snapmod.capture(k)
    tdx = full["arch"]["tdx"]
    vm_id = tdx["tds"][0]["vm"]
    assert vm_id is not None and vm_id in [v["id"] for v in full["vms"]]
    gfn = GPA >> 12
    (table,) = tdx["tables"]
    assert (table["name"], table["space"], table["vm"]) == ("S-EPT", "gfn", vm_id)
    assert table["runs"] == [[gfn, gfn + 2, "MAPPED"]]  # the two ADDed image pages
    assert table["legend"]["MAPPED"] == "accepted by the TD"
    assert tdx["tds"][0]["sept"] == {"MAPPED": 2, "FREE": t.td.sept.npages - 2}


def test_kvm_run_of_a_vcpu_without_init_vcpu_is_einval(tdx_kernel):
    """An AP made without KVM_TDX_INIT_VCPU starts UNINITIALIZED (kvm_arch_vcpu_create: the
    TD's LAPIC is in the kernel): KVM_RUN waits for INIT/SIPI, so with immediate_exit it is
    EINTR; once the VMM makes it RUNNABLE, tdx_vcpu_pre_run refuses it (EINVAL)."""
    k = tdx_kernel()
    t = _td_for_region(k)
    v2 = k.ioctl(t.vm, K.KVM_CREATE_VCPU, 1)  # never KVM_TDX_INIT_VCPU'd
    t.finalize()
    mp = X.kvm_mp_state()
    k.ioctl(v2, X.KVM_GET_MP_STATE, mp)
    assert mp.mp_state == K.KVM_MP_STATE_UNINITIALIZED
    m = k.mmap(v2, 4096, 3, 1, 0)
    K.kvm_run.from_address(m.address).immediate_exit = 1
    assert err(k.ioctl, v2, K.KVM_RUN, 0) == errno.EINTR
    K.kvm_run.from_address(m.address).immediate_exit = 0
    k.ioctl(v2, X.KVM_SET_MP_STATE, X.kvm_mp_state(K.KVM_MP_STATE_RUNNABLE))
    assert err(k.ioctl, v2, K.KVM_RUN, 0) == errno.EINVAL
    assert t.run_to_stop() == K.KVM_EXIT_INTR


def test_memory_encrypt_op_on_a_vcpu_that_is_not_a_td():
    """A DEFAULT VM's vCPU: EINVAL on a TDX host (vt_vcpu_mem_enc_ioctl, !is_td_vcpu), ENOTTY
    on a host without the vendor handler (x86.c kvm_arch_vcpu_ioctl; this machine's kernel:
    conformance x86_vcpu_mem_enc_op)."""
    import errno
    import os

    import kmock
    import kmock_tdx
    from kmock.uapi import kvm as K
    from kmock.uapi import tdx as T

    for profile, want in (("linux-6.18-tdx", errno.EINVAL), ("linux-6.18", errno.ENOTTY)):
        k = kmock.Kernel(profile, plugins=[kmock_tdx])
        try:
            vm = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, 0)
            cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
            try:
                k.ioctl(cpu, K.KVM_MEMORY_ENCRYPT_OP, T.kvm_tdx_cmd(id=T.KVM_TDX_INIT_VCPU))
            except OSError as e:
                assert e.errno == want, profile
            else:
                raise AssertionError(f"{profile}: no error")
        finally:
            k.close_all()


def test_init_vm_cpuid_entries_are_matched_as_kvm_find_cpuid_entry2_does(tdx_kernel):
    """setup_tdparams_cpuids (6.16-6.18): for each configurable leaf the module lists,
    kvm_find_cpuid_entry2 takes the first entry of that function whose index matches or is
    not significant (no KVM_CPUID_FLAG_SIGNIFCANT_INDEX); copy_cnt counts the leaves that
    found one and must equal nent. So a duplicate entry is EINVAL, and an entry of
    function 0xD with another index but no significant-index flag stands for 0xD.1."""
    gpaw = cpuid_entry(0x80000008, eax=(48 << 16) | 0x30)
    k = tdx_kernel()
    t = Td(k)
    t.split_irqchip()
    dup = [gpaw, cpuid_entry(1), cpuid_entry(1)]
    arg = init_vm_arg(entries=dup)
    assert err(k.ioctl, t.vm, ENC, cmd(T.KVM_TDX_INIT_VM, ctypes.addressof(arg))) == errno.EINVAL
    sig = [gpaw, cpuid_entry(0xD, index=5, flags=1)]  # significant: no leaf 0xD.5
    arg = init_vm_arg(entries=sig)
    assert err(k.ioctl, t.vm, ENC, cmd(T.KVM_TDX_INIT_VM, ctypes.addressof(arg))) == errno.EINVAL
    loose = [gpaw, cpuid_entry(0xD, index=5)]  # not significant: taken for 0xD.1
    t.init_vm(entries=loose)


def test_a_td_has_at_most_one_vcpu_per_present_cpu(tdx_kernel):
    """tdx_vm_init: kvm->max_vcpus = min(KVM_MAX_VCPUS, num_present_cpus()); the VM fd's
    KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPUS) answers it and KVM_CREATE_VCPU past it is
    EINVAL. The mocked machine's present CPUs: the profile's KVM_CAP_NR_VCPUS."""
    import types

    base = tdx_kernel().profile
    caps = types.MappingProxyType({**base.caps, K.KVM_CAP_NR_VCPUS: 3})
    k = tdx_kernel(caps=caps)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPUS) == base.max_vcpus
    t = Td(k, nvcpus=3)
    assert k.ioctl(t.vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPUS) == 3
    default = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_DEFAULT_VM)
    assert k.ioctl(default, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPUS) == base.max_vcpus
    t.split_irqchip()
    t.init_vm()
    t.create_vcpus()
    assert err(k.ioctl, t.vm, K.KVM_CREATE_VCPU, 3) == errno.EINVAL
    assert len(k.vm(t.vm).vcpus) == 3
    # the profile's own TD: as many as its machine has online
    k2 = tdx_kernel()
    assert k2.profile.caps[K.KVM_CAP_NR_VCPUS] < base.max_vcpus
    vm2 = k2.ioctl(k2.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, K.KVM_X86_TDX_VM)
    assert k2.ioctl(vm2, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPUS) == min(
        base.max_vcpus, base.caps[K.KVM_CAP_NR_VCPUS])
