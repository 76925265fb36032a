"""KVM_CHECK_EXTENSION and KVM_CREATE_VM on profile linux-6.18 (reference §2.2, §2.3)."""

import errno

import pytest

from kmock.uapi import kvm as K

from ._util import DEFAULT_VM, SW_PROTECTED_VM, create_vm, err


def check(k, fd, cap):
    return k.ioctl(fd, K.KVM_CHECK_EXTENSION, cap)


# §2.2: the cap table, /dev/kvm vs DEFAULT VM vs SW_PROTECTED VM.
EXPECTED = {
    #            cap                             /dev/kvm  DEFAULT  SW_PROTECTED
    "GUEST_MEMFD_FLAGS": (K.KVM_CAP_GUEST_MEMFD_FLAGS, 3, 3, 1),
    "MEMORY_ATTRIBUTES": (K.KVM_CAP_MEMORY_ATTRIBUTES, 8, 0, 8),
    "VM_TYPES": (K.KVM_CAP_VM_TYPES, 0b11, 0b11, 0b11),
    "PRE_FAULT_MEMORY": (K.KVM_CAP_PRE_FAULT_MEMORY, 1, 1, 1),
    "EXIT_HYPERCALL": (K.KVM_CAP_EXIT_HYPERCALL, 0x1000, 0x1000, 0x1000),
    "GUEST_MEMFD": (K.KVM_CAP_GUEST_MEMFD, 1, 1, 1),  # §7.3: 6.18 returns 1 for every VM
    "USER_MEMORY2": (K.KVM_CAP_USER_MEMORY2, 1, 1, 1),
    "MEMORY_FAULT_INFO": (K.KVM_CAP_MEMORY_FAULT_INFO, 1, 1, 1),
    "NR_MEMSLOTS": (K.KVM_CAP_NR_MEMSLOTS, 32764, 32764, 32764),
    "IMMEDIATE_EXIT": (K.KVM_CAP_IMMEDIATE_EXIT, 1, 1, 1),  # §6.3: vm_open requires it
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_extension_per_fd_and_vm_type(k, name):
    """§2.2: values on /dev/kvm, on a DEFAULT VM and on a SW_PROTECTED VM."""
    cap, dev, default, swp = EXPECTED[name]
    kvm, vm0 = create_vm(k, DEFAULT_VM)
    vm1 = k.ioctl(kvm, K.KVM_CREATE_VM, SW_PROTECTED_VM)
    assert (check(k, kvm, cap), check(k, vm0, cap), check(k, vm1, cap)) == (dev, default, swp)


@pytest.mark.parametrize("cap", [245, 246, 247, 0xFFFF, 1 << 31])
def test_check_extension_undefined_caps_are_0(k, cap):
    """§2.2: 245..247 are not defined in 6.18; unknown caps answer 0, not an error."""
    kvm, vm = create_vm(k)
    assert check(k, kvm, cap) == 0
    assert check(k, vm, cap) == 0


def test_api_version_and_vcpu_mmap_size(k):
    """§1, §5.2: KVM_GET_API_VERSION 12, KVM_GET_VCPU_MMAP_SIZE 12288."""
    kvm, _ = create_vm(k)
    assert k.ioctl(kvm, K.KVM_GET_API_VERSION, 0) == 12
    assert k.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0) == 12288


def test_create_vm_types(k):
    """§2.3: linux-6.18 offers DEFAULT (0) and SW_PROTECTED (1); 2..6 (SEV, SEV-ES, SNP, TDX,
    unknown) are not offered without their vendor plugins -> EINVAL (kvm_arch_init_vm)."""
    kvm, vm0 = create_vm(k, DEFAULT_VM)
    vm1 = k.ioctl(kvm, K.KVM_CREATE_VM, SW_PROTECTED_VM)
    assert vm0 != vm1 and vm0 >= 0 and vm1 >= 0
    for t in range(2, 7):
        assert err(k.ioctl, kvm, K.KVM_CREATE_VM, t) == errno.EINVAL, t
    for t in (31, 32, 63, (1 << 64) - 1):
        assert err(k.ioctl, kvm, K.KVM_CREATE_VM, t) == errno.EINVAL, t


def test_vm_ioctls_on_dev_kvm_are_einval(k):
    """§1 dispatch facts: unknown ioctls on /dev/kvm fall to kvm_arch_dev_ioctl -> EINVAL."""
    kvm, _ = create_vm(k)
    assert err(k.ioctl, kvm, K.KVM_CREATE_GUEST_MEMFD,
               K.kvm_create_guest_memfd(size=4096)) == errno.EINVAL
    assert err(k.ioctl, kvm, K.KVM_SET_MEMORY_ATTRIBUTES,
               K.kvm_memory_attributes(0, 4096, 0, 0)) == errno.EINVAL


def test_kvm_paravirtual_cpuid_leaves(k):
    """arch/x86/kvm/cpuid.c __do_cpuid_func: KVM_CPUID_SIGNATURE ("KVMKVMKVM", max leaf
    KVM_CPUID_FEATURES) and KVM_CPUID_FEATURES' constant list plus STEAL_TIME (bits 0, 1,
    3-7, 9-14, 24): 0x1007efb, what the 6.18.44 probe host reports too. QEMU's CPU model
    asks for them (kvmclock, PV EOI...)."""
    import ctypes

    from kmock.testing.conformance_vcpu import supported_cpuid

    kvm, _ = create_vm(k)
    buf, n = supported_cpuid(k, kvm)
    entries = (K.kvm_cpuid_entry2 * n).from_buffer_copy(buf, 8)
    leaves = {e.function: e for e in entries}
    sig = leaves[0x40000000]
    assert sig.eax == 0x40000001
    assert b"".join(ctypes.c_uint32(r).value.to_bytes(4, "little")
                    for r in (sig.ebx, sig.ecx, sig.edx)).rstrip(b"\0") == b"KVMKVMKVM"
    bits = (0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 24)
    assert leaves[0x40000001].eax == sum(1 << b for b in bits) == 0x1007EFB
