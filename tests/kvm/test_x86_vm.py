"""x86 VM ioctls beyond guest memory (kmock.kvm.x86_vm) on profile linux-6.18.

The errno and check order come from arch/x86/kvm/x86.c (6.18) and were confirmed on a
6.18.44 host (conformance scenarios x86_vm_*); these tests pin the model, including a
hypothesis model of KVM_SET_BOOT_CPU_ID / KVM_ENABLE_CAP(MAX_VCPU_ID) / KVM_CREATE_VCPU.
"""

import ctypes
import errno

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import kmock
from kmock.kvm import x86_vm as X
from kmock.uapi import kvm as K

from ._util import SW_PROTECTED_VM, create_vm, err, errno_or_0

MAX_IDS = 4096  # KVM_MAX_VCPU_IDS of the profile


def enable(k, fd, cap, a0=0, flags=0):
    c = K.kvm_enable_cap(cap=cap, flags=flags)
    c.args[0] = a0
    return k.ioctl(fd, K.KVM_ENABLE_CAP, c)


def vm_state(k, vm):
    return X.state(k.file(vm).vm)


# --- KVM_SET_BOOT_CPU_ID ---------------------------------------------------------------------


def test_boot_cpu_id_limits(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, MAX_IDS + 1) == errno.EINVAL
    assert k.ioctl(vm, X.KVM_SET_BOOT_CPU_ID, MAX_IDS) == 0  # '>' in the kernel: 4096 passes
    assert vm_state(k, vm).bsp_vcpu_id == MAX_IDS
    assert k.ioctl(vm, X.KVM_SET_BOOT_CPU_ID, 3) == 0
    assert vm_state(k, vm).bsp_vcpu_id == 3


def test_boot_cpu_id_ebusy_after_vcpu_before_range(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 0) == errno.EBUSY
    assert err(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, MAX_IDS + 1) == errno.EBUSY


def test_boot_cpu_id_buffer_argument_is_a_pointer(k):
    """A buffer arrives as its address: far above 4096 -> EINVAL."""
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, bytearray(8)) == errno.EINVAL


def test_boot_cpu_id_on_dev_kvm_einval(k):
    kvm, _ = create_vm(k)
    assert err(k.ioctl, kvm, X.KVM_SET_BOOT_CPU_ID, 0) == errno.EINVAL


# --- KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID) and KVM_CREATE_VCPU -----------------------------------


def test_max_vcpu_id_limits_vcpu_ids(k):
    _, vm = create_vm(k)
    assert err(enable, k, vm, K.KVM_CAP_MAX_VCPU_ID, MAX_IDS + 1) == errno.EINVAL
    assert enable(k, vm, K.KVM_CAP_MAX_VCPU_ID, 2) == 0
    assert enable(k, vm, K.KVM_CAP_MAX_VCPU_ID, 2) == 0  # the same value again
    assert err(enable, k, vm, K.KVM_CAP_MAX_VCPU_ID, 3) == errno.EINVAL
    k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 2) == errno.EINVAL
    assert err(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 0) == errno.EBUSY


def test_first_vcpu_fixes_max_vcpu_id(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert vm_state(k, vm).max_vcpu_ids == MAX_IDS
    assert enable(k, vm, K.KVM_CAP_MAX_VCPU_ID, MAX_IDS) == 0
    assert err(enable, k, vm, K.KVM_CAP_MAX_VCPU_ID, 100) == errno.EINVAL


def test_vcpu_id_beyond_kvm_max_leaves_max_vcpu_id_unset(k):
    """kvm_vm_ioctl_create_vcpu rejects id >= KVM_MAX_VCPU_IDS before precreate."""
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, MAX_IDS) == errno.EINVAL
    assert vm_state(k, vm).max_vcpu_ids == 0
    assert enable(k, vm, K.KVM_CAP_MAX_VCPU_ID, 100) == 0


def test_failed_vcpu_creation_is_not_counted(k):
    """kvm_vm_ioctl_create_vcpu unwinds created_vcpus when creation fails after precreate
    (a duplicate id, an allocation failure): the VM is still vCPU-less for the rules."""
    _, vm = create_vm(k)
    k.faults.fail("kvm.vcpu.alloc", errno=errno.ENOMEM)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 0) == errno.ENOMEM
    assert vm_state(k, vm).created_vcpus == 0
    assert k.ioctl(vm, X.KVM_SET_BOOT_CPU_ID, 1) == 0
    assert k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0) == 0
    k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 1) == errno.EEXIST
    assert vm_state(k, vm).created_vcpus == 1


def test_max_vcpu_id_below_boot_cpu_id(k):
    _, vm = create_vm(k)
    assert k.ioctl(vm, X.KVM_SET_BOOT_CPU_ID, 7) == 0
    assert err(enable, k, vm, K.KVM_CAP_MAX_VCPU_ID, 6) == errno.EINVAL
    assert enable(k, vm, K.KVM_CAP_MAX_VCPU_ID, 7) == 0
    assert err(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, 8) == errno.EINVAL


class _Model:
    """kvm->arch.bsp_vcpu_id / max_vcpu_ids / created vCPU ids, as x86.c keeps them."""

    def __init__(self):
        self.bsp, self.max_ids, self.vcpus = 0, 0, set()

    def boot(self, i):
        if self.vcpus:
            return errno.EBUSY
        if i > MAX_IDS or (self.max_ids and i > self.max_ids):
            return errno.EINVAL
        self.bsp = i
        return 0

    def cap(self, a):
        if a > MAX_IDS or self.bsp > a:
            return errno.EINVAL
        if self.max_ids == a:
            return 0
        if self.max_ids:
            return errno.EINVAL
        self.max_ids = a
        return 0

    def vcpu(self, i):
        if i >= MAX_IDS:
            return errno.EINVAL
        self.max_ids = self.max_ids or MAX_IDS
        if i >= self.max_ids:
            return errno.EINVAL
        if i in self.vcpus:
            return errno.EEXIST
        self.vcpus.add(i)
        return 0


ids = st.one_of(st.integers(0, 12), st.sampled_from([MAX_IDS - 1, MAX_IDS, MAX_IDS + 1]))
ops = st.lists(st.tuples(st.sampled_from(["boot", "cap", "vcpu"]), ids), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_boot_cpu_and_max_vcpu_id_model(ops):
    with kmock.Kernel(profile="linux-6.18") as k:
        _, vm = create_vm(k)
        model = _Model()
        for op, i in ops:
            want = getattr(model, op)(i)
            if op == "boot":
                got = errno_or_0(k.ioctl, vm, X.KVM_SET_BOOT_CPU_ID, i)
            elif op == "cap":
                got = errno_or_0(enable, k, vm, K.KVM_CAP_MAX_VCPU_ID, i)
            else:
                got = errno_or_0(k.ioctl, vm, K.KVM_CREATE_VCPU, i)
            assert got == want, (op, i)
        s = vm_state(k, vm)
        assert (s.bsp_vcpu_id, s.max_vcpu_ids) == (model.bsp, model.max_ids)


# --- KVM_SET_NR_MMU_PAGES --------------------------------------------------------------------


@pytest.mark.parametrize("n,want", [(0, errno.EINVAL), (63, errno.EINVAL), (64, 0), (1 << 40, 0)])
def test_set_nr_mmu_pages(k, n, want):
    _, vm = create_vm(k)
    assert errno_or_0(k.ioctl, vm, X.KVM_SET_NR_MMU_PAGES, n) == want
    assert vm_state(k, vm).n_requested_mmu_pages == (n if want == 0 else 0)


def test_get_nr_mmu_pages_is_gone(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, K.KVM_GET_NR_MMU_PAGES, 0) == errno.ENOTTY


# --- KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR ------------------------------------------


def test_tss_addr(k):
    _, vm = create_vm(k)
    assert k.ioctl(vm, X.KVM_SET_TSS_ADDR, 0xFFFFD000) == 0
    assert vm_state(k, vm).tss_addr == 0xFFFFD000
    assert err(k.ioctl, vm, X.KVM_SET_TSS_ADDR, 0xFFFFD001) == errno.EINVAL
    assert err(k.ioctl, vm, X.KVM_SET_TSS_ADDR, 1 << 40) == errno.EINVAL
    assert vm_state(k, vm).tss_addr == 0xFFFFD000
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert k.ioctl(vm, X.KVM_SET_TSS_ADDR, 0x1000) == 0


def test_identity_map_addr(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, X.KVM_SET_IDENTITY_MAP_ADDR, 0) == errno.EFAULT
    assert k.ioctl(vm, X.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(1 << 63)) == 0
    assert vm_state(k, vm).ept_identity_map_addr == 1 << 63
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm, X.KVM_SET_IDENTITY_MAP_ADDR, 0) == errno.EINVAL
    assert err(k.ioctl, vm, X.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(0)) == errno.EINVAL
    assert vm_state(k, vm).ept_identity_map_addr == 1 << 63


# --- KVM_CREATE_IRQCHIP and KVM_CAP_SPLIT_IRQCHIP ----------------------------------------------


def test_create_irqchip_twice_and_after_vcpu(k):
    _, vm = create_vm(k)
    assert k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0) == 0
    assert vm_state(k, vm).irqchip_mode == "kernel"
    assert err(k.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0) == errno.EEXIST
    assert err(enable, k, vm, X.KVM_CAP_SPLIT_IRQCHIP, 24) == errno.EEXIST
    _, vm2 = create_vm(k)
    k.ioctl(vm2, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm2, X.KVM_CREATE_IRQCHIP, 0) == errno.EINVAL
    assert err(enable, k, vm2, X.KVM_CAP_SPLIT_IRQCHIP, 24) == errno.EEXIST
    assert vm_state(k, vm2).irqchip_mode == "none"


def test_split_irqchip(k):
    _, vm = create_vm(k)
    assert err(enable, k, vm, X.KVM_CAP_SPLIT_IRQCHIP, 4097) == errno.EINVAL
    assert enable(k, vm, X.KVM_CAP_SPLIT_IRQCHIP, 4096) == 0
    s = vm_state(k, vm)
    assert (s.irqchip_mode, s.nr_reserved_ioapic_pins) == ("split", 4096)
    assert err(enable, k, vm, X.KVM_CAP_SPLIT_IRQCHIP, 0) == errno.EEXIST
    assert err(k.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0) == errno.EEXIST


def test_create_irqchip_protected_eoi(k, monkeypatch):
    """A VM type with protected EOIs (TDX sets kvm->arch.has_protected_eoi): ENOTTY after
    the EEXIST check, before the vCPU check."""
    _, vm = create_vm(k)
    vmtype = k.file(vm).vm.vmtype
    monkeypatch.setattr(vmtype, "has_protected_eoi", True, raising=False)
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0) == errno.ENOTTY
    vm_state(k, vm).irqchip_mode = "split"
    assert err(k.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0) == errno.EEXIST


@pytest.mark.parametrize("vm_type", [0, SW_PROTECTED_VM])
def test_irqchip_per_vm(k, vm_type):
    """The irqchip is VM state: one VM's does not make another's exist."""
    kvm, vm = create_vm(k, vm_type)
    vm2 = k.ioctl(kvm, K.KVM_CREATE_VM, vm_type)
    assert k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0) == 0
    assert k.ioctl(vm2, X.KVM_CREATE_IRQCHIP, 0) == 0


# --- the bookkeeping capabilities ----------------------------------------------------------


def test_x2apic_api_linux_618(k):
    _, vm = create_vm(k)
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, X.KVM_CAP_X2APIC_API) == 3
    for a in range(4):
        assert enable(k, vm, X.KVM_CAP_X2APIC_API, a) == 0
    assert err(enable, k, vm, X.KVM_CAP_X2APIC_API, 4) == errno.EINVAL
    assert vm_state(k, vm).x2apic_api == 3


def test_disable_exits_not_advertised_on_linux_618(k):
    """The value is the hardware's (not in the linux-6.18 table): nothing but 0 passes
    (kvm_vm_ioctl_enable_cap checks args[0] against kvm_get_allowed_disable_exits, not
    against CHECK_EXTENSION being non-zero; conformance enable_cap_sweep)."""
    _, vm = create_vm(k)
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, X.KVM_CAP_X86_DISABLE_EXITS) == 0
    assert enable(k, vm, X.KVM_CAP_X86_DISABLE_EXITS, 0) == 0
    assert err(enable, k, vm, X.KVM_CAP_X86_DISABLE_EXITS, 1) == errno.EINVAL


@pytest.mark.parametrize("cap,good,bad", [
    (X.KVM_CAP_MSR_PLATFORM_INFO, [0, 1, 1 << 63], []),
    (X.KVM_CAP_EXCEPTION_PAYLOAD, [0, 7], []),
    (X.KVM_CAP_X86_TRIPLE_FAULT_EVENT, [0, 1], []),
    (X.KVM_CAP_X86_USER_SPACE_MSR, [0, 7], [8, 1 << 40]),
    (X.KVM_CAP_EXIT_ON_EMULATION_FAILURE, [0, 1], [2, 3]),
    (K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [0, 1, 3], [2, 4]),
    (K.KVM_CAP_HALT_POLL, [0, 0xFFFFFFFF], [1 << 32]),
    (X.KVM_CAP_DISABLE_QUIRKS, [0, 1 << 63], []),
])
def test_bookkeeping_caps(k, cap, good, bad):
    _, vm = create_vm(k)
    for a in good:
        assert enable(k, vm, cap, a) == 0
        if cap != X.KVM_CAP_DISABLE_QUIRKS:
            assert vm_state(k, vm).enabled[cap] == a
    for a in bad:
        assert err(enable, k, vm, cap, a) == errno.EINVAL
    assert err(enable, k, vm, cap, 0, flags=1) == errno.EINVAL


def test_disable_quirks_keeps_only_known_bits(k):
    """DISABLE_QUIRKS ignores unknown bits; with no DISABLE_QUIRKS2 value in the table
    (linux-6.18) none is known."""
    _, vm = create_vm(k)
    assert enable(k, vm, X.KVM_CAP_DISABLE_QUIRKS, 0xFFFF) == 0
    assert vm_state(k, vm).disabled_quirks == 0


def test_apic_bus_cycles_ns(k):
    _, vm = create_vm(k)
    assert err(enable, k, vm, X.KVM_CAP_X86_APIC_BUS_CYCLES_NS, 0) == errno.EINVAL
    assert err(enable, k, vm, X.KVM_CAP_X86_APIC_BUS_CYCLES_NS, 1) == errno.ENXIO
    assert err(enable, k, vm, X.KVM_CAP_X86_APIC_BUS_CYCLES_NS, (1 << 25) + 1) == errno.EINVAL
    k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0)
    assert enable(k, vm, X.KVM_CAP_X86_APIC_BUS_CYCLES_NS, 1 << 25) == 0
    assert vm_state(k, vm).enabled[X.KVM_CAP_X86_APIC_BUS_CYCLES_NS] == 1 << 25
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(enable, k, vm, X.KVM_CAP_X86_APIC_BUS_CYCLES_NS, 2) == errno.EINVAL


def test_disable_nx_huge_pages(k, monkeypatch):
    _, vm = create_vm(k)
    monkeypatch.setattr(X.os, "geteuid", lambda: 1000)
    assert err(enable, k, vm, X.KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, 1) == errno.EPERM
    monkeypatch.setattr(X.os, "geteuid", lambda: 0)
    assert err(enable, k, vm, X.KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, 1) == errno.EINVAL
    assert enable(k, vm, X.KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, 0) == 0
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(enable, k, vm, X.KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, 0) == errno.EINVAL


# --- only x86 profiles get them --------------------------------------------------------------


def test_arm64_has_no_x86_vm_ioctls():
    """The x86 entries join the VM table of x86 profiles only (arm64's own
    KVM_CREATE_IRQCHIP, which creates a GICv2, is kmock_arm64's: tests/arm64)."""
    kmock_arm64 = pytest.importorskip("kmock_arm64")
    with kmock.Kernel("linux-arm64", plugins=[kmock_arm64]) as k:
        _, vm = create_vm(k, 0)
        table = k.ioctl_table("vm", k.file(vm).vm.vmtype)
        for req in (X.KVM_SET_BOOT_CPU_ID, X.KVM_SET_NR_MMU_PAGES):
            assert req not in table
            assert err(k.ioctl, vm, req, 64) == k.file(vm).vm.vmtype.unknown_vm_ioctl_errno
        assert err(enable, k, vm, K.KVM_CAP_MAX_VCPU_ID, 4) == errno.EINVAL
        assert k.ioctl(vm, K.KVM_CREATE_VCPU, 0) >= 0


def test_x86_tables_have_them(k):
    _, vm = create_vm(k)
    table = k.ioctl_table("vm", k.file(vm).vm.vmtype)
    assert {X.KVM_SET_BOOT_CPU_ID, X.KVM_SET_NR_MMU_PAGES, X.KVM_CREATE_IRQCHIP} <= set(table)
