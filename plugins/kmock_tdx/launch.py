"""KVM_MEMORY_ENCRYPT_OP for TDs: the KVM_TDX_* sub-commands on the VM and vCPU fds.

Check orders and errnos are those of arch/x86/kvm/vmx/tdx.c, listed with their sources in
docs/arch/tdx.md ("KVM_MEMORY_ENCRYPT_OP: dispatch and each sub-command"): TDX-A is the
6.16-6.18 tdx.c (the default), TDX-B the 6.19 "TDX post-populate cleanups" (profile setting
``tdx_post_populate_cleanups``). The VM-fd sub-commands go through the core's sub-command
registry (the cmd is read, ``hw_error`` checked, the id looked up); the vCPU fd has its own
handler because TDX-A checks the TD state before it reads the cmd.
"""

import ctypes
import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from kmock.kvm import x86_vm
from kmock.kvm.populate import gmem_populate
from kmock.kvm.stage2 import probe_user
from kmock.kvm.x86_state import apic_base_ok
from kmock.kvm.x86_state import state as x86_state
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from .td import INITIALIZED, PAGE_SHIFT, PAGE_SIZE, RUNNABLE, UNINITIALIZED, gmem_page_of

U64 = (1 << 64) - 1
ENTRY = ctypes.sizeof(K.kvm_cpuid_entry2)

#: KVM_SUPPORTED_TD_ATTRS as the module reports it (SEPT_VE_DISABLE; DEBUG is not offered)
SUPPORTED_ATTRS = T.TDX_TD_ATTR_SEPT_VE_DISABLE
#: supported XFAM: x87, SSE, AVX, AVX-512 state (the module's xfam_fixed0 & KVM's) [U values]
SUPPORTED_XFAM = 0xE7
#: the CPUID leaves the module lets the VMM configure (function, index, flags, eax, ebx,
#: ecx, edx: masks of configurable bits). 0x80000008 EAX[23:16] = 0xff: the GPAW is
#: configurable (td_init_cpuid_entry2) [C]; the other masks are kmock's [U].
CPUID_CONFIGS = (
    (0x1, 0, 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF),
    (0x7, 0, 1, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
    (0xD, 1, 1, 0xFFFFFFFF, 0, 0, 0),
    (0x80000008, 0, 0, 0x00FF00FF, 0, 0, 0),
)
#: init_kvm_tdx_caps (6.16-6.18): the TDVMCALLs KVM forwards to userspace, in
#: GetTdVmCallInfo leaf 1's R11 bits: SetupEventNotifyInterrupt; the kernel_* fields are 0
TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT = 1 << 1
_HLE, _RTM = 1 << 4, 1 << 11  # CPUID.7.0:EBX
_WAITPKG = 1 << 5  # CPUID.7.0:ECX
_X2APIC = 1 << 21  # CPUID.1:ECX

#: TD_PARAMS.TSC_FREQUENCY: a u16 in units of 25 MHz (TDX_TSC_KHZ_TO_25MHZ, tdx_arch.h),
#: which TDH.MNG.INIT takes from 4 (100 MHz) to 400 (10 GHz), else
#: TDX_OPERAND_INVALID | OPERAND_ID_TSC_FREQUENCY (intel/tdx-module tdh_mng_init.c,
#: VIRT_TSC_FREQUENCY_MIN/MAX) [C]
TSC_UNIT_KHZ = 25000
TSC_FREQUENCY_MIN, TSC_FREQUENCY_MAX = 4, 400
OPERAND_ID_TSC_FREQUENCY = 70

#: kvm_apic_set_base's value in tdx_vcpu_init: APIC_DEFAULT_PHYS_BASE | LAPIC_MODE_X2APIC
#: (EXTD | ENABLE), plus MSR_IA32_APICBASE_BSP for the reset BSP
APIC_BASE_X2APIC = 0xFEE00000 | 0x400 | 0x800
APIC_BASE_BSP = 0x100


def _find_entry(entries, function, index):
    """kvm_find_cpuid_entry2: the first entry of ``function`` whose index matches, or whose
    index is not significant (no KVM_CPUID_FLAG_SIGNIFCANT_INDEX)."""
    for e in entries:
        if e.function == function and (not e.flags & 1 or e.index == index):
            return e
    return None


def _entries(raw, n):
    return [K.kvm_cpuid_entry2.from_buffer_copy(raw, i * ENTRY) for i in range(n)]


def _entry_bytes(rows):
    out = bytearray()
    for fn, idx, fl, a, b, c, d in rows:
        out += bytes(K.kvm_cpuid_entry2(function=fn, index=idx, flags=fl, eax=a, ebx=b, ecx=c,
                                        edx=d))
    return bytes(out)


def _copy_back(arg, cmd):
    """tdx_vm_ioctl's final copy_to_user of the cmd: a failure is -EFAULT."""
    try:
        copy_to_user(arg, cmd)
    except OSError:
        raise oserror(errno.EFAULT) from None


# --- VM fd ---------------------------------------------------------------------------------


def check_cmd(f, cmd):
    """tdx_vm_ioctl: ``hw_error`` must be 0 on input (nothing is written back)."""
    if cmd.hw_error:
        raise oserror(errno.EINVAL)


def _vm_op(fn, copy_back=True):
    """Run a VM sub-command; TDX-A copies the cmd back whatever the result."""
    def op(f, cmd, arg):
        td = f.vm.arch
        with f.vm.slots_lock:
            try:
                return fn(f.vm, td, cmd)
            finally:
                if copy_back and not (fn is capabilities and td.cleanups):
                    _copy_back(arg, cmd)
    op.__name__ = fn.__name__
    op.__doc__ = fn.__doc__
    return op


def capabilities(vm, td, cmd):
    """KVM_TDX_CAPABILITIES (tdx_get_capabilities): flags, header, nent (E2BIG, nent not
    written back), then the header (user_tdvmcallinfo_1_r11 = SetupEventNotifyInterrupt)
    and the configurable CPUID leaves."""
    if cmd.flags:
        raise oserror(errno.EINVAL)
    caps = copy_from_user(cmd.data, T.kvm_tdx_capabilities)
    n = len(CPUID_CONFIGS)
    if caps.cpuid.nent < n:
        raise oserror(errno.E2BIG)
    out = T.kvm_tdx_capabilities(supported_attrs=SUPPORTED_ATTRS, supported_xfam=SUPPORTED_XFAM,
                                 user_tdvmcallinfo_1_r11=TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT)
    out.cpuid.nent = n
    write_user_at(cmd.data, 0, bytes(out))
    write_user_at(cmd.data, ctypes.sizeof(out), _entry_bytes(CPUID_CONFIGS))
    return 0


def init_vm(vm, td, cmd):
    """KVM_TDX_INIT_VM (tdx_td_init, setup_tdparams*, __tdx_td_init), in that order."""
    if td.state != UNINITIALIZED:
        raise oserror(errno.EINVAL)
    if cmd.flags:
        raise oserror(errno.EINVAL)
    hdr = copy_from_user(cmd.data, T.kvm_tdx_init_vm)
    nent = hdr.cpuid.nent
    if nent > T.KVM_MAX_CPUID_ENTRIES:
        raise oserror(errno.E2BIG)
    entries = _entries(read_user_at(cmd.data, ctypes.sizeof(hdr), nent * ENTRY), nent)
    if any(hdr.reserved) or hdr.cpuid.padding:
        raise oserror(errno.EINVAL)
    if vm.vcpus:
        raise oserror(errno.EBUSY)
    if hdr.attributes & ~SUPPORTED_ATTRS or hdr.xfam & ~SUPPORTED_XFAM:
        raise oserror(errno.EINVAL)
    leaf = _find_entry(entries, 0x80000008, 0)  # setup_tdparams_eptp_controls
    if leaf is None:
        raise oserror(errno.EINVAL)
    gpaw = (leaf.eax >> 16) & 0xFF
    if gpaw not in (48, 52) or (gpaw == 52 and vm.kernel.profile.max_gpa_bits < 52):
        raise oserror(errno.EINVAL)  # 52 needs 5-level EPT
    # setup_tdparams_cpuids: each configurable leaf takes the entry kvm_find_cpuid_entry2
    # finds for it; TSX or WAITPKG in one is EINVAL; entries no leaf took (or duplicates)
    # make copy_cnt != nent: EINVAL
    copy_cnt = 0
    for fn, idx, *_masks in CPUID_CONFIGS:
        e = _find_entry(entries, fn, idx)
        if e is None:
            continue
        if e.function == 7 and e.index == 0 and (e.ebx & (_HLE | _RTM) or e.ecx & _WAITPKG):
            raise oserror(errno.EINVAL)
        copy_cnt += 1
    if copy_cnt != nent:
        raise oserror(errno.EINVAL)
    st = td.fault("TDH.MNG.CREATE")
    if st:
        cmd.hw_error = 0
        raise oserror(errno.EAGAIN if st & T.TDX_SEAMCALL_STATUS_MASK == T.TDX_RND_NO_ENTROPY
                      else errno.EIO)
    # setup_tdparams: td_params->tsc_frequency = TDX_TSC_KHZ_TO_25MHZ(default_tsc_khz), the
    # rate of the VM-level KVM_SET_TSC_KHZ (or the host's); KVM checks no range, the
    # module's TDH.MNG.INIT does
    tsc = x86_vm.state(vm).default_tsc_khz // TSC_UNIT_KHZ & 0xFFFF
    st = td.fault("TDH.MNG.INIT")
    if not st and not TSC_FREQUENCY_MIN <= tsc <= TSC_FREQUENCY_MAX:
        st = T.TDX_OPERAND_INVALID | OPERAND_ID_TSC_FREQUENCY
    if st:
        if st & T.TDX_SEAMCALL_STATUS_MASK == T.TDX_OPERAND_INVALID:
            cmd.hw_error = st
            raise oserror(errno.EINVAL)
        raise oserror(errno.EIO)
    td.tsc_khz = tsc * TSC_UNIT_KHZ
    td.attributes, td.xfam = hdr.attributes, hdr.xfam
    td.cpuid = tuple((e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in entries)
    td.init_sept(gpaw)
    td.state = INITIALIZED
    return 0


def finalize_vm(vm, td, cmd):
    """KVM_TDX_FINALIZE_VM (tdx_td_finalize): flags and data are not checked."""
    if not td.has_hkid or td.state == RUNNABLE:
        raise oserror(errno.EINVAL)
    if td.nr_premapped and not td.cleanups:
        raise oserror(errno.EINVAL)
    st = td.fault("TDH.MR.FINALIZE")
    if st:
        cmd.hw_error = st
        if st & T.TDX_SEAMCALL_STATUS_MASK == T.TDX_OPERAND_BUSY:
            raise oserror(errno.EBUSY)
        td.bug("TDH.MR.FINALIZE", st, 0)
        raise oserror(errno.EIO)
    td.finalize()  # then kvm->arch.pre_fault_allowed = true
    return 0


def vm_ops():
    return {T.KVM_TDX_CAPABILITIES: _vm_op(capabilities),
            T.KVM_TDX_INIT_VM: _vm_op(init_vm),
            T.KVM_TDX_FINALIZE_VM: _vm_op(finalize_vm)}


# --- vCPU fd -------------------------------------------------------------------------------


def vcpu_mem_enc_op(f, arg):
    """KVM_MEMORY_ENCRYPT_OP on a TD vCPU (tdx_vcpu_ioctl): TDX-A checks the TD (HKID, not
    RUNNABLE) before reading the cmd; TDX-B reads and checks the cmd first. The cmd is
    never copied back on the vCPU fd."""
    vm = f.vm
    vm.check_caller()
    td = vm.arch
    if not td.cleanups:
        _check_vcpu_td(td)
    cmd = copy_from_user(arg, T.kvm_tdx_cmd)
    if cmd.hw_error:
        raise oserror(errno.EINVAL)
    if td.cleanups:
        _check_vcpu_td(td)
    vcpu = f.vcpu
    with vcpu.mutex:
        if cmd.id == T.KVM_TDX_INIT_VCPU:
            return init_vcpu(vcpu, td, cmd)
        if cmd.id == T.KVM_TDX_INIT_MEM_REGION:
            return init_mem_region(vcpu, td, cmd)
        if cmd.id == T.KVM_TDX_GET_CPUID:
            return get_cpuid(vcpu, td, cmd)
    raise oserror(errno.EINVAL)


def _check_vcpu_td(td):
    if not td.has_hkid or td.state == RUNNABLE:
        raise oserror(errno.EINVAL)


def init_vcpu(vcpu, td, cmd):
    """KVM_TDX_INIT_VCPU (tdx_vcpu_init): flags, a second INIT_VCPU, then
    kvm_apic_set_base(x2APIC | BSP for the reset BSP, host-initiated): without the X2APIC
    bit (CPUID.1:ECX[21]) in the vCPU's KVM_SET_CPUID2 table the x2APIC enable bit is
    reserved and the call is EINVAL, so the VMM sets the CPUID first. Then
    tdx_td_vcpu_init: ``data`` is the initial RCX, mp_state becomes RUNNABLE."""
    if cmd.flags:
        raise oserror(errno.EINVAL)
    if vcpu.arch.initialized:
        raise oserror(errno.EINVAL)
    st = x86_state(vcpu)
    base = APIC_BASE_X2APIC
    if vcpu.id == x86_vm.state(vcpu.vm).bsp_vcpu_id:  # kvm_vcpu_is_reset_bsp
        base |= APIC_BASE_BSP
    if not apic_base_ok(st, base):
        raise oserror(errno.EINVAL)
    st.sregs.apic_base = base
    vcpu.arch.initialized = True
    vcpu.arch.rcx = cmd.data
    st.mp_state = K.KVM_MP_STATE_RUNNABLE
    vcpu.set_stopped(False)  # an AP created UNINITIALIZED (kvm_arch_vcpu_create) runs now
    return 0


def init_mem_region(vcpu, td, cmd):
    """KVM_TDX_INIT_MEM_REGION (tdx_vcpu_init_mem_region + tdx_gmem_post_populate).

    Pages go through kvm_gmem_populate (kmock.kvm.populate): a gfn outside a guest_memfd
    slot or without the PRIVATE attribute is EINVAL, a page already added EEXIST. The
    region is written back advanced by the pages done, whatever the result.
    """
    vm = vcpu.vm
    if not vcpu.arch.initialized:
        raise oserror(errno.EINVAL)
    with vm.slots_lock:
        if td.state == RUNNABLE:
            raise oserror(errno.EINVAL)
        if cmd.flags & ~T.KVM_TDX_MEASURE_MEMORY_REGION:
            raise oserror(errno.EINVAL)
        region = copy_from_user(cmd.data, T.kvm_tdx_init_mem_region)
        src, gpa, n = region.source_addr, region.gpa, region.nr_pages
        last = (gpa + (n << PAGE_SHIFT)) & U64
        # in-place conversion (v8, kvm.gmem_in_place_conversion=1): no source means the
        # pages' own contents, written while they were shared [reference 2.2]
        p = vm.kernel.profile
        in_place = not src and p.conversion == "attributes-v8" and p.gmem_in_place_conversion
        if (src | gpa) & (PAGE_SIZE - 1) or n == 0 or n > U64 >> PAGE_SHIFT or last <= gpa or \
                gpa & td.shared_bit or (last - 1) & td.shared_bit or \
                (td.cleanups and not src and not in_place):
            raise oserror(errno.EINVAL)
        measure = bool(cmd.flags & T.KVM_TDX_MEASURE_MEMORY_REGION)
        err = 0
        while region.nr_pages:
            budget = vcpu.arch.signal_after_pages
            if budget == 0:
                vcpu.arch.signal_after_pages = None  # delivered on the way out
                err = errno.EINTR
                break
            want = region.nr_pages if budget is None else min(budget, region.nr_pages)
            try:
                done = gmem_populate(vm, region.gpa >> PAGE_SHIFT,
                                     None if in_place else region.source_addr, want,
                                     lambda g, p, s, k: _post_populate(td, g, p, s, k, measure))
            except OSError as e:
                err = e.errno
                break
            if not in_place:
                region.source_addr += done << PAGE_SHIFT  # in place: stays 0 [U]
            region.gpa += done << PAGE_SHIFT
            region.nr_pages -= done
            if budget is not None:
                vcpu.arch.signal_after_pages = budget - done
        try:
            copy_to_user(cmd.data, region)
        except OSError:
            raise oserror(errno.EFAULT) from None
        if err:
            raise oserror(err)
    return 0


def _post_populate(td, gfn, pfn, src, npages, measure):
    """tdx_gmem_post_populate for a run: the source pages (get_user_pages_fast: EFAULT at
    the first unreadable one; ``src`` None: in place, the pages keep their contents), the
    private mirror SPTE, TDH.MEM.PAGE.ADD (copying the source), TDH.MR.EXTEND when
    measured."""
    vm = td.vm
    good = npages if src is None else probe_user(src, npages << PAGE_SHIFT) >> PAGE_SHIFT
    if good == 0:
        raise oserror(errno.EFAULT)
    st = td.fault("TDH.MEM.PAGE.ADD")
    if st:
        if not td.cleanups:
            # TDX-A: the SPTE is installed first (counted premapped); the ADD failed
            with vm.mmu_lock:
                vm.stage2.map(gfn, pfn, 1, True)
            td.premapped.set(gfn, gfn + 1, 1)
            td.nr_premapped += 1
        raise oserror(errno.EBUSY if st & T.TDX_SEAMCALL_STATUS_MASK == T.TDX_OPERAND_BUSY
                      else errno.EIO)
    sept = td.sept
    with vm.mmu_lock, td.lock:
        r = sept.ensure_walk(gfn, good)
        if r.ok:
            r = sept.add(gfn, good, pfn)
        if not r.ok:
            raise oserror(errno.EIO)
        vm.stage2.map(gfn, pfn, good, True)
    inode, index = gmem_page_of(vm, gfn)
    if src is None:
        data = inode.read(index << PAGE_SHIFT, good << PAGE_SHIFT) if measure else b""
    else:
        data = read_user_at(src, 0, good << PAGE_SHIFT)
        inode.write(index << PAGE_SHIFT, data)
    if measure:
        td.mrtd.update((gfn << PAGE_SHIFT).to_bytes(8, "little") + data)
    if good < npages:
        e = oserror(errno.EFAULT)
        e.done = good
        raise e


def get_cpuid(vcpu, td, cmd):
    """KVM_TDX_GET_CPUID (tdx_vcpu_get_cpuid): no flags or vCPU-state check; too small a
    nent is E2BIG with the needed nent written back."""
    hdr = copy_from_user(cmd.data, K.kvm_cpuid2)
    rows = td_cpuid(vcpu.vm, td)
    if hdr.nent < len(rows):
        hdr.nent = len(rows)
        write_user_at(cmd.data, 0, bytes(hdr))
        raise oserror(errno.E2BIG)
    hdr.nent = len(rows)
    write_user_at(cmd.data, 0, bytes(hdr))
    write_user_at(cmd.data, ctypes.sizeof(hdr), _entry_bytes(rows))
    return 0


def td_cpuid(vm, td):
    """The TD's CPUID as GET_CPUID reports it: leaves 0 and 0x80000000 from the host, the
    leaves INIT_VM configured; 0x80000008 EAX[23:16] is the GPAW (48 or 52)."""
    host = {(r[0], r[1]): r for r in vm.kernel.profile.cpuid}
    rows = [host.get((0, 0), (0, 0, 0, 0xD, 0, 0, 0)),
            host.get((0x80000000, 0), (0x80000000, 0, 0, 0x80000008, 0, 0, 0))]
    configured = [r for r in td.cpuid if (r[0], r[1]) != (1, 0)]
    leaf1 = next((r for r in td.cpuid if (r[0], r[1]) == (1, 0)), (1, 0, 0, 0, 0, 0, 0))
    fn, idx, fl, a, b, c, d = leaf1
    rows.insert(1, (fn, idx, fl, a, b, c | _X2APIC, d))  # x2APIC: fixed 1 in a TD [U]
    for fn, idx, fl, a, b, c, d in configured:
        if fn == 0x80000008:
            a = (a & ~0xFF0000) | td.gpaw << 16
        rows.append((fn, idx, fl, a, b, c, d))
    return rows
