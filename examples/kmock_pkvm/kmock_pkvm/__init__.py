"""kmock_pkvm: Android's protected KVM (pKVM) on arm64, as a third-party kmock plugin.

An example written by following docs/writing-a-plugin.md of kmock. It lives outside
the kmock package and reaches kmock only through its public contract
(kmock/hookspecs.py, kmock.kvm.vmtype.VmType). Installed, it is found through its
entry point (pyproject.toml: group ``kmock.plugins``)::

    k = kmock.Kernel("linux-arm64-pkvm")
    vm = k.ioctl(kvm_fd, KVM_CREATE_VM, KVM_VM_TYPE_ARM_PROTECTED | 40)

Modules: ``uapi`` (numbers, with sources), ``arm64`` (the example's own minimal arm64
vCPU surface), ``ownership`` (the hypervisor's frame-ownership table),
``vmtype`` (the protected VM type), ``guest`` (the guest's hypercalls).
"""

import dataclasses
from types import MappingProxyType

from kmock import profiles
from kmock.hookspecs import hookimpl
from kmock.platforms import Platform
from kmock.uapi import kvm as K

from . import uapi
from .vmtype import ProtectedVm

# [guide:platform]
PLATFORM = Platform(
    "pkvm", "arm64", "arm64 host booted with kvm-arm.mode=protected (pKVM at EL2)",
    settings=(
        # KVM_VM_TYPE_ARM_PROTECTED is 1 << 31 (Android, mainline); the 2022 RFC used 1 << 8
        ("pkvm_vm_type_bit", uapi.KVM_VM_TYPE_ARM_PROTECTED_BIT),
        # the hypervisor's IOMMU driver blocks DMA to guest-owned pages (Android);
        # upstream's pkvm.rst lists DMA isolation as unimplemented: False
        ("pkvm_dma_isolation", True),
    ))
# [/guide:platform]

# [guide:profile]
#: arm64 capabilities the example's profile reports (KVM_CAP_ARM_VM_IPA_SIZE: a 48-bit
#: PARange host)
_CAPS = {
    K.KVM_CAP_USER_MEMORY: 1,
    K.KVM_CAP_NR_MEMSLOTS: K.KVM_USER_MEM_SLOTS,
    K.KVM_CAP_MAX_VCPUS: 512,
    K.KVM_CAP_MAX_VCPU_ID: 512,
    K.KVM_CAP_IMMEDIATE_EXIT: 1,
    K.KVM_CAP_USER_MEMORY2: 1,
    K.KVM_CAP_MEMORY_FAULT_INFO: 1,
    K.KVM_CAP_GUEST_MEMFD: 1,
    uapi.KVM_CAP_ARM_PSCI_0_2: 1,
    uapi.KVM_CAP_ARM_VM_IPA_SIZE: 48,
}

PROFILE = dataclasses.replace(
    profiles.GMEM_ATTRIBUTES_V8,
    name="linux-arm64-pkvm",
    description="arm64 with pKVM (kvm-arm.mode=protected), guest_memfd with in-place "
                "conversion (KVM_SET_MEMORY_ATTRIBUTES2); the kmock_pkvm example",
    arch="arm64",
    platform="pkvm",
    caps=MappingProxyType(_CAPS),
    max_vcpus=512,
    max_vcpu_ids=512,
    cpuid=(),
)
# [/guide:profile]


# [guide:hooks]
@hookimpl
def kmock_platforms(kernel):
    return [PLATFORM]


@hookimpl
def kmock_profiles():
    return [PROFILE]


@hookimpl
def kmock_vm_types(kernel):
    return [ProtectedVm(kernel.setting("pkvm_vm_type_bit"))]
# [/guide:hooks]
