"""KVM_X86_SW_PROTECTED_VM (type 1): upstream's software-only confidential VM type.

Private memory with no hardware: guest_memfd holds the private pages, the VM-level
KVM_SET_MEMORY_ATTRIBUTES (or, with in-place conversion, the guest_memfd's own
attributes) decides which gfns are private, and a guest access whose kind differs
from the attribute exits with KVM_EXIT_MEMORY_FAULT. There is no encryption and no
hardware table, so this plugin only declares the VM type; everything it does not
override is the core's default (kmock.kvm.vmtype.VmType), which is exactly
SW_PROTECTED's behaviour:

* ``access_is_private`` follows the memory attribute (no alias bit);
* ``pre_fault_allowed`` is set at VM init for DEFAULT and SW_PROTECTED;
* no guest_memfd callbacks: conversions only zap and store;
* the iommufd notifier policy zaps IOMMU entries on conversion, and a stale DMA is
  allowed (nothing in hardware stops it) and recorded.

It is the smallest plugin of the contract (kmock/hookspecs.py); docs/writing-a-plugin.md
shows a whole architecture.
"""

from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K


class SwProtectedVm(VmType):
    type = K.KVM_X86_SW_PROTECTED_VM
    name = "KVM_X86_SW_PROTECTED_VM"
    arch = "x86"
    platforms = None  # CONFIG_KVM_SW_PROTECTED_VM: on any x86 machine
    has_private_mem = True  # kvm_arch_has_private_mem(): guest_memfd, no INIT_SHARED


@hookimpl
def kmock_vm_types(kernel):
    return [SwProtectedVm()]
