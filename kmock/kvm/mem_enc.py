"""KVM_MEMORY_ENCRYPT_OP: the sub-command registry of a VM type.

x86 kvm_arch_vm_ioctl hands KVM_MEMORY_ENCRYPT_OP to the vendor module's
mem_enc_ioctl (TDX: tdx_vm_ioctl / tdx_vcpu_ioctl; SEV: sev_mem_enc_ioctl), which
copies in its command struct (both start with ``u32 id``), runs its own checks and
dispatches on the id. A VM type declares the struct (``mem_enc_cmd``), the checks
(``mem_enc_check``) and the sub-commands (``mem_enc_ops``); the table is built once.
A VM type without ``mem_enc_cmd`` has no handler here, so the ioctl is the core's
ENOTTY (kvm_arch_vm_ioctl's default) for its VMs.
"""

from ..errors import oserror
from ..kernel_util import copy_from_user


def mem_enc_ioctl(vmtype, ops):
    """The KVM_MEMORY_ENCRYPT_OP handler for VMs of ``vmtype`` with sub-commands ``ops``."""
    cmd_type = vmtype.mem_enc_cmd
    unknown = vmtype.mem_enc_unknown
    check = vmtype.mem_enc_check

    def handler(f, arg):
        f.vm.check_caller()
        cmd = copy_from_user(arg, cmd_type)
        check(f, cmd)
        op = ops.get(cmd.id)
        if op is None:
            raise oserror(unknown)
        return op(f, cmd, arg)

    return handler
