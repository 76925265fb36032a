"""What the pytest plugin adds to a failing test's report, and the ``--kmock-dump`` file."""

import json
import os
import re

from .. import snapshot

_IOCTL_NAMES = None


def ioctl_names():
    """ioctl number -> name, from the UAPI mirror (built once, for reports only)."""
    global _IOCTL_NAMES
    if _IOCTL_NAMES is None:
        from ..uapi import gmem, iommufd, kvm, vfio

        names = {}
        for mod in (kvm, gmem, iommufd, vfio):
            for n, v in vars(mod).items():
                if n.isupper() and type(v) is int and (v >> 8) & 0xFF in (0xAE, 0x3B):
                    names.setdefault(v, n)
        _IOCTL_NAMES = names
    return _IOCTL_NAMES


def trace_tail(patcher):
    """The patcher's last calls as (name, args, None) triples, ioctls named (the patcher
    records calls, not results: the result slot is for the kernel trace of issue 13)."""
    if patcher is None:
        return []
    names = ioctl_names()
    out = []
    for t in patcher.trace:
        name, args = t[0], list(t[1:])
        if name == "ioctl" and len(args) > 1:
            args[1] = names.get(args[1], hex(args[1]))
        out.append((name, [a if isinstance(a, (int, str)) else repr(a) for a in args], None))
    return out


def capture(kernel, patcher=None):
    return snapshot.capture(kernel, trace=trace_tail(patcher))


def section(kernel, patcher=None):
    """The text of the report section: the snapshot rendered, plus patcher findings."""
    snap = capture(kernel, patcher)
    text = snapshot.format_text(snap)
    if patcher is not None and patcher.stale_fds:
        text += "\nfds closed behind kmock's back:\n" + "\n".join(
            f"  fd {fd}: {why}" for fd, why in patcher.stale_fds)
    return snap, text


def dump(snap, directory, nodeid):
    """Write ``snap`` as JSON under ``directory``; returns the path."""
    os.makedirs(directory, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200] or "test"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    path = os.path.join(directory, f"{name}.kmock.json" if not worker else
                        f"{name}.{worker}.kmock.json")
    with open(path, "w") as f:
        json.dump(snap, f, indent=1, sort_keys=True)
    return path
