"""The syscall trace: every call a VMM made, as JSON lines, for reading and replay.

``kmock.Kernel(trace="run.jsonl")`` and ``kmock.HostKernel(trace="run.jsonl")`` write
one JSON object per line (format ``VERSION``)::

    {"kmock_trace": 1, "kernel": "mock" | "host", "profile": "linux-6.18"}   # header
    {"i": 0, "call": "open", "args": ["/dev/kvm", 524290, 511], "result": 3}
    {"i": 1, "call": "ioctl", "fd": 3, "request": "KVM_CREATE_VM", "nr": 44545,
     "arg": {"int": 0}, "result": 4, "fd_result": true}
    {"i": 5, "call": "ioctl", "fd": 4, "request": "KVM_SET_USER_MEMORY_REGION2", ...,
     "arg": {"struct": "kvm_userspace_memory_region2", "raw": "<hex>",
             "fields": {"slot": 0, "flags": 4, ...}},
     "errno": 22, "errname": "EINVAL"}
    {"i": 9, "call": "ioctl", "request": "KVM_RUN", ..., "result": 0,
     "exit": {"reason": 5, "name": "KVM_EXIT_HLT"}}
    {"i": 7, "call": "mmap", "args": [6, 4096, 3, 1, 0], "result": {"mapping": <address>,
     "length": 4096}}

An ioctl's struct (a ctypes structure, a buffer, or a user address to read
``_IOC_SIZE`` bytes from) is decoded by the UAPI mirror (kmock.uapi): ``raw`` is the
bytes before the call, ``fields`` their decoding, ``out`` the bytes after a call
that writes back. A failed call has ``errno`` instead of ``result``. KVM_RUN gets
the exit reason read from the vCPU's kvm_run mapping (when the VMM mapped it).

On the mock the trace is a ``kmock_syscall`` wrapper registered only when asked for,
so a Kernel without ``trace=`` takes no extra step; on HostKernel the instance's
methods are wrapped only when asked for. Replay: kmock.replay.
"""

import ctypes
import errno as _errno
import json
import os

from . import _libc
from .hookspecs import hookimpl
from .uapi import arm64, cca, gmem, iommufd, kvm, sev, tdx, vfio
from .uapi.ioctl import _IOC_DIR, _IOC_SIZE, _IOC_TYPE

VERSION = 1
_UAPI = (kvm, gmem, iommufd, vfio)
#: the architectures' UAPI (kmock.uapi.<arch>): their names and structs are used for
#: requests the generic modules above do not know
_ARCH_UAPI = (tdx, sev, arm64, cca)
#: ioctl types: KVMIO, IOMMUFD_TYPE / VFIO_TYPE (';'), SEV_IOC_TYPE ('S')
_IOC_TYPES = (0xAE, 0x3B, 0x53)
_NAMES = None
_STRUCTS = None
_EXITS = None
#: ioctls whose non-negative result is a new fd
FD_IOCTLS = {"KVM_CREATE_VM", "KVM_CREATE_VCPU", "KVM_CREATE_GUEST_MEMFD", "KVM_CREATE_DEVICE"}
#: struct fields that hold a file descriptor (translated on replay)
FD_FIELDS = {
    "kvm_userspace_memory_region2": ("guest_memfd",),
    "iommu_ioas_map_file": ("fd",),
    "vfio_device_bind_iommufd": ("iommufd",),
    "kvm_irqfd": ("fd", "resamplefd"),
    "kvm_ioeventfd": ("fd",),
}
#: struct fields that hold a user address (translated on replay when inside a mapping)
HVA_FIELDS = {
    "kvm_userspace_memory_region": ("userspace_addr",),
    "kvm_userspace_memory_region2": ("userspace_addr",),
    "iommu_ioas_map": ("user_va",),
}


def ioctl_names():
    """request number -> UAPI name (built once)."""
    global _NAMES
    if _NAMES is None:
        names = {}
        for mod in _UAPI + _ARCH_UAPI:
            for n, v in vars(mod).items():
                if _is_request(n, v):
                    names.setdefault(v, n)
        for rev in cca.REVISIONS.values():  # the CCA series renumbered its ioctls
            for n, v in rev.items():
                if _is_request(n, v):
                    names.setdefault(v, n)
        _NAMES = names
    return _NAMES


def _is_request(name, value):
    return (name.isupper() and not name.startswith("_") and type(value) is int
            and _IOC_TYPE(value) in _IOC_TYPES and value > 0xFF)


#: words that say nothing about which struct an ioctl takes
_NOISE = {"kvm", "iommu", "vfio", "device", "get", "set", "has", "arm"}
#: ioctls whose struct is not found by name (Documentation/virt/kvm/api.rst)
_STRUCT_OF = {"KVM_ARM_PREFERRED_TARGET": "kvm_vcpu_init", "KVM_GET_SUPPORTED_CPUID": "kvm_cpuid2"}


def _tokens(name):
    return set(name.lower().split("_")) - _NOISE


def struct_for(request):
    """The ctypes struct of ``request`` in the UAPI mirror, or None.

    The struct whose name is the ioctl's name in lower case; otherwise, among the
    structs of the ioctl's _IOC_SIZE, the one sharing most name words with it
    (iommufd ioctls are _IO: their struct is found by name alone)."""
    global _STRUCTS
    if _STRUCTS is None:
        table = {}
        # the generic modules first: an architecture's struct never displaces theirs
        for mods in (_UAPI, _UAPI + _ARCH_UAPI):
            structs = {}
            for mod in mods:
                for n, v in vars(mod).items():
                    if isinstance(v, type) and issubclass(v, ctypes.Structure) and \
                            not n.startswith("_"):
                        structs.setdefault(n, v)
            for nr, name in ioctl_names().items():
                if nr not in table:
                    t = _struct_named(name, _IOC_SIZE(nr), structs)
                    if t is not None:
                        table[nr] = t
        _STRUCTS = table
    return _STRUCTS.get(request)


def _struct_named(name, size, structs):
    t = structs.get(_STRUCT_OF.get(name, name.lower()))
    if t is None or (size and ctypes.sizeof(t) != size):
        best = [(len(_tokens(name) & _tokens(sn)), sn) for sn, st in structs.items()
                if size and ctypes.sizeof(st) == size]
        best = [b for b in best if b[0] > 0]
        t = structs[max(best)[1]] if best else None
    return t


def exit_names():
    global _EXITS
    if _EXITS is None:
        _EXITS = {v: n for n, v in vars(kvm).items() if n.startswith("KVM_EXIT_") and
                  type(v) is int and "_IO_" not in n}
    return _EXITS


def decode(obj):
    """A ctypes value as plain data (structs -> dicts, arrays -> lists, unions -> hex)."""
    if isinstance(obj, ctypes.Structure):
        return {f[0]: decode(getattr(obj, f[0])) for f in obj._fields_ if not f[0].startswith("_")}
    if isinstance(obj, ctypes.Union):
        return bytes(obj).hex()
    if isinstance(obj, ctypes.Array):
        return [decode(x) for x in obj]
    return obj


def _arg_bytes(request, arg):
    """(struct type or None, bytes) of an ioctl argument, or None for a by-value int."""
    t = struct_for(request) if type(request) is int else None
    if isinstance(arg, (ctypes.Structure, ctypes.Union)):
        return type(arg), bytes(arg)
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return t, bytes(arg)
    if type(arg) is int and type(request) is int and _IOC_TYPE(request) in (0xAE, 0x3B):
        size = _IOC_SIZE(request) if _IOC_DIR(request) else 0
        if _IOC_TYPE(request) == 0x3B and t is not None:
            size = ctypes.sizeof(t)
        if t is None or size == 0 or arg < 4096:
            return None
        data, n = _libc.read_user(arg, size)
        return (t, data) if n == size else None
    return None


def encode_arg(request, arg):
    if type(arg) is int:
        got = _arg_bytes(request, arg)
        if got is None:
            return {"int": arg}
        t, raw = got
        return {"ptr": arg, "struct": t.__name__, "raw": raw.hex(), "fields": _fields(t, raw)}
    got = _arg_bytes(request, arg)
    if got is None:
        return {"repr": repr(arg)}
    t, raw = got
    out = {"raw": raw.hex()}
    if t is not None:
        out["struct"] = t.__name__
        out["fields"] = _fields(t, raw)
    if isinstance(arg, bytes):
        out["bytes"] = True
    return out


def _fields(t, raw):
    n = ctypes.sizeof(t)
    return decode(t.from_buffer_copy(raw[:n].ljust(n, b"\0")))


def _plain(v):
    if isinstance(v, (int, str, bool, float)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray)):
        return {"hex": bytes(v).hex()}
    if hasattr(v, "address") and hasattr(v, "__len__"):
        try:
            return {"mapping": v.address, "length": len(v)}
        except (ValueError, TypeError):
            return {"mapping": v.address}
    if isinstance(v, os.stat_result):
        return {"st_mode": v.st_mode, "st_size": v.st_size}
    return {"repr": repr(v)}


class Trace:
    """A JSON-lines trace writer; a ``kmock_syscall`` wrapper on the mock.

    ``dest``: a path (opened for writing) or a file object with ``write``.
    ``records`` keeps the last ``tail`` records as dicts (the snapshot's trace tail).
    """

    def __init__(self, dest, kernel_kind="mock", profile=None, tail=64):
        if isinstance(dest, (str, os.PathLike)):
            self._file = open(dest, "w")
            self._own = True
        elif hasattr(dest, "write"):
            self._file, self._own = dest, False
        else:
            raise ValueError("trace must be a path or a writable file")
        self.kind = kernel_kind
        self.profile = profile
        self.index = 0
        self.tail = tail
        self.records = []
        self._header = False
        self._vcpu_fds = set()
        self._runs = {}  # vCPU fd -> kvm_run address

    def _write(self, rec):
        if not self._header:
            self._header = True
            self._file.write(json.dumps({"kmock_trace": VERSION, "kernel": self.kind,
                                         "profile": self.profile}) + "\n")
        self._file.write(json.dumps(rec) + "\n")
        self.records.append(rec)
        if len(self.records) > self.tail:
            del self.records[0]

    def flush(self):
        try:
            self._file.flush()
        except ValueError:
            pass

    def close(self):
        self.flush()
        if self._own:
            self._file.close()

    # --- one call ------------------------------------------------------------------------

    def before(self, name, args):
        rec = {"i": self.index, "call": name}
        self.index += 1
        if name == "ioctl":
            fd, req, arg = args[0], args[1], args[2] if len(args) > 2 else 0
            rec["fd"] = fd
            rec["request"] = ioctl_names().get(req, hex(req) if type(req) is int else repr(req))
            rec["nr"] = req
            rec["arg"] = encode_arg(req, arg)
        else:
            rec["args"] = [_plain(a) for a in args]
        return rec

    def after(self, rec, args, result=None, exc=None):
        if exc is not None:
            if isinstance(exc, OSError) and exc.errno is not None:
                rec["errno"] = exc.errno
                rec["errname"] = _errno.errorcode.get(exc.errno, str(exc.errno))
            else:
                rec["exception"] = f"{type(exc).__name__}: {exc}"
        else:
            rec["result"] = _plain(result)
        name = rec["call"]
        if name == "ioctl":
            req, arg = args[1], args[2] if len(args) > 2 else 0
            a = rec["arg"]
            if "raw" in a and _IOC_DIR(req) & 2 or _IOC_TYPE(req) == 0x3B:
                got = _arg_bytes(req, result if isinstance(arg, bytes) and exc is None else arg)
                if got is not None and got[1].hex() != a.get("raw"):
                    a["out"] = got[1].hex()
            if rec["request"] in FD_IOCTLS and exc is None:
                rec["fd_result"] = True
                if rec["request"] == "KVM_CREATE_VCPU":
                    self._vcpu_fds.add(result)
            if rec["request"] == "KVM_RUN":
                addr = self._runs.get(args[0])
                if addr is not None:
                    reason = kvm.kvm_run.from_address(addr).exit_reason
                    rec["exit"] = {"reason": reason, "name": exit_names().get(reason, str(reason))}
        elif name in ("open", "dup") and exc is None:
            rec["fd_result"] = True
        elif name == "mmap" and exc is None and args[0] in self._vcpu_fds:
            self._runs[args[0]] = result.address
        elif name == "close":
            self._vcpu_fds.discard(args[0])
            self._runs.pop(args[0], None)
        self._write(rec)

    def call(self, fn, name, args, kwargs=None):
        rec = self.before(name, args + tuple((kwargs or {}).values()))
        try:
            result = fn(*args, **(kwargs or {}))
        except BaseException as e:
            self.after(rec, args, exc=e)
            raise
        self.after(rec, args, result)
        return result

    @hookimpl(wrapper=True)
    def kmock_syscall(self, kernel, name, args):
        if self.profile is None:
            self.profile = kernel.profile.name
        rec = self.before(name, args)
        try:
            result = yield
        except BaseException as e:
            self.after(rec, args, exc=e)
            raise
        self.after(rec, args, result)
        return result


SYSCALLS = ("open", "close", "dup", "ioctl", "mmap", "fallocate", "read", "write", "pread",
            "pwrite", "lseek", "fstat", "ftruncate", "fchmod", "fsync")


def instrument(api, dest, kind="host", profile="host"):
    """Wrap the syscall methods of one object (a HostKernel) to write a trace to ``dest``."""
    t = Trace(dest, kernel_kind=kind, profile=profile)
    for name in SYSCALLS:
        fn = getattr(api, name)
        setattr(api, name, lambda *a, _fn=fn, _name=name, **kw: t.call(_fn, _name, a, kw))
    return t


def read(path):
    """(header, [records]) of a trace file."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or "kmock_trace" not in lines[0]:
        raise ValueError(f"{path}: not a kmock trace (no header line)")
    if lines[0]["kmock_trace"] != VERSION:
        raise ValueError(f"{path}: trace format {lines[0]['kmock_trace']}, this kmock reads "
                         f"{VERSION}")
    return lines[0], lines[1:]
