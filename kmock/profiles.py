"""Kernel profiles: which kernel generation and configuration kmock emulates.

A profile fixes capability values, the VM types the platform offers, which ioctls
exist, and the known version quirks of reference/kvm-guest-memfd-6.18.md §7. VMMs
must probe capabilities and fall back; profiles let them test that.

Profiles:

``linux-6.18``
    Upstream 6.18.y on an x86-64 host with TDP and CONFIG_KVM_SW_PROTECTED_VM (so
    CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES): guest_memfd with MMAP and INIT_SHARED,
    VM-level KVM_SET_MEMORY_ATTRIBUTES, KVM_PRE_FAULT_MEMORY.
``host``
    Capabilities, VM types and quirks probed from the real /dev/kvm of this machine,
    so that conformance tests compare like with like.

The in-place conversion profiles (``gmem-convert-rfc-v2``, ``gmem-attributes-v8``,
``gmem-attributes-v12``) come with the conversion work; ``conversion`` names the UAPI a
profile offers.
"""

import dataclasses
import errno
import os
from types import MappingProxyType

from .uapi import kvm as K

PAGE_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    description: str
    #: "x86" or "arm64" (arm64: KVM_CREATE_VM's argument carries the IPA size in bits 7:0)
    arch: str = "x86"
    #: the machine's confidential hardware: "none", "tdx", "snp", "cca", or a plugin's
    #: (kmock.platforms); any kernel generation combines with any platform of its arch
    platform: str = "none"
    #: settings an architecture plugin reads (e.g. {"tdx_connect": True}); a Kernel
    #: keyword that is not a Profile field lands here only if a plugin declared it
    arch_settings: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    api_version: int = K.KVM_API_VERSION
    vcpu_mmap_size: int = 3 * PAGE_SIZE
    #: KVM_CHECK_EXTENSION values shared by /dev/kvm and every VM, for caps that do not
    #: depend on the VM (the VM-dependent ones are computed in kvm/caps.py).
    caps: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: per-VM-type overrides of VM-level capability values (probed on the host profile)
    vm_caps: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: VM types the platform offers; None = every type a plugin declares
    vm_types: frozenset | None = None
    #: CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES: KVM_SET_MEMORY_ATTRIBUTES exists
    memory_attributes: bool = True
    #: TDP enabled (EPT/NPT): KVM_PRE_FAULT_MEMORY works (else EOPNOTSUPP), max GPA bits
    tdp: bool = True
    #: the TDP MMU allocates the vCPUs' MMU roots (kvm.tdp_mmu=1 on a TDP host). When it
    #: does not (shadow paging, or kvm.tdp_mmu=0), kvm_mmu_reload() takes the root from
    #: the VM's shadow page pool, which is empty until the first memslot: the first
    #: KVM_PRE_FAULT_MEMORY or KVM_RUN of such a VM fails with ENOSPC (kvm/vcpu.py)
    tdp_mmu: bool = True
    max_gpa_bits: int = 52
    #: number of memslot address spaces (2 with CONFIG_KVM_SMM)
    nr_memslot_as_ids: int = 2
    max_vcpus: int = 4096
    max_vcpu_ids: int = 4096
    #: §7.1: 6.18.y (PAT-TOGGLE) rejects dropping KVM_MEM_GUEST_MEMFD with EINVAL;
    #: v6.18.0 accepted it as a FLAGS_ONLY change.
    gmem_flag_toggle_rejected: bool = True
    #: §7.2: 6.18 accepts a binding whose offset + size overflows loff_t (later: EINVAL)
    gmem_bind_offset_overflow_accepted: bool = True
    #: a guest_memfd range already bound to another memslot: kvm_gmem_bind's EINVAL in
    #: 6.18; EEXIST from kvm_gmem_commit_memory_region in the applied in-place series (v12)
    gmem_bind_overlap_errno: int = errno.EINVAL
    #: which in-place conversion UAPI exists: "none", "rfc-v2", "attributes-v8"
    #: (KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd, v8 and every later revision)
    conversion: str = "none"
    #: the revision of that series emulated: 8 (June 2026) or 12 (Aug 2026, applied as
    #: v13); docs/reference/gmem-attributes-v12.md lists what changed
    conversion_revision: int = 8
    #: v8's module parameter kvm.gmem_in_place_conversion (0444)
    gmem_in_place_conversion: bool = True
    #: the KVM_SET_MEMORY_ATTRIBUTES2 ioctl number (it moved between revisions)
    set_memory_attributes2: int = 0xC080AED2
    #: capability numbers that drifted between revisions, by name
    caps_named: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: /dev/iommu exists (CONFIG_IOMMUFD), with IOMMU_TEST_CMD (CONFIG_IOMMUFD_TEST)
    iommufd: bool = True
    iommufd_test: bool = True
    #: guest_memfd in IOMMU_IOAS_MAP_FILE: "upstream" (EINVAL), "rfc-2026-02" (accepted,
    #: no pin, no notifier), "notifier" (revoke on truncate, arch policy on conversion)
    iommufd_gmem_policy: str = "upstream"
    #: the binary stats descriptors of VM and vCPU stats fds (KVM_GET_STATS_FD), as tuples
    #: (name, flags, exponent, size, offset, bucket_size); None = the arch's upstream
    #: 6.18 table (kmock.kvm.stats). A vendor kernel adds its own (the host profile
    #: probes them)
    stats_vm_desc: tuple | None = None
    stats_vcpu_desc: tuple | None = None
    #: KVM_GET_SUPPORTED_CPUID entries: tuples (function, index, flags, eax, ebx, ecx, edx)
    cpuid: tuple = ()
    #: the per-CPU values of the x86 vCPU state ioctls (MSR lists and initial values,
    #: TSC kHz, the initial XSAVE image; kmock.kvm.x86_vcpu.probe_host); None = the
    #: Linux 6.18 defaults of kmock.kvm.x86_state.DEFAULTS_618
    x86_vcpu: MappingProxyType | None = None
    #: kmock's own bounds for long runs (not kernel behaviour): completed guest-script
    #: actions kept per vCPU (GuestScript.history), and entries kept in each of the
    #: kernel's logs (sigbus_log, violations, dma_faults, a device's faults); the
    #: oldest go first and ``log.dropped`` counts them. None: keep every entry.
    #: x86 kvm_cpu_dirty_log_size(): ring entries a VMX host with PML reserves on top of
    #: KVM_DIRTY_RING_RSVD_ENTRIES (512 there; 0 on the probe host, which has no PML and
    #: accepts a 4096-byte dirty ring; kmock.kvm.dirty_ring)
    cpu_dirty_log_size: int = 0
    guest_history: int = 1000
    log_limit: int | None = 10000


# Capabilities of an upstream 6.18 x86-64 KVM (reference §2.2, §5.1 row 43, §6.3).
_CAPS_618 = {
    K.KVM_CAP_IRQCHIP: 1,
    K.KVM_CAP_HLT: 1,
    K.KVM_CAP_USER_MEMORY: 1,
    K.KVM_CAP_SET_TSS_ADDR: 1,
    K.KVM_CAP_EXT_CPUID: 1,
    K.KVM_CAP_NR_VCPUS: 2048,
    K.KVM_CAP_NR_MEMSLOTS: K.KVM_USER_MEM_SLOTS,
    K.KVM_CAP_MAX_VCPUS: 4096,
    K.KVM_CAP_MAX_VCPU_ID: 4096,
    K.KVM_CAP_IMMEDIATE_EXIT: 1,
    K.KVM_CAP_EXIT_HYPERCALL: K.KVM_EXIT_HYPERCALL_VALID_MASK,
    K.KVM_CAP_BINARY_STATS_FD: 1,
    K.KVM_CAP_USER_MEMORY2: 1,
    K.KVM_CAP_MEMORY_FAULT_INFO: 1,
    K.KVM_CAP_GUEST_MEMFD: 1,
    # x86.c kvm_vm_ioctl_check_extension constants whose ioctl or KVM_ENABLE_CAP kmock
    # implements (kmock.kvm.x86_vm; docs/capabilities.md). Values that depend on the
    # hardware (X86_DISABLE_EXITS, DISABLE_QUIRKS2) are left out: those caps read 0 here.
    2: 1,  # KVM_CAP_MMU_SHADOW_CACHE_CONTROL (KVM_SET_NR_MMU_PAGES)
    6: 1,  # KVM_CAP_VAPIC (KVM_TPR_ACCESS_REPORTING, KVM_SET_VAPIC_ADDR)
    # promises of behaviour that kmock keeps, constants of every x86 6.18 kernel (QEMU
    # requires 21, 30 and 40 before it starts)
    16: 1,  # KVM_CAP_SYNC_MMU: a memslot's memory is read from the process at access time
    21: 1,  # KVM_CAP_DESTROY_MEMORY_REGION_WORKS
    30: 1,  # KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
    40: 1,  # KVM_CAP_INTERNAL_ERROR_DATA (kmock never produces KVM_EXIT_INTERNAL_ERROR)
    81: 1,  # KVM_CAP_READONLY_MEM
    26: 1,  # KVM_CAP_IRQ_INJECT_STATUS (KVM_IRQ_LINE_STATUS)
    # the in-kernel PIT (kmock.kvm.x86_pit): KVM_CREATE_PIT(2), KVM_GET/SET_PIT(2),
    # KVM_REINJECT_CONTROL (x86.c: constants under CONFIG_KVM_IOAPIC)
    11: 1,  # KVM_CAP_PIT
    24: 1,  # KVM_CAP_REINJECT_CONTROL
    33: 1,  # KVM_CAP_PIT2
    35: 1,  # KVM_CAP_PIT_STATE2
    34: 1,  # KVM_CAP_SET_BOOT_CPU_ID
    37: 1,  # KVM_CAP_SET_IDENTITY_MAP_ADDR
    77: 1,  # KVM_CAP_SIGNAL_MSI (generic, CONFIG_HAVE_KVM_MSI)
    98: 1,  # KVM_CAP_ENABLE_CAP_VM (generic)
    105: 1,  # KVM_CAP_CHECK_EXTENSION_VM (generic)
    116: 1,  # KVM_CAP_DISABLE_QUIRKS
    121: 1,  # KVM_CAP_SPLIT_IRQCHIP
    129: 3,  # KVM_CAP_X2APIC_API: KVM_X2APIC_API_VALID_FLAGS (USE_32BIT_IDS|DISABLE_BROADCAST_QUIRK)
    159: 1,  # KVM_CAP_MSR_PLATFORM_INFO
    164: 1,  # KVM_CAP_EXCEPTION_PAYLOAD
    168: 3,  # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_DIRTY_LOG_MANUAL_CAPS
    # the dirty ring (kmock.kvm.dirty_ring): KVM_DIRTY_RING_MAX_ENTRIES (65536, generic
    # include/linux/kvm_host.h) * sizeof(struct kvm_dirty_gfn); x86 selects both
    # HAVE_KVM_DIRTY_RING_TSO and _ACQ_REL (kvm_vm_ioctl_check_extension_generic)
    192: 65536 * 16,  # KVM_CAP_DIRTY_LOG_RING
    223: 65536 * 16,  # KVM_CAP_DIRTY_LOG_RING_ACQ_REL
    182: 1,  # KVM_CAP_HALT_POLL
    188: 1,  # KVM_CAP_X86_USER_SPACE_MSR
    189: 1,  # KVM_CAP_X86_MSR_FILTER (KVM_X86_SET_MSR_FILTER)
    204: 1,  # KVM_CAP_EXIT_ON_EMULATION_FAILURE
    218: 1,  # KVM_CAP_X86_TRIPLE_FAULT_EVENT
    220: 1,  # KVM_CAP_VM_DISABLE_NX_HUGE_PAGES
    237: 1,  # KVM_CAP_X86_APIC_BUS_CYCLES_NS: APIC_BUS_CYCLE_NS_DEFAULT
    # the vCPU state ioctls kmock implements (kmock.kvm.x86_vcpu) whose capability is a
    # constant in kvm_vm_ioctl_check_extension
    14: 1,  # KVM_CAP_MP_STATE
    41: 1,  # KVM_CAP_VCPU_EVENTS
    50: 1,  # KVM_CAP_DEBUGREGS
    61: 1,  # KVM_CAP_GET_TSC_KHZ
    153: 1,  # KVM_CAP_GET_MSR_FEATURES
    70: 1,  # KVM_CAP_ONE_REG (x86 since 6.18: MSRs and GUEST_SSP, kmock.kvm.x86_vcpu_misc)
    127: 1,  # KVM_CAP_VCPU_ATTRIBUTES (the TSC offset attribute)
    89: 1,  # KVM_CAP_DEVICE_CTRL (KVM_CREATE_DEVICE: the kvm-vfio device, kmock.kvm.kvm_vfio)
    95: 1,  # KVM_CAP_EXT_EMUL_CPUID (KVM_GET_EMULATED_CPUID)
    173: 1,  # KVM_CAP_PMU_EVENT_FILTER (kmock.kvm.x86_pmu)
    226: 1,  # KVM_CAP_PMU_EVENT_MASKED_EVENTS
    190: 1,  # KVM_CAP_ENFORCE_PV_FEATURE_CPUID (a vCPU KVM_ENABLE_CAP, stored)
    200: 1,  # KVM_CAP_SREGS2
    22: 1,  # KVM_CAP_USER_NMI (KVM_NMI)
    23: 1,  # KVM_CAP_SET_GUEST_DEBUG
    195: 0x1F0003,  # KVM_CAP_SET_GUEST_DEBUG2: KVM_GUESTDBG_VALID_MASK
    31: 32,  # KVM_CAP_MCE: KVM_MAX_MCE_BANKS (kmock.kvm.x86_mce)
    209: 1,  # KVM_CAP_SYS_ATTRIBUTES: /dev/kvm KVM_GET/HAS_DEVICE_ATTR (kmock.kvm.device)
    # kvmclock (kmock.kvm.x86_vm, x86_vcpu)
    39: 0xE,  # KVM_CAP_ADJUST_CLOCK: KVM_CLOCK_VALID_FLAGS
    76: 1,  # KVM_CAP_KVMCLOCK_CTRL
    # eventfds and routing (kmock.kvm.eventfds)
    25: 4096,  # KVM_CAP_IRQ_ROUTING: KVM_MAX_IRQ_ROUTES
    32: 1,  # KVM_CAP_IRQFD
    36: 1,  # KVM_CAP_IOEVENTFD
    82: 1,  # KVM_CAP_IRQFD_RESAMPLE
    100: 1,  # KVM_CAP_IOEVENTFD_NO_LENGTH
    122: 1,  # KVM_CAP_IOEVENTFD_ANY_LENGTH
}

# A minimal CPUID table for VMM probing: max leaves, vendor, and the address widths
# (leaf 0x80000008: 52 physical / 48 virtual bits) that selftest-style VMMs read.
_CPUID_618 = (
    (0x0, 0, 0, 0xD, 0x756E6547, 0x6C65746E, 0x49656E69),  # "GenuineIntel"
    (0x1, 0, 0, 0x000806F8, 0x00000800, 0xF6FA3223, 0x0F8BFBFF),
    (0x7, 0, 1, 0, 0x00000000, 0, 0),
    (0xD, 0, 1, 0x7, 0x340, 0x340, 0),
    # KVM_CPUID_SIGNATURE ("KVMKVMKVM") and KVM_CPUID_FEATURES: cpuid.c __do_cpuid_func's
    # constant list (CLOCKSOURCE, NOP_IO_DELAY, CLOCKSOURCE2, ASYNC_PF, PV_EOI,
    # CLOCKSOURCE_STABLE_BIT, PV_UNHALT, PV_TLB_FLUSH, ASYNC_PF_VMEXIT, PV_SEND_IPI,
    # POLL_CONTROL, PV_SCHED_YIELD, ASYNC_PF_INT) plus STEAL_TIME (sched_info_on): the
    # 0x1007efb the probe host's 6.18.44 gives too
    (0x40000000, 0, 0, 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D),
    (0x40000001, 0, 0, 0x01007EFB, 0, 0, 0),
    (0x80000000, 0, 0, 0x80000008, 0, 0, 0),
    (0x80000001, 0, 0, 0, 0, 0x121, 0x2C100800),
    (0x80000008, 0, 0, 0x3034, 0, 0, 0),
)

LINUX_6_18 = Profile(
    name="linux-6.18",
    description="upstream Linux 6.18.y, x86-64 with TDP, SW_PROTECTED VMs and memory attributes",
    caps=MappingProxyType(_CAPS_618),
    cpuid=_CPUID_618,
)

GMEM_CONVERT_RFC_V2 = dataclasses.replace(
    LINUX_6_18,
    name="gmem-convert-rfc-v2",
    description="guest_memfd 1G/in-place conversion RFC v2 (May 2025): KVM_GMEM_CONVERT_SHARED/"
                "PRIVATE on the guest_memfd fd, flags SUPPORT_SHARED/INIT_PRIVATE/HUGETLB",
    conversion="rfc-v2",
)

GMEM_ATTRIBUTES_V8 = dataclasses.replace(
    LINUX_6_18,
    name="gmem-attributes-v8",
    description="in-place conversion v8 (June 2026): KVM_SET_MEMORY_ATTRIBUTES2 on the "
                "guest_memfd fd, kvm.gmem_in_place_conversion=1, cap 250",
    conversion="attributes-v8",
    caps_named=MappingProxyType({"KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": 250}),
)

# v12 (Aug 2026) / as applied to kvm-x86 (Sep 2026); docs/reference/gmem-attributes-v12.md.
# Unconfirmed there and so settings here: the capability number (caps_named; 251 is the
# post-v8 series' number, 250 was v8's, the applied series may differ again).
GMEM_ATTRIBUTES_V12 = dataclasses.replace(
    LINUX_6_18,
    name="gmem-attributes-v12",
    description="in-place conversion v12 (Aug 2026, applied to kvm-x86 Sep 2026): "
                "KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd, "
                "kvm.gmem_in_place_conversion=1, cap 251 [unconfirmed]",
    conversion="attributes-v8",  # the same UAPI: what the core keys on holds for v12 too
    conversion_revision=12,
    caps_named=MappingProxyType({"KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": 251}),
    # kvm_gmem_bind()/kvm_gmem_prepare_memory_region() take the offset as uoff_t: an
    # offset + size past i_size is EINVAL even where loff_t arithmetic wrapped (§7.2)
    gmem_bind_offset_overflow_accepted=False,
    # kvm_gmem_commit_memory_region: an overlapping binding is -EEXIST
    gmem_bind_overlap_errno=errno.EEXIST,
)

_BUILTIN = {p.name: p for p in (LINUX_6_18, GMEM_CONVERT_RFC_V2, GMEM_ATTRIBUTES_V8,
                                GMEM_ATTRIBUTES_V12)}
_host_cache = None


def names(extra=()):
    """Names of the built-in profiles, the host profile and ``extra`` (plugins' profiles)."""
    return sorted({*_BUILTIN, "host", *(p.name for p in extra)})


def get(name, extra=()):
    """The profile called ``name`` (a Profile passes through unchanged); ``extra`` are the
    profiles plugins declare (kmock_profiles)."""
    if isinstance(name, Profile):
        return name
    if name == "host":
        return host_profile()
    for p in extra:
        if p.name == name:
            return p
    try:
        return _BUILTIN[name]
    except (KeyError, TypeError):
        from .errors import KmockUsageError

        raise KmockUsageError(f"unknown kmock profile {name!r}; known: "
                              f"{', '.join(names(extra))}") from None


# --- the host profile ---------------------------------------------------------------


def host_profile():
    """Probe the real /dev/kvm once per process and describe it as a Profile.

    Raises OSError (ENOENT) when the machine has no /dev/kvm.
    """
    global _host_cache
    if _host_cache is None:
        _host_cache = _probe_host()
    return _host_cache


def _probe_host():
    import ctypes
    import fcntl

    from . import _libc

    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    fds = [kvm]
    try:
        def cap(fd, c):
            return fcntl.ioctl(fd, K.KVM_CHECK_EXTENSION, c)

        api = fcntl.ioctl(kvm, K.KVM_GET_API_VERSION, 0)
        mmap_size = fcntl.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        caps = {c: v for c in range(512) if (v := cap(kvm, c))}
        vm = fcntl.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_DEFAULT_VM)
        fds.append(vm)
        # Before the VM has a memslot: does a vCPU's MMU root come from the page pool?
        vcpu = fcntl.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        fds.append(vcpu)
        from .kvm.x86_vcpu import probe_host as probe_x86_vcpu

        x86_vcpu = probe_x86_vcpu(kvm, vcpu, caps)  # before anything touches the vCPU
        tdp_mmu = _probe_tdp_mmu(vcpu)
        stats_vm_desc = _probe_stats(vm)
        stats_vcpu_desc = _probe_stats(vcpu)
        vm_caps = {c: cap(vm, c) for c in range(512)}
        vm_caps = {c: v for c, v in vm_caps.items() if v != caps.get(c, 0)}
        types = caps.get(K.KVM_CAP_VM_TYPES, 1)
        vm_types = frozenset(t for t in range(32) if types & (1 << t))

        attrs = K.kvm_memory_attributes(0, PAGE_SIZE, 0, 0)
        try:
            fcntl.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, attrs)
            memory_attributes = True
        except OSError as e:
            memory_attributes = e.errno != errno.ENOTTY

        # 6.18.y vs 6.18.0 quirks (§7): try them on a scratch guest_memfd.
        args = K.kvm_create_guest_memfd(16 * PAGE_SIZE, 0)
        gmem = fcntl.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, args)
        fds.append(gmem)
        region = K.kvm_userspace_memory_region2(
            slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32,
            memory_size=PAGE_SIZE, guest_memfd=gmem)
        fcntl.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
        region.flags = 0
        try:
            fcntl.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
            toggle_rejected = False
        except OSError:
            toggle_rejected = True
        region = K.kvm_userspace_memory_region2(
            slot=2, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 33,
            memory_size=PAGE_SIZE, guest_memfd=gmem, guest_memfd_offset=0x7FFFFFFFFFFFF000)
        try:
            fcntl.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
            overflow_accepted = True
        except OSError:
            overflow_accepted = False

        # Number of memslot address spaces: KVM_CAP_MULTI_ADDRESS_SPACE (118), else 1.
        nr_as = caps.get(118, 1) or 1
        cpuid = _probe_cpuid(kvm)
        max_gpa_bits = 52
        tdp = bool(caps.get(K.KVM_CAP_PRE_FAULT_MEMORY, 0))
        if tdp:
            max_gpa_bits = _host_phys_bits() or 52
        del _libc, ctypes
        return Profile(
            name="host",
            description=f"probed from the real /dev/kvm ({os.uname().release})",
            api_version=api,
            vcpu_mmap_size=mmap_size,
            caps=MappingProxyType(caps),
            vm_caps=MappingProxyType({K.KVM_X86_DEFAULT_VM: MappingProxyType(vm_caps)}),
            vm_types=vm_types,
            memory_attributes=memory_attributes,
            tdp=tdp,
            tdp_mmu=tdp and tdp_mmu,
            max_gpa_bits=max_gpa_bits,
            nr_memslot_as_ids=nr_as,
            max_vcpus=caps.get(K.KVM_CAP_MAX_VCPUS, 4096),
            max_vcpu_ids=caps.get(K.KVM_CAP_MAX_VCPU_ID, 4096),
            gmem_flag_toggle_rejected=toggle_rejected,
            gmem_bind_offset_overflow_accepted=overflow_accepted,
            iommufd=os.path.exists("/dev/iommu"),
            iommufd_test=False,
            cpuid=cpuid,
            stats_vm_desc=stats_vm_desc,
            stats_vcpu_desc=stats_vcpu_desc,
            x86_vcpu=MappingProxyType(x86_vcpu),
        )
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _probe_tdp_mmu(vcpu):
    """False when the MMU root of a vCPU comes from the shadow page pool.

    KVM_PRE_FAULT_MEMORY on a VM that never had a memslot: kvm_arch_vcpu_pre_fault_memory
    calls kvm_mmu_reload() before it checks for TDP; without the TDP MMU the root
    allocation (mmu_alloc_direct_roots -> make_mmu_pages_available) finds
    n_max_mmu_pages == 0 and fails with ENOSPC. The TDP MMU allocates its root
    outside the pool and goes on to the fault (ENOENT: no memslot).
    """
    import fcntl

    try:
        fcntl.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=PAGE_SIZE))
    except OSError as e:
        return e.errno != errno.ENOSPC
    return True


def _probe_stats(fd):
    """The descriptors of the VM's or vCPU's binary stats fd, or None without one."""
    import fcntl

    from .kvm.stats import parse

    try:
        sfd = fcntl.ioctl(fd, K.KVM_GET_STATS_FD, 0)
    except OSError:
        return None
    try:
        data = b""
        while chunk := os.pread(sfd, 1 << 16, len(data)):
            data += chunk
    finally:
        os.close(sfd)
    return tuple(tuple(d) for d in parse(data)[2])


def _probe_cpuid(kvm):
    import ctypes
    import fcntl

    n = 256
    buf = bytearray(8 + n * ctypes.sizeof(K.kvm_cpuid_entry2))
    buf[0:4] = n.to_bytes(4, "little")
    fcntl.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, buf)
    nent = int.from_bytes(buf[0:4], "little")
    out = []
    for i in range(nent):
        e = K.kvm_cpuid_entry2.from_buffer_copy(buf, 8 + i * ctypes.sizeof(K.kvm_cpuid_entry2))
        out.append((e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx))
    return tuple(out)


def _host_phys_bits():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("address sizes"):
                    return int(line.split(":")[1].split()[0])
    except OSError:
        pass
    return None
