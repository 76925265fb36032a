"""Conformance scenarios of the x86 VM ioctls beyond guest memory (kmock.kvm.x86_vm).

Registered into kmock.testing.conformance.SCENARIOS when that module is imported:
KVM_SET_BOOT_CPU_ID, KVM_SET_NR_MMU_PAGES (and the absent KVM_GET_NR_MMU_PAGES),
KVM_CREATE_IRQCHIP against KVM_CAP_SPLIT_IRQCHIP, and KVM_ENABLE_CAP of the capabilities
kmock keeps as bookkeeping, with the limits each checks and what vCPU creation changes.
Sources: arch/x86/kvm/x86.c kvm_arch_vm_ioctl, kvm_vm_ioctl_enable_cap,
kvm_arch_vcpu_precreate; virt/kvm/kvm_main.c kvm_vm_ioctl_enable_cap_generic.
Only values a C int carries are passed by value (fcntl.ioctl's limit on the host side).
"""

import contextlib
import ctypes

from ..kvm import x86_vm as X
from ..uapi import kvm as K
from ..uapi.x86 import KVM_SET_MSRS as X86_SET_MSRS
from .conformance import P, create_vm, errname, open_kvm, scenario

GET_NR_MMU_PAGES = K.KVM_GET_NR_MMU_PAGES  # removed from the kernel: ENOTTY


def enable(sys, rec, fd, label, cap, a0=0, flags=0):
    e = K.kvm_enable_cap(cap=cap, flags=flags)
    e.args[0] = a0
    return rec.call(label, sys.ioctl, fd, K.KVM_ENABLE_CAP, e)


def vcpu(sys, rec, vm, vcpu_id, label=None):
    return rec.call(label or f"KVM_CREATE_VCPU {vcpu_id}", sys.ioctl, vm, K.KVM_CREATE_VCPU, vcpu_id)


@scenario("x86_vm_boot_cpu_id",
          "KVM_SET_BOOT_CPU_ID: id > 4096 -> EINVAL (4096 accepted), above an enabled MAX_VCPU_ID "
          "-> EINVAL, after a vCPU -> EBUSY (before the range check); on /dev/kvm -> EINVAL")
def x86_vm_boot_cpu_id(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("BOOT_CPU_ID 0 on /dev/kvm", sys.ioctl, kvm, X.KVM_SET_BOOT_CPU_ID, 0)
    vm = create_vm(sys, rec, kvm)
    for i in (4097, 4096, 4095, 0):
        rec.call(f"BOOT_CPU_ID {i}", sys.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, i)
    enable(sys, rec, vm, "MAX_VCPU_ID 4", K.KVM_CAP_MAX_VCPU_ID, 4)
    rec.call("BOOT_CPU_ID 5 (max 4)", sys.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 5)
    rec.call("BOOT_CPU_ID 4 (max 4)", sys.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 4)
    enable(sys, rec, vm, "MAX_VCPU_ID 3 (boot 4)", K.KVM_CAP_MAX_VCPU_ID, 3)
    vcpu(sys, rec, vm, 3)
    rec.call("BOOT_CPU_ID 0 after a vCPU", sys.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 0)
    rec.call("BOOT_CPU_ID 4097 after a vCPU", sys.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 4097)
    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    rec.call("VM 2: BOOT_CPU_ID 7", sys.ioctl, vm2, X.KVM_SET_BOOT_CPU_ID, 7)
    enable(sys, rec, vm2, "VM 2: MAX_VCPU_ID 6 (boot 7)", K.KVM_CAP_MAX_VCPU_ID, 6)
    enable(sys, rec, vm2, "VM 2: MAX_VCPU_ID 7 (boot 7)", K.KVM_CAP_MAX_VCPU_ID, 7)
    rec.call("VM 2: BOOT_CPU_ID 8 (max 7)", sys.ioctl, vm2, X.KVM_SET_BOOT_CPU_ID, 8)
    rec.call("VM 2: BOOT_CPU_ID 7 (max 7)", sys.ioctl, vm2, X.KVM_SET_BOOT_CPU_ID, 7)


@scenario("x86_vm_max_vcpu_id",
          "KVM_ENABLE_CAP(MAX_VCPU_ID): > 4096 -> EINVAL; set once (same value again -> 0, another "
          "-> EINVAL); the first vCPU fixes it at 4096; KVM_CREATE_VCPU ids at or above it -> EINVAL")
def x86_vm_max_vcpu_id(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    enable(sys, rec, vm, "MAX_VCPU_ID 4 flags=1", K.KVM_CAP_MAX_VCPU_ID, 4, flags=1)
    enable(sys, rec, vm, "MAX_VCPU_ID 4097", K.KVM_CAP_MAX_VCPU_ID, 4097)
    enable(sys, rec, vm, "MAX_VCPU_ID 0 (leaves it unset)", K.KVM_CAP_MAX_VCPU_ID, 0)
    enable(sys, rec, vm, "MAX_VCPU_ID 2", K.KVM_CAP_MAX_VCPU_ID, 2)
    enable(sys, rec, vm, "MAX_VCPU_ID 2 again", K.KVM_CAP_MAX_VCPU_ID, 2)
    enable(sys, rec, vm, "MAX_VCPU_ID 3", K.KVM_CAP_MAX_VCPU_ID, 3)
    vcpu(sys, rec, vm, 1)
    vcpu(sys, rec, vm, 2)
    vcpu(sys, rec, vm, 4096)
    rec.call("CHECK_EXTENSION(MAX_VCPU_ID) on the VM", sys.ioctl, vm, K.KVM_CHECK_EXTENSION,
             K.KVM_CAP_MAX_VCPU_ID)
    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    vcpu(sys, rec, vm2, 4096, "VM 2: KVM_CREATE_VCPU 4096 (before precreate)")
    enable(sys, rec, vm2, "VM 2: MAX_VCPU_ID 100", K.KVM_CAP_MAX_VCPU_ID, 100)
    vcpu(sys, rec, vm2, 100, "VM 2: KVM_CREATE_VCPU 100")
    vcpu(sys, rec, vm2, 99, "VM 2: KVM_CREATE_VCPU 99")
    vcpu(sys, rec, vm2, 99, "VM 2: KVM_CREATE_VCPU 99 again")
    vm3 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 3")
    vcpu(sys, rec, vm3, 0, "VM 3: KVM_CREATE_VCPU 0")
    enable(sys, rec, vm3, "VM 3: MAX_VCPU_ID 4096 after a vCPU", K.KVM_CAP_MAX_VCPU_ID, 4096)
    enable(sys, rec, vm3, "VM 3: MAX_VCPU_ID 100 after a vCPU", K.KVM_CAP_MAX_VCPU_ID, 100)
    enable(sys, rec, kvm, "MAX_VCPU_ID 4 on /dev/kvm", K.KVM_CAP_MAX_VCPU_ID, 4)


@scenario("x86_vm_nr_mmu_pages",
          "KVM_SET_NR_MMU_PAGES: < 64 -> EINVAL, 64 / 65 / 2^31-1 -> 0, also with memslots; "
          "KVM_GET_NR_MMU_PAGES -> ENOTTY (removed); on /dev/kvm -> EINVAL; the pool it sizes "
          "lets a VM without memslots load its MMU root")
def x86_vm_nr_mmu_pages(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("SET_NR_MMU_PAGES 64 on /dev/kvm", sys.ioctl, kvm, X.KVM_SET_NR_MMU_PAGES, 64)
    vm = create_vm(sys, rec, kvm)
    rec.call("GET_NR_MMU_PAGES", sys.ioctl, vm, GET_NR_MMU_PAGES, 0)
    for n in (0, 1, 63, 64, 65, (1 << 31) - 1):
        rec.call(f"SET_NR_MMU_PAGES {n}", sys.ioctl, vm, X.KVM_SET_NR_MMU_PAGES, n)
    rec.call("GET_NR_MMU_PAGES after SET", sys.ioctl, vm, GET_NR_MMU_PAGES, 0)
    fd = vcpu(sys, rec, vm, 0)
    rec.call("SET_NR_MMU_PAGES 128 after a vCPU", sys.ioctl, vm, X.KVM_SET_NR_MMU_PAGES, 128)
    # the pool is sized without a memslot: the MMU root loads, then the TDP check decides
    rec.call("PRE_FAULT_MEMORY of a VM without memslots, after SET_NR_MMU_PAGES",
             sys.ioctl, fd, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=4096))
    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    fd2 = vcpu(sys, rec, vm2, 0, "VM 2: KVM_CREATE_VCPU 0")
    rec.call("VM 2: PRE_FAULT_MEMORY without memslots or SET_NR_MMU_PAGES",
             sys.ioctl, fd2, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=4096))


@scenario("x86_vm_irqchip",
          "KVM_CREATE_IRQCHIP: twice -> EEXIST, after a vCPU -> EINVAL (EEXIST first); "
          "KVM_CAP_SPLIT_IRQCHIP: pins > 4096 -> EINVAL, after an irqchip or a vCPU -> EEXIST; "
          "CHECK_EXTENSION(X2APIC_API) gains bit 2 with a split irqchip")
def x86_vm_irqchip(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("CREATE_IRQCHIP on /dev/kvm", sys.ioctl, kvm, X.KVM_CREATE_IRQCHIP, 0)
    vm = create_vm(sys, rec, kvm)
    rec.call("CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    rec.call("CREATE_IRQCHIP again", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    enable(sys, rec, vm, "SPLIT_IRQCHIP 24 after CREATE_IRQCHIP", X.KVM_CAP_SPLIT_IRQCHIP, 24)
    rec.call("CHECK_EXTENSION(X2APIC_API), full irqchip", sys.ioctl, vm, K.KVM_CHECK_EXTENSION,
             X.KVM_CAP_X2APIC_API)
    vcpu(sys, rec, vm, 0)
    rec.call("CREATE_IRQCHIP after a vCPU (irqchip exists)", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)

    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    vcpu(sys, rec, vm2, 0, "VM 2: KVM_CREATE_VCPU 0")
    rec.call("VM 2: CREATE_IRQCHIP after a vCPU", sys.ioctl, vm2, X.KVM_CREATE_IRQCHIP, 0)
    enable(sys, rec, vm2, "VM 2: SPLIT_IRQCHIP 4097 after a vCPU", X.KVM_CAP_SPLIT_IRQCHIP, 4097)
    enable(sys, rec, vm2, "VM 2: SPLIT_IRQCHIP 24 after a vCPU", X.KVM_CAP_SPLIT_IRQCHIP, 24)

    vm3 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 3")
    rec.call("VM 3: CHECK_EXTENSION(X2APIC_API)", sys.ioctl, vm3, K.KVM_CHECK_EXTENSION,
             X.KVM_CAP_X2APIC_API)
    enable(sys, rec, vm3, "VM 3: SPLIT_IRQCHIP flags=1", X.KVM_CAP_SPLIT_IRQCHIP, 0, flags=1)
    enable(sys, rec, vm3, "VM 3: SPLIT_IRQCHIP 4097", X.KVM_CAP_SPLIT_IRQCHIP, 4097)
    enable(sys, rec, vm3, "VM 3: SPLIT_IRQCHIP 4096", X.KVM_CAP_SPLIT_IRQCHIP, 4096)
    enable(sys, rec, vm3, "VM 3: SPLIT_IRQCHIP 0 again", X.KVM_CAP_SPLIT_IRQCHIP, 0)
    rec.call("VM 3: CREATE_IRQCHIP after SPLIT_IRQCHIP", sys.ioctl, vm3, X.KVM_CREATE_IRQCHIP, 0)
    rec.call("VM 3: CHECK_EXTENSION(X2APIC_API), split", sys.ioctl, vm3, K.KVM_CHECK_EXTENSION,
             X.KVM_CAP_X2APIC_API)
    rec.call("CHECK_EXTENSION(X2APIC_API) on /dev/kvm", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION,
             X.KVM_CAP_X2APIC_API)


def _each(sys, rec, kvm, name, cap, values, after_vcpu=(0, 1)):
    """ENABLE_CAP(cap, v) for v in values on one fresh VM, then again after a vCPU."""
    vm = create_vm(sys, rec, kvm, label=f"{name}: KVM_CREATE_VM")
    for v in values:
        enable(sys, rec, vm, f"{name} {v:#x}", cap, v)
    vcpu(sys, rec, vm, 0, f"{name}: KVM_CREATE_VCPU 0")
    for v in after_vcpu:
        enable(sys, rec, vm, f"{name} {v:#x} after a vCPU", cap, v)


@scenario("x86_vm_enable_cap_bookkeeping",
          "KVM_ENABLE_CAP of X86_DISABLE_EXITS, DISABLE_QUIRKS(2), X2APIC_API, MSR_PLATFORM_INFO, "
          "EXCEPTION_PAYLOAD, X86_TRIPLE_FAULT_EVENT, X86_USER_SPACE_MSR, EXIT_ON_EMULATION_FAILURE, "
          "MANUAL_DIRTY_LOG_PROTECT2, HALT_POLL: the bits each accepts, before and after a vCPU")
def x86_vm_enable_cap_bookkeeping(sys, rec):
    kvm = open_kvm(sys, rec)
    wide = (1 << 32, 1 << 40, 1 << 63)
    _each(sys, rec, kvm, "X86_DISABLE_EXITS", X.KVM_CAP_X86_DISABLE_EXITS,
          (0, 1, 2, 4, 8, 14, 15, 16, *wide), after_vcpu=(0, 4, 16))
    _each(sys, rec, kvm, "DISABLE_QUIRKS", X.KVM_CAP_DISABLE_QUIRKS, (0, 1, 0x5FF, 0x600, *wide))
    _each(sys, rec, kvm, "DISABLE_QUIRKS2", X.KVM_CAP_DISABLE_QUIRKS2,
          (0, 1, 0x5FF, 0x600, 0x800, *wide))
    _each(sys, rec, kvm, "X2APIC_API", X.KVM_CAP_X2APIC_API, (*range(17), *wide), after_vcpu=(3, 4))
    vm = create_vm(sys, rec, kvm, label="X2APIC_API split: KVM_CREATE_VM")
    enable(sys, rec, vm, "X2APIC_API split: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
    for v in range(17):
        enable(sys, rec, vm, f"X2APIC_API split {v:#x}", X.KVM_CAP_X2APIC_API, v)
    for name, cap in (("MSR_PLATFORM_INFO", X.KVM_CAP_MSR_PLATFORM_INFO),
                      ("EXCEPTION_PAYLOAD", X.KVM_CAP_EXCEPTION_PAYLOAD),
                      ("X86_TRIPLE_FAULT_EVENT", X.KVM_CAP_X86_TRIPLE_FAULT_EVENT),
                      ("X86_USER_SPACE_MSR", X.KVM_CAP_X86_USER_SPACE_MSR),
                      ("EXIT_ON_EMULATION_FAILURE", X.KVM_CAP_EXIT_ON_EMULATION_FAILURE),
                      ("MANUAL_DIRTY_LOG_PROTECT2", K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
                      ("HALT_POLL", K.KVM_CAP_HALT_POLL)):
        _each(sys, rec, kvm, name, cap, (0, 1, 2, 3, 4, 7, 8, 0xFFFFFFFF, *wide))
    vm = create_vm(sys, rec, kvm, label="flags: KVM_CREATE_VM")
    enable(sys, rec, vm, "X86_DISABLE_EXITS 0 flags=1", X.KVM_CAP_X86_DISABLE_EXITS, 0, flags=1)
    enable(sys, rec, vm, "DISABLE_QUIRKS 0 flags=1", X.KVM_CAP_DISABLE_QUIRKS, 0, flags=1)
    enable(sys, rec, vm, "HALT_POLL 0 flags=1", K.KVM_CAP_HALT_POLL, 0, flags=1)
    enable(sys, rec, kvm, "X86_DISABLE_EXITS 0 on /dev/kvm", X.KVM_CAP_X86_DISABLE_EXITS, 0)


@scenario("x86_vm_tss_identity_map",
          "KVM_SET_TSS_ADDR -> 0 (also after a vCPU; no private memslot over the TSS pages); "
          "KVM_SET_IDENTITY_MAP_ADDR: any u64 -> 0, NULL -> EFAULT, after a vCPU -> EINVAL first")
def x86_vm_tss_identity_map(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("SET_TSS_ADDR 0 on /dev/kvm", sys.ioctl, kvm, X.KVM_SET_TSS_ADDR, 0)
    vm = create_vm(sys, rec, kvm)
    for a in (0, 0x1000, 0x7FFFF000, 0xFFFBD000, 0xFFFFD000, 0xFFFFE000, 1 << 32, (1 << 64) - 1):
        rec.call(f"SET_TSS_ADDR {a:#x}", sys.ioctl, vm, X.KVM_SET_TSS_ADDR, a)
    for a in (0, 0xFEFFC000, 1 << 63, (1 << 64) - 1):
        rec.call(f"SET_IDENTITY_MAP_ADDR {a:#x}", sys.ioctl, vm, X.KVM_SET_IDENTITY_MAP_ADDR,
                 ctypes.c_uint64(a))
    rec.call("SET_IDENTITY_MAP_ADDR NULL", sys.ioctl, vm, X.KVM_SET_IDENTITY_MAP_ADDR, 0)
    region = K.kvm_userspace_memory_region(slot=0, guest_phys_addr=0x1000, memory_size=0x1000)
    rec.call("memslot over the TSS pages (no userspace memory)", sys.ioctl, vm,
             K.KVM_SET_USER_MEMORY_REGION, region)
    vcpu(sys, rec, vm, 0)
    rec.call("SET_TSS_ADDR 0x2000 after a vCPU", sys.ioctl, vm, X.KVM_SET_TSS_ADDR, 0x2000)
    rec.call("SET_IDENTITY_MAP_ADDR 0x1000 after a vCPU", sys.ioctl, vm,
             X.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(0x1000))
    rec.call("SET_IDENTITY_MAP_ADDR NULL after a vCPU", sys.ioctl, vm,
             X.KVM_SET_IDENTITY_MAP_ADDR, 0)


@scenario("x86_vm_enc_region",
          "KVM_MEMORY_ENCRYPT_REG_REGION / UNREG_REGION on a VM of a host without SEV: the "
          "struct is copied in first (EFAULT), then ENOTTY; KVM_MEMORY_ENCRYPT_OP: ENOTTY "
          "before anything is read")
def x86_vm_enc_region(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    region = K.kvm_enc_region(addr=0x7F0000000000, size=1 << 20)
    for name, req in (("REG_REGION", K.KVM_MEMORY_ENCRYPT_REG_REGION),
                      ("UNREG_REGION", K.KVM_MEMORY_ENCRYPT_UNREG_REGION)):
        rec.call(f"{name} NULL", sys.ioctl, vm, req, 0)
        rec.call(f"{name} unmapped pointer", sys.ioctl, vm, req, 0x1000)
        rec.call(f"{name} a region", sys.ioctl, vm, req, region)
        rec.call(f"{name} an empty region", sys.ioctl, vm, req, K.kvm_enc_region())
    rec.call("MEMORY_ENCRYPT_OP NULL", sys.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, 0)
    rec.call("MEMORY_ENCRYPT_OP a command", sys.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, bytes(16))
    rec.call("REG_REGION on /dev/kvm", sys.ioctl, kvm, K.KVM_MEMORY_ENCRYPT_REG_REGION, region)


@scenario("x86_vm_apic_bus_and_nx_huge_pages",
          "KVM_ENABLE_CAP(X86_APIC_BUS_CYCLES_NS): 0 or an overflowing value -> EINVAL, no irqchip "
          "-> ENXIO, after a vCPU -> EINVAL; (VM_DISABLE_NX_HUGE_PAGES): args[0] != 0 or a vCPU -> EINVAL")
def x86_vm_apic_bus_and_nx_huge_pages(sys, rec):
    kvm = open_kvm(sys, rec)
    bus = X.KVM_CAP_X86_APIC_BUS_CYCLES_NS
    limit = 1 << 25  # the largest value accepted (probed)
    vm = create_vm(sys, rec, kvm)
    for v in (0, 1, limit, limit + 1):
        enable(sys, rec, vm, f"APIC_BUS_CYCLES_NS {v:#x}, no irqchip", bus, v)
    rec.call("CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    for v in (0, 1, limit, limit + 1, 1 << 63):
        enable(sys, rec, vm, f"APIC_BUS_CYCLES_NS {v:#x}", bus, v)
    vcpu(sys, rec, vm, 0)
    enable(sys, rec, vm, "APIC_BUS_CYCLES_NS 0x1 after a vCPU", bus, 1)
    enable(sys, rec, vm, "APIC_BUS_CYCLES_NS 0x0 after a vCPU", bus, 0)
    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    enable(sys, rec, vm2, "VM 2: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
    enable(sys, rec, vm2, "VM 2: APIC_BUS_CYCLES_NS 0x2, split irqchip", bus, 2)
    nx = X.KVM_CAP_VM_DISABLE_NX_HUGE_PAGES
    vm3 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 3")
    for v in (1, 1 << 63, 0, 0):
        enable(sys, rec, vm3, f"VM 3: DISABLE_NX_HUGE_PAGES {v:#x}", nx, v)
    vcpu(sys, rec, vm3, 0, "VM 3: KVM_CREATE_VCPU 0")
    enable(sys, rec, vm3, "VM 3: DISABLE_NX_HUGE_PAGES 0x0 after a vCPU", nx, 0)


# --- kvmclock: KVM_GET_CLOCK / KVM_SET_CLOCK, KVM_KVMCLOCK_CTRL ---------------------------------

S = 10**9


def _clock(sys, rec, vm, label):
    """KVM_GET_CLOCK; records the errno and flags (the values are the caller's to relate)."""
    d = K.kvm_clock_data()
    if rec.call(label, sys.ioctl, vm, K.KVM_GET_CLOCK, d) is None:
        return None
    rec.record(f"{label}: flags", d.flags)
    rec.record(f"{label}: pads 0", d.pad0 == 0 and not any(d.pad))
    return d


def _set_clock(sys, rec, vm, label, clock, flags=0, realtime=0, pad0=0):
    d = K.kvm_clock_data(clock=clock, flags=flags, realtime=realtime, pad0=pad0)
    return rec.call(label, sys.ioctl, vm, K.KVM_SET_CLOCK, d)


@scenario("x86_vm_clock",
          "KVM_GET_CLOCK / KVM_SET_CLOCK: the clock counts from VM creation; SET flags outside "
          "TSC_STABLE|REALTIME|HOST_TSC -> EINVAL; REALTIME adds the time since `realtime`; "
          "GET's flags need a vCPU and a master-clock update (SET_CLOCK); bad pointers EFAULT; "
          "wrong fds EINVAL/ENOTTY; KVM_KVMCLOCK_CTRL needs MSR_KVM_SYSTEM_TIME(_NEW) bit 0")
def x86_vm_clock(sys, rec):
    import time
    from .conformance_vcpu import msrs_buf

    kvm = open_kvm(sys, rec)
    check_ext = lambda fd, where: rec.call(  # noqa: E731
        f"CHECK_EXTENSION(ADJUST_CLOCK) on {where}", sys.ioctl, fd, K.KVM_CHECK_EXTENSION,
        K.KVM_CAP_ADJUST_CLOCK)
    check_ext(kvm, "/dev/kvm")
    rec.call("CHECK_EXTENSION(KVMCLOCK_CTRL)", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION,
             K.KVM_CAP_KVMCLOCK_CTRL)
    rec.call("GET_CLOCK on /dev/kvm", sys.ioctl, kvm, K.KVM_GET_CLOCK, K.kvm_clock_data())
    vm = create_vm(sys, rec, kvm)
    check_ext(vm, "the VM")
    d = _clock(sys, rec, vm, "GET_CLOCK new VM")
    rec.record("new VM: clock below 1 s", d is not None and d.clock < S)
    rec.record("new VM: realtime, host_tsc 0", d is not None and d.realtime == d.host_tsc == 0)
    rec.call("GET_CLOCK NULL", sys.ioctl, vm, K.KVM_GET_CLOCK, 0)
    rec.call("SET_CLOCK NULL", sys.ioctl, vm, K.KVM_SET_CLOCK, 0)
    for fl in (0x1, 0x10, 0x80000000, 0xF):
        _set_clock(sys, rec, vm, f"SET_CLOCK flags {fl:#x}", 5, fl)
    d = _clock(sys, rec, vm, "GET_CLOCK after refused SETs")
    rec.record("refused SETs left the clock", d is not None and d.clock < S)
    for fl in (0x0, 0x2, 0x8, 0xA):
        _set_clock(sys, rec, vm, f"SET_CLOCK 1000 s flags {fl:#x}", 1000 * S, fl)
    d = _clock(sys, rec, vm, "GET_CLOCK after SET 1000 s")
    rec.record("within a second of 1000 s", d is not None and 1000 * S <= d.clock < 1001 * S)
    _set_clock(sys, rec, vm, "SET_CLOCK 5 pad0=7", 5, pad0=7)
    d = _clock(sys, rec, vm, "GET_CLOCK after SET 5")
    rec.record("back below 1 s", d is not None and d.clock < S)
    _set_clock(sys, rec, vm, "SET_CLOCK 1 s REALTIME 10 s ago", S, K.KVM_CLOCK_REALTIME,
               time.time_ns() - 10 * S)
    d = _clock(sys, rec, vm, "GET_CLOCK after REALTIME past")
    rec.record("within a second of 11 s", d is not None and 11 * S <= d.clock < 12 * S)
    _set_clock(sys, rec, vm, "SET_CLOCK 1 s REALTIME 10 s ahead", S, K.KVM_CLOCK_REALTIME,
               time.time_ns() + 10 * S)
    d = _clock(sys, rec, vm, "GET_CLOCK after REALTIME future")
    rec.record("within a second of 1 s", d is not None and S <= d.clock < 2 * S)

    v = vcpu(sys, rec, vm, 0)
    rec.call("GET_CLOCK on the vCPU", sys.ioctl, v, K.KVM_GET_CLOCK, K.kvm_clock_data())
    rec.call("KVMCLOCK_CTRL on the VM", sys.ioctl, vm, K.KVM_KVMCLOCK_CTRL, 0)
    _clock(sys, rec, vm, "GET_CLOCK with a vCPU, before a SET")
    _set_clock(sys, rec, vm, "SET_CLOCK 0 with a vCPU", 0)
    d = _clock(sys, rec, vm, "GET_CLOCK with a vCPU, after a SET")
    if d is not None and d.flags & K.KVM_CLOCK_REALTIME:
        rec.record("realtime within a second of now", abs(d.realtime - time.time_ns()) < S)
    if d is not None and d.flags & K.KVM_CLOCK_HOST_TSC:
        rec.record("host_tsc nonzero", d.host_tsc != 0)
    if d is not None:
        rec.call("SET_CLOCK what GET returned", sys.ioctl, vm, K.KVM_SET_CLOCK, d)

    rec.call("KVMCLOCK_CTRL, no pvclock", sys.ioctl, v, K.KVM_KVMCLOCK_CTRL, 0)
    for msr, val in ((0x4B564D01, 0x1000), (0x4B564D01, 0x1001), (0x12, 0x2000), (0x12, 0x2001),
                     (0x4B564D01, 0)):
        rec.call(f"SET_MSRS {msr:#x}={val:#x}", sys.ioctl, v, X86_SET_MSRS, msrs_buf([(msr, val)]))
        rec.call(f"KVMCLOCK_CTRL after {msr:#x}={val:#x}", sys.ioctl, v, K.KVM_KVMCLOCK_CTRL, 0)


# --- dirty page logging: KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG (kmock.kvm.dirty_log) ---------


@scenario("dirty_log",
          "KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG without guest writes: slot id and as_id "
          "EINVAL, no slot or no LOG_DIRTY_PAGES ENOENT, the slot's whole longs written, bad "
          "pointers EFAULT; manual protect (INITIALLY_SET read when the bitmap is made), "
          "CLEAR's first_page/num_pages alignment, CLEAR also without manual protect; a move keeps the bitmap")
def dirty_log(sys, rec):
    import mmap

    n = 100
    mem = mmap.mmap(-1, n * P)
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    buf = (ctypes.c_char * 64)()
    LOG = K.KVM_MEM_LOG_DIRTY_PAGES

    def region(vm, label, slot, flags, gpa=0):
        r = K.kvm_userspace_memory_region(slot=slot, flags=flags, guest_phys_addr=gpa,
                                          memory_size=n * P, userspace_addr=uaddr)
        return rec.call(label, sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, r)

    def get(vm, label, slot, ptr=None):
        ctypes.memset(buf, 0xAA, 64)
        log = K.kvm_dirty_log(slot=slot, dirty_bitmap=ctypes.addressof(buf) if ptr is None else ptr)
        if rec.call(label, sys.ioctl, vm, K.KVM_GET_DIRTY_LOG, log) is not None:
            rec.record(f"{label}: bitmap", bytes(buf)[:24].hex())

    def clear(vm, label, slot, first, num, ptr=None):
        ctypes.memset(buf, 0xFF, 64)
        c = K.kvm_clear_dirty_log(slot=slot, first_page=first, num_pages=num,
                                  dirty_bitmap=ctypes.addressof(buf) if ptr is None else ptr)
        rec.call(label, sys.ioctl, vm, K.KVM_CLEAR_DIRTY_LOG, c)

    try:
        kvm = open_kvm(sys, rec)
        rec.call("GET_DIRTY_LOG on /dev/kvm", sys.ioctl, kvm, K.KVM_GET_DIRTY_LOG, K.kvm_dirty_log())
        vm = create_vm(sys, rec, kvm)
        get(vm, "GET no slot", 0)
        get(vm, "GET slot id 32764", K.KVM_USER_MEM_SLOTS)
        get(vm, "GET as_id 2", 2 << 16)
        region(vm, "slot 0 plain", 0, 0)
        get(vm, "GET slot without LOG_DIRTY_PAGES", 0)
        clear(vm, "CLEAR slot without LOG_DIRTY_PAGES", 0, 0, 64)
        region(vm, "slot 0 flags LOG_DIRTY_PAGES", 0, LOG)
        get(vm, "GET logged slot", 0)
        get(vm, "GET NULL bitmap", 0, 8)
        clear(vm, "CLEAR without manual protect", 0, 0, 64)
        region(vm, "slot 0 flags 0 again", 0, 0)
        get(vm, "GET after logging off", 0)

        vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
        for a0 in (1, 3, 2, 0, 3):
            enable(sys, rec, vm2, f"VM 2: MANUAL_DIRTY_LOG_PROTECT2 {a0}",
                   K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, a0)
        region(vm2, "VM 2: slot 0 LOG (INITIALLY_SET)", 0, LOG)
        get(vm2, "VM 2: GET", 0)
        get(vm2, "VM 2: GET again", 0)
        for first, num in ((1, 10), (64, 36), (64, 37), (0, 10), (0, 64), (128, 0), (100, 0),
                           (0, 0), (0, 100)):
            clear(vm2, f"VM 2: CLEAR first {first} num {num}", 0, first, num)
            get(vm2, f"VM 2: GET after CLEAR {first} {num}", 0)
        clear(vm2, "VM 2: CLEAR NULL", 0, 0, 64, 8)
        clear(vm2, "VM 2: CLEAR no slot", 3, 0, 64)
        clear(vm2, "VM 2: CLEAR no slot, first 1", 3, 1, 64)
        clear(vm2, "VM 2: CLEAR as_id 2", 2 << 16, 0, 64)
        clear(vm2, "VM 2: CLEAR slot id 32764", K.KVM_USER_MEM_SLOTS, 0, 64)
        region(vm2, "VM 2: slot 0 LOG off", 0, 0)
        region(vm2, "VM 2: slot 0 LOG on", 0, LOG)
        get(vm2, "VM 2: GET after LOG off/on", 0)

        vm3 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 3")
        region(vm3, "VM 3: slot 0 LOG", 0, LOG)
        enable(sys, rec, vm3, "VM 3: MANUAL_DIRTY_LOG_PROTECT2 3", K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, 3)
        get(vm3, "VM 3: GET (bitmap made before INITIALLY_SET)", 0)
        region(vm3, "VM 3: slot 0 LOG off", 0, 0)
        region(vm3, "VM 3: slot 0 LOG on", 0, LOG)
        get(vm3, "VM 3: GET after LOG off/on", 0)
        region(vm3, "VM 3: slot 0 moved", 0, LOG, gpa=1 << 30)
        get(vm3, "VM 3: GET after a move", 0)

    finally:
        rec.cleanup()  # the slots' memory goes next
        mem.close()


@scenario("x86_vm_msr_filter",
          "KVM_X86_SET_MSR_FILTER: flags and DEFAULT_DENY without ranges EINVAL; per range in "
          "array order: no flags or unknown flags EINVAL, a bitmap over 0x600 bytes EINVAL, an "
          "unreadable bitmap EFAULT; empty ranges skipped; the ioctl on /dev/kvm and a vCPU")
def x86_vm_msr_filter(sys, rec):
    from ..uapi import x86 as X86

    bitmap = (ctypes.c_uint8 * X86.KVM_MSR_FILTER_MAX_BITMAP_SIZE)()
    ok_ptr = ctypes.addressof(bitmap)
    READ, WRITE = X86.KVM_MSR_FILTER_READ, X86.KVM_MSR_FILTER_WRITE
    DENY = X86.KVM_MSR_FILTER_DEFAULT_DENY
    most = X86.KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8  # the most MSRs one range may hold

    def set_filter(fd, label, flags, *ranges):
        flt = X86.kvm_msr_filter(flags=flags)
        for i, (rflags, nmsrs, base, ptr) in enumerate(ranges):
            flt.ranges[i] = X86.kvm_msr_filter_range(flags=rflags, nmsrs=nmsrs, base=base,
                                                     bitmap=ok_ptr if ptr is None else ptr)
        rec.call(label, sys.ioctl, fd, X86.KVM_X86_SET_MSR_FILTER, flt)

    kvm = open_kvm(sys, rec)
    set_filter(kvm, "on /dev/kvm", 0)
    vm = create_vm(sys, rec, kvm)
    set_filter(vm, "allow, no ranges (no filter)", 0)
    set_filter(vm, "deny, no ranges", DENY)
    for flags in (2, 4, 1 << 31):
        set_filter(vm, f"flags {flags:#x}", flags, (READ, 1, 0x10, None))
    set_filter(vm, "flags 2, deny bit clear, no ranges", 2)
    set_filter(vm, "deny, one range", DENY, (READ | WRITE, 64, 0xC0000080, None))
    for rflags in (0, 4, 8, READ | 4):
        set_filter(vm, f"range flags {rflags:#x}", 0, (rflags, 1, 0, None))
    set_filter(vm, "range flags 0, nmsrs 0 (skipped)", 0, (0, 0, 0, None))
    for nmsrs in (1, 64, 65, most - 63, most, most + 1, 1 << 31, 0xFFFFFFFF):
        set_filter(vm, f"nmsrs {nmsrs:#x}", 0, (WRITE, nmsrs, 0, None))
    set_filter(vm, "base 0xffffffff, 16 msrs (wraps)", 0, (READ, 16, 0xFFFFFFFF, None))
    set_filter(vm, "NULL bitmap", 0, (READ, 1, 0, 0))
    set_filter(vm, "bitmap at 8", 0, (READ, 1, 0, 8))
    set_filter(vm, "nmsrs 0 with NULL bitmap (skipped)", 0, (READ, 0, 0, 0))
    set_filter(vm, "range 0 bad flags, range 1 NULL bitmap", 0, (4, 1, 0, None), (READ, 1, 0, 0))
    set_filter(vm, "range 0 NULL bitmap, range 1 bad flags", 0, (READ, 1, 0, 0), (4, 1, 0, None))
    set_filter(vm, "range 0 empty, range 1 too big", 0, (0, 0, 0, None), (READ, most + 1, 0, None))
    set_filter(vm, "16 ranges", DENY, *[(READ, 8, i * 8, None) for i in range(16)])
    set_filter(vm, "overlapping ranges", 0, (READ, 64, 0, None), (READ | WRITE, 64, 32, None))
    cpu = vcpu(sys, rec, vm, 0)
    set_filter(vm, "after a vCPU", 0, (READ, 1, 0x10, None))
    if cpu is not None:
        set_filter(cpu, "on a vCPU", 0)


@scenario("x86_irq_line",
          "KVM_IRQ_LINE(_STATUS): ENXIO without an irqchip; the status of kvm_set_irq through "
          "the PIC (edge memory, the slave's cascade), the masked I/O APIC (coalesced raises) "
          "and MSI routes with a split irqchip (the APIC map: built at vCPU creation without "
          "the new vCPU, at KVM_SET_LAPIC and at an APIC base enable change; accepts by "
          "delivery mode and SVR)")
def x86_irq_line(sys, rec):
    from ..uapi import x86 as X86

    def line(vm, gsi, level, label, status=True):
        ev = K.kvm_irq_level(irq=gsi, level=level)
        req = K.KVM_IRQ_LINE_STATUS if status else K.KVM_IRQ_LINE
        if rec.call(label, sys.ioctl, vm, req, ev) is not None:
            rec.record(f"{label}: status", ev.status)

    def msi_routes(vm, label, entries):
        class Table(ctypes.Structure):
            _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                        ("e", K.kvm_irq_routing_entry * len(entries))]
        t = Table(nr=len(entries))
        for i, (gsi, lo, data) in enumerate(entries):
            t.e[i].gsi, t.e[i].type = gsi, 2  # KVM_IRQ_ROUTING_MSI
            t.e[i].u.msi.address_lo, t.e[i].u.msi.data = lo, data
        rec.call(label, sys.ioctl, vm, K.KVM_SET_GSI_ROUTING, t)

    def split_vm(label):
        vm = create_vm(sys, rec, kvm, label=f"{label}: KVM_CREATE_VM")
        enable(sys, rec, vm, f"{label}: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
        return vm

    def set_lapic(vcpu_fd, label, svr=None):
        page = bytearray(1024)
        if rec.call(f"{label}: GET_LAPIC", sys.ioctl, vcpu_fd, X86.KVM_GET_LAPIC, page) is None:
            return
        if svr is not None:
            page[0xF0:0xF4] = svr.to_bytes(4, "little")
        rec.call(f"{label}: SET_LAPIC", sys.ioctl, vcpu_fd, X86.KVM_SET_LAPIC, bytes(page))

    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    line(vm, 0, 1, "no irqchip: IRQ_LINE_STATUS")
    line(vm, 0, 1, "no irqchip: IRQ_LINE", status=False)
    rec.call("no irqchip: IRQ_LINE_STATUS NULL", sys.ioctl, vm, K.KVM_IRQ_LINE_STATUS, 0)

    vm = create_vm(sys, rec, kvm, label="kernel irqchip: KVM_CREATE_VM")
    rec.call("KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    for i, (gsi, level) in enumerate(((0, 1), (0, 1), (0, 0), (0, 0), (0, 1), (1, 1), (2, 1),
                                      (8, 1), (15, 1), (16, 1), (16, 1), (16, 0), (16, 1),
                                      (8, 0), (8, 1), (2, 1), (3, 1), (3, 1), (3, 0), (3, 1),
                                      (23, 1), (24, 1), (4095, 1), (1 << 31, 1))):
        line(vm, gsi, level, f"kernel irqchip {i}: gsi {gsi} level {level}")
    line(vm, 5, 1, "kernel irqchip: IRQ_LINE gsi 5", status=False)

    # MSI routes: destination 0 physical with each delivery mode, 1, broadcast, logical 1,
    # lowest priority, level-triggered
    routes = [(5, 0xFEE00000, 0x0030), (6, 0xFEE01000, 0x0030), (7, 0xFEEFF000, 0x0030),
              (8, 0xFEE01004, 0x0030), (9, 0xFEE00000, 0x0130), (10, 0xFEE00000, 0x0230),
              (11, 0xFEE00000, 0x0330), (12, 0xFEE00000, 0x0430), (13, 0xFEE00000, 0x0530),
              (14, 0xFEE00000, 0x0630), (15, 0xFEE00000, 0x0730), (16, 0xFEE00000, 0xC030),
              (17, 0xFEE00008, 0x0030), (18, 0xFEEFF000, 0x0130), (19, 0xFEE00004, 0x0030)]

    def fire(vm, label, gsis=range(5, 20)):
        for gsi in gsis:
            line(vm, gsi, 1, f"{label}: gsi {gsi}")
        line(vm, 5, 0, f"{label}: gsi 5 level 0")
        line(vm, 4, 1, f"{label}: gsi 4 (no route)")

    vm = split_vm("split")
    line(vm, 0, 1, "split, no routes: gsi 0")
    msi_routes(vm, "split: MSI routes", routes)
    fire(vm, "split, no vCPU")
    cpu0 = vcpu(sys, rec, vm, 0)
    if cpu0 is None:
        return
    fire(vm, "split, vCPU 0 fresh")
    set_lapic(cpu0, "split vCPU 0 unchanged")
    fire(vm, "split, vCPU 0 in the map")
    set_lapic(cpu0, "split vCPU 0 SVR 0x1ff", 0x1FF)
    fire(vm, "split, vCPU 0 enabled")
    cpu1 = vcpu(sys, rec, vm, 1)
    fire(vm, "split, vCPU 1 fresh", (5, 6, 7, 8, 18))
    if cpu1 is not None:
        set_lapic(cpu1, "split vCPU 1 SVR 0x1ff", 0x1FF)
        fire(vm, "split, vCPUs 0 and 1 enabled", (5, 6, 7, 8, 9, 18, 19))

    def signal(vm, label, lo, data, hi=0, flags=0):
        msi = K.kvm_msi(address_lo=lo, address_hi=hi, data=data, flags=flags)
        rec.call(label, sys.ioctl, vm, K.KVM_SIGNAL_MSI, msi)

    signal(vm, "SIGNAL_MSI fixed to 0", 0xFEE00000, 0x0030)
    signal(vm, "SIGNAL_MSI broadcast", 0xFEEFF000, 0x0030)
    signal(vm, "SIGNAL_MSI to 7", 0xFEE07000, 0x0030)
    signal(vm, "SIGNAL_MSI INIT to 1", 0xFEE01000, 0x0530)
    signal(vm, "SIGNAL_MSI flags 1", 0xFEE00000, 0x0030, flags=1)
    signal(vm, "SIGNAL_MSI flags 2", 0xFEE00000, 0x0030, flags=2)
    signal(vm, "SIGNAL_MSI address_hi 1", 0xFEE00000, 0x0030, hi=1)
    rec.call("SIGNAL_MSI NULL", sys.ioctl, vm, K.KVM_SIGNAL_MSI, 0)
    vm2 = create_vm(sys, rec, kvm, label="SIGNAL_MSI: KVM_CREATE_VM without irqchip")
    signal(vm2, "SIGNAL_MSI without irqchip", 0xFEE00000, 0x0030)
    vm2 = split_vm("SIGNAL_MSI no vCPU")
    signal(vm2, "SIGNAL_MSI without vCPUs", 0xFEE00000, 0x0030)
    enable(sys, rec, vm2, "SIGNAL_MSI: X2APIC_API 32-bit ids", X.KVM_CAP_X2APIC_API, 1)
    signal(vm2, "SIGNAL_MSI address_hi 1 with 32-bit ids", 0xFEE00000, 0x0030, hi=1)

    vm = split_vm("base")
    msi_routes(vm, "base: MSI routes", routes[8:9])
    cpu = vcpu(sys, rec, vm, 0)
    if cpu is None:
        return
    sregs = X86.kvm_sregs()
    rec.call("base: GET_SREGS", sys.ioctl, cpu, X86.KVM_GET_SREGS, sregs)
    rec.call("base: SET_SREGS unchanged", sys.ioctl, cpu, X86.KVM_SET_SREGS, sregs)
    line(vm, 13, 1, "base: INIT after an unchanged APIC base")
    sregs.apic_base &= ~(1 << 11)
    rec.call("base: SET_SREGS APIC disabled", sys.ioctl, cpu, X86.KVM_SET_SREGS, sregs)
    line(vm, 13, 1, "base: INIT to a disabled APIC")
    sregs.apic_base |= 1 << 11
    rec.call("base: SET_SREGS APIC enabled", sys.ioctl, cpu, X86.KVM_SET_SREGS, sregs)
    line(vm, 13, 1, "base: INIT after the APIC is enabled again")


@scenario("x86_vcpu_tpr_vapic",
          "KVM_TPR_ACCESS_REPORTING: EFAULT, flags EINVAL, else 0 and the struct written "
          "back; KVM_SET_VAPIC_ADDR: EINVAL without an in-kernel LAPIC (before the copy), "
          "EFAULT, 0 for 0; an address must lie in a memslot whose page can be mapped "
          "writable and not cross a page (EINVAL)")
def x86_vcpu_tpr_vapic(sys, rec):
    import mmap

    from ..uapi import x86 as X86

    def tpr(cpu, label, enabled, flags=0, ptr=None):
        t = X86.kvm_tpr_access_ctl(enabled=enabled, flags=flags)
        t.reserved[0] = 0x55
        if rec.call(label, sys.ioctl, cpu, X86.KVM_TPR_ACCESS_REPORTING, t if ptr is None else ptr) \
                is not None and ptr is None:
            rec.record(f"{label}: written back", bytes(t).hex())

    def vapic(cpu, label, addr):
        rec.call(label, sys.ioctl, cpu, X86.KVM_SET_VAPIC_ADDR, X86.kvm_vapic_addr(vapic_addr=addr))

    mem = mmap.mmap(-1, 4 * P)
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    cpu = vcpu(sys, rec, vm, 0)
    if cpu is None:
        return
    tpr(cpu, "TPR no irqchip enable", 1)
    tpr(cpu, "TPR enabled 7", 7)
    tpr(cpu, "TPR flags 1", 1, flags=1)
    tpr(cpu, "TPR NULL", 1, ptr=0)
    vapic(cpu, "VAPIC 0 without an irqchip", 0)
    rec.call("VAPIC NULL without an irqchip", sys.ioctl, cpu, X86.KVM_SET_VAPIC_ADDR, 0)

    vm = create_vm(sys, rec, kvm, label="split: KVM_CREATE_VM")
    enable(sys, rec, vm, "split: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
    region = K.kvm_userspace_memory_region(slot=0, guest_phys_addr=0x100000, memory_size=4 * P,
                                           userspace_addr=uaddr)
    rec.call("split: memslot 0 at 1 MiB", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    region = K.kvm_userspace_memory_region(slot=1, guest_phys_addr=0x200000, memory_size=P,
                                           userspace_addr=0x10000)
    rec.call("split: memslot 1 over unmapped memory", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    cpu = vcpu(sys, rec, vm, 0)
    if cpu is None:
        return
    rec.call("split: VAPIC NULL", sys.ioctl, cpu, X86.KVM_SET_VAPIC_ADDR, 0)
    for addr, what in ((0, "0"), (0x100000, "memslot page 0"), (0x100FFC, "last 4 bytes of a page"),
                       (0x100FFD, "crossing a page"), (0x103000, "memslot page 3"),
                       (0x103FFE, "crossing the memslot's end"),
                       (0x104000, "just past the memslot"), (0x200000, "unmapped memory"),
                       (0xFEE00000, "the APIC page"), (1 << 52, "beyond MAXPHYADDR"), (0, "0 again")):
        vapic(cpu, f"split: VAPIC {addr:#x} ({what})", addr)
    region = K.kvm_userspace_memory_region(slot=2, guest_phys_addr=0x104000, memory_size=P,
                                           userspace_addr=uaddr + 3 * P)
    rec.call("split: memslot 2 right after memslot 0", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    vapic(cpu, "split: VAPIC 0x103ffe (into the next memslot)", 0x103FFE)
    tpr(cpu, "split: TPR enable", 1)
    del mem  # (the memslots' memory stays mapped until here)


@scenario("coalesced_mmio",
          "KVM_(UN)REGISTER_COALESCED_MMIO: EFAULT, pio not 0/1 EINVAL; zones may overlap and "
          "repeat; unregister removes every zone of the bus containing the range and returns 0 "
          "even for none; NR_IOBUS_DEVS (1000) devices per bus: ENOSPC, the in-kernel PIC's "
          "three PIO devices and the I/O APIC counting")
def coalesced_mmio(sys, rec):
    def zone(addr, size, pio=0):
        return K.kvm_coalesced_mmio_zone(addr=addr, size=size, pio=pio)

    def reg(vm, label, *z):
        return rec.call(label, sys.ioctl, vm, K.KVM_REGISTER_COALESCED_MMIO, zone(*z))

    def unreg(vm, label, *z):
        return rec.call(label, sys.ioctl, vm, K.KVM_UNREGISTER_COALESCED_MMIO, zone(*z))

    def fill(vm, label, pio):
        """Register zones until one fails; record how many went in and the errno."""
        n, err = 0, None
        while n < 1100:
            try:
                sys.ioctl(vm, K.KVM_REGISTER_COALESCED_MMIO, zone(0x10000000 + n * 0x1000, 0x1000, pio))
            except OSError as e:
                err = e.errno
                break
            n += 1
        rec.record(f"{label}: zones registered before the first failure", n)
        rec.record(f"{label}: the failure", None if err is None else errname(err))

    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    reg(vm, "MMIO zone", 0xFED00000, 0x1000)
    reg(vm, "PIO zone", 0x70, 2, 1)
    reg(vm, "pio 2", 0x70, 2, 2)
    reg(vm, "pio 0xffffffff", 0x70, 2, 0xFFFFFFFF)
    rec.call("NULL", sys.ioctl, vm, K.KVM_REGISTER_COALESCED_MMIO, 0)
    reg(vm, "the same MMIO zone again", 0xFED00000, 0x1000)
    reg(vm, "an overlapping zone", 0xFED00800, 0x1000)
    reg(vm, "size 0", 0xA0000, 0)
    reg(vm, "wrapping zone", (1 << 64) - 0x1000, 0x2000)
    unreg(vm, "unregister nothing", 0x1000, 0x1000)
    unreg(vm, "unregister pio 3", 0x70, 2, 3)
    rec.call("unregister NULL", sys.ioctl, vm, K.KVM_UNREGISTER_COALESCED_MMIO, 0)
    unreg(vm, "unregister a sub-range of both copies", 0xFED00100, 0x10)
    unreg(vm, "unregister the PIO zone as MMIO (no match)", 0x70, 2)
    fill(vm, "MMIO bus, after the unregistrations", 0)
    unreg(vm, "unregister the filled range's first zone", 0x10000000, 0x1000)
    reg(vm, "one more after an unregistration", 0xFEB00000, 0x1000)
    reg(vm, "and one more", 0xFEB01000, 0x1000)
    fill(vm, "PIO bus", 1)

    vm = create_vm(sys, rec, kvm, label="irqchip: KVM_CREATE_VM")
    rec.call("irqchip: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    fill(vm, "irqchip: PIO bus", 1)
    fill(vm, "irqchip: MMIO bus", 0)

    from ..uapi import x86 as X86

    for label, flags in (("PIT", 0), ("PIT with the speaker", X86.KVM_PIT_SPEAKER_DUMMY)):
        vm = create_vm(sys, rec, kvm, label=f"{label}: KVM_CREATE_VM")
        rec.call(f"{label}: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
        rec.call(f"{label}: KVM_CREATE_PIT2", sys.ioctl, vm, X86.KVM_CREATE_PIT2,
                 X86.kvm_pit_config(flags=flags))
        fill(vm, f"{label}: PIO bus", 1)


def _hexstate(obj):
    return bytes(obj).hex()


@scenario("x86_irqchip_state",
          "KVM_GET/SET_IRQCHIP: EFAULT (the whole struct is read first), then ENXIO without the "
          "full irqchip (none, split), EINVAL for a chip id beyond 2; the reset state of both PICs "
          "and the I/O APIC; a PIC's 16 bytes stored as given (ELCR beyond its mask too) and what "
          "IMR, ELCR (level pins), ISR / priority (the slave's cascade) change in "
          "KVM_IRQ_LINE_STATUS; the I/O APIC's redirection table, id, base and pad as given, "
          "unmasked entries delivered through the LAPICs (edge: irr_delivered; level: remote IRR, "
          "also for -1), the IRR raised again by SET, the RTC's coalescing")
def x86_irqchip_state(sys, rec):
    from ..uapi import x86 as X86

    def chip(chip_id, fill=0):
        c = X86.kvm_irqchip(chip_id=chip_id, pad=fill)
        ctypes.memset(ctypes.addressof(c.chip), fill, ctypes.sizeof(c.chip))
        return c

    def get(vm, label, chip_id, fill=0x5A):
        c = chip(chip_id, fill)
        if rec.call(label, sys.ioctl, vm, X86.KVM_GET_IRQCHIP, c) is not None:
            rec.record(f"{label}: struct", _hexstate(c))
        return c

    def put(vm, label, c):
        return rec.call(label, sys.ioctl, vm, X86.KVM_SET_IRQCHIP, c)

    def pic(chip_id, **fields):
        c = chip(chip_id)
        st = X86.kvm_pic_state(elcr_mask=0xF8 if chip_id == 0 else 0xDE)
        for k, v in fields.items():
            setattr(st, k, v)
        c.chip.pic = st
        return c

    def line(vm, gsi, level, label, status=True):
        ev = K.kvm_irq_level(irq=gsi, level=level)
        req = K.KVM_IRQ_LINE_STATUS if status else K.KVM_IRQ_LINE
        if rec.call(label, sys.ioctl, vm, req, ev) is not None:
            rec.record(f"{label}: status", ev.status)

    def entry(vector, dest=0, mode=0, logical=False, level=False, masked=False):
        return (vector | mode << 8 | logical << 11 | level << 15 | masked << 16 | dest << 56)

    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    get(vm, "no irqchip: GET master", 0)
    put(vm, "no irqchip: SET master", pic(0))
    rec.call("no irqchip: GET NULL", sys.ioctl, vm, X86.KVM_GET_IRQCHIP, 0)
    rec.call("no irqchip: SET NULL", sys.ioctl, vm, X86.KVM_SET_IRQCHIP, 0)
    vm = create_vm(sys, rec, kvm, label="split: KVM_CREATE_VM")
    enable(sys, rec, vm, "split: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
    get(vm, "split: GET I/O APIC", 2)
    put(vm, "split: SET master", pic(0))

    vm = create_vm(sys, rec, kvm, label="kernel: KVM_CREATE_VM")
    rec.call("kernel: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    for cid in (0, 1, 2, 3, 0x80000000):
        get(vm, f"reset: GET chip {cid:#x}", cid)
    rec.call("GET NULL", sys.ioctl, vm, X86.KVM_GET_IRQCHIP, 0)
    rec.call("SET NULL", sys.ioctl, vm, X86.KVM_SET_IRQCHIP, 0)
    put(vm, "SET chip 3", pic(3, imr=0xFF))
    get(vm, "after SET chip 3: GET master", 0)

    # the master: pin 1 masked, pin 3 level-triggered, ELCR beyond its mask kept
    put(vm, "SET master imr 0x02 elcr 0x0b", pic(0, imr=0x02, elcr=0x0B, irq_base=0x08))
    get(vm, "GET master after SET", 0)
    for i, (gsi, level) in enumerate(((1, 1), (1, 0), (1, 1), (3, 1), (3, 1), (3, 0), (3, 1),
                                      (0, 1), (0, 1), (4, 1))):
        line(vm, gsi, level, f"master {i}: gsi {gsi} level {level}")
    get(vm, "GET master after the lines", 0)
    put(vm, "SET master all masked", pic(0, imr=0xFF))
    line(vm, 5, 1, "all masked: gsi 5")
    line(vm, 5, 0, "all masked: gsi 5 level 0")

    # the slave's request reaches the master's pin 2 only when pic_get_irq finds it
    put(vm, "SET master clean", pic(0))
    put(vm, "SET slave isr 0x01", pic(1, isr=0x01))
    line(vm, 9, 1, "slave isr 0x01: gsi 9 (pin 1, lower priority)")
    get(vm, "slave isr 0x01: GET master", 0)
    put(vm, "SET slave isr 0x01 priority_add 1", pic(1, isr=0x01, priority_add=1, irr=0x02))
    get(vm, "slave priority_add 1: GET master", 0)
    put(vm, "SET master clean again", pic(0))
    put(vm, "SET slave irr 0x08 imr 0x08", pic(1, irr=0x08, imr=0x08))
    get(vm, "slave request masked: GET master", 0)
    put(vm, "SET slave irr 0x08", pic(1, irr=0x08))
    get(vm, "slave request: GET master", 0)
    put(vm, "SET master elcr 0x04 (pin 2 level)", pic(0, elcr=0x04))
    get(vm, "cascade to a level pin: GET master", 0)
    put(vm, "SET master special fully nested, isr 0x04",
        pic(0, isr=0x04, special_fully_nested_mode=1))
    line(vm, 12, 1, "fully nested: gsi 12")
    get(vm, "fully nested: GET master", 0)

    # the I/O APIC, with one vCPU whose APIC is software-enabled
    cpu = vcpu(sys, rec, vm, 0)
    if cpu is None:
        return
    page = bytearray(1024)
    if rec.call("vCPU 0: GET_LAPIC", sys.ioctl, cpu, X86.KVM_GET_LAPIC, page) is None:
        return
    page[0xF0:0xF4] = (0x1FF).to_bytes(4, "little")
    rec.call("vCPU 0: SET_LAPIC SVR 0x1ff", sys.ioctl, cpu, X86.KVM_SET_LAPIC, bytes(page))
    table = {16: entry(0x40), 17: entry(0x41, level=True), 18: entry(0x42, dest=7),
             19: entry(0x43, dest=7, level=True), 20: entry(0x44, dest=1, logical=True),
             21: entry(0, mode=4), 22: entry(0x46, mode=1), 23: entry(0x47, level=True, masked=True),
             8: entry(0x38), 10: entry(0x3A, mode=7)}
    c = chip(2)
    io = c.chip.ioapic
    io.base_address, io.ioregsel, io.id, io.pad = 0xFEC01000, 0x12, 0x0F000003, 0x1234
    for pin in range(24):
        io.redirtbl[pin] = table.get(pin, entry(0x20 + pin, masked=True))
    put(vm, "SET I/O APIC", c)
    get(vm, "GET I/O APIC after SET", 2)
    for gsi in list(range(16, 24)) + [10]:
        line(vm, gsi, 1, f"I/O APIC: gsi {gsi} raise")
        line(vm, gsi, 1, f"I/O APIC: gsi {gsi} raise again")
    get(vm, "GET I/O APIC after the raises", 2)
    for gsi in range(16, 24):
        line(vm, gsi, 0, f"I/O APIC: gsi {gsi} lower")
        line(vm, gsi, 1, f"I/O APIC: gsi {gsi} raise after lowering")
    get(vm, "GET I/O APIC after lowering and raising", 2)
    line(vm, 8, 1, "RTC: gsi 8 raise")
    line(vm, 8, 0, "RTC: gsi 8 lower")
    line(vm, 8, 1, "RTC: gsi 8 raise again (EOI pending)")
    line(vm, 8, 0, "RTC: gsi 8 lower again")
    line(vm, 8, 1, "RTC: KVM_IRQ_LINE gsi 8", status=False)
    line(vm, 8, 0, "RTC: KVM_IRQ_LINE gsi 8 lower", status=False)
    # SET again: IRR raised again through the new table; remote IRR as given
    c = chip(2)
    io = c.chip.ioapic
    io.irr = 0xFF030000 | 1 << 8
    for pin in range(24):
        io.redirtbl[pin] = table.get(pin, entry(0x20 + pin, masked=True))
    io.redirtbl[17] |= 1 << 14  # remote IRR given: the raise again is -1
    put(vm, "SET I/O APIC with IRR", c)
    get(vm, "GET I/O APIC after SET with IRR", 2)
    line(vm, 8, 1, "after SET: RTC raise (vector 0x38 still pending)")
    io.redirtbl[8] = entry(0x58)
    io.irr = 0
    put(vm, "SET I/O APIC RTC vector 0x58", c)
    line(vm, 8, 1, "after SET: RTC raise (vector 0x58)")
    line(vm, 8, 0, "after SET: RTC lower")
    line(vm, 8, 1, "after SET: RTC raise again")
    put(vm, "SET chip 7 after all this", chip(7))
    get(vm, "GET I/O APIC after SET chip 7", 2)
    get(vm, "GET master at the end", 0)
    get(vm, "GET slave at the end", 1)


@scenario("x86_pit",
          "KVM_CREATE_PIT(2): EFAULT, EEXIST, ENOENT without the full irqchip, flags not checked; "
          "KVM_GET/SET_PIT(2) and KVM_REINJECT_CONTROL: the copy / ENXIO order of each; the "
          "reset channels, what SET stores (every field, any flags) and what it recomputes "
          "(count 0 -> 0x10000, channels 1-2 stamped with CLOCK_MONOTONIC, channel 0's time kept)")
def x86_pit(sys, rec):
    import time

    from ..uapi import x86 as X86

    def clock(fn, *args):
        t0 = time.monotonic_ns()
        v = fn(*args)
        return v, t0, time.monotonic_ns()

    def record_state(label, st, t0, t1):
        for i, ch in enumerate(st.channels):
            fields = {n: getattr(ch, n) for n, _ in ch._fields_ if n != "count_load_time"}
            rec.record(f"{label}: channel {i}", repr(fields))
            if i == 0:
                rec.record(f"{label}: channel 0 count_load_time", ch.count_load_time)
            else:
                rec.record(f"{label}: channel {i} count_load_time is the SET's / CREATE's time",
                           t0 <= ch.count_load_time <= t1)
        if hasattr(st, "flags"):
            rec.record(f"{label}: flags, reserved", (st.flags, list(st.reserved)))

    def get2(vm, label, t0, t1):
        st = X86.kvm_pit_state2()
        st.reserved[0] = 0x77
        if rec.call(label, sys.ioctl, vm, X86.KVM_GET_PIT2, st) is not None:
            record_state(label, st, t0, t1)
        return st

    def timed(label, vm, req, arg):
        t0 = time.monotonic_ns()
        r = rec.call(label, sys.ioctl, vm, req, arg)
        return r, t0, time.monotonic_ns()

    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    rec.call("no irqchip: CREATE_PIT2", sys.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    rec.call("no irqchip: CREATE_PIT2 NULL", sys.ioctl, vm, X86.KVM_CREATE_PIT2, 0)
    rec.call("no irqchip: CREATE_PIT", sys.ioctl, vm, X86.KVM_CREATE_PIT, 0)
    rec.call("no PIT: GET_PIT2", sys.ioctl, vm, X86.KVM_GET_PIT2, X86.kvm_pit_state2())
    rec.call("no PIT: GET_PIT2 NULL", sys.ioctl, vm, X86.KVM_GET_PIT2, 0)
    rec.call("no PIT: SET_PIT2", sys.ioctl, vm, X86.KVM_SET_PIT2, X86.kvm_pit_state2())
    rec.call("no PIT: SET_PIT2 NULL", sys.ioctl, vm, X86.KVM_SET_PIT2, 0)
    rec.call("no PIT: GET_PIT", sys.ioctl, vm, X86.KVM_GET_PIT, X86.kvm_pit_state())
    rec.call("no PIT: GET_PIT NULL", sys.ioctl, vm, X86.KVM_GET_PIT, 0)
    rec.call("no PIT: SET_PIT", sys.ioctl, vm, X86.KVM_SET_PIT, X86.kvm_pit_state())
    rec.call("no PIT: SET_PIT NULL", sys.ioctl, vm, X86.KVM_SET_PIT, 0)
    rec.call("no PIT: REINJECT_CONTROL", sys.ioctl, vm, X86.KVM_REINJECT_CONTROL,
             X86.kvm_reinject_control(pit_reinject=1))
    rec.call("no PIT: REINJECT_CONTROL NULL", sys.ioctl, vm, X86.KVM_REINJECT_CONTROL, 0)
    vm = create_vm(sys, rec, kvm, label="split: KVM_CREATE_VM")
    enable(sys, rec, vm, "split: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
    rec.call("split: CREATE_PIT2", sys.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())

    vm = create_vm(sys, rec, kvm, label="kernel: KVM_CREATE_VM")
    rec.call("kernel: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    rec.call("CREATE_PIT2 NULL", sys.ioctl, vm, X86.KVM_CREATE_PIT2, 0)
    cfg = X86.kvm_pit_config(flags=0xFFFFFFFF)
    cfg.pad[3] = 9
    _, t0, t1 = timed("CREATE_PIT2 flags 0xffffffff, pad set", vm, X86.KVM_CREATE_PIT2, cfg)
    rec.call("CREATE_PIT2 again", sys.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    rec.call("CREATE_PIT after CREATE_PIT2", sys.ioctl, vm, X86.KVM_CREATE_PIT, 0)
    rec.call("CREATE_IRQCHIP after the PIT", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    get2(vm, "reset: GET_PIT2", t0, t1)
    rec.call("GET_PIT2 NULL", sys.ioctl, vm, X86.KVM_GET_PIT2, 0)
    rec.call("SET_PIT2 NULL", sys.ioctl, vm, X86.KVM_SET_PIT2, 0)
    rec.call("GET_PIT NULL", sys.ioctl, vm, X86.KVM_GET_PIT, 0)
    rec.call("SET_PIT NULL", sys.ioctl, vm, X86.KVM_SET_PIT, 0)

    st = X86.kvm_pit_state2(flags=0xFFFFFFF0)
    st.reserved[2] = 5
    for i, ch in enumerate(st.channels):
        for n, _ in ch._fields_:
            setattr(ch, n, (0x11 * (i + 1) + len(n)) & 0xFF)
        ch.count_load_time = 1000 + i
        ch.mode = (5, 0xFF, 9)[i]  # channel 0: no timer armed (mode 5 / flags below)
    st.channels[0].count = 0
    st.channels[1].count = 0x12345678
    st.channels[2].count = 0xFFFF
    _, t0, t1 = timed("SET_PIT2 every field", vm, X86.KVM_SET_PIT2, st)
    get2(vm, "after SET_PIT2: GET_PIT2", t0, t1)

    st = X86.kvm_pit_state2(flags=X86.KVM_PIT_FLAGS_HPET_LEGACY)
    st.channels[0].mode, st.channels[0].count, st.channels[0].count_load_time = 2, 100, -5
    st.channels[1].count_load_time = 1 << 62
    _, t0, t1 = timed("SET_PIT2 HPET legacy, channel 0 mode 2", vm, X86.KVM_SET_PIT2, st)
    get2(vm, "after HPET legacy: GET_PIT2", t0, t1)

    ps = X86.kvm_pit_state()
    for i, ch in enumerate(ps.channels):
        ch.count, ch.mode, ch.gate, ch.bcd, ch.count_load_time = i * 7, 0xFF, 3, 1, 77
    _, t0, t1 = timed("SET_PIT", vm, X86.KVM_SET_PIT, ps)
    out = X86.kvm_pit_state()
    out.channels[0].status = 0x66
    if rec.call("GET_PIT", sys.ioctl, vm, X86.KVM_GET_PIT, out) is not None:
        record_state("after SET_PIT: GET_PIT", out, t0, t1)
    get2(vm, "after SET_PIT: GET_PIT2 (flags kept)", t0, t1)

    for label, v, res in (("0", 0, 0), ("1", 1, 0), ("0xff, reserved set", 0xFF, 3)):
        ctl = X86.kvm_reinject_control(pit_reinject=v)
        ctl.reserved[0] = res
        rec.call(f"REINJECT_CONTROL {label}", sys.ioctl, vm, X86.KVM_REINJECT_CONTROL, ctl)

    vm = create_vm(sys, rec, kvm, label="legacy: KVM_CREATE_VM")
    rec.call("legacy: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    cpu = vcpu(sys, rec, vm, 0, "legacy: KVM_CREATE_VCPU 0")
    _, t0, t1 = timed("legacy: CREATE_PIT after a vCPU", vm, X86.KVM_CREATE_PIT, 0)
    get2(vm, "legacy: GET_PIT2", t0, t1)
    rec.call("legacy: CREATE_PIT2 after CREATE_PIT", sys.ioctl, vm, X86.KVM_CREATE_PIT2,
             X86.kvm_pit_config(flags=1))
    del cpu


@contextlib.contextmanager
def kick_signal(rec):
    """A no-op SIGUSR1 handler for run_kicked's kick, restored after; yields False (and
    records the skip) outside the main thread, where no handler can be installed."""
    import signal

    try:
        old = signal.signal(signal.SIGUSR1, lambda *a: None)
    except ValueError:  # not the main thread: no handler, no signal to send
        rec.record("skipped: the scenario needs the main thread", True)
        yield False
        return
    try:
        yield True
    finally:
        signal.signal(signal.SIGUSR1, old)


def run_kicked(sys, rec, cpu, size, run_label, exit_label):
    """KVM_RUN of ``cpu`` in this (main) thread, kicked after 0.3 s as a VMM kicks a vCPU
    thread (run.immediate_exit, then SIGUSR1, whose handler the caller installed); records
    the call as ``run_label`` and the exit_reason as ``exit_label``. Use inside
    kick_signal."""
    import mmap
    import signal
    import threading
    import time

    m = sys.mmap(cpu, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED)
    run = K.kvm_run.from_address(m.address)
    main = threading.get_ident()

    def kick():
        time.sleep(0.3)
        run.immediate_exit = 1
        signal.pthread_kill(main, signal.SIGUSR1)

    t = threading.Thread(target=kick)
    t.start()
    rec.call(run_label, sys.ioctl, cpu, K.KVM_RUN, 0)
    t.join()
    rec.record(exit_label, run.exit_reason)
    run.immediate_exit = 0
    m.close()


@scenario("x86_halt_in_kernel",
          "a guest HLT: KVM_EXIT_HLT without an in-kernel LAPIC; with one (split or full "
          "irqchip) the vCPU halts inside KVM_RUN until its thread is signalled: EINTR, "
          "exit_reason KVM_EXIT_INTR, KVM_GET_MP_STATE HALTED (the real guest runs HLT at "
          "the reset vector; kmock's scripted guest has nothing to run, which halts alike)")
def x86_halt_in_kernel(sys, rec):
    import mmap

    from ..uapi import x86 as X86

    mem = mmap.mmap(-1, 0x10000)
    mem[0xFFF0:0xFFF2] = b"\xF4\xF4"  # hlt; hlt at the reset vector (CS:IP F000:FFF0)
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    with kick_signal(rec) as ok:
        if not ok:
            return
        kvm = open_kvm(sys, rec)
        size = sys.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        for mode in ("no irqchip", "split irqchip", "full irqchip"):
            vm = create_vm(sys, rec, kvm, label=f"{mode}: KVM_CREATE_VM")
            if mode == "split irqchip":
                enable(sys, rec, vm, f"{mode}: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
            elif mode == "full irqchip":
                rec.call(f"{mode}: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
            region = K.kvm_userspace_memory_region(slot=0, guest_phys_addr=0xFFFF0000,
                                                   memory_size=0x10000, userspace_addr=uaddr)
            rec.call(f"{mode}: memslot at the reset vector", sys.ioctl, vm,
                     K.KVM_SET_USER_MEMORY_REGION, region)
            cpu = vcpu(sys, rec, vm, 0, label=f"{mode}: KVM_CREATE_VCPU 0")
            if cpu is None:
                continue
            run_kicked(sys, rec, cpu, size,
                       f"{mode}: KVM_RUN (the guest halts; kicked after 0.3 s)",
                       f"{mode}: exit_reason")
            mp = X86.kvm_mp_state()
            if rec.call(f"{mode}: KVM_GET_MP_STATE", sys.ioctl, cpu, X86.KVM_GET_MP_STATE, mp) \
                    is not None:
                rec.record(f"{mode}: mp_state", mp.mp_state)


@scenario("x86_mp_state_lapic",
          "KVM_SET/GET_MP_STATE with an in-kernel LAPIC (split or full irqchip): every "
          "state value, what GET reads back after each, and KVM_RUN of a vCPU waiting for "
          "INIT/SIPI (UNINITIALIZED, as QEMU puts its APs): it blocks until the thread is "
          "signalled (EINTR, KVM_EXIT_INTR)")
def x86_mp_state_lapic(sys, rec):

    from ..uapi import x86 as X86

    with kick_signal(rec) as ok:
        if not ok:
            return
        kvm = open_kvm(sys, rec)
        size = sys.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        for mode in ("split irqchip", "full irqchip"):
            vm = create_vm(sys, rec, kvm, label=f"{mode}: KVM_CREATE_VM")
            if mode == "split irqchip":
                enable(sys, rec, vm, f"{mode}: SPLIT_IRQCHIP 24", X.KVM_CAP_SPLIT_IRQCHIP, 24)
            else:
                rec.call(f"{mode}: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
            cpu = vcpu(sys, rec, vm, 0, label=f"{mode}: KVM_CREATE_VCPU 0")
            if cpu is None:
                continue
            mp = X86.kvm_mp_state()
            for value in (*range(12), 0xFFFFFFFF):
                rec.call(f"{mode}: KVM_SET_MP_STATE {value:#x}", sys.ioctl, cpu,
                         X86.KVM_SET_MP_STATE, X86.kvm_mp_state(value))
                if rec.call(f"{mode}: KVM_GET_MP_STATE after {value:#x}", sys.ioctl, cpu,
                            X86.KVM_GET_MP_STATE, mp) is not None:
                    rec.record(f"{mode}: mp_state after {value:#x}", mp.mp_state)
            rec.call(f"{mode}: KVM_SET_MP_STATE UNINITIALIZED", sys.ioctl, cpu,
                     X86.KVM_SET_MP_STATE, X86.kvm_mp_state(X86.KVM_MP_STATE_UNINITIALIZED))
            run_kicked(sys, rec, cpu, size,
                       f"{mode}: KVM_RUN of an AP waiting for SIPI (kicked after 0.3 s)",
                       f"{mode}: exit_reason")
            if rec.call(f"{mode}: KVM_GET_MP_STATE after the run", sys.ioctl, cpu,
                        X86.KVM_GET_MP_STATE, mp) is not None:
                rec.record(f"{mode}: mp_state after the run", mp.mp_state)


@scenario("x86_sipi_vector",
          "The SIPI of KVM_SET_MP_STATE(SIPI_RECEIVED) with an in-kernel LAPIC: the vector "
          "KVM_SET_VCPU_EVENTS gives (VALID_SIPI_VECTOR), accepted at the next "
          "KVM_GET_MP_STATE (CS = vector << 8, base vector << 12, RIP 0), not at the SET; "
          "a vector without the flag is ignored; a SIPI the vCPU is no longer "
          "INIT_RECEIVED for is dropped; KVM_RUN with immediate_exit does not accept it")
def x86_sipi_vector(sys, rec):
    import mmap

    from ..uapi import x86 as X86

    kvm = open_kvm(sys, rec)
    size = sys.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
    vm = create_vm(sys, rec, kvm)
    rec.call("KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    cpu = vcpu(sys, rec, vm, 1, label="KVM_CREATE_VCPU 1")
    if cpu is None:
        return

    def cs_rip(label):
        sregs, regs = X86.kvm_sregs(), X86.kvm_regs()
        if rec.call(f"{label}: KVM_GET_SREGS", sys.ioctl, cpu, X86.KVM_GET_SREGS, sregs) \
                is None or rec.call(f"{label}: KVM_GET_REGS", sys.ioctl, cpu,
                                    X86.KVM_GET_REGS, regs) is None:
            return
        rec.record(f"{label}: cs selector, base, rip",
                   (hex(sregs.cs.selector), hex(sregs.cs.base), hex(regs.rip)))

    def set_vector(label, vector, flags=X86.KVM_VCPUEVENT_VALID_SIPI_VECTOR):
        ev = X86.kvm_vcpu_events()
        if rec.call(f"{label}: KVM_GET_VCPU_EVENTS", sys.ioctl, cpu,
                    X86.KVM_GET_VCPU_EVENTS, ev) is None:
            return
        rec.record(f"{label}: sipi_vector read back", ev.sipi_vector)
        ev.sipi_vector, ev.flags = vector, flags
        rec.call(f"{label}: KVM_SET_VCPU_EVENTS", sys.ioctl, cpu, X86.KVM_SET_VCPU_EVENTS, ev)

    def set_mp(label, value):
        rec.call(f"{label}: KVM_SET_MP_STATE {value}", sys.ioctl, cpu, X86.KVM_SET_MP_STATE,
                 X86.kvm_mp_state(value))

    def get_mp(label):
        mp = X86.kvm_mp_state()
        if rec.call(f"{label}: KVM_GET_MP_STATE", sys.ioctl, cpu, X86.KVM_GET_MP_STATE, mp) \
                is not None:
            rec.record(f"{label}: mp_state", mp.mp_state)

    cs_rip("at reset")
    set_vector("vector 0x12", 0x12)
    set_mp("vector 0x12", X86.KVM_MP_STATE_SIPI_RECEIVED)
    cs_rip("vector 0x12, before GET_MP_STATE")
    get_mp("vector 0x12")
    cs_rip("vector 0x12, after GET_MP_STATE")
    set_vector("vector 0x34 without VALID_SIPI_VECTOR", 0x34, flags=0)
    set_mp("vector 0x34 without the flag", X86.KVM_MP_STATE_SIPI_RECEIVED)
    get_mp("vector 0x34 without the flag")
    cs_rip("vector 0x34 without the flag")
    set_vector("vector 0x56", 0x56)
    set_mp("vector 0x56, SIPI", X86.KVM_MP_STATE_SIPI_RECEIVED)
    set_mp("vector 0x56, then RUNNABLE", X86.KVM_MP_STATE_RUNNABLE)
    get_mp("vector 0x56, RUNNABLE before the accept")
    cs_rip("vector 0x56, RUNNABLE before the accept")
    set_vector("vector 0x78", 0x78)
    set_mp("vector 0x78", X86.KVM_MP_STATE_SIPI_RECEIVED)
    m = rec.call("mmap kvm_run", sys.mmap, cpu, size, mmap.PROT_READ | mmap.PROT_WRITE,
                 mmap.MAP_SHARED)
    if m is not None:
        m[1] = 1  # immediate_exit
        rec.call("vector 0x78: KVM_RUN with immediate_exit", sys.ioctl, cpu, K.KVM_RUN, 0)
        m[1] = 0
    cs_rip("vector 0x78, after KVM_RUN with immediate_exit")
    get_mp("vector 0x78")
    cs_rip("vector 0x78, after GET_MP_STATE")


@scenario("x86_init_event",
          "An INIT latched through KVM_SET_VCPU_EVENTS (VALID_SMM, smi.latched_init) with an "
          "in-kernel LAPIC: read back as latched until KVM_GET_MP_STATE accepts it; then the "
          "BSP is RUNNABLE and an AP INIT_RECEIVED, with the registers, debug registers and "
          "queued events reset (APIC_BASE, CR0.CD/NW, the MSRs kept); a latch cleared "
          "before the accept does nothing")
def x86_init_event(sys, rec):
    from ..uapi import x86 as X86
    from .conformance_vcpu import msrs_buf, msrs_values

    kvm = open_kvm(sys, rec)
    for vid in (0, 1):
        who = "BSP" if vid == 0 else "AP"
        vm = create_vm(sys, rec, kvm, label=f"{who}: KVM_CREATE_VM")
        rec.call(f"{who}: KVM_CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
        cpu = vcpu(sys, rec, vm, vid, label=f"{who}: KVM_CREATE_VCPU {vid}")
        if cpu is None:
            continue
        rec.call(f"{who}: SET_MP_STATE RUNNABLE", sys.ioctl, cpu, X86.KVM_SET_MP_STATE,
                 X86.kvm_mp_state(X86.KVM_MP_STATE_RUNNABLE))
        regs, sregs, dregs = X86.kvm_regs(), X86.kvm_sregs(), X86.kvm_debugregs()
        sys.ioctl(cpu, X86.KVM_GET_REGS, regs)
        regs.rax, regs.rbx, regs.rsp, regs.rip, regs.rflags = 0x1234, 7, 0x9000, 0x55, 0x202
        rec.call(f"{who}: SET_REGS", sys.ioctl, cpu, X86.KVM_SET_REGS, regs)
        sys.ioctl(cpu, X86.KVM_GET_SREGS, sregs)
        sregs.cs.selector, sregs.cs.base, sregs.ds.selector, sregs.cr2 = 0x800, 0x8000, 0x10, 0x11
        sregs.gdt.base, sregs.gdt.limit = 0x5000, 0x7F
        sregs.cr0, sregs.cr4, sregs.efer, sregs.cr8 = 0x11, 0x20, 0x100, 5
        rec.call(f"{who}: SET_SREGS", sys.ioctl, cpu, X86.KVM_SET_SREGS, sregs)
        sys.ioctl(cpu, X86.KVM_GET_DEBUGREGS, dregs)
        dregs.db[0], dregs.dr7 = 0x4444, 0x401
        rec.call(f"{who}: SET_DEBUGREGS", sys.ioctl, cpu, X86.KVM_SET_DEBUGREGS, dregs)
        rec.call(f"{who}: SET_MSRS STAR", sys.ioctl, cpu, X86.KVM_SET_MSRS,
                 msrs_buf([(0xC0000081, 0x1234)]))  # MSR_STAR
        ev = X86.kvm_vcpu_events()
        sys.ioctl(cpu, X86.KVM_GET_VCPU_EVENTS, ev)
        ev.flags = X86.KVM_VCPUEVENT_VALID_NMI_PENDING | X86.KVM_VCPUEVENT_VALID_SHADOW
        ev.nmi.pending, ev.nmi.injected = 1, 1
        ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.shadow = 1, 0x30, 1
        ev.exception.injected, ev.exception.nr = 1, 13
        ev.exception.has_error_code, ev.exception.error_code = 1, 8
        rec.call(f"{who}: SET_VCPU_EVENTS (queued events)", sys.ioctl, cpu,
                 X86.KVM_SET_VCPU_EVENTS, ev)
        page = X86.kvm_lapic_state()
        sys.ioctl(cpu, X86.KVM_GET_LAPIC, page)
        raw = bytearray(bytes(page))
        raw[0x80], raw[0xF0], raw[0xF1], raw[0x320], raw[0x322] = 0x20, 0xFF, 1, 0x40, 0
        rec.call(f"{who}: SET_LAPIC (TPR, SVR enabled, LVTT unmasked)", sys.ioctl, cpu,
                 X86.KVM_SET_LAPIC, X86.kvm_lapic_state.from_buffer_copy(bytes(raw)))

        def events(label):
            e = X86.kvm_vcpu_events()
            if rec.call(f"{who}: {label}: GET_VCPU_EVENTS", sys.ioctl, cpu,
                        X86.KVM_GET_VCPU_EVENTS, e) is not None:
                rec.record(f"{who}: {label}: nmi, interrupt, shadow, exception, latched_init",
                           (e.nmi.pending, e.nmi.injected, e.interrupt.injected,
                            e.interrupt.nr, e.interrupt.shadow, e.exception.injected,
                            e.exception.nr, e.exception.error_code, e.smi.latched_init))

        def latch(label, value):
            e = X86.kvm_vcpu_events()
            sys.ioctl(cpu, X86.KVM_GET_VCPU_EVENTS, e)
            e.flags = X86.KVM_VCPUEVENT_VALID_SMM
            e.smi.latched_init = value
            rec.call(f"{who}: {label}: SET_VCPU_EVENTS latched_init={value}", sys.ioctl, cpu,
                     X86.KVM_SET_VCPU_EVENTS, e)

        def state(label):
            r, sr, dr = X86.kvm_regs(), X86.kvm_sregs(), X86.kvm_debugregs()
            sys.ioctl(cpu, X86.KVM_GET_REGS, r)
            sys.ioctl(cpu, X86.KVM_GET_SREGS, sr)
            sys.ioctl(cpu, X86.KVM_GET_DEBUGREGS, dr)
            rec.record(f"{who}: {label}: regs", bytes(r).hex())
            rec.record(f"{who}: {label}: sregs", bytes(sr).hex())
            rec.record(f"{who}: {label}: debugregs", (hex(dr.db[0]), hex(dr.dr6), hex(dr.dr7)))
            lp = X86.kvm_lapic_state()
            if rec.call(f"{who}: {label}: GET_LAPIC", sys.ioctl, cpu, X86.KVM_GET_LAPIC, lp) \
                    is not None:
                rec.record(f"{who}: {label}: LAPIC TPR, SVR, LVTT",
                           (bytes(lp)[0x80:0x84].hex(), bytes(lp)[0xF0:0xF4].hex(),
                            bytes(lp)[0x320:0x324].hex()))
            m = msrs_buf([(0xC0000081, 0)])
            if rec.call(f"{who}: {label}: GET_MSRS STAR", sys.ioctl, cpu, X86.KVM_GET_MSRS, m) \
                    is not None:
                rec.record(f"{who}: {label}: STAR", hex(msrs_values(m, 1)[0]))

        def mp(label):
            m = X86.kvm_mp_state()
            if rec.call(f"{who}: {label}: GET_MP_STATE", sys.ioctl, cpu, X86.KVM_GET_MP_STATE,
                        m) is not None:
                rec.record(f"{who}: {label}: mp_state", m.mp_state)

        latch("latch then clear", 1)
        latch("latch then clear", 0)
        mp("latch cleared")
        state("latch cleared")
        latch("INIT", 1)
        events("INIT latched")
        state("INIT latched, not accepted")
        mp("INIT")
        events("INIT accepted")
        state("INIT accepted")


@scenario("x86_unlisted_msrs",
          "Host-initiated KVM_GET/SET_MSRS of MSRs KVM serves without listing them in "
          "KVM_GET_MSR_INDEX_LIST (PLATFORM_ID, the first PMU counters and event selects, "
          "PERF_STATUS/CTL, FS/GS_BASE, TSC_AUX, AMD64_TSC_RATIO), on a vCPU with no CPUID: "
          "what a read "
          "returns, which writes are taken and what reads back; FS/GS_BASE are the "
          "segment bases of KVM_GET/SET_SREGS")
def x86_unlisted_msrs(sys, rec):
    from ..uapi import x86 as X86
    from .conformance_vcpu import msrs_buf, msrs_values

    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    cpu = vcpu(sys, rec, vm, 0)
    if cpu is None:
        return

    def get(label, index):
        m = msrs_buf([(index, 0)])
        n = rec.call(f"{label}: GET_MSRS {index:#x}", sys.ioctl, cpu, X86.KVM_GET_MSRS, m)
        if n:
            rec.record(f"{label}: {index:#x} reads", hex(msrs_values(m, 1)[0]))

    for index in (0x17, 0xC1, 0xC2, 0x186, 0x187, 0x198, 0x199, 0xC0000100, 0xC0000101,
                  0xC0000103, 0xC0000104):
        get("fresh", index)
        for value in (0, 0x1234, 0x8000000000001000, 0xFFFF800000001000, 0x100000000):
            rec.call(f"SET_MSRS {index:#x} = {value:#x}", sys.ioctl, cpu, X86.KVM_SET_MSRS,
                     msrs_buf([(index, value)]))
            get(f"after {value:#x}", index)
    rec.call("SET_MSRS FS_BASE = 0x1234", sys.ioctl, cpu, X86.KVM_SET_MSRS,
             msrs_buf([(0xC0000100, 0x1234)]))
    sregs = X86.kvm_sregs()
    if rec.call("GET_SREGS", sys.ioctl, cpu, X86.KVM_GET_SREGS, sregs) is not None:
        rec.record("sregs fs.base", hex(sregs.fs.base))
        sregs.gs.base = 0x5678
        rec.call("SET_SREGS gs.base = 0x5678", sys.ioctl, cpu, X86.KVM_SET_SREGS, sregs)
        get("after SET_SREGS", 0xC0000101)


@scenario("x86_vm_tsc_khz",
          "KVM_GET/SET_TSC_KHZ on the VM fd (kvm->arch.default_tsc_khz, what QEMU sets for a "
          "TD and kvm_util reads): the default is the host's rate, 0 means the host's, new "
          "vCPUs take the default, and a SET after the first vCPU fails")
def x86_vm_tsc_khz(sys, rec):
    from ..uapi import x86 as X86

    kvm = open_kvm(sys, rec)
    host = sys.ioctl(kvm, K.KVM_CHECK_EXTENSION, X86.KVM_CAP_TSC_CONTROL)
    vm = create_vm(sys, rec, kvm)
    default = rec.call("GET_TSC_KHZ (VM)", sys.ioctl, vm, X86.KVM_GET_TSC_KHZ, 0)
    cpu0 = vcpu(sys, rec, vm, 0, "vCPU 0 before any SET")
    if cpu0 is not None:
        rec.record("vCPU 0 GET_TSC_KHZ is the VM's default",
                   sys.ioctl(cpu0, X86.KVM_GET_TSC_KHZ, 0) == default)
    rec.call("SET_TSC_KHZ (VM) after a vCPU", sys.ioctl, vm, X86.KVM_SET_TSC_KHZ, 1000000)
    rec.record("GET_TSC_KHZ (VM) unchanged",
               sys.ioctl(vm, X86.KVM_GET_TSC_KHZ, 0) == default)
    vm = create_vm(sys, rec, kvm, label="second VM")
    for label, value in (("1000000", 1000000), ("0 (the host's)", 0),
                         ("3000000", 3000000)):
        if host:  # with TSC scaling the bound is the host's max_guest_tsc_khz
            rec.record(f"SET {label}: skipped (TSC scaling)", True)
            continue
        rec.call(f"SET_TSC_KHZ (VM) {label}", sys.ioctl, vm, X86.KVM_SET_TSC_KHZ, value)
        got = sys.ioctl(vm, X86.KVM_GET_TSC_KHZ, 0)
        rec.record(f"GET_TSC_KHZ (VM) after {label}",
                   "the host's" if got == default else got)
    cpu = vcpu(sys, rec, vm, 0, "second VM: vCPU 0")
    if cpu is not None:
        rec.call("second VM: vCPU 0 GET_TSC_KHZ", sys.ioctl, cpu, X86.KVM_GET_TSC_KHZ, 0)
