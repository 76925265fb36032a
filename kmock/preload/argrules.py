"""Per-ioctl argument rules for the native tier: the few ioctls whose argument the server
cannot hand to the mock as the client's pointer.

Most ioctls need no rule. The server runs the handler with the client's pointer as an
int, inside ``kmock._libc.user_task(client_pid)``, so every copy_from_user and
copy_to_user of the handler, nested ones included (a memslot's userspace_addr, the
iova ranges array of IOMMU_IOAS_IOVA_RANGES, KVM_SET_CPUID2's entries, a TDX/SNP/CCA
launch struct's source buffer), reads and writes the VMM's memory with
process_vm_readv/writev, at the size the handler itself decides: the ioctl's _IOC
size, iommufd's in-struct size, an array's count. A fault there is EFAULT, as in
the kernel.

A rule is needed where a struct field holds a file descriptor: the number means
something only in the VMM's fd table. The server reads the struct (``size``),
replaces each fd field by its own descriptor for the same file (the kmock file, or a
copy of the VMM's fd taken with pidfd_getfd), runs the handler on that buffer and
writes the result back with the VMM's numbers restored.

Plugins extend the table with a module or object attribute ``KMOCK_PRELOAD_RULES``
(``{request: ArgRule}``), or with ``register(request, rule)``; for example an SNP
plugin could give a device-specific struct's fd field. The SEV family's ``kvm_sev_cmd.sev_fd``
is upstream UAPI and is in the table already (for SEV, SEV-ES and SNP VMs only).
"""

import ctypes
import struct

from ..kvm import eventfds as EV
from ..uapi import iommufd as I
from ..uapi import kvm as K
from ..uapi import sev as S
from ..uapi import vfio as V
from ..uapi.ioctl import _IOC_SIZE

#: a variable-size struct is read up to this many bytes (the kernel's limit for
#: iommufd's in-struct size is PAGE_SIZE: iommufd_fops_ioctl -> copy_struct_from_user)
MAX_STRUCT = 4096


class ArgRule:
    """How to prepare one ioctl's argument.

    ``size``: bytes of the struct: an int, ``"ioc"`` (the request's _IOC size) or
    ``"u32@0"`` (a leading u32 size field, as iommufd's ``size`` and VFIO's ``argsz``;
    at least ``min_size`` bytes are read, at most MAX_STRUCT). ``fd_fields``: byte
    offsets of 32-bit fd fields. ``when``: a predicate on the File (see below).
    """

    __slots__ = ("fd_fields", "min_size", "size", "when")

    def __init__(self, size="ioc", fd_fields=(), min_size=0, when=None):
        self.size = size
        self.fd_fields = tuple(fd_fields)
        self.min_size = min_size
        #: None, or a predicate on the open file the ioctl is issued on: the rule holds
        #: only where it is true (KVM_MEMORY_ENCRYPT_OP's struct depends on the VM type)
        self.when = when

    def struct_size(self, request, read):
        """The bytes to read for ``request``; ``read(n)`` reads the first n bytes."""
        if self.size == "ioc":
            return _IOC_SIZE(request)
        if self.size == "u32@0":
            n = struct.unpack("<I", read(4))[0]
            return max(self.min_size, min(n, MAX_STRUCT))
        return int(self.size)

    def __repr__(self):
        return f"ArgRule(size={self.size!r}, fd_fields={self.fd_fields!r})"


def _off(ctype, field):
    return getattr(ctype, field).offset


RULES = {
    K.KVM_SET_USER_MEMORY_REGION2: ArgRule("ioc", (_off(K.kvm_userspace_memory_region2,
                                                         "guest_memfd"),)),
    I.IOMMU_IOAS_MAP_FILE: ArgRule("u32@0", (_off(I.iommu_ioas_map_file, "fd"),),
                                   min_size=ctypes.sizeof(I.iommu_ioas_map_file)),
    V.VFIO_DEVICE_BIND_IOMMUFD: ArgRule("u32@0", (_off(V.vfio_device_bind_iommufd, "iommufd"),),
                                        min_size=12),
    # the eventfds of KVM_IOEVENTFD and KVM_IRQFD (kmock.kvm.eventfds): the server's copy
    # (pidfd_getfd) is the VMM's eventfd, so a signal from the mock wakes the VMM's poll
    EV.KVM_IOEVENTFD: ArgRule("ioc", (_off(EV.kvm_ioeventfd, "fd"),)),
    EV.KVM_IRQFD: ArgRule("ioc", (_off(EV.kvm_irqfd, "fd"), _off(EV.kvm_irqfd, "resamplefd"))),
}


def _sev_family(file):
    vm = getattr(file, "vm", None)
    return vm is not None and vm.vmtype.type in _SEV_TYPES


# KVM_MEMORY_ENCRYPT_OP is _IOWR(KVMIO, 0xba, unsigned long) (its _IOC size is 8): on an
# SEV-family VM the argument is struct kvm_sev_cmd, whose sev_fd names /dev/sev
# (include/uapi/linux/kvm.h; arch/x86/kvm/svm/sev.c sev_mem_enc_ioctl -> __sev_issue_cmd).
_SEV_TYPES = (K.KVM_X86_SEV_VM, K.KVM_X86_SEV_ES_VM, K.KVM_X86_SNP_VM)
RULES[K.KVM_MEMORY_ENCRYPT_OP] = ArgRule(ctypes.sizeof(S.kvm_sev_cmd),
                                         (_off(S.kvm_sev_cmd, "sev_fd"),), when=_sev_family)


def register(request, rule):
    """Add or replace the rule of ``request`` for servers started from now on."""
    if not isinstance(rule, ArgRule):
        raise TypeError("rule must be a kmock.preload.argrules.ArgRule")
    RULES[int(request)] = rule


def rules_for(kernel):
    """The table a server of ``kernel`` uses: RULES plus its plugins' KMOCK_PRELOAD_RULES."""
    table = dict(RULES)
    for plugin in kernel.pm.get_plugins():
        extra = getattr(plugin, "KMOCK_PRELOAD_RULES", None)
        if extra:
            for req, rule in dict(extra).items():
                register_into(table, req, rule)
    return table


def register_into(table, request, rule):
    if not isinstance(rule, ArgRule):
        raise TypeError(f"KMOCK_PRELOAD_RULES[{request:#x}] is not an ArgRule")
    table[int(request)] = rule
