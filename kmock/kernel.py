"""Kernel: the mock kernel's syscall entry points, and the rooms they reach.

``Kernel(profile="linux-6.18")`` owns the plugin manager, the active profile and
small rooms with public internal APIs that every package uses:

``fdtable``     fd -> open file (kmock.fdtable): ``install``, ``lookup``, ``get``
``physmem``     the one frame space (kmock.physmem): ``alloc_range``
``devices``     device nodes kmock emulates, by path (/dev/kvm, /dev/iommu, VFIO
                cdevs, plugin devices such as /dev/sev): ``path -> opener``
``violations``  the consequences API (kmock.consequences): ``record``
``iommu_lock``  the iommufd object lock (kmock.iommufd.kernel_side)
``faults``      fault injection (kmock.faults): ``check(point, errno)``, ``fail``,
                ``fail_nth``
``trace``       the syscall trace (kmock.trace.Trace) when ``Kernel(trace=...)``

Its methods have the signatures and errors of the os/fcntl/mmap functions of the
same name (see kmock.syscall_api).

The flow of one ioctl: look the fd up, take the open file's dispatch table (built
once from the core handlers, the plugins' ``kmock_ioctls`` tables and, for VM,
vCPU and guest_memfd files, the VM type's own table), call the handler. No hook
chain is walked per call; the ``kmock_syscall`` wrapper hook is only taken when
some plugin implements it.
"""

import dataclasses
import errno
import os
import threading
from ctypes import Structure as _Structure
from types import MappingProxyType

from . import profiles
from ._libc import MAP_ANONYMOUS, check_fallocate_args
from .consequences import BoundedLog, ViolationLog
from .snapshot import ArchSection
from .errors import KmockUsageError, check_int, oserror
from .faults import USERCOPY, Faults
from .fdtable import FdTable
from .locks import RLock
from .core_plugin import CorePlugin
from .file import File
from .iommufd.kernel_side import IommufdSupport
from .kvm import conversion
from .kvm.guest_memfd import BackingPool
from .kvm.mem_enc import mem_enc_ioctl
from .physmem import PhysMem
from .pluginmanager import checked_table, collect_vm_types, plugin_manager, plugin_name
from .syscall_api import SyscallAPI
from .uapi import kvm as K

EBADF = errno.EBADF
U32 = 0xFFFFFFFF
#: fcntl.ioctl copies an immutable buffer argument into a buffer of this size
IOCTL_BUFSZ = 1024
#: the file types whose tables a VM type may override
VM_FILE_TYPES = ("vm", "vcpu", "gmem")


_SEEK_MAX = 4  # SEEK_HOLE (include/uapi/linux/fs.h)
_PAGE_MASK_LOW = 0xFFF  # ~PAGE_MASK


class _InSyscall(threading.local):
    active = False



#: ctypes Structure subclasses seen as ioctl arguments: a set look-up instead of
#: isinstance(), which asks the ctypes metaclass's __instancecheck__ (about 750
#: instructions per call)
_STRUCT_TYPES = set()


def _is_structure(arg):
    if isinstance(arg, _Structure):
        _STRUCT_TYPES.add(type(arg))
        return True
    return False


# (the slow paths of Kernel.ioctl, outside it: a lambda in its body would make the compiled
# method allocate a closure on every call)
def _unknown_ioctl(f, request, arg, mutate_flag):
    return Kernel._ioctl_arg(lambda a: f.unknown_ioctl(request, a), arg, mutate_flag)


def _buffer_ioctl(h, f, arg, mutate_flag):
    return Kernel._ioctl_arg(lambda a: h(f, a), arg, mutate_flag)


def dispatch_ioctl(f, request, arg, mutate_flag):
    """ioctl on the open file ``f`` (a kmock.file.File): its table's handler for
    ``request``, called as fcntl.ioctl passes ``arg`` (typed when compiled: kernel.pxd)."""
    ioctls = f.ioctls
    h = ioctls.get(request)
    if h is None:
        request &= U32  # the kernel's cmd is an unsigned int
        h = ioctls.get(request)
        if h is None:
            return _unknown_ioctl(f, request, arg, mutate_flag)
    if type(arg) is int or (mutate_flag and (type(arg) in _STRUCT_TYPES
                                             or _is_structure(arg))):
        return h(f, arg)
    return _buffer_ioctl(h, f, arg, mutate_flag)


class Kernel(IommufdSupport, SyscallAPI):
    """A mock Linux kernel: KVM and guest_memfd as ``profile`` behaves.

    ``profile``: a profile name (kmock.profiles.names(), plus those plugins declare)
    or a Profile. ``plugins``: plugin objects/modules registered in addition to the
    installed ones (the ``kmock.plugins`` entry points); ``only_plugins``: register
    exactly these instead. Keyword ``settings`` override fields of the profile, e.g.
    ``Kernel("gmem-attributes-v8", platform="tdx", iommufd_gmem_policy="notifier")``.
    ``trace``: a path or a writable text file: every syscall is written to it as JSON
    lines (kmock.trace); off by default, and then it costs nothing.
    Raises kmock.errors.PluginError for a broken plugin and KmockUsageError (a
    ValueError) for an unknown profile, setting or platform, or a setting of the wrong
    type. Settings of kmock itself: ``guest_history`` (completed guest-script actions
    kept per vCPU, 1000) and ``log_limit`` (entries kept in ``sigbus_log``,
    ``violations``, ``dma_faults``; 10000, None = all). See docs/api-errors.md.
    """

    FILE_TYPES = ("kvm", "vm", "vcpu", "gmem", "iommufd", "vfio")

    def __init__(self, profile="linux-6.18", plugins=None, only_plugins=None, trace=None,
                 **settings):
        if plugins is not None and not isinstance(plugins, (list, tuple)):
            raise KmockUsageError("plugins must be a list of plugin objects or modules")
        if only_plugins is not None and not isinstance(only_plugins, (list, tuple)):
            raise KmockUsageError("only_plugins must be a list of plugin objects or modules")
        self.pm = plugin_manager(CorePlugin(), plugins, only_plugins)
        self.faults = Faults(self)
        self.trace = None
        if trace is not None:
            from .trace import Trace

            self.trace = Trace(trace)
            self.pm.register(self.trace, name="kmock-trace")
        self.profile = self._resolve_profile(profile, settings)
        check_int("guest_history", self.profile.guest_history, 0)
        self.fdtable = FdTable()
        self.physmem = PhysMem()
        limit = self.profile.log_limit
        #: the recorded consequences (a ViolationLog of at most ``log_limit`` entries)
        self.violations = ViolationLog(limit)
        #: host mappings this kernel handed out (kmock.mapping.FileMapping)
        self.mappings = set()
        #: (mapping, offset) of the host accesses that got SIGBUS (the newest
        #: ``log_limit``; a kmock.consequences.BoundedLog)
        self.sigbus_log = BoundedLog(limit)
        #: a zero-length memfd: mapped where a host access must SIGBUS
        self.sigbus_memfd = os.memfd_create("kmock-sigbus", os.MFD_CLOEXEC)
        self.iommu_lock = RLock()
        self._host = None
        self._pins = set()
        #: the backing memfds of guest_memfds (kmock.kvm.guest_memfd.BackingPool: ``take``
        #: one for a new inode, ``give`` it back at release)
        self.gmem_backing = BackingPool()
        self._closed = False
        self._init_iommufd()
        #: (device, iova, reason) of the refused DMAs (the newest ``log_limit``)
        self.dma_faults = BoundedLog(limit)
        self._build_tables()

    def _resolve_profile(self, profile, settings):
        extra = []
        for part in self.pm.hook.kmock_profiles():
            extra.extend(part or ())
        prof = profiles.get(profile, extra)
        #: settings the platforms of installed plugins declare, with their defaults
        declared = {}
        for impl in self.pm.hook.kmock_platforms.get_hookimpls():
            for plat in impl.function(kernel=self) or ():
                declared.update(dict(plat.settings))
        known = {f.name for f in dataclasses.fields(prof)} - {"name", "description", "arch_settings"}
        fields, arch = {}, dict(declared)
        arch.update(prof.arch_settings)
        types = {f.name: f.type for f in dataclasses.fields(prof)}
        for key, value in settings.items():
            if key in known:
                fields[key] = _checked_setting(key, value, types[key])
            elif key in declared:
                arch[key] = value
            else:
                raise KmockUsageError(
                    f"Kernel() got an unknown profile setting {key!r}; the settings are: "
                    f"{', '.join(sorted(known | set(declared)))}")
        return dataclasses.replace(prof, arch_settings=MappingProxyType(arch), **fields)

    def setting(self, name):
        """A profile setting by name: a Profile field, or one a platform declares
        (KmockUsageError naming the setting otherwise)."""
        if not isinstance(name, str):
            raise KmockUsageError(f"setting name must be a str, not {name!r}")
        p = self.profile
        if name in p.arch_settings:
            return p.arch_settings[name]
        if name in {f.name for f in dataclasses.fields(p)}:
            return getattr(p, name)
        raise KmockUsageError(f"no profile setting {name!r}")

    # --- tables built once from the plugins -------------------------------------------

    def _build_tables(self):
        hook = self.pm.hook
        p = self.profile
        platforms = {}
        for impl in hook.kmock_platforms.get_hookimpls():
            for plat in impl.function(kernel=self) or ():
                platforms[(plat.arch, plat.name)] = plat
        if (p.arch, p.platform) not in platforms:
            known = sorted(n for a, n in platforms if a == p.arch)
            raise KmockUsageError(
                f"platform {p.platform!r} is not known for {p.arch} profiles (profile "
                f"{p.name!r}); known: {', '.join(known)}. A platform is declared by the plugin "
                f"that models it (kmock_platforms).")
        #: the Platform the profile names
        self.platform = platforms[(p.arch, p.platform)]
        declared = collect_vm_types(self.pm, self)
        offered = p.vm_types
        #: KVM_CREATE_VM type number -> VmType, for the types this platform offers
        self.vm_types = {
            t.type: t for (arch, n), t in declared.items()
            if arch == p.arch and (t.platforms is None or p.platform in t.platforms)
            and (offered is None or n in offered)}
        self._tables = {}
        for ft in self.FILE_TYPES:
            table = {}
            for impl in reversed(hook.kmock_ioctls.get_hookimpls()):
                part = impl.function(kernel=self, file_type=ft)
                table.update(checked_table(f"plugin {plugin_name(self.pm, impl.plugin)}", part))
            self._tables[ft] = table
        self.gmem_model = conversion.model_for(self.profile)
        self._tables["gmem"].update(self.gmem_model.gmem_ioctls(self.profile))
        self._vmtype_tables = {}
        for t in self.vm_types.values():
            self._vmtype_tables[id(t)] = self._tables_for(t)
        self.devices = {}
        self.devices.update(self._iommu_devices())
        for impl in reversed(hook.kmock_devices.get_hookimpls()):
            self.devices.update(impl.function(kernel=self) or {})
        self.caps = self._system_caps()
        self._vm_caps = {}
        #: per thread: inside a call of the kmock_syscall path (another thread's calls
        #: meanwhile still take it)
        self._syscall = _InSyscall()
        self.refresh_syscall_path()
        self._has_snapshot = bool(hook.kmock_snapshot.get_hookimpls())

    def refresh_syscall_path(self):
        """Take the kmock_syscall path iff a plugin wraps syscalls or a fault rule on
        whole syscalls is armed (kmock.faults); called when either changes."""
        self._traced = bool(self.pm.hook.kmock_syscall.get_hookimpls()) or \
            self.faults.wraps_syscalls

    def _tables_for(self, vmtype):
        """The vm, vcpu and gmem tables of VMs of ``vmtype``: the core's, overridden by
        the VM type's own, with KVM_MEMORY_ENCRYPT_OP dispatching its sub-commands."""
        who = f"VM type {vmtype.name}"
        out = {}
        for ft in VM_FILE_TYPES:
            table = dict(self._tables[ft])
            if vmtype.mem_enc_cmd is not None and ft in ("vm", "vcpu"):
                ops = checked_table(who, vmtype.mem_enc_ops(self, ft))
                table[K.KVM_MEMORY_ENCRYPT_OP] = mem_enc_ioctl(vmtype, ops)
            table.update(checked_table(who, vmtype.ioctls(self, ft)))
            out[ft] = table
        return out

    def ioctl_table(self, file_type, vmtype=None):
        """The dispatch table of ``file_type`` (for VMs of ``vmtype`` where it matters)."""
        if vmtype is not None:
            tables = self._vmtype_tables.get(id(vmtype))
            if tables is not None and file_type in tables:
                return tables[file_type]
        return self._tables.get(file_type, {})

    def vmtype_tables(self, vmtype):
        return self._vmtype_tables.get(id(vmtype), {})

    def _system_caps(self):
        p = self.profile
        caps = {
            K.KVM_CAP_VM_TYPES: sum(1 << t for t in self.vm_types if t < 32),
            K.KVM_CAP_MEMORY_ATTRIBUTES: K.KVM_MEMORY_ATTRIBUTE_PRIVATE if p.memory_attributes else 0,
            K.KVM_CAP_PRE_FAULT_MEMORY: int(p.tdp),
            K.KVM_CAP_GUEST_MEMFD_FLAGS: K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED,
        }
        if p.arch != "x86":
            caps[K.KVM_CAP_VM_TYPES] = 0  # an x86 capability
        caps.update(p.caps)
        caps.update(self.gmem_model.system_caps(p))
        for part in self.pm.hook.kmock_capabilities(kernel=self):
            caps.update(part or {})
        return {c: v for c, v in caps.items() if v}

    def vm_caps(self, vmtype):
        """VM-level KVM_CHECK_EXTENSION values for a VM of ``vmtype`` (cached per type)."""
        caps = self._vm_caps.get(vmtype.type)
        if caps is None:
            caps = dict(self.caps)
            mem_attrs = self.profile.memory_attributes and vmtype.has_private_mem
            caps[K.KVM_CAP_MEMORY_ATTRIBUTES] = K.KVM_MEMORY_ATTRIBUTE_PRIVATE if mem_attrs else 0
            caps[K.KVM_CAP_GUEST_MEMFD_FLAGS] = vmtype.supported_gmem_flags(None)
            caps.update(self.gmem_model.vm_caps(self.profile, vmtype))
            caps.update(self.profile.vm_caps.get(vmtype.type, {}))
            caps.update(vmtype.capabilities())
            caps = {c: v for c, v in caps.items() if v}
            self._vm_caps[vmtype.type] = caps
        return caps

    # --- the fd table -----------------------------------------------------------------------

    def file(self, fd):
        """The open file object behind a kmock fd (OSError EBADF if it is not one)."""
        return self.fdtable.lookup(fd)

    def owns_fd(self, fd):
        """Whether ``fd`` is a descriptor of a file kmock emulates (/dev/kvm, VM, vCPU,
        guest_memfd, iommufd, VFIO, plugin devices)."""
        return fd in self.fdtable

    def vm(self, vm_fd):
        """The VM object behind a VM fd (KmockUsageError if ``vm_fd`` is not one)."""
        f = self.fdtable.get(vm_fd) if isinstance(vm_fd, int) else None
        if getattr(f, "file_type", None) != "vm":
            raise KmockUsageError(f"vm_fd {vm_fd!r} is not a VM fd of this kernel")
        return f.vm

    # --- syscalls ---------------------------------------------------------------------------

    def open(self, path, flags, mode=0o777):
        if self._traced and not self._syscall.active:
            return self._call_traced("open", (path, flags, mode))
        return self._open(path, flags, mode)

    def _open(self, path, flags, mode):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        opener = self.devices.get(path)
        if opener is None:
            # Not a device kmock emulates: the real OS serves it (as umockdev passes
            # host devices through), so a VMM may open /dev/null or a file as usual.
            return self.host.open(path, flags, mode)
        f = opener(self, flags)
        f.f_flags = flags  # (the fd's placeholder is opened with them: F_GETFL agrees)
        return self.fdtable.install(f, cloexec=bool(flags & os.O_CLOEXEC))

    def memfd_create(self, name, flags=0):
        """os.memfd_create through kmock: a real memfd whose truncation kmock sees, so
        pages pinned by an IOMMU MAP_FILE keep their bytes after a truncate (as a
        FOLL_PIN'd folio outlives it)."""
        return self.host.adopt(os.memfd_create(name, flags))

    @property
    def host(self):
        """The HostKernel that serves the fds of files kmock does not emulate."""
        if self._host is None:
            from .host import HostKernel

            self._host = HostKernel()
        return self._host

    def _host_fd(self, fd):
        return self._host is not None and self._host.owns_fd(fd)

    def close(self, fd):
        if self._traced and not self._syscall.active:
            return self._call_traced("close", (fd,))
        host = self._host
        if host is not None and host.owns_fd(fd):
            return host.close(fd)
        self.fdtable.close_fd(fd)

    def dup(self, fd):
        if self._traced and not self._syscall.active:
            return self._call_traced("dup", (fd,))
        if self._host_fd(fd):
            return self._host.dup(fd)
        return self.fdtable.dup(fd)

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        if self._traced and not self._syscall.active:
            return self._call_traced("ioctl", (fd, request, arg, mutate_flag))
        f = self.fdtable.get(fd) if type(fd) is int else None
        if f is None:
            if self._host_fd(fd):
                return self._host.ioctl(fd, request, arg, mutate_flag)
            f = self.fdtable.lookup(fd)
        return dispatch_ioctl(f, request, arg, mutate_flag)

    @staticmethod
    def _ioctl_arg(call, arg, mutate_flag):
        """fcntl.ioctl's buffer rules: bytes -> filled copy; mutable buffer -> in place."""
        if type(arg) is int:
            if not -(1 << 63) <= arg < (1 << 64):
                raise OverflowError("ioctl argument out of range")
            return call(arg)
        if isinstance(arg, (bytes, str)):
            buf = bytearray(arg.encode() if isinstance(arg, str) else arg)
            if len(buf) > IOCTL_BUFSZ:
                raise ValueError("ioctl string arg too long")
            call(buf)
            return bytes(buf)
        try:
            mv = memoryview(arg)
        except TypeError:
            raise TypeError("ioctl requires an integer or a buffer argument") from None
        if mv.readonly or not mutate_flag:
            buf = bytearray(mv.cast("B")) if mv.ndim else bytearray(mv.tobytes())
            if len(buf) > IOCTL_BUFSZ:
                raise ValueError("ioctl string arg too long")
            call(buf)
            return bytes(buf)
        return call(arg)

    def mmap(self, fd, length, prot, flags, offset=0):
        if self._traced and not self._syscall.active:
            return self._call_traced("mmap", (fd, length, prot, flags, offset))
        if type(offset) is int and offset & _PAGE_MASK_LOW:
            raise oserror(errno.EINVAL)  # sys_mmap (arch/x86/kernel/sys_x86_64.c): first
        if type(flags) is int and flags & MAP_ANONYMOUS:
            # ksys_mmap_pgoff never looks the fd up: anonymous memory, whatever fd (a
            # kmock fd, a closed one); the real OS makes it
            offset = _check_anon_mmap_args(fd, length, prot, flags, offset)
            return self.host.mmap(-1, length, prot, flags, offset)
        if self._host_fd(fd):
            return self._host.mmap(fd, length, prot, flags, offset)
        f = self.fdtable.fdget(fd)  # a concurrent close must not release the file mid-mmap
        try:
            return f.mmap(length, prot, flags, offset)
        finally:
            f.put()

    def fallocate(self, fd, mode, offset, length):
        if self._traced and not self._syscall.active:
            return self._call_traced("fallocate", (fd, mode, offset, length))
        f = self.fdtable.get(fd) if type(fd) is int else None
        if f is None:  # not a kmock fd: the real OS's, or EBADF / TypeError
            host = self._host
            if host is not None and host.owns_fd(fd):
                if mode & 0x02 and self.iommu_memory.orphans is not None:  # PUNCH_HOLE
                    self.iommu_memory.before_truncate(fd, offset, offset + length)
                return host.fallocate(fd, mode, offset, length)
            f = self.fdtable.lookup(fd)
        check_fallocate_args(fd, mode, offset, length)
        return f.fallocate(mode, offset, length)

    def read(self, fd, n):
        return self._simple("read", fd, n)

    def write(self, fd, data):
        return self._simple("write", fd, data)

    def pread(self, fd, n, offset):
        if self._traced and not self._syscall.active:
            return self._call_traced("pread", (fd, n, offset))
        if type(offset) is int and offset < 0:
            raise oserror(errno.EINVAL)  # ksys_pread64: before the fd is looked up
        return self._simple("pread", fd, n, offset)

    def pwrite(self, fd, data, offset):
        if self._traced and not self._syscall.active:
            return self._call_traced("pwrite", (fd, data, offset))
        if type(offset) is int and offset < 0:
            raise oserror(errno.EINVAL)  # ksys_pwrite64
        return self._simple("pwrite", fd, data, offset)

    def lseek(self, fd, pos, how):
        if self._traced and not self._syscall.active:
            return self._call_traced("lseek", (fd, pos, how))
        if type(how) is int and not 0 <= how <= _SEEK_MAX and self.owns_fd(fd):
            raise oserror(errno.EINVAL)  # ksys_lseek: after fdget, before ->llseek
        return self._simple("lseek", fd, pos, how)

    def fstat(self, fd):
        return self._simple("fstat", fd)

    def ftruncate(self, fd, length):
        if self._traced and not self._syscall.active:
            return self._call_traced("ftruncate", (fd, length))
        if type(length) is int and length < 0:
            raise oserror(errno.EINVAL)  # do_sys_ftruncate: before the fd is looked up
        return self._simple("ftruncate", fd, length)

    def fchmod(self, fd, mode):
        return self._simple("fchmod", fd, mode)

    def fsync(self, fd):
        return self._simple("fsync", fd)

    def _simple(self, name, fd, *args):
        if self._traced and not self._syscall.active:
            return self._call_traced(name, (fd, *args))
        if self._host_fd(fd):
            if name == "ftruncate":
                self.iommu_memory.before_truncate(fd, args[0], 1 << 63)
            return getattr(self._host, name)(fd, *args)
        return getattr(self.fdtable.lookup(fd), name)(*args)

    def _call_traced(self, name, args):
        """The kmock_syscall path: run the wrapper implementations around the syscall.

        Follows pluggy's new-style wrapper protocol (a generator that yields once and
        receives the result or the exception); plain implementations just observe.
        """
        kwargs = {"kernel": self, "name": name, "args": args}
        gens = []
        try:
            for impl in reversed(self.pm.hook.kmock_syscall.get_hookimpls()):
                res = impl.function(*(kwargs[a] for a in impl.argnames))
                if impl.wrapper or impl.hookwrapper:
                    next(res)
                    gens.append(res)
        except BaseException:
            for g in reversed(gens):
                g.close()
            raise
        self._syscall.active = True  # this thread's call itself, not traced again
        try:
            if self.faults.wraps_syscalls:
                self.faults.check_syscall(name, args)
            result = getattr(self, "_" + name if name == "open" else name)(*args)
            exc = None
        except BaseException as e:
            result, exc = None, e
        finally:
            self._syscall.active = False
        for g in reversed(gens):
            try:
                if exc is None:
                    g.send(result)
                else:
                    g.throw(exc)
                raise RuntimeError("kmock_syscall wrapper did not stop after its yield")
            except StopIteration as stop:
                result, exc = stop.value, None
            except BaseException as e:
                result, exc = None, e
        if exc is not None:
            raise exc
        return result

    # --- what a test does to the kernel from outside the VMM --------------------------------

    def gup_pin(self, mapping, offset, length, longterm=True):
        """Pin pages of ``mapping`` as get_user_pages would (the selftests use gup_test).

        Returns a handle with ``unpin()``. Pins survive munmap; they go with ``unpin()``
        or ``close_all()``. Pinning a page that would fault fails with EFAULT. A pinned
        guest_memfd page blocks its conversion to private (EAGAIN), as a long-term pin
        or an extra reference does in the kernel; ``longterm`` is recorded only.
        Raises KmockUsageError when ``mapping`` is not a mapping of this kernel.
        """
        from .mapping import FileMapping

        if not isinstance(mapping, FileMapping) or mapping.file.kernel is not self:
            raise KmockUsageError(f"mapping must be a mapping returned by this kernel's mmap(), "
                                  f"not {mapping!r}")
        for name, v in (("offset", offset), ("length", length)):
            if type(v) is not int:
                raise KmockUsageError(f"{name} must be an int, not {v!r}")
        if mapping.closed or offset < 0 or length <= 0 or offset + length > len(mapping):
            raise oserror(errno.EINVAL)
        pin = _Pin(self, mapping, offset, length, longterm)
        self._pins.add(pin)
        return pin

    def memory_failure(self, gmem_fd, offset):
        """Inject a memory failure into the guest_memfd page at ``offset``.

        Later guest use of the page fails with EHWPOISON (KVM_RUN), host use with SIGBUS.
        OSError EINVAL when ``gmem_fd`` is not a guest_memfd or ``offset`` is outside
        it (EBADF: not a kmock fd); KmockUsageError when either is not an int.
        """
        check_int("gmem_fd", gmem_fd)
        check_int("offset", offset)
        f = self.fdtable.lookup(gmem_fd)
        if f.file_type != "gmem" or not 0 <= offset < f.inode.size:
            raise oserror(errno.EINVAL)
        f.inode.memory_failure(offset >> 12)

    def snapshot(self):
        """The mock's state as plain data: guest_memfds, VMs and what was recorded."""
        files = self.fdtable.files()
        gmems = {id(f.inode): f.inode for f in files if f.file_type == "gmem"}
        vms = {id(f.vm): f.vm for f in files if getattr(f, "vm", None) is not None}
        snap = {
            "profile": self.profile.name,
            "platform": self.profile.platform,
            "guest_memfds": [i.snapshot() for i in gmems.values()],
            "vms": [vm.snapshot() for vm in vms.values()],
            "iommufd": [f.snapshot() for f in files if f.file_type == "iommufd"],
            "orphaned_pinned_pages": len(self.iommu_memory.orphans),
            "dma_faults": len(self.dma_faults),
            "sigbus": len(self.sigbus_log),
            "violations": list(self.violations),
        }
        if self._has_snapshot:
            # the plugins get what kmock.snapshot.capture gives them (one contract); here
            # their keys land at the top of this summary, next to the core's
            section = ArchSection({id(vm): i for i, vm in enumerate(vms.values())},
                                  {id(i): n for n, i in enumerate(gmems.values())})
            self.pm.hook.kmock_snapshot(kernel=self, snapshot=section)
            snap.update(section)
        return snap

    # --- teardown --------------------------------------------------------------------------

    def close_all(self):
        """Close every mapping and fd this kernel handed out, and its own descriptors."""
        self.faults.clear()  # an armed copy_to_user rule is process-wide (kmock.faults)
        for pin in list(self._pins):
            pin.unpin()
        for m in list(self.mappings):
            m.close()
        first = None  # a release that raised (a plugin's bug): the rest still close
        for fd in self.fdtable.fds():
            try:
                self.close(fd)
            except OSError:
                pass  # closed by another thread meanwhile
            except Exception as e:
                first = first or e
        if self._host is not None:
            self._host.close_all()
        self.gmem_backing.close()
        if self.trace is not None:
            self.trace.flush()
        if first is not None:
            raise first

    def __del__(self):
        """Garbage (dropped without close_all): give the OS its descriptors back, and no
        more. The collector may run this inside any lock this thread holds, so no file
        release, plugin callback or lock here."""
        try:
            if self._closed:
                return
            self._closed = True
            while self.faults in USERCOPY:  # an armed copy_to_user rule is process-wide
                USERCOPY.remove(self.faults)
            for fd in self.fdtable.fds():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.fdtable.close()
            os.close(self.sigbus_memfd)
            self.gmem_backing.close()
            self.gmem_backing.close_outstanding()
            if self._host is not None:
                self._host.close_all()
        except Exception:
            pass


def _check_anon_mmap_args(fd, length, prot, flags, offset):
    """The arguments of an anonymous mmap as the kernel sees them, so the libc call never
    truncates one: TypeError for a non-int, OverflowError for an fd/prot/flags that is
    no C int; a length past size_t is ENOMEM (as check_mmap_args: PAGE_ALIGN wraps);
    returns the offset as the kernel's unsigned long, passed as an off_t."""
    for name, v in (("fd", fd), ("length", length), ("prot", prot), ("flags", flags),
                    ("offset", offset)):
        if not isinstance(v, int):
            raise TypeError(f"mmap {name} must be an integer, not {type(v).__name__}")
    if not all(-(1 << 31) <= v < (1 << 31) for v in (fd, prot, flags)):
        raise OverflowError("mmap fd, prot or flags out of range for a C int")
    if not -(1 << 63) <= length < (1 << 64):
        raise oserror(errno.ENOMEM)
    offset &= (1 << 64) - 1
    return offset - (1 << 64) if offset >> 63 else offset


def _checked_setting(name, value, annotation):
    """A Profile field given as a Kernel keyword, checked against its annotation:
    KmockUsageError naming the setting for a value of the wrong type."""
    import collections.abc as abc
    import types

    allowed = annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)
    for t in allowed:
        if t is type(None) and value is None:
            return value
        if t is bool and (type(value) is bool or (type(value) is int and value in (0, 1))):
            return bool(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is str and isinstance(value, str):
            return value
        if t is MappingProxyType and isinstance(value, abc.Mapping):
            return MappingProxyType(dict(value))
        if t is frozenset and isinstance(value, (set, frozenset, list, tuple)):
            return frozenset(value)
        if t is tuple and isinstance(value, (tuple, list)):
            return tuple(value)
    names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
    raise KmockUsageError(f"Kernel() setting {name} must be {names}, not "
                          f"{type(value).__name__} {value!r}")


class _Pin:
    """A gup pin on pages of a mapping (see Kernel.gup_pin)."""

    def __init__(self, kernel, mapping, offset, length, longterm):
        self.kernel = kernel
        self.mapping = mapping
        self.offset = offset
        self.length = length
        self.longterm = longterm
        self.pages = mapping.gup(offset, offset + length)

    def unpin(self):
        if self.pages is not None:
            self.mapping.unpin_pages(self.pages)
            self.pages = None
            self.kernel._pins.discard(self)


__all__ = ["Kernel", "File"]
