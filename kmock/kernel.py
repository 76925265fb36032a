"""Kernel: the mock kernel's fd table and syscall entry points.

``Kernel(profile="linux-6.18")`` owns the plugin manager, the active profile, the
fd table, the mappings it handed out, and the logs of what would have been
signals. Its methods have the signatures and errors of the os/fcntl/mmap
functions of the same name (see kmock.syscall_api).

The flow of one ioctl: look the fd up, take the open file's dispatch table (built
once from the core handlers and the plugins' ``kmock_ioctls`` tables), call the
handler. No hook chain is walked per call; the ``kmock_syscall`` wrapper hook is
only taken when some plugin implements it.
"""

import errno
import fcntl
import os
from ctypes import Structure as _Structure

import pluggy

from . import hookspecs, profiles
from ._libc import check_fallocate_args
from .errors import oserror
from .file import File
from .kvm import conversion
from .kvm.device import KvmDevice, dev_ioctls
from .kvm.guest_memfd import BackingPool
from .kvm.vcpu import vcpu_ioctls
from .kvm.vm import vm_ioctls
from .kvm.vmtype import DefaultVm
from .iommufd.kernel_side import IommufdSupport
from .syscall_api import SyscallAPI

EBADF = errno.EBADF
U32 = 0xFFFFFFFF
#: fcntl.ioctl copies an immutable buffer argument into a buffer of this size
IOCTL_BUFSZ = 1024


class _Builtin:
    """The core's own plugin: the default VM type and the generic ioctl tables."""

    @hookspecs.hookimpl(tryfirst=True)
    def kmock_vm_types(self, kernel):
        return [DefaultVm()]

    @hookspecs.hookimpl(tryfirst=True)
    def kmock_ioctls(self, kernel, file_type):
        from .iommufd.iommufd import iommufd_ioctls
        from .iommufd.vfio import vfio_ioctls

        return {"kvm": dev_ioctls, "vm": vm_ioctls, "vcpu": vcpu_ioctls,
                "iommufd": iommufd_ioctls, "vfio": vfio_ioctls}.get(file_type, lambda k: {})(kernel)


def plugin_manager(plugins=None):
    """A ``kmock`` PluginManager with the core, and ``plugins`` or the entry points."""
    pm = pluggy.PluginManager("kmock")
    pm.add_hookspecs(hookspecs)
    pm.register(_Builtin(), name="kmock.core")
    if plugins is None:
        pm.load_setuptools_entrypoints("kmock.plugins")
    else:
        for p in plugins:
            pm.register(p)
    return pm


class Kernel(IommufdSupport, SyscallAPI):
    """A mock Linux kernel: KVM and guest_memfd as ``profile`` behaves.

    ``plugins``: None registers every plugin of the ``kmock.plugins`` entry-point
    group (as installed); a list registers exactly those plugin objects/modules.
    Keyword ``settings`` override fields of the profile, e.g.
    ``Kernel("gmem-attributes-v8", iommufd_gmem_policy="notifier")``.
    """

    FILE_TYPES = ("kvm", "vm", "vcpu", "gmem", "iommufd", "vfio")

    def __init__(self, profile="linux-6.18", plugins=None, **settings):
        self.profile = profiles.get(profile)
        if settings:
            import dataclasses

            self.profile = dataclasses.replace(self.profile, **settings)
        self.pm = plugin_manager(plugins)
        self._fds = {}
        self._host = None
        self._mappings = set()
        self._pins = set()
        #: (mapping, offset) of every host access that got SIGBUS
        self.sigbus_log = []
        #: hardware consequences recorded instead of crashing anything
        self.violations = []
        self._placeholder = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self._sigbus_memfd = os.memfd_create("kmock-sigbus", os.MFD_CLOEXEC)  # size 0
        self._gmem_pool = BackingPool()
        self._init_iommufd()
        self._next_pfn = 1 << 18  # pseudo frames handed to guest_memfd inodes (1G-aligned)
        self._build_tables()

    # --- tables built once from the plugins -------------------------------------------

    def _build_tables(self):
        hook = self.pm.hook
        declared = {}
        for types in reversed(hook.kmock_vm_types(kernel=self)):
            for t in types or ():
                declared[t.type] = t
        offered = self.profile.vm_types
        #: KVM_CREATE_VM type number -> VmType, for the types this platform offers
        self.vm_types = {n: t for n, t in declared.items() if offered is None or n in offered}
        self._tables = {}
        for ft in self.FILE_TYPES:
            table = {}
            for part in reversed(hook.kmock_ioctls(kernel=self, file_type=ft)):
                table.update(part or {})
            self._tables[ft] = table
        self.gmem_model = conversion.model_for(self.profile)
        self._tables["gmem"].update(self.gmem_model.gmem_ioctls(self.profile))
        self.caps = self._system_caps()
        self._vm_caps = {}
        self._traced = bool(hook.kmock_syscall.get_hookimpls())
        self._has = {name: bool(getattr(hook, name).get_hookimpls()) for name in (
            "kmock_vm_init", "kmock_gmem_create", "kmock_gmem_invalidate", "kmock_snapshot",
            "kmock_gmem_convert_veto", "kmock_gmem_make_shared", "kmock_gmem_make_private")}

    def ioctl_table(self, file_type):
        return self._tables.get(file_type, {})

    def _system_caps(self):
        from .uapi import kvm as K

        p = self.profile
        caps = {
            K.KVM_CAP_VM_TYPES: sum(1 << t for t in self.vm_types if t < 32),
            K.KVM_CAP_MEMORY_ATTRIBUTES: K.KVM_MEMORY_ATTRIBUTE_PRIVATE if p.memory_attributes else 0,
            K.KVM_CAP_PRE_FAULT_MEMORY: int(p.tdp),
            K.KVM_CAP_GUEST_MEMFD_FLAGS: K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED,
        }
        caps.update(p.caps)
        caps.update(self.gmem_model.system_caps(p))
        return {c: v for c, v in caps.items() if v}

    def vm_caps(self, vmtype):
        """VM-level KVM_CHECK_EXTENSION values for a VM of ``vmtype`` (cached per type)."""
        caps = self._vm_caps.get(vmtype.type)
        if caps is None:
            from .uapi import kvm as K

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

    # --- hooks called once per operation (only when implemented) --------------------------

    def _hook_vm_init(self, vm):
        if self._has["kmock_vm_init"]:
            self.pm.hook.kmock_vm_init(kernel=self, vm=vm)

    def _hook_gmem_create(self, vm, size, flags):
        if self._has["kmock_gmem_create"]:
            self.pm.hook.kmock_gmem_create(kernel=self, vm=vm, size=size, flags=flags)

    def _hook_invalidate(self, inode, start, end, reason):
        if self._has["kmock_gmem_invalidate"]:
            self.pm.hook.kmock_gmem_invalidate(kernel=self, gmem=inode, start=start, end=end,
                                               reason=reason)

    def _alloc_pfn_range(self, npages):
        """A range of pseudo frame numbers for a guest_memfd of ``npages`` pages."""
        base = self._next_pfn
        self._next_pfn += (npages + (1 << 18) - 1) & ~((1 << 18) - 1)
        return base

    def _hook_convert_veto(self, inode, start, end, to_private):
        if self._has["kmock_gmem_convert_veto"]:
            return self.pm.hook.kmock_gmem_convert_veto(kernel=self, gmem=inode, start=start,
                                                        end=end, to_private=to_private)
        return None

    def _hook_make_shared(self, inode, start, end):
        if self._has["kmock_gmem_make_shared"]:
            for s, e, v in inode.allocated.ranges(start, end):
                if v:
                    self.pm.hook.kmock_gmem_make_shared(kernel=self, gmem=inode, start=s, end=e)

    # --- the fd table -----------------------------------------------------------------------

    def _install(self, file, cloexec=None):
        """Give ``file`` a new real, unique fd and return it."""
        if cloexec is None:
            cloexec = file.cloexec
        cmd = fcntl.F_DUPFD_CLOEXEC if cloexec else fcntl.F_DUPFD
        fd = fcntl.fcntl(file.placeholder_fd(), cmd, 0)
        self._fds[fd] = file
        file.get()
        return fd

    def _file(self, fd):
        try:
            return self._fds[fd]
        except (KeyError, TypeError):
            if not isinstance(fd, int):
                raise TypeError("an integer file descriptor is required") from None
            raise oserror(EBADF) from None

    @staticmethod
    def _is_open_fd(fd):
        """Is ``fd`` (a u32 from a struct) an open descriptor of this process at all?"""
        if fd > 0x7FFFFFFF:
            return False
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True

    def owns_fd(self, fd):
        """Whether ``fd`` is a descriptor of a file kmock emulates (/dev/kvm, VM, vCPU,
        guest_memfd, iommufd, VFIO), as opposed to a real file it passed through."""
        return fd in self._fds

    def file(self, fd):
        """The open file object behind a kmock fd (for inspection in tests)."""
        return self._file(fd)

    def vm(self, vm_fd):
        """The VM object behind a VM fd."""
        f = self._file(vm_fd)
        if getattr(f, "file_type", None) != "vm":
            raise ValueError(f"fd {vm_fd} is not a VM fd")
        return f.vm

    # --- syscalls ---------------------------------------------------------------------------

    def open(self, path, flags, mode=0o777):
        if self._traced:
            return self._call_traced("open", (path, flags, mode))
        return self._open(path, flags, mode)

    def _open(self, path, flags, mode):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path != "/dev/kvm":
            f = self._open_iommu_path(path)
            if f is not None:
                return self._install(f, cloexec=bool(flags & os.O_CLOEXEC))
            # Not a device kmock emulates: the real OS serves it (as umockdev passes
            # host devices through), so a VMM may open /dev/null or a file as usual.
            return self.host.open(path, flags, mode)
        return self._install(KvmDevice(self), cloexec=bool(flags & os.O_CLOEXEC))

    def memfd_create(self, name, flags=0):
        """os.memfd_create through kmock: a real memfd whose truncation kmock sees, so
        pages pinned by an IOMMU MAP_FILE keep their bytes after a truncate (as a
        FOLL_PIN'd folio outlives it)."""
        fd = os.memfd_create(name, flags)
        self.host._fds.add(fd)
        return fd

    @property
    def host(self):
        """The HostKernel that serves the fds of files kmock does not emulate."""
        if self._host is None:
            from .host import HostKernel

            self._host = HostKernel()
        return self._host

    def _host_fd(self, fd):
        return self._host is not None and fd in self._host._fds

    def close(self, fd):
        if self._traced:
            return self._call_traced("close", (fd,))
        if self._host_fd(fd):
            return self._host.close(fd)
        f = self._file(fd)
        del self._fds[fd]
        os.close(fd)
        f.put()

    def dup(self, fd):
        if self._traced:
            return self._call_traced("dup", (fd,))
        if self._host_fd(fd):
            return self._host.dup(fd)
        f = self._file(fd)
        new = fcntl.fcntl(fd, fcntl.F_DUPFD, 0)  # dup(2) never sets FD_CLOEXEC
        self._fds[new] = f
        f.get()
        return new

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        if self._traced:
            return self._call_traced("ioctl", (fd, request, arg, mutate_flag))
        try:
            f = self._fds[fd]
        except (KeyError, TypeError):
            if self._host_fd(fd):
                return self._host.ioctl(fd, request, arg, mutate_flag)
            f = self._file(fd)
        h = f.ioctls.get(request)
        if h is None:
            request &= U32  # the kernel's cmd is an unsigned int
            h = f.ioctls.get(request)
            if h is None:  # (a bound method is a new object at each access: no `is` test)
                return self._ioctl_arg(lambda a: f.unknown_ioctl(request, a), arg, mutate_flag)
        if type(arg) is int or (mutate_flag and isinstance(arg, _Structure)):
            return h(f, arg)
        return self._ioctl_arg(lambda a: h(f, a), arg, mutate_flag)

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
        if self._traced:
            return self._call_traced("mmap", (fd, length, prot, flags, offset))
        if self._host_fd(fd):
            return self._host.mmap(fd, length, prot, flags, offset)
        return self._file(fd).mmap(length, prot, flags, offset)

    def fallocate(self, fd, mode, offset, length):
        if self._traced:
            return self._call_traced("fallocate", (fd, mode, offset, length))
        if self._host_fd(fd):
            if mode & 0x02 and self.iommu_memory.orphans is not None:  # FALLOC_FL_PUNCH_HOLE
                self.iommu_memory.before_truncate(fd, offset, offset + length)
            return self._host.fallocate(fd, mode, offset, length)
        f = self._file(fd)
        check_fallocate_args(fd, mode, offset, length)
        return f.fallocate(mode, offset, length)

    def read(self, fd, n):
        return self._simple("read", fd, n)

    def write(self, fd, data):
        return self._simple("write", fd, data)

    def pread(self, fd, n, offset):
        return self._simple("pread", fd, n, offset)

    def pwrite(self, fd, data, offset):
        return self._simple("pwrite", fd, data, offset)

    def lseek(self, fd, pos, how):
        return self._simple("lseek", fd, pos, how)

    def fstat(self, fd):
        return self._simple("fstat", fd)

    def ftruncate(self, fd, length):
        return self._simple("ftruncate", fd, length)

    def fchmod(self, fd, mode):
        return self._simple("fchmod", fd, mode)

    def fsync(self, fd):
        return self._simple("fsync", fd)

    def _simple(self, name, fd, *args):
        if self._traced:
            return self._call_traced(name, (fd, *args))
        if self._host_fd(fd):
            if name == "ftruncate":
                self.iommu_memory.before_truncate(fd, args[0], 1 << 63)
            return getattr(self._host, name)(fd, *args)
        return getattr(self._file(fd), name)(*args)

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
        self._traced = False
        try:
            result = getattr(self, "_" + name if name == "open" else name)(*args)
            exc = None
        except BaseException as e:
            result, exc = None, e
        finally:
            self._traced = True
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
        """
        if mapping.closed or offset < 0 or length <= 0 or offset + length > len(mapping):
            raise oserror(errno.EINVAL)
        if mapping._fault(offset, offset + length) is not None:
            raise oserror(errno.EFAULT)
        mapping._touch(offset, offset + length, False)
        pin = _Pin(self, mapping, offset, length, longterm)
        self._pins.add(pin)
        return pin

    def memory_failure(self, gmem_fd, offset):
        """Inject a memory failure into the guest_memfd page at ``offset``.

        Later guest use of the page fails with EHWPOISON (KVM_RUN), host use with SIGBUS.
        """
        f = self._file(gmem_fd)
        if f.file_type != "gmem" or not 0 <= offset < f.inode.size:
            raise oserror(errno.EINVAL)
        f.inode.memory_failure(offset >> 12)

    def snapshot(self):
        """The mock's state as plain data: guest_memfds, VMs and what was recorded."""
        files = {id(f): f for f in self._fds.values()}
        gmems = [f for f in files.values() if f.file_type == "gmem"]
        vms = {id(f.vm): f.vm for f in files.values() if hasattr(f, "vm")}
        snap = {
            "profile": self.profile.name,
            "guest_memfds": [f.inode.snapshot() for f in gmems],
            "vms": [vm.snapshot() for vm in vms.values()],
            "iommufd": [f.snapshot() for f in files.values() if f.file_type == "iommufd"],
            "orphaned_pinned_pages": len(self.iommu_memory.orphans),
            "dma_faults": len(self.dma_faults),
            "sigbus": len(self.sigbus_log),
            "violations": list(self.violations),
        }
        if self._has["kmock_snapshot"]:
            self.pm.hook.kmock_snapshot(kernel=self, snapshot=snap)
        return snap

    # --- teardown --------------------------------------------------------------------------

    def close_all(self):
        """Close every mapping and fd this kernel handed out, and its own descriptors."""
        for pin in list(self._pins):
            pin.unpin()
        for m in list(self._mappings):
            m.close()
        for fd in list(self._fds):
            self.close(fd)
        if self._host is not None:
            self._host.close_all()
        if self._placeholder >= 0:
            self._gmem_pool.close()

    def __del__(self):
        try:
            self.close_all()
            if self._placeholder >= 0:
                os.close(self._placeholder)
                os.close(self._sigbus_memfd)
                self._placeholder = -1
        except Exception:
            pass


class _Pin:
    """A gup pin on pages of a mapping (see Kernel.gup_pin)."""

    def __init__(self, kernel, mapping, offset, length, longterm):
        self.kernel = kernel
        self.mapping = mapping
        self.offset = offset
        self.length = length
        self.longterm = longterm
        self.pages = mapping.pin_pages(offset, offset + length, +1)

    def unpin(self):
        if self.pages is not None:
            self.mapping.unpin_pages(self.pages)
            self.pages = None
            self.kernel._pins.discard(self)


__all__ = ["Kernel", "File", "plugin_manager"]
