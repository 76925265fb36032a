"""/dev/kvm: the system-level ioctls (kvm_dev_ioctl and x86 kvm_arch_dev_ioctl)."""

import ctypes
import errno
import stat

from ..errors import PluginError, oserror
from ..file import File, make_stat
from ..kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from ..pluginmanager import plugin_name
from ..uapi import kvm as K
from ..uapi import x86 as X
from . import x86_mce, x86_msr
from .vm import VM, VmFile
from .x86_state import EDX, cpuid_has, supported_xcr0
from .x86_state import settings as x86_settings

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


def _get_cpuid(f, arg, table_of):
    """x86.c kvm_arch_dev_ioctl + cpuid.c kvm_dev_ioctl_get_cpuid, shared by
    KVM_GET_SUPPORTED_CPUID and K.KVM_GET_EMULATED_CPUID: the kvm_cpuid2 header (EFAULT);
    ``nent`` < 1 -> E2BIG; ``nent`` capped at KVM_MAX_CPUID_ENTRIES; then
    ``table_of(kernel, arg, nent)`` gives the entries or raises (E2BIG: the array is
    full before the table is; nothing is written back then, not even ``nent``); the
    entries, then the header with ``nent`` = their count, are copied out."""
    head = copy_from_user(arg, K.kvm_cpuid2)
    if head.nent < 1:
        raise oserror(errno.E2BIG)
    entries = table_of(f.kernel, arg, min(head.nent, KVM_MAX_CPUID_ENTRIES))
    table = (K.kvm_cpuid_entry2 * len(entries))()
    for e, (fn, idx, flags, eax, ebx, ecx, edx) in zip(table, entries):
        e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx = fn, idx, flags, eax, ebx, ecx, edx
    write_user_at(arg, ctypes.sizeof(K.kvm_cpuid2), bytes(table))
    head.nent = len(entries)
    copy_to_user(arg, head)
    return 0


def _supported_table(kernel, arg, nent):
    entries = kernel.profile.cpuid
    if nent < len(entries):
        raise oserror(errno.E2BIG)
    return entries


def dev_get_supported_cpuid(f, arg):
    """KVM_GET_SUPPORTED_CPUID: the profile's table; E2BIG when ``nent`` is too small."""
    return _get_cpuid(f, arg, _supported_table)


# --- K.KVM_GET_EMULATED_CPUID --------------------------------------------------------------

#: CPUID.1:ECX.MOVBE[bit 22], CPUID.7.0:ECX.RDPID[bit 22]
MOVBE = RDPID = 1 << 22
#: kvm_dev_ioctl_get_cpuid's funcs[]: the bases it walks after leaf 0's range
#: (0xC0000000, Centaur only, is left out: kmock models no Centaur host)
_EMULATED_BASES = (0x80000000, 0x40000000)


def emulated_cpuid(profile):
    """cpuid.c cpuid_func_emulated(..., include_partially_emulated=false) of 6.18: leaf 0
    with EAX = 7, leaf 1 with MOVBE, leaf 7 (SIGNIFICANT_INDEX) with RDPID only when
    kvm_cpu_cap_has(X86_FEATURE_RDTSCP). That capability word is what
    KVM_GET_SUPPORTED_CPUID reports in 0x80000001 EDX (cpuid_entry_override), so it is
    read from the profile's supported table, probed on the host profile (the 6.18.44
    PVM host has no RDTSCP there and no RDPID here), written by hand for linux-6.18
    (RDTSCP: RDPID is set). The other bits do not depend on the host."""
    rdpid = RDPID if cpuid_has(profile.cpuid, 0x80000001, 0, EDX, 27) else 0
    return ((0, 0, 0, 7, 0, 0, 0), (1, 0, 0, 0, 0, MOVBE, 0), (7, 0, 1, 0, 0, rdpid, 0))


def _emulated_pads_clean(arg, nent):
    """sanity_check_entries: each of the ``nent`` entries' padding must be readable and
    0, else EINVAL (checked for K.KVM_GET_EMULATED_CPUID only; kmock reads the entries
    in one copy, the kernel their 12 padding bytes in turn)."""
    try:
        es = (K.kvm_cpuid_entry2 * nent).from_buffer_copy(
            read_user_at(arg, ctypes.sizeof(K.kvm_cpuid2), nent * ctypes.sizeof(K.kvm_cpuid_entry2)))
    except OSError:
        return False
    return not any(any(e.padding) for e in es)


def _emulated_table(kernel, arg, nent):
    """get_cpuid_func over leaf 0's range (0..EAX) and the other bases:
    __do_cpuid_func_emulated checks ``nent >= maxnent`` (E2BIG) before every function,
    also those that add no entry, so one spare entry is needed (probed: nent 3 -> E2BIG,
    4 -> 3 entries)."""
    if not _emulated_pads_clean(arg, nent):
        raise oserror(errno.EINVAL)
    table = emulated_cpuid(kernel.profile)
    by_fn = {e[0]: e for e in table}
    leaf0 = by_fn.get(0)
    funcs = list(range((leaf0[3] if leaf0 else 0) + 1)) + list(_EMULATED_BASES)
    count = 0
    for fn in funcs:
        if count >= nent:
            raise oserror(errno.E2BIG)
        count += fn in by_fn
    return table


def dev_get_emulated_cpuid(f, arg):
    """K.KVM_GET_EMULATED_CPUID (cpuid.c kvm_dev_ioctl_get_cpuid with that type): the
    instructions KVM emulates although the host may lack them; conformance
    ``x86_emulated_cpuid``."""
    return _get_cpuid(f, arg, _emulated_table)


def _x86_dev_attr_value(f, attr, groups):
    """__kvm_x86_dev_get_attr: group 0 attribute KVM_X86_XCOMP_GUEST_SUPP is
    kvm_caps.supported_xcr0 (probed: settings ``xcomp_guest_supp``; else the XCR0 bits
    of the profile's KVM_GET_SUPPORTED_CPUID leaf 0xD, which equal it unless the host
    filters dynamic features such as AMX there); any other group 0 attribute ENXIO.
    Another group goes to the vendor's dev_get_attr: ``groups`` (the platform's
    ``kmock_dev_attr_groups``; SVM answers KVM_X86_GRP_SEV with sev_dev_get_attr),
    ENXIO when no platform answers it (VMX and the PVM probe host have no
    dev_get_attr). ``flags`` is not checked."""
    if attr.group:
        get = groups.get(attr.group)
        if get is None:
            raise oserror(errno.ENXIO)
        return get(f.kernel, attr.attr)
    if attr.attr != X.KVM_X86_XCOMP_GUEST_SUPP:
        raise oserror(errno.ENXIO)
    s = x86_settings(f.kernel.profile)
    v = s.get("xcomp_guest_supp")
    return supported_xcr0(f.kernel.profile.cpuid) if v is None else v


def dev_attr_groups(kernel):
    """{group: get(kernel, attr)} from the plugins' ``kmock_dev_attr_groups`` (read once
    per Kernel): group 0 is the core's, and a group has one owner (PluginError)."""
    groups = {}
    for impl in kernel.pm.hook.kmock_dev_attr_groups.get_hookimpls():
        who = plugin_name(kernel.pm, impl.plugin)
        for group, get in (impl.function(kernel=kernel) or {}).items():
            if type(group) is not int or not 0 < group < 1 << 32 or not callable(get):
                raise PluginError(f"plugin {who}: kmock_dev_attr_groups needs {{group: get}} "
                                  f"with a u32 group other than 0 (the core's) and a "
                                  f"callable; got {group!r}: {get!r}")
            if group in groups:
                raise PluginError(f"plugin {who}: /dev/kvm attribute group {group} is "
                                  f"already answered by another plugin")
            groups[group] = get
    return groups


def dev_device_attr_ioctls(kernel):
    """KVM_GET_DEVICE_ATTR and KVM_HAS_DEVICE_ATTR on /dev/kvm (kvm_arch_dev_ioctl ->
    kvm_x86_dev_get_attr / kvm_x86_dev_has_attr), with the platform's groups."""
    groups = dev_attr_groups(kernel)

    def dev_get_device_attr(f, arg):
        """The struct copied in (EFAULT), the attribute's errno, then the u64 put to
        ``addr`` (EFAULT)."""
        attr = copy_from_user(arg, X.kvm_device_attr)
        value = _x86_dev_attr_value(f, attr, groups)
        copy_to_user(attr.addr, ctypes.c_uint64(value))
        return 0

    def dev_has_device_attr(f, arg):
        """0 or the attribute's errno; ``addr`` is not touched."""
        _x86_dev_attr_value(f, copy_from_user(arg, X.kvm_device_attr), groups)
        return 0

    return {X.KVM_GET_DEVICE_ATTR: dev_get_device_attr,
            X.KVM_HAS_DEVICE_ATTR: dev_has_device_attr}


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
        table[K.KVM_GET_EMULATED_CPUID] = dev_get_emulated_cpuid
        table[X.KVM_GET_MSR_INDEX_LIST] = x86_msr.dev_get_msr_index_list
        table[X.KVM_GET_MSR_FEATURE_INDEX_LIST] = x86_msr.dev_get_msr_feature_index_list
        table[X.KVM_GET_MSRS] = x86_msr.dev_get_msrs  # the feature MSRs' values
        table[X.KVM_X86_GET_MCE_CAP_SUPPORTED] = x86_mce.dev_get_mce_cap_supported
        table.update(dev_device_attr_ioctls(kernel))
    return table
