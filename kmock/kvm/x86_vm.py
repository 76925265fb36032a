"""x86 VM ioctls beyond guest memory: the boot vCPU, the shadow MMU page pool, the
in-kernel irqchip, the real-mode TSS and identity map addresses, and the KVM_ENABLE_CAP
capabilities that are bookkeeping only.

Each mirrors arch/x86/kvm/x86.c of Linux 6.18 (kvm_arch_vm_ioctl, kvm_vm_ioctl_enable_cap,
kvm_vm_ioctl_set_nr_mmu_pages, kvm_arch_vcpu_precreate) and virt/kvm/kvm_main.c
(kvm_vm_ioctl_enable_cap_generic); check order and errno were confirmed on a 6.18.44
host by the conformance scenarios ``x86_vm_*`` (kmock.testing.conformance_x86_vm).
docs/capabilities.md says which capability promises what.

The state is struct kvm_arch's fields of the same name, kept per VM here
(:func:`state`) so that the VM object stays architecture-neutral. Only what a later
call can observe through the UAPI changes behaviour: ``max_vcpu_ids`` and
``bsp_vcpu_id`` (KVM_CREATE_VCPU, KVM_SET_BOOT_CPU_ID, KVM_ENABLE_CAP), the irqchip
mode (KVM_CREATE_IRQCHIP, KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X2APIC_API and its
KVM_CHECK_EXTENSION value). The rest (exits disabled, quirks disabled, MMU pool size...)
is recorded for tests and for code that models its effect later.
"""

import ctypes
import errno
import os
import threading
import time

from .. import _libc
from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user, int_arg
from ..uapi import kvm as K
from ..uapi import x86 as X
from . import x86_state
from .attached import Attached
from .x86_state import DEFAULTS_618, host_tsc, settings

from ..uapi.kvm import (  # noqa: E402  (include/uapi/linux/kvm.h, x86)
    KVM_CAP_DISABLE_QUIRKS, KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_EXCEPTION_PAYLOAD,
    KVM_CAP_EXIT_ON_EMULATION_FAILURE, KVM_CAP_MSR_PLATFORM_INFO, KVM_CAP_SPLIT_IRQCHIP,
    KVM_CAP_VM_DISABLE_NX_HUGE_PAGES,
    KVM_CAP_X2APIC_API, KVM_CAP_X86_APIC_BUS_CYCLES_NS, KVM_CAP_X86_DISABLE_EXITS,
    KVM_CAP_X86_BUS_LOCK_EXIT, KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_CAP_X86_USER_SPACE_MSR,
    KVM_CREATE_IRQCHIP,
    KVM_SET_BOOT_CPU_ID, KVM_SET_IDENTITY_MAP_ADDR, KVM_SET_NR_MMU_PAGES, KVM_SET_TSS_ADDR)

#: kvm_vm_ioctl_set_tss_addr: the three TSS pages must lie below 4 GiB,
#: ``addr > (unsigned int)(-3 * PAGE_SIZE)`` is EINVAL
TSS_ADDR_MAX = 0xFFFFD000
#: arch/x86/include/asm/kvm_host.h
KVM_MIN_ALLOC_MMU_PAGES = 64
#: MAX_NR_RESERVED_IOAPIC_PINS = KVM_MAX_IRQ_ROUTES (x86: 4096)
MAX_NR_RESERVED_IOAPIC_PINS = 4096
#: KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST: needs a split irqchip (the I/O APIC in
#: userspace), and excludes KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST (bit 3)
X2APIC_ENABLE_SUPPRESS_EOI = 1 << 2
X2APIC_DISABLE_SUPPRESS_EOI = 1 << 3
#: KVM_MSR_EXIT_REASON_INVAL | UNKNOWN | FILTER
KVM_MSR_EXIT_REASON_VALID_MASK = 0x7
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
#: KVM_CAP_X86_APIC_BUS_CYCLES_NS guards the timer's ns computation against u64 overflow:
#: U32_MAX (the largest TMICT) * 128 (the largest divide configuration) * args[0]. The
#: factor 128 is what the probed boundary gives (2**25 accepted, 2**25 + 1 EINVAL on the
#: 6.18.44 host), not read from source.
APIC_TIMER_MAX_DIVIDE = 128


class X86VmState:
    """The struct kvm_arch fields the x86 VM ioctls keep."""

    def __init__(self, vm):
        self.lock = threading.Lock()  # kvm->lock
        self.bsp_vcpu_id = 0
        #: 0 until KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID) or the first KVM_CREATE_VCPU
        self.max_vcpu_ids = 0
        #: "none", "kernel" (KVM_CREATE_IRQCHIP) or "split" (KVM_CAP_SPLIT_IRQCHIP)
        self.irqchip_mode = "none"
        self.nr_reserved_ioapic_pins = 0
        #: KVM_SET_NR_MMU_PAGES; 0: the pool follows the memslots
        self.n_requested_mmu_pages = 0
        self.tss_addr = None
        self.ept_identity_map_addr = None
        self.x2apic_api = 0
        self.disabled_exits = 0
        self.disabled_quirks = 0
        #: the other bookkeeping capabilities: cap number -> args[0] last enabled
        self.enabled = {}
        #: kvm->created_vcpus: counted under ``lock`` from kvm_arch_vcpu_precreate on,
        #: so that a KVM_CREATE_VCPU in flight already counts (as under kvm->lock)
        self.created_vcpus = 0
        #: kvm->arch.kvmclock_offset: the kvmclock is kvmclock_base_ns() + this; it
        #: starts at 0 when the VM is made (kvm_arch_init_vm: -get_kvmclock_base_ns())
        self.kvmclock_offset = -vm.created_ns
        #: kvm->arch.use_master_clock, recomputed by pvclock_update_vm_gtod_copy
        self.use_master_clock = False
        #: kvm->arch.msr_filter (KVM_X86_SET_MSR_FILTER): None (no filter: every MSR
        #: allowed) or an MsrFilter
        self.msr_filter = None
        #: kvm->arch.apic_map: the vCPUs whose LAPIC it holds (kmock.kvm.x86_lapic), None
        #: until the first rebuild; apic_map_dirty: a rebuild is due
        self.apic_map = None
        self.apic_map_dirty = False
        #: kvm->arch.default_tsc_khz: the rate new vCPUs get (kvm_arch_init_vm: the host's
        #: max_tsc_khz; KVM_SET_TSC_KHZ on the VM until the first vCPU)
        self.default_tsc_khz = settings(vm.kernel.profile)["tsc_khz"]
        #: kvm->arch.pmu_event_filter (KVM_SET_PMU_EVENT_FILTER): None or a
        #: kmock.kvm.x86_pmu.PmuEventFilter
        self.pmu_event_filter = None

    @property
    def irqchip_in_kernel(self):
        return self.irqchip_mode != "none"

    def has_vcpus(self, vm):
        """kvm->created_vcpus != 0 (also vCPUs made without the ioctl, by kmock's API)."""
        return bool(self.created_vcpus or vm.vcpus)


#: ``state(vm)``: the X86VmState of ``vm`` (made on first use)
state = Attached(X86VmState)


def _vm(f):
    f.vm.check_caller()
    return f.vm


def _kvm_max_vcpu_ids(vm):
    """KVM_MAX_VCPU_IDS (kvm_max_vcpu_ids()): KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPU_ID)."""
    return vm.kernel.profile.max_vcpu_ids


# --- ioctl handlers: handler(file, arg) -> int ------------------------------------------------
# --- kvmclock: KVM_GET_CLOCK / KVM_SET_CLOCK ---------------------------------------------------


def kvmclock_base_ns():
    """get_kvmclock_base_ns: ns since the host booted (CLOCK_BOOTTIME here; the kernel
    counts it at the raw clock's rate)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _master_clock_flags(vm):
    """The flags __get_kvmclock reports while kvm->arch.use_master_clock: TSC_STABLE,
    and REALTIME | HOST_TSC when the host clocksource is the TSC (the host profile's
    ``kvmclock_flags``, probed by kmock.kvm.x86_vcpu.probe_host; 0: no master clock)."""
    return settings(vm.kernel.profile).get("kvmclock_flags", DEFAULTS_618["kvmclock_flags"])


def _update_master_clock(vm, s):
    """pvclock_update_vm_gtod_copy: the master clock is used when the host clocksource
    is the TSC and every vCPU's TSC matched (kvm_track_tsc_matching): with no vCPU,
    ``nr_vcpus_matched_tsc + 1 == online_vcpus`` is false. kmock counts every vCPU as
    matched. Run at VM creation (no vCPU: off) and by KVM_SET_CLOCK; the request a
    vCPU raises for it on its next entry (KVM_REQ_MASTERCLOCK_UPDATE) is not modelled."""
    s.use_master_clock = bool(_master_clock_flags(vm)) and bool(vm.vcpus)


def vm_get_clock(f, arg):
    """kvm_vm_ioctl_get_clock (__get_kvmclock): ``clock`` is ns since the VM was made
    plus what KVM_SET_CLOCK added; with the master clock, ``flags`` says TSC_STABLE (and
    REALTIME, HOST_TSC with the values read at the same instant). Pads read 0."""
    vm = _vm(f)
    s = state(vm)
    data = K.kvm_clock_data()
    if s.use_master_clock:
        data.flags = _master_clock_flags(vm)
        data.host_tsc = host_tsc(settings(vm.kernel.profile)["tsc_khz"])
        if data.flags & K.KVM_CLOCK_REALTIME:
            data.realtime = time.time_ns()
    data.clock = (kvmclock_base_ns() + s.kvmclock_offset) & U64
    copy_to_user(arg, data)
    return 0


def vm_set_clock(f, arg):
    """kvm_vm_ioctl_set_clock: flags outside KVM_CLOCK_VALID_FLAGS -> EINVAL (the others
    are accepted so that a GET_CLOCK result can be passed back; only REALTIME acts:
    the time since ``realtime``, if positive, is added to ``clock``). Pads are not
    checked. The master clock is recomputed first (pvclock_update_vm_gtod_copy)."""
    vm = _vm(f)
    data = copy_from_user(arg, K.kvm_clock_data)
    if data.flags & ~K.KVM_CLOCK_VALID_FLAGS:
        raise oserror(errno.EINVAL)
    s = state(vm)
    with s.lock:
        _update_master_clock(vm, s)
        clock = data.clock
        if data.flags & K.KVM_CLOCK_REALTIME:
            now_real = time.time_ns()
            if now_real > data.realtime:
                clock += now_real - data.realtime
        s.kvmclock_offset = clock - kvmclock_base_ns()
    return 0


def vm_set_boot_cpu_id(f, arg):
    """KVM_SET_BOOT_CPU_ID: EBUSY once a vCPU was created; EINVAL above KVM_MAX_VCPU_IDS
    (``>``, not ``>=``: 4096 is accepted) or above an enabled KVM_CAP_MAX_VCPU_ID."""
    vm = _vm(f)
    s = state(vm)
    bsp = int_arg(arg)
    with s.lock:
        if s.has_vcpus(vm):
            raise oserror(errno.EBUSY)
        if bsp > _kvm_max_vcpu_ids(vm) or (s.max_vcpu_ids and bsp > s.max_vcpu_ids):
            raise oserror(errno.EINVAL)
        s.bsp_vcpu_id = bsp
    return 0


def vm_set_nr_mmu_pages(f, arg):
    """kvm_vm_ioctl_set_nr_mmu_pages: fewer than KVM_MIN_ALLOC_MMU_PAGES (64) is EINVAL.

    The value cannot be read back: KVM_GET_NR_MMU_PAGES is gone (ENOTTY on 6.18, probed).
    """
    vm = _vm(f)
    pages = int_arg(arg)
    if pages < KVM_MIN_ALLOC_MMU_PAGES:
        raise oserror(errno.EINVAL)
    with vm.slots_lock:
        state(vm).n_requested_mmu_pages = pages
    return 0


def vm_set_tss_addr(f, arg):
    """kvm_vm_ioctl_set_tss_addr: above 0xffffd000 -> EINVAL; no vCPU check.

    The vendor callback is modelled as on hosts with unrestricted guest (VMX) or SVM
    (and the PVM probe host): it stores nothing the UAPI sees, in particular no private
    memslot (probed: a user memslot over the TSS pages is accepted). Old VMX without
    unrestricted guest would add TSS_PRIVATE_MEMSLOT there.
    """
    vm = _vm(f)
    addr = int_arg(arg)
    if addr > TSS_ADDR_MAX:
        raise oserror(errno.EINVAL)
    state(vm).tss_addr = addr
    return 0


def vm_set_identity_map_addr(f, arg):
    """KVM_SET_IDENTITY_MAP_ADDR: a vCPU created -> EINVAL, then the u64 is read (EFAULT);
    any address is accepted (vmx_set_identity_map_addr stores it)."""
    vm = _vm(f)
    s = state(vm)
    with s.lock:
        if s.has_vcpus(vm):
            raise oserror(errno.EINVAL)
        s.ept_identity_map_addr = copy_from_user(arg, ctypes.c_uint64).value
    return 0


def vm_create_irqchip(f, arg):
    """KVM_CREATE_IRQCHIP: an irqchip already (full or split) -> EEXIST; a VM with
    protected EOIs (TDX) -> ENOTTY; then a vCPU created -> EINVAL; else the PIC, I/O
    APIC and default GSI routing exist.

    ``has_protected_eoi`` is read from the VM type (default False): an architecture
    plugin whose VMs cannot intercept EOIs sets it (kvm->arch.has_protected_eoi, 6.18).
    """
    vm = _vm(f)
    s = state(vm)
    with s.lock:
        if s.irqchip_in_kernel:
            raise oserror(errno.EEXIST)
        if getattr(vm.vmtype, "has_protected_eoi", False):
            raise oserror(errno.ENOTTY)
        if s.has_vcpus(vm):
            raise oserror(errno.EINVAL)
        s.irqchip_mode = "kernel"
    return 0


def vcpu_precreate(vm, vcpu_id):
    """kvm_arch_vcpu_precreate: the first vCPU fixes max_vcpu_ids (KVM_MAX_VCPU_IDS unless
    KVM_CAP_MAX_VCPU_ID set it); an id at or above it is EINVAL.

    kvm_vm_ioctl_create_vcpu calls it after its own id and count checks, so an id
    beyond KVM_MAX_VCPU_IDS leaves max_vcpu_ids unset (probed).
    """
    profile = vm.kernel.profile
    if vcpu_id >= profile.max_vcpu_ids or len(vm.vcpus) >= vm.vmtype.max_vcpus(vm):
        return  # kvm_vm_ioctl_create_vcpu fails before precreate
    s = state(vm)
    with s.lock:
        if not s.max_vcpu_ids:
            s.max_vcpu_ids = profile.max_vcpu_ids
        if vcpu_id >= s.max_vcpu_ids:
            raise oserror(errno.EINVAL)
        s.created_vcpus += 1
    return s


def x2apic_api_check(vm, value):
    """KVM_CHECK_EXTENSION(KVM_CAP_X2APIC_API) on the VM: ENABLE_SUPPRESS_EOI_BROADCAST only
    with a split irqchip (the /dev/kvm value advertises it; probed: 15 vs 11)."""
    if state(vm).irqchip_mode == "split":
        return value | (vm.kernel.caps.get(KVM_CAP_X2APIC_API, 0) & X2APIC_ENABLE_SUPPRESS_EOI)
    return value & ~X2APIC_ENABLE_SUPPRESS_EOI


# --- KVM_ENABLE_CAP (kvm_vm_ioctl_enable_cap, after the flags check) ------------------------


def _cap_max_vcpu_id(vm, s, a0):
    if a0 > _kvm_max_vcpu_ids(vm):
        raise oserror(errno.EINVAL)
    with s.lock:
        if s.bsp_vcpu_id > a0:
            raise oserror(errno.EINVAL)
        if s.max_vcpu_ids == a0:
            return
        if s.max_vcpu_ids:  # set once (or fixed by the first vCPU)
            raise oserror(errno.EINVAL)
        s.max_vcpu_ids = a0


def _cap_split_irqchip(vm, s, a0):
    with s.lock:
        if a0 > MAX_NR_RESERVED_IOAPIC_PINS:
            raise oserror(errno.EINVAL)
        if s.irqchip_in_kernel or s.has_vcpus(vm):
            raise oserror(errno.EEXIST)
        s.irqchip_mode = "split"
        s.nr_reserved_ioapic_pins = a0


def _cap_x2apic_api(vm, s, a0):
    valid = vm.kernel.caps.get(KVM_CAP_X2APIC_API, 0)
    if a0 & ~valid:
        raise oserror(errno.EINVAL)
    if a0 & X2APIC_ENABLE_SUPPRESS_EOI and (a0 & X2APIC_DISABLE_SUPPRESS_EOI
                                            or s.irqchip_mode != "split"):
        raise oserror(errno.EINVAL)
    s.x2apic_api |= a0


def _cap_disable_exits(vm, s, a0):
    # kvm_get_allowed_disable_exits(): what KVM_CHECK_EXTENSION reports
    if a0 & ~vm.caps.get(KVM_CAP_X86_DISABLE_EXITS, 0):
        raise oserror(errno.EINVAL)
    with s.lock:
        if s.has_vcpus(vm):
            raise oserror(errno.EINVAL)
        s.disabled_exits |= a0


def _cap_disable_quirks2(vm, s, a0):
    if a0 & ~vm.caps.get(KVM_CAP_DISABLE_QUIRKS2, 0):
        raise oserror(errno.EINVAL)
    _cap_disable_quirks(vm, s, a0)


def _cap_disable_quirks(vm, s, a0):
    """KVM_CAP_DISABLE_QUIRKS ignores bits KVM does not know (no EINVAL)."""
    s.disabled_quirks |= a0 & vm.caps.get(KVM_CAP_DISABLE_QUIRKS2, 0)


def _store(cap):
    def enable(vm, s, a0):
        s.enabled[cap] = a0
    return enable


def _masked(cap, valid):
    def enable(vm, s, a0):
        if a0 & ~valid:
            raise oserror(errno.EINVAL)
        s.enabled[cap] = a0
    return enable


def _cap_apic_bus_cycles_ns(vm, s, a0):
    """0, or a value whose U32_MAX * 128 multiple overflows u64 -> EINVAL; then
    no in-kernel LAPIC (no irqchip, full or split) -> ENXIO; a vCPU created -> EINVAL."""
    if not a0 or U32 * APIC_TIMER_MAX_DIVIDE * a0 > U64:
        raise oserror(errno.EINVAL)
    with s.lock:
        if not s.irqchip_in_kernel:
            raise oserror(errno.ENXIO)
        if s.has_vcpus(vm):
            raise oserror(errno.EINVAL)
        s.enabled[KVM_CAP_X86_APIC_BUS_CYCLES_NS] = a0


def _cap_disable_nx_huge_pages(vm, s, a0):
    """capable(CAP_SYS_BOOT) first (EPERM; kmock asks for euid 0), then args[0] must be
    0 and no vCPU created (EINVAL)."""
    if os.geteuid() != 0:
        raise oserror(errno.EPERM)
    with s.lock:
        if a0 or s.has_vcpus(vm):
            raise oserror(errno.EINVAL)
        s.enabled[KVM_CAP_VM_DISABLE_NX_HUGE_PAGES] = 1


def _cap_bus_lock_exit(vm, s, a0):
    """kvm_vm_ioctl_enable_cap KVM_CAP_X86_BUS_LOCK_EXIT: modes beyond OFF|EXIT, or both,
    EINVAL; else 0, vCPUs or not. EXIT takes effect only where the hardware detects bus
    locks (kvm_caps.has_bus_lock_exit, what CHECK_EXTENSION reports), which is why the
    enable is not gated on the capability (probed: CHECK_EXTENSION 0, enable 0)."""
    if a0 & ~(K.KVM_BUS_LOCK_DETECTION_OFF | K.KVM_BUS_LOCK_DETECTION_EXIT) or \
            a0 & K.KVM_BUS_LOCK_DETECTION_OFF and a0 & K.KVM_BUS_LOCK_DETECTION_EXIT:
        raise oserror(errno.EINVAL)
    if a0 & K.KVM_BUS_LOCK_DETECTION_EXIT and vm.caps.get(KVM_CAP_X86_BUS_LOCK_EXIT):
        s.enabled[KVM_CAP_X86_BUS_LOCK_EXIT] = a0


#: capabilities KVM_ENABLE_CAP takes whatever KVM_CHECK_EXTENSION says of them: their
#: arguments are checked against what the hardware allows (for DISABLE_EXITS and
#: DISABLE_QUIRKS2 the very value CHECK_EXTENSION reports, so 0 is always accepted)
UNGATED_CAPS = frozenset({KVM_CAP_X86_BUS_LOCK_EXIT, KVM_CAP_X86_DISABLE_EXITS,
                          KVM_CAP_DISABLE_QUIRKS2})

#: capability -> fn(vm, state, args[0]); every one is in the 6.18 host's advertised set,
#: but for UNGATED_CAPS. The generic ones (MANUAL_DIRTY_LOG_PROTECT2, HALT_POLL, the dirty
#: ring) are kmock.kvm.vm.enable_cap_generic's, which stores into ``enabled`` too
ENABLE_CAPS = {
    K.KVM_CAP_MAX_VCPU_ID: _cap_max_vcpu_id,
    KVM_CAP_SPLIT_IRQCHIP: _cap_split_irqchip,
    KVM_CAP_X2APIC_API: _cap_x2apic_api,
    KVM_CAP_X86_DISABLE_EXITS: _cap_disable_exits,
    KVM_CAP_DISABLE_QUIRKS: _cap_disable_quirks,
    KVM_CAP_DISABLE_QUIRKS2: _cap_disable_quirks2,
    KVM_CAP_MSR_PLATFORM_INFO: _store(KVM_CAP_MSR_PLATFORM_INFO),
    KVM_CAP_EXCEPTION_PAYLOAD: _store(KVM_CAP_EXCEPTION_PAYLOAD),
    KVM_CAP_X86_TRIPLE_FAULT_EVENT: _store(KVM_CAP_X86_TRIPLE_FAULT_EVENT),
    KVM_CAP_X86_USER_SPACE_MSR: _masked(KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_VALID_MASK),
    KVM_CAP_EXIT_ON_EMULATION_FAILURE: _masked(KVM_CAP_EXIT_ON_EMULATION_FAILURE, 1),
    KVM_CAP_X86_APIC_BUS_CYCLES_NS: _cap_apic_bus_cycles_ns,
    KVM_CAP_VM_DISABLE_NX_HUGE_PAGES: _cap_disable_nx_huge_pages,
    KVM_CAP_X86_BUS_LOCK_EXIT: _cap_bus_lock_exit,
}


def vm_enable_cap(vm, cap):
    """The x86 part of KVM_ENABLE_CAP on a VM (``cap`` a kvm_enable_cap whose flags are
    0): a capability of ENABLE_CAPS that the VM advertises (or one of UNGATED_CAPS),
    else EINVAL."""
    fn = ENABLE_CAPS.get(cap.cap)
    if fn is None or not (vm.caps.get(cap.cap) or cap.cap in UNGATED_CAPS):
        raise oserror(errno.EINVAL)
    fn(vm, state(vm), cap.args[0])
    return 0


class MsrFilter:
    """struct kvm_x86_msr_filter: ``default_allow`` and the ranges that were given, each
    (flags, base, nmsrs, bitmap bytes), in the order of the ioctl's array. Bookkeeping:
    the scripted guest has no RDMSR/WRMSR action for the filter to act on yet."""

    __slots__ = ("default_allow", "ranges")

    def __init__(self, default_allow, ranges):
        self.default_allow = default_allow
        self.ranges = ranges

    def __repr__(self):
        return f"<MsrFilter default_allow={self.default_allow} ranges={len(self.ranges)}>"


def vm_set_msr_filter(f, arg):
    """KVM_X86_SET_MSR_FILTER (x86.c kvm_vm_ioctl_set_msr_filter, kvm_add_msr_filter).

    Order: the struct (EFAULT); flags beyond KVM_MSR_FILTER_VALID_MASK, then no range
    with MSRs under DEFAULT_DENY: EINVAL; then each of the 16 ranges in turn, skipping
    those with nmsrs == 0: range flags beyond READ|WRITE or none, a bitmap larger than
    KVM_MSR_FILTER_MAX_BITMAP_SIZE (BITS_TO_LONGS(nmsrs) longs): EINVAL; the bitmap read
    (memdup_user: EFAULT). Nothing changes on a failure; on success the new filter
    replaces the old one under kvm->lock. Conformance scenario ``x86_vm_msr_filter``.
    """
    vm = _vm(f)
    flt = copy_from_user(arg, X.kvm_msr_filter)
    if flt.flags & ~X.KVM_MSR_FILTER_VALID_MASK:
        raise oserror(errno.EINVAL)
    default_allow = not flt.flags & X.KVM_MSR_FILTER_DEFAULT_DENY
    if not default_allow and not any(r.nmsrs for r in flt.ranges):
        raise oserror(errno.EINVAL)
    ranges = []
    for r in flt.ranges:
        if not r.nmsrs:
            continue
        if r.flags & ~X.KVM_MSR_FILTER_RANGE_VALID_MASK or not r.flags:
            raise oserror(errno.EINVAL)
        size = (r.nmsrs + 63) // 64 * 8  # BITS_TO_LONGS(nmsrs) * sizeof(long)
        if size > X.KVM_MSR_FILTER_MAX_BITMAP_SIZE:
            raise oserror(errno.EINVAL)
        ranges.append((r.flags, r.base, r.nmsrs, _libc.copy_from_user(r.bitmap, size)))
    s = state(vm)
    with s.lock:
        s.msr_filter = MsrFilter(default_allow, tuple(ranges))
    return 0


# --- the VM's default TSC rate: KVM_SET_TSC_KHZ / KVM_GET_TSC_KHZ on the VM fd ----------------


def vm_set_tsc_khz(f, arg):
    """kvm_arch_vm_ioctl KVM_SET_TSC_KHZ: the u32 argument; with TSC scaling a rate from
    max_guest_tsc_khz up is EINVAL; 0 means the host's rate; once a vCPU was created
    (kvm->created_vcpus) EINVAL, nothing stored. The VM ioctl exists whatever
    KVM_CAP_VM_TSC_CONTROL says (that capability reports TSC scaling); conformance
    ``x86_vm_tsc_khz``."""
    vm = f.vm
    vm.check_caller()
    khz = int_arg(arg) & 0xFFFFFFFF
    st = settings(vm.kernel.profile)
    if st["tsc_control"] and khz >= st.get("max_guest_tsc_khz", 0xFFFFFFFF):
        raise oserror(errno.EINVAL)
    if khz == 0:
        khz = st["tsc_khz"]
    s = state(vm)
    with s.lock:
        if s.has_vcpus(vm):
            raise oserror(errno.EINVAL)
        s.default_tsc_khz = khz
    return 0


def vm_get_tsc_khz(f, arg):
    """kvm_arch_vm_ioctl KVM_GET_TSC_KHZ: kvm->arch.default_tsc_khz, as the return value."""
    f.vm.check_caller()
    return state(f.vm).default_tsc_khz


def vm_enc_region_no_vendor(f, arg):
    """kvm_arch_vm_ioctl KVM_MEMORY_ENCRYPT_REG_REGION / _UNREG_REGION where the vendor
    module has no mem_enc_(un)register_region (VMX's kvm_x86_ops): the struct
    kvm_enc_region is copied in first (EFAULT), then ENOTTY (x86.c; conformance
    x86_vm_enc_region). The snp platform replaces both with SEV's handlers."""
    f.vm.check_caller()
    copy_from_user(arg, K.kvm_enc_region)
    raise oserror(errno.ENOTTY)


def x86_vm_ioctls(create_vcpu, check_extension):
    """The x86 entries of the VM ioctl table; ``create_vcpu`` and ``check_extension`` are
    the core's handlers, which the x86 ones wrap."""
    from . import kvm_device, x86_irq, x86_lapic, x86_pit, x86_pmu  # (they import this module)

    def vm_create_vcpu(f, arg):
        f.vm.check_caller()
        s = vcpu_precreate(f.vm, int_arg(arg))
        try:
            fd = create_vcpu(f, arg)
        except BaseException:
            if s is not None:  # kvm_vm_ioctl_create_vcpu's unwind: created_vcpus--
                with s.lock:
                    s.created_vcpus -= 1
            raise
        vm = f.vm
        if state(vm).irqchip_in_kernel:
            # kvm_create_lapic's reset sets the APIC base: the map is rebuilt before the
            # new vCPU is visible to kvm_for_each_vcpu (probed: it is not in the map)
            vcpu = vm.vcpus[int_arg(arg)]
            x86_lapic.recalculate_apic_map(vm, exclude=vcpu)
            if vcpu.id != state(vm).bsp_vcpu_id:
                # kvm_arch_vcpu_create: with an in-kernel LAPIC only the BSP starts
                # RUNNABLE; an AP waits for INIT/SIPI (conformance x86_vcpu_initial_mp_state)
                x86_state.state(vcpu).mp_state = X.KVM_MP_STATE_UNINITIALIZED
                vcpu.set_stopped(True)
        return fd

    def vm_check_extension(f, arg):
        r = check_extension(f, arg)
        if arg == KVM_CAP_X2APIC_API and type(arg) is int:
            r = x2apic_api_check(f.vm, r)
        elif arg == K.KVM_CAP_MAX_VCPUS and type(arg) is int:
            r = f.vm.vmtype.max_vcpus(f.vm)  # kvm_vm_ioctl_check_extension: kvm->max_vcpus
        elif arg == K.KVM_CAP_READONLY_MEM and type(arg) is int and r:
            # kvm_arch_has_readonly_mem(kvm) = !has_protected_state (TDX, SEV-ES, SNP)
            r = 0 if f.vm.vmtype.has_protected_state else r
        return r

    return {
        K.KVM_CREATE_VCPU: vm_create_vcpu,
        K.KVM_CHECK_EXTENSION: vm_check_extension,
        KVM_SET_BOOT_CPU_ID: vm_set_boot_cpu_id,
        KVM_SET_NR_MMU_PAGES: vm_set_nr_mmu_pages,
        KVM_SET_TSS_ADDR: vm_set_tss_addr,
        KVM_SET_IDENTITY_MAP_ADDR: vm_set_identity_map_addr,
        KVM_CREATE_IRQCHIP: vm_create_irqchip,
        K.KVM_GET_CLOCK: vm_get_clock,
        X.KVM_SET_TSC_KHZ: vm_set_tsc_khz,
        X.KVM_GET_TSC_KHZ: vm_get_tsc_khz,
        K.KVM_SET_CLOCK: vm_set_clock,
        X.KVM_X86_SET_MSR_FILTER: vm_set_msr_filter,
        X.KVM_SET_PMU_EVENT_FILTER: x86_pmu.vm_set_pmu_event_filter,
        K.KVM_IRQ_LINE: x86_irq.vm_irq_line,
        K.KVM_IRQ_LINE_STATUS: x86_irq.vm_irq_line_status,
        K.KVM_SIGNAL_MSI: x86_irq.vm_signal_msi,
        X.KVM_GET_IRQCHIP: x86_irq.vm_get_irqchip,
        X.KVM_SET_IRQCHIP: x86_irq.vm_set_irqchip,
        X.KVM_CREATE_PIT: x86_pit.vm_create_pit,
        X.KVM_CREATE_PIT2: x86_pit.vm_create_pit2,
        X.KVM_GET_PIT: x86_pit.vm_get_pit,
        X.KVM_SET_PIT: x86_pit.vm_set_pit,
        X.KVM_GET_PIT2: x86_pit.vm_get_pit2,
        X.KVM_SET_PIT2: x86_pit.vm_set_pit2,
        X.KVM_REINJECT_CONTROL: x86_pit.vm_reinject_control,
        K.KVM_CREATE_DEVICE: kvm_device.x86_vm_create_device,
        K.KVM_MEMORY_ENCRYPT_REG_REGION: vm_enc_region_no_vendor,
        K.KVM_MEMORY_ENCRYPT_UNREG_REGION: vm_enc_region_no_vendor,
    }
