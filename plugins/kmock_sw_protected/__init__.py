"""KVM_X86_SW_PROTECTED_VM (type 1): upstream's software-only confidential VM type.

Private memory with no hardware: guest_memfd holds the private pages, the VM-level
KVM_SET_MEMORY_ATTRIBUTES decides which gfns are private, and a guest access whose
kind differs from the attribute exits with KVM_EXIT_MEMORY_FAULT. There is no
encryption and no hardware table, so this plugin only declares the VM type.

It is the template for the TDX, SNP and CCA plugins: a package registered under
the ``kmock.plugins`` entry-point group that implements kmock.hookspecs hooks.
"""

from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K


class SwProtectedVm(VmType):
    type = K.KVM_X86_SW_PROTECTED_VM
    name = "KVM_X86_SW_PROTECTED_VM"
    has_private_mem = True  # kvm_arch_has_private_mem(): guest_memfd, no INIT_SHARED

    def pre_fault_allowed(self, vm):
        return True  # set at VM init for DEFAULT and SW_PROTECTED

    # access_is_private: the default (follow the memory attribute) is exactly
    # SW_PROTECTED's rule.


@hookimpl
def kmock_vm_types(kernel):
    return [SwProtectedVm()]
