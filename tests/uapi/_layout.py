"""Helpers for the uapi reference tests: the reference's own ioctl formula and a ctypes
field walker. Nothing here is taken from kmock.uapi, so the tests compare code to the
reference and not code to itself."""

import ctypes


def ioc(dir, type, nr, size):
    """reference/kvm-guest-memfd-6.18.md section 1: (dir<<30) | (size<<16) | (type<<8) | nr."""
    return (dir << 30) | (size << 16) | (type << 8) | nr


def _field_type(cls, name):
    for entry in cls._fields_:
        if entry[0] == name:
            return entry[1]
    for anon in getattr(cls, "_anonymous_", ()):
        sub = _field_type(cls, anon)
        try:
            return _field_type(sub, name)
        except KeyError:
            pass
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def field(cls, path):
    """(offset, size) of a dotted field path ("exit.hypercall.ret") inside ``cls``."""
    off = 0
    t = cls
    for name in path.split("."):
        off += getattr(t, name).offset
        t = _field_type(t, name)
    return off, ctypes.sizeof(t)


def field_names(cls):
    return tuple(entry[0] for entry in cls._fields_)
