"""The native tier: a native VMM runs unmodified against kmock.

``serve(kernel)`` starts a server for ``kernel`` in this process (a thread);
``server.env()`` is what a child process needs (LD_PRELOAD, KMOCK_SOCKET).
``run(argv, kernel)`` runs a program under it and returns a RunResult.
See docs/preload.md.
"""

import os
import subprocess
import tempfile

from .server import SPIN_US, Server, spin_ns

__all__ = ["RunResult", "Server", "dump_live", "run", "serve", "subprocess_env"]


def serve(kernel, path=None, trace=None, keep_files=False, files=None, spin_us=SPIN_US):
    """Start serving ``kernel`` at Unix socket ``path`` (a fresh temporary path by default).
    ``files``: path -> bytes served as file contents instead of server.default_files.
    ``spin_us``: how long each side of a connection spins for the other (Server)."""
    spin_ns(spin_us)  # (checked before anything is made)
    if path is None:
        d = tempfile.mkdtemp(prefix="kmock-")
        path = os.path.join(d, "socket")
    return Server(kernel, path, trace=trace, keep_files=keep_files, files=files,
                  spin_us=spin_us).start()


def dump_live(path, timeout=10.0):
    """The snapshot of the Kernel a running ``kmock serve`` at socket ``path`` serves
    (``kmock dump --live``). OSError when nothing listens there."""
    import json
    import socket

    from . import protocol as P

    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.send(P.REQ.pack(P.DUMP, -1, 0, 0, 0, 0, 0, 0))
        msg = s.recv(P.REP.size + P.MAXDUMP)
    _, err, _, n, _, _, _ = P.REP.unpack_from(msg)
    if err:
        raise OSError(err, os.strerror(err))
    return json.loads(msg[P.REP.size:P.REP.size + n])


_servers = {}


def subprocess_env(kernel, base=None):
    """os.environ (or ``base``) plus what a child needs to reach ``kernel``: pass it as
    ``env=`` to subprocess. One server per kernel is started on first use."""
    srv = _servers.get(id(kernel))
    if srv is None or srv.kernel is not kernel:
        srv = _servers[id(kernel)] = serve(kernel)
    env = dict(os.environ if base is None else base)
    env.update(srv.env())
    return env


class RunResult:
    """What ``run`` returns: the process's ``returncode``, ``stdout``/``stderr`` (when
    captured), the ``kernel`` it ran against, ``snapshot`` (the mock's state when the
    program's last connection closed, or now) and the ``server``."""

    def __init__(self, proc, kernel, server):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.kernel = kernel
        self.server = server
        snaps = server.exit_snapshots
        self.snapshot = snaps.get(proc_pid(proc)) or (list(snaps.values())[-1] if snaps
                                                      else kernel.snapshot())

    @property
    def violations(self):
        return list(self.kernel.violations)

    def __repr__(self):
        return f"<RunResult returncode={self.returncode} violations={len(self.violations)}>"


def proc_pid(proc):
    return getattr(proc, "pid", None)


class _Done:
    def __init__(self, pid, rc, out, err):
        self.pid, self.returncode, self.stdout, self.stderr = pid, rc, out, err


def run(argv, kernel=None, profile="linux-6.18", capture=True, timeout=None, trace=None,
        env=None, files=None, spin_us=SPIN_US, **settings):
    """Run ``argv`` under the preload library against ``kernel`` (or a new Kernel of
    ``profile`` and ``settings``); returns a RunResult once it exited and its files
    were released. ``trace``: a text file the server logs every request to."""
    if kernel is None:
        from ..kernel import Kernel

        kernel = Kernel(profile, **settings)
    srv = serve(kernel, trace=trace, files=files, spin_us=spin_us)
    try:
        e = dict(os.environ if env is None else env)
        e.update(srv.env())
        p = subprocess.Popen(argv, env=e, stdout=subprocess.PIPE if capture else None,
                             stderr=subprocess.PIPE if capture else None,
                             text=True if capture else None)
        out, err = p.communicate(timeout=timeout)
        srv.wait_idle()
        return RunResult(_Done(p.pid, p.returncode, out, err), kernel, srv)
    finally:
        srv.stop()
