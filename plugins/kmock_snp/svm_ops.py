"""The SVM vendor ops every VM on the snp platform reaches, whatever its type.

arch/x86/kvm/x86.c kvm_arch_vm_ioctl hands KVM_MEMORY_ENCRYPT_OP,
KVM_MEMORY_ENCRYPT_REG_REGION and KVM_MEMORY_ENCRYPT_UNREG_REGION to
kvm_x86_ops.mem_enc_ioctl / mem_enc_register_region / mem_enc_unregister_region, which
svm_x86_ops sets to sev_mem_enc_ioctl and friends whenever the kernel has SEV
(arch/x86/kvm/svm/svm.c, 6.18): not only for the SEV-family VM types. On a VM that is not
an SEV guest (a KVM_X86_DEFAULT_VM, or KVM_X86_SW_PROTECTED_VM) the same functions run
with a zeroed kvm_sev_info (kmock_snp.state.NOT_SEV), so each command answers as its
``!sev_guest`` / ``need_init`` check says (docs/arch/snp.md, "VMs that are not SEV
guests"). The plugin registers these handlers for every VM type of the snp platform
(``kmock_ioctls``); the SEV-family types have the same table on their VM type.
"""

import errno
import types

from kmock.kvm.mem_enc import mem_enc_ioctl
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from . import launch, regions

#: sev_mem_enc_ioctl's argument, checks and unknown-id errno, for kmock.kvm.mem_enc
SEV_MEM_ENC = types.SimpleNamespace(mem_enc_cmd=S.kvm_sev_cmd, mem_enc_unknown=errno.EINVAL,
                                    mem_enc_check=launch.mem_enc_check)


def vm_ioctls():
    """{request: handler} of the VM fd: sev_mem_enc_ioctl (its NULL-argument 0 before
    anything is read), sev_mem_enc_register_region, sev_mem_enc_unregister_region."""
    handler = mem_enc_ioctl(SEV_MEM_ENC, launch.mem_enc_ops())
    return {K.KVM_MEMORY_ENCRYPT_OP: launch.null_arg_wrapper(handler),
            K.KVM_MEMORY_ENCRYPT_REG_REGION: regions.register,
            K.KVM_MEMORY_ENCRYPT_UNREG_REGION: regions.unregister}
