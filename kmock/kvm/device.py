"""/dev/kvm: the system-level ioctls (kvm_dev_ioctl and x86 kvm_arch_dev_ioctl)."""

import ctypes
import errno
import stat

from ..errors import oserror
from ..file import File, make_stat
from ..kernel_util import copy_from_user, copy_to_user, write_user_at
from ..uapi import kvm as K
from ..uapi import x86 as X
from . import x86_mce, x86_msr
from .vm import VM, VmFile
from .x86_state import settings as x86_settings
from .x86_state import supported_xcr0

KVM_MAX_CPUID_ENTRIES = 256


class KvmDevice(File):
    """An open /dev/kvm (misc character device 10:232)."""

    file_type = "kvm"
    i_mode = stat.S_IFCHR | 0o600
    has_llseek = True  # kvm_chardev_ops.llseek = noop_llseek

    def unknown_ioctl(self, request, arg):
        raise oserror(errno.EINVAL)  # kvm_arch_dev_ioctl default

    def read(self, n):
        raise oserror(errno.EINVAL)

    def pread(self, n, offset):
        raise oserror(errno.EINVAL)  # character devices may pread; there is no ->read

    def pwrite(self, data, offset):
        raise oserror(errno.EINVAL)

    def fstat(self):
        return make_stat(self.i_mode, size=0, ino=0x1A0, dev=5, rdev=(10 << 8) | 232)


def dev_get_api_version(f, arg):
    if arg != 0:
        raise oserror(errno.EINVAL)
    return f.kernel.profile.api_version


#: arm64: KVM_CREATE_VM's argument carries the IPA size in bits 7:0
KVM_VM_TYPE_ARM_IPA_SIZE_MASK = 0xFF


def dev_create_vm(f, arg):
    """kvm_dev_ioctl_create_vm: an unsupported type is EINVAL (kvm_arch_init_vm).

    On arm64 profiles bits 7:0 of the argument are the IPA size, not the type; the
    VM type's ``vm_init`` checks them (``vm.type_arg``)."""
    kernel = f.kernel
    vmtype = None
    if type(arg) is int:
        key = arg & ~KVM_VM_TYPE_ARM_IPA_SIZE_MASK if kernel.profile.arch == "arm64" else arg
        vmtype = kernel.vm_types.get(key)
    if vmtype is None:
        raise oserror(errno.EINVAL)
    vm = VM(kernel, vmtype, type_arg=arg)
    vmtype.vm_init(vm)
    return kernel.fdtable.install(VmFile(kernel, vm))


def dev_check_extension(f, arg):
    if type(arg) is int:
        return f.kernel.caps.get(arg, 0)
    return 0


def dev_get_vcpu_mmap_size(f, arg):
    if arg != 0:
        raise oserror(errno.EINVAL)
    return f.kernel.profile.vcpu_mmap_size


def dev_get_supported_cpuid(f, arg):
    """KVM_GET_SUPPORTED_CPUID: E2BIG when ``nent`` is too small (nothing written)."""
    head = copy_from_user(arg, K.kvm_cpuid2)
    entries = f.kernel.profile.cpuid
    nent = min(head.nent, KVM_MAX_CPUID_ENTRIES)
    if nent < 1 or nent < len(entries):
        raise oserror(errno.E2BIG)
    table = (K.kvm_cpuid_entry2 * len(entries))()
    for e, (fn, idx, flags, eax, ebx, ecx, edx) in zip(table, entries):
        e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx = fn, idx, flags, eax, ebx, ecx, edx
    write_user_at(arg, ctypes.sizeof(K.kvm_cpuid2), bytes(table))
    head.nent = len(entries)
    copy_to_user(arg, head)
    return 0


def _x86_dev_attr_value(f, attr):
    """__kvm_x86_dev_get_attr: group 0 attribute KVM_X86_XCOMP_GUEST_SUPP is
    kvm_caps.supported_xcr0 (probed: settings ``xcomp_guest_supp``; else the XCR0 bits
    of the profile's KVM_GET_SUPPORTED_CPUID leaf 0xD, which equal it unless the host
    filters dynamic features such as AMX there); another group goes to the vendor's
    dev_get_attr (VMX and the PVM probe host have none, SVM answers for SEV only):
    ENXIO; any other attribute ENXIO. ``flags`` is not checked."""
    if attr.group or attr.attr != X.KVM_X86_XCOMP_GUEST_SUPP:
        raise oserror(errno.ENXIO)
    s = x86_settings(f.kernel.profile)
    v = s.get("xcomp_guest_supp")
    return supported_xcr0(f.kernel.profile.cpuid) if v is None else v


def dev_get_device_attr(f, arg):
    """KVM_GET_DEVICE_ATTR on /dev/kvm (kvm_arch_dev_ioctl -> kvm_x86_dev_get_attr): the
    struct copied in (EFAULT), the attribute's errno, then the u64 put to ``addr``
    (EFAULT)."""
    attr = copy_from_user(arg, X.kvm_device_attr)
    value = _x86_dev_attr_value(f, attr)
    copy_to_user(attr.addr, ctypes.c_uint64(value))
    return 0


def dev_has_device_attr(f, arg):
    """KVM_HAS_DEVICE_ATTR on /dev/kvm (kvm_x86_dev_has_attr): 0 or the attribute's
    errno; ``addr`` is not touched."""
    _x86_dev_attr_value(f, copy_from_user(arg, X.kvm_device_attr))
    return 0


def dev_ioctls(kernel):
    """The generic kvm_dev_ioctl table, and kvm_arch_dev_ioctl's for the profile's arch
    (arm64's kvm_arch_dev_ioctl has no ioctl: every other request is EINVAL)."""
    table = {
        K.KVM_GET_API_VERSION: dev_get_api_version,
        K.KVM_CREATE_VM: dev_create_vm,
        K.KVM_CHECK_EXTENSION: dev_check_extension,
        K.KVM_GET_VCPU_MMAP_SIZE: dev_get_vcpu_mmap_size,
    }
    if kernel.profile.arch == "x86":
        table[K.KVM_GET_SUPPORTED_CPUID] = dev_get_supported_cpuid
        table[X.KVM_GET_MSR_INDEX_LIST] = x86_msr.dev_get_msr_index_list
        table[X.KVM_GET_MSR_FEATURE_INDEX_LIST] = x86_msr.dev_get_msr_feature_index_list
        table[X.KVM_GET_MSRS] = x86_msr.dev_get_msrs  # the feature MSRs' values
        table[X.KVM_X86_GET_MCE_CAP_SUPPORTED] = x86_mce.dev_get_mce_cap_supported
        table[X.KVM_GET_DEVICE_ATTR] = dev_get_device_attr
        table[X.KVM_HAS_DEVICE_ATTR] = dev_has_device_attr
    return table
