"""Replay a syscall trace (kmock.trace) on a fresh mock and find the first divergence.

``replay(path, profile="host")`` re-executes every recorded call on a new
``kmock.Kernel(profile)``: recorded fds are mapped to the replay's fds (results of
open, dup, the fd-creating ioctls, and the fd fields of structs such as
``kvm_userspace_memory_region2.guest_memfd``), user addresses inside a recorded
mmap are moved to the replay's mapping, and struct arguments are rebuilt from
their recorded bytes. Each call's outcome (result or errno, and the exit reason
of KVM_RUN) is compared with the record; the first difference is returned as a
``Divergence(index, call, expected, got)``, or None when the whole trace agrees.

A trace recorded on HostKernel replays against the ``host`` profile (probed from
the real /dev/kvm) by default; this is how a failure seen on real hardware becomes
a mock test.
"""

import ctypes
import errno as _errno
from dataclasses import dataclass

from . import trace as tr

_STRUCT_TYPES = None


@dataclass
class Divergence:
    index: int
    call: str
    expected: str
    got: str

    def __str__(self):
        return (f"first divergence at call {self.index}: {self.call}\n"
                f"  expected: {self.expected}\n  got:      {self.got}")


def _struct_type(name):
    global _STRUCT_TYPES
    if _STRUCT_TYPES is None:
        _STRUCT_TYPES = {}
        for mod in tr._UAPI:
            for n, v in vars(mod).items():
                if isinstance(v, type) and issubclass(v, ctypes.Structure):
                    _STRUCT_TYPES.setdefault(n, v)
    return _STRUCT_TYPES.get(name)


def outcome(rec):
    """The comparable outcome of a record: ("ok", value) or ("errno", name)."""
    if "errno" in rec:
        return ("errno", rec.get("errname") or str(rec["errno"]))
    if "exception" in rec:
        return ("exception", rec["exception"].split(":")[0])
    res = rec.get("result")
    if rec.get("fd_result"):
        return ("ok", "<fd>")
    if isinstance(res, dict):
        if "mapping" in res:
            return ("ok", f"<mapping of {res.get('length')} bytes>")
        if "st_mode" in res:
            return ("ok", f"<stat mode {res['st_mode']:o} size {res['st_size']}>")
        return ("ok", res.get("hex", "<value>"))
    out = ("ok", res)
    if "exit" in rec:
        out = ("ok", res, rec["exit"]["name"])
    return out


def describe(rec):
    if rec["call"] == "ioctl":
        a = rec["arg"]
        arg = a.get("struct") or a.get("int", "")
        return f"ioctl(fd {rec['fd']}, {rec['request']}, {arg})"
    return f"{rec['call']}({', '.join(map(str, rec.get('args', [])))})"


def _show(o):
    if o[0] == "errno":
        return f"error {o[1]}"
    return " ".join(str(x) for x in o[1:]) if len(o) > 2 else f"returns {o[1]}"


class Replayer:
    def __init__(self, kernel):
        self.k = kernel
        self.fds = {}
        self.maps = []  # (recorded address, length, replay mapping)

    def fd(self, v):
        return self.fds.get(v, v)

    def hva(self, v):
        for addr, length, m in self.maps:
            if addr <= v < addr + length:
                return m.address + (v - addr)
        return v

    def arg(self, a):
        if "int" in a:
            return a["int"]
        if "raw" not in a:
            raise ValueError(f"cannot rebuild argument {a}")
        raw = bytes.fromhex(a["raw"])
        t = _struct_type(a.get("struct", ""))
        if t is None or len(raw) < ctypes.sizeof(t):
            return raw if a.get("bytes") else bytearray(raw)
        s = t.from_buffer_copy(raw[:ctypes.sizeof(t)])
        for f in tr.FD_FIELDS.get(t.__name__, ()):
            setattr(s, f, self.fd(getattr(s, f)))
        for f in tr.HVA_FIELDS.get(t.__name__, ()):
            setattr(s, f, self.hva(getattr(s, f)))
        if len(raw) > ctypes.sizeof(t):  # a variable-length tail
            buf = bytearray(bytes(s) + raw[ctypes.sizeof(t):])
            return bytes(buf) if a.get("bytes") else buf
        return s

    def run(self, rec):
        """Execute one record; returns (outcome, raw result)."""
        name = rec["call"]
        k = self.k
        try:
            if name == "ioctl":
                res = k.ioctl(self.fd(rec["fd"]), rec["nr"], self.arg(rec["arg"]))
            else:
                args = list(rec.get("args", []))
                if name != "open" and args:
                    args[0] = self.fd(args[0])
                args = [bytes.fromhex(a["hex"]) if isinstance(a, dict) and "hex" in a else a
                        for a in args]
                res = getattr(k, name)(*args)
        except OSError as e:
            return ("errno", _errno.errorcode.get(e.errno, str(e.errno))), None
        except Exception as e:  # a replay must never crash: report it
            return ("exception", type(e).__name__), None
        rec2 = {"call": name, "result": tr._plain(res)}
        if rec.get("fd_result"):
            rec2["fd_result"] = True
        got = outcome(rec2)
        if "exit" in rec and name == "ioctl":
            got = ("ok", res, self._exit(rec["fd"]))
        return got, res

    def _exit(self, fd):
        f = self.k.fdtable.get(self.fd(fd))
        vcpu = getattr(f, "vcpu", None)
        run = getattr(vcpu, "run", None)
        reason = getattr(run, "exit_reason", None)
        return tr.exit_names().get(reason, str(reason))

    def learn(self, rec, res):
        """Map the record's new fds / mappings to the replay's."""
        r = rec.get("result")
        if rec.get("fd_result") and isinstance(r, int) and isinstance(res, int):
            self.fds[r] = res
        if rec["call"] == "mmap" and isinstance(r, dict) and "mapping" in r and res is not None:
            self.maps.append((r["mapping"], r.get("length", len(res)), res))
        if rec["call"] == "close":
            self.fds.pop(rec["args"][0], None)


def replay(path, profile=None, kernel=None, on_call=None):
    """Replay the trace at ``path``; returns (number of calls replayed, Divergence or None).

    ``profile``: the mock's profile (default: "host" for a host trace, else the
    trace's own). ``kernel``: replay on this Kernel instead of a new one.
    ``on_call(i, total)`` is called after each call (progress)."""
    header, records = tr.read(path)
    if profile is None:
        profile = "host" if header.get("kernel") == "host" else header.get("profile") or "linux-6.18"
    own = kernel is None
    if own:
        from .kernel import Kernel

        kernel = Kernel(profile)
    rp = Replayer(kernel)
    try:
        for n, rec in enumerate(records):
            expected = outcome(rec)
            got, res = rp.run(rec)
            if got != expected:
                return n, Divergence(rec.get("i", n), describe(rec), _show(expected), _show(got))
            rp.learn(rec, res)
            if on_call is not None:
                on_call(n + 1, len(records))
        return len(records), None
    finally:
        if own:
            kernel.close_all()


__all__ = ["replay", "Divergence", "outcome"]
