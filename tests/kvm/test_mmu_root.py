"""The MMU root and the host's paging mode: KVM_PRE_FAULT_MEMORY and KVM_RUN order.

kvm_arch_vcpu_pre_fault_memory (arch/x86/kvm/mmu/mmu.c) calls kvm_mmu_reload() before
kvm_tdp_map_page() checks for TDP, and vcpu_enter_guest() calls it before the guest
runs. Without the TDP MMU (shadow paging, or kvm.tdp_mmu=0) the root comes from the
VM's shadow page pool, which is empty (n_max_mmu_pages 0) until the first memslot:
ENOSPC. Profile fields: ``tdp`` (KVM_CAP_PRE_FAULT_MEMORY) and ``tdp_mmu``.
"""

import ctypes
import dataclasses
import errno
import mmap
import os

import pytest

import kmock
from kmock.testing.errnos import err
from kmock.uapi import kvm as K

P = 4096
LINUX = kmock.profiles.get("linux-6.18")
SHADOW = dataclasses.replace(LINUX, name="shadow", tdp=False, tdp_mmu=False)
TDP_LEGACY_MMU = dataclasses.replace(LINUX, name="tdp-legacy-mmu", tdp=True, tdp_mmu=False)


def setup(k):
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return vm, vcpu


def pre_fault(k, vcpu, gpa=0, size=P, flags=0):
    r = K.kvm_pre_fault_memory(gpa=gpa, size=size, flags=flags)
    try:
        k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, r)
    except OSError as e:
        return e.errno, (r.gpa, r.size)
    return 0, (r.gpa, r.size)


_BACKING = []  # anonymous memory behind the plain memslots, alive for the whole run


def add_slot(k, vm, slot=0, gpa=1 << 20, npages=16):
    buf = mmap.mmap(-1, npages * P)
    _BACKING.append(buf)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=slot, guest_phys_addr=gpa, memory_size=npages * P, userspace_addr=addr))


@pytest.mark.parametrize("profile", [SHADOW, TDP_LEGACY_MMU], ids=["shadow", "tdp-legacy-mmu"])
def test_no_memslot_enospc_after_the_generic_checks(profile):
    with kmock.Kernel(profile=profile) as k:
        vm, vcpu = setup(k)
        assert pre_fault(k, vcpu) == (errno.ENOSPC, (0, P))
        assert pre_fault(k, vcpu, size=1 << 40)[0] == errno.ENOSPC
        # kvm_vcpu_pre_fault_memory's checks come first
        assert pre_fault(k, vcpu, flags=1)[0] == errno.EINVAL
        assert pre_fault(k, vcpu, size=0)[0] == errno.EINVAL
        assert pre_fault(k, vcpu, gpa=(1 << 64) - P, size=2 * P)[0] == errno.EINVAL


def test_shadow_paging_after_a_memslot_eopnotsupp():
    """The root loads once the pool is sized; then kvm_tdp_map_page refuses."""
    with kmock.Kernel(profile=SHADOW) as k:
        vm, vcpu = setup(k)
        assert pre_fault(k, vcpu)[0] == errno.ENOSPC
        add_slot(k, vm)
        assert pre_fault(k, vcpu, gpa=1 << 20) == (errno.EOPNOTSUPP, (1 << 20, P))
        assert pre_fault(k, vcpu, gpa=1 << 30)[0] == errno.EOPNOTSUPP
        late = k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
        assert pre_fault(k, late, gpa=1 << 20)[0] == errno.EOPNOTSUPP


def test_loaded_root_survives_memslot_deletion():
    """n_max_mmu_pages never returns to 0: a vCPU that loaded its root keeps loading."""
    with kmock.Kernel(profile=SHADOW) as k:
        vm, vcpu = setup(k)
        add_slot(k, vm)
        assert pre_fault(k, vcpu, gpa=1 << 20)[0] == errno.EOPNOTSUPP
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2,
                K.kvm_userspace_memory_region2(slot=0, guest_phys_addr=1 << 20, memory_size=0))
        assert pre_fault(k, vcpu, gpa=1 << 20)[0] == errno.EOPNOTSUPP


def test_tdp_with_legacy_mmu_maps_once_the_pool_exists():
    with kmock.Kernel(profile=TDP_LEGACY_MMU) as k:
        vm, vcpu = setup(k)
        assert pre_fault(k, vcpu)[0] == errno.ENOSPC
        add_slot(k, vm)
        assert pre_fault(k, vcpu, gpa=1 << 20) == (0, ((1 << 20) + P, 0))
        assert pre_fault(k, vcpu, gpa=1 << 30)[0] == errno.ENOENT


def test_tdp_mmu_no_memslot_enoent():
    """linux-6.18 (TDP MMU): no ENOSPC; the fault finds no memslot."""
    with kmock.Kernel(profile=LINUX) as k:
        vm, vcpu = setup(k)
        assert pre_fault(k, vcpu)[0] == errno.ENOENT


def test_run_without_memslot_enospc_after_immediate_exit():
    with kmock.Kernel(profile=SHADOW) as k:
        vm, vcpu = setup(k)
        m = k.mmap(vcpu, P, 3, 1, 0)
        run = K.kvm_run.from_address(m.address)
        run.immediate_exit = 1
        assert err(k.ioctl, vcpu, K.KVM_RUN, 0) == errno.EINTR
        run.immediate_exit = 0
        assert err(k.ioctl, vcpu, K.KVM_RUN, 0) == errno.ENOSPC
        assert run.exit_reason == 0
        add_slot(k, vm)
        assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0
        assert run.exit_reason == K.KVM_EXIT_HLT


def test_run_with_tdp_mmu_runs_without_memslot():
    with kmock.Kernel(profile=LINUX) as k:
        vm, vcpu = setup(k)
        assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0


def test_host_profile_probes_the_mmu():
    """On a machine with /dev/kvm the probe agrees with the real kernel's first pre-fault."""
    from kmock.testing.conformance import kvm_available
    if not kvm_available():
        pytest.skip("no /dev/kvm on this machine")
    host = kmock.profiles.get("host")
    with kmock.HostKernel() as h:
        vm, vcpu = setup(h)
        first = pre_fault(h, vcpu)[0]
    assert (first == errno.ENOSPC) == (not host.tdp_mmu)
    assert host.tdp or not host.tdp_mmu
