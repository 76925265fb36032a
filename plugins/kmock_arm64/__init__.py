"""The arm64 KVM surface for kmock: the normal VM type, vCPU init, the vGIC, and the
``linux-arm64`` profile.

The core declares no arm64 VM type, only the platform "none" for arm64; this plugin
declares ``KVM_VM_TYPE_ARM_NORMAL`` (type 0: KVM_CREATE_VM's argument carries the IPA
size in bits 7:0) and the profile ``linux-arm64`` (arch "arm64"). Confidential
platforms on arm64 (``kmock_cca``) subclass ``Arm64Vm`` for their own VM types.

Modules: ``vm`` (the VM type, KVM_CREATE_VM's IPA size, the VM ioctls), ``vcpu``
(KVM_ARM_VCPU_INIT, first KVM_RUN, ONE_REG), ``vgic`` (KVM_CREATE_DEVICE for the
in-kernel GIC), ``profile`` (capabilities of an upstream arm64 KVM).
"""

from kmock.hookspecs import hookimpl

from .profile import LINUX_ARM64
from .vm import Arm64Vm, Arm64VmState

__all__ = ["Arm64Vm", "Arm64VmState", "LINUX_ARM64"]


@hookimpl
def kmock_vm_types(kernel):
    return [Arm64Vm(kernel)]


@hookimpl
def kmock_profiles():
    return [LINUX_ARM64]
