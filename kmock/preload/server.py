"""``kmock serve``: a Kernel served to native processes over a Unix socket.

The preload library (csrc_preload/kmock_preload.c) connects once per thread; one
server thread answers each connection (kmock.preload.protocol). A client process
is known by its pid (SO_PEERCRED gives the thread group id): its fd numbers map to
the server's own descriptors, its mappings are mirrored by server-side mappings,
and each syscall runs under ``kmock._libc.user_task(pid)`` so the mock's
copy_from_user/copy_to_user reach the client's memory (process_vm_readv/writev).

When the last connection of a process closes and the process is gone, the server
records ``exit_snapshots[pid]`` (Kernel.snapshot() at that moment) and closes the
process's files, as the kernel does at exit.
"""

import ctypes
import errno
import fcntl
import itertools
import json
import mmap
import os
import select
import socket
import struct
import threading
import time

from .. import _libc
from ..notifier import GmemNotifier
from . import protocol as P
from .argrules import rules_for

# the wire format's hot parts, bound once (a module global is a cached look-up when compiled,
# a method of a Struct a generic attribute look-up on every call)
REQ_SIZE = P.REQ.size
_unpack_request = P.REQ.unpack_from
_pack_reply = P.REP.pack
IOCTL = P.IOCTL
HELLO = P.HELLO
#: the requests whose fd need not be a kmock fd of the process
ANY_FD = frozenset((P.OPEN, P.BIND, P.DUP, P.MUNMAP, P.MADVISE))

PAGE_SHIFT = 12
MADV_REMOVE = 9
FALLOC_PUNCH_KEEP = 0x03
U32 = 0xFFFFFFFF
SPIN_US = P.SPIN_US
#: the guest_memfd invalidations after which a host mapping must fault, and those after
#: which it is re-synced with the page state (as kmock.kvm.gmem_mapping.GmemMapping)
ZAPPING = ("convert_private", "memory_failure")
SYNCING = ("convert_private", "convert_shared", "memory_failure")

_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long
SYS_pidfd_open = 434
SYS_pidfd_getfd = 438


def pidfd_getfd(pidfd, fd):
    """A copy of the client's descriptor ``fd`` (pidfd_getfd(2)); OSError otherwise."""
    r = _syscall(ctypes.c_long(SYS_pidfd_getfd), ctypes.c_int(pidfd), ctypes.c_int(fd),
                 ctypes.c_uint(0))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def default_files(kernel):
    """Module parameters of the mock kernel that VMMs and the KVM selftests read.

    ``force_emulation_prefix`` (arch/x86/kvm/x86.c, an int parameter, 0 by default) is read
    by the selftests' x86 library constructor (kvm_selftest_arch_init ->
    kvm_is_forced_emulation_enabled), which skips the test when the file is missing.
    """
    if kernel.profile.arch == "x86":
        return {"/sys/module/kvm/parameters/force_emulation_prefix": b"0\n"}
    return {}


class RemoteMapping(GmemNotifier):
    """The client's mapping of a guest_memfd: queues remap orders for the client when
    the page state changes (the same steps as GmemMapping, for another address space)."""

    def __init__(self, client, map_id, mapping):
        self.client = client
        self.id = map_id
        self.mapping = mapping
        self.inode = mapping.inode
        first = mapping.offset >> PAGE_SHIFT
        self.first = first
        self.end = min(first + ((len(mapping) + 4095) >> PAGE_SHIFT), self.inode.npages)

    def window(self, start, end):
        return max(self.first, start), min(self.end, end)

    def faulting_runs(self):
        lo, hi = self.window(0, self.end)
        if lo >= hi:
            return []
        return [(s - self.first, e - s) for s, e, f in self.inode.host_faulting_runs(lo, hi) if f]

    def invalidate_begin(self, event):
        if event.reason in ZAPPING:
            lo, hi = self.window(event.start, event.end)
            if lo < hi:
                self.client.order(self.id, lo - self.first, hi - lo, True)

    def invalidate_end(self, event):
        if event.reason in SYNCING and (event.failed or event.reason == "convert_shared"):
            lo, hi = self.window(event.start, event.end)
            if lo < hi:
                for s, e, f in self.inode.host_faulting_runs(lo, hi):
                    self.client.order(self.id, s - self.first, e - s, f)


class Client:
    """One client process: its fd numbers, mappings and pending remap orders."""

    def __init__(self, pid):
        self.pid = pid
        self.fds = {}  # client fd -> server fd
        self.maps = {}  # map id -> (FileMapping, RemoteMapping or None)
        self.pending = []
        #: the sequence number of the last remap order (the client applies them in order,
        #: whichever of its threads receives them)
        self.seq = 0
        self.lock = threading.Lock()
        self.conns = 0
        self.watched = False
        self.released = False
        #: a pidfd (pidfd_open(2), Linux 5.3), or -1: the exit watch then polls /proc
        self.pidfd = int(_syscall(ctypes.c_long(SYS_pidfd_open), ctypes.c_int(pid),
                                  ctypes.c_uint(0)))

    def order(self, map_id, page, npages, fault):
        with self.lock:
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            self.pending.append(P.OP.pack(map_id, page, npages, 1 if fault else 0, self.seq))

    def drain(self):
        if not self.pending:
            return b"", 0
        with self.lock:
            ops, self.pending = self.pending, []
        return b"".join(ops), len(ops)

    def exited(self):
        """Whether the process is gone, without waiting."""
        return not self.alive()

    def alive(self):
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in (b"Z", b"X")


def channel_type():
    """The compiled shared channel (kmock.preload._channel.Channel), or None: not built,
    or KMOCK_PURE_PYTHON=1; the server then answers OP_CHANNEL with ENOSYS and its
    clients stay on the socket."""
    from ..compiled import pure_requested

    if pure_requested():
        return None
    try:
        from ._channel import Channel
    except ImportError:
        return None
    return Channel


#: the longest spin a Server takes (one second: a longer one would only burn a CPU)
MAX_SPIN_US = 1_000_000


def spin_ns(spin_us):
    """``spin_us`` (microseconds, a real number in [0, MAX_SPIN_US]) in nanoseconds."""
    if isinstance(spin_us, bool) or not isinstance(spin_us, (int, float)):
        raise TypeError(f"spin_us must be a number of microseconds, not {type(spin_us).__name__}")
    if not 0 <= spin_us <= MAX_SPIN_US:  # (also refuses NaN)
        raise ValueError(f"spin_us must be between 0 and {MAX_SPIN_US} microseconds, not {spin_us!r}")
    return int(spin_us * 1000)


class Server:
    """Serve ``kernel`` at the Unix socket ``path``. ``trace``: a text file to log every
    request to. ``keep_files``: do not close a client's files at its exit (a test may
    then inspect the live objects). ``files``: path -> bytes served as read-only file
    contents (default: default_files(kernel)). ``spin_us``: how long each side of a
    connection's shared channel spins for the other before it sleeps (0: never spins; at
    most MAX_SPIN_US; TypeError or ValueError naming it otherwise)."""

    def __init__(self, kernel, path, trace=None, keep_files=False, files=None, spin_us=SPIN_US):
        self.kernel = kernel
        self.spin_ns = spin_ns(spin_us)
        self._channel = channel_type()
        #: how many connections switched to their shared channel
        self.channels = 0
        self.path = path
        self.trace = trace
        self.keep_files = keep_files
        self.rules = rules_for(kernel)
        self.clients = {}
        self.exit_snapshots = {}
        #: unexpected exceptions of handlers (a bug of the mock: the client got EIO)
        self.errors = []
        self._server_fds = set()
        self._map_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._trace_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._parents = {}  # pid -> the pid it was forked from (HELLO)
        self._live = 0
        self._idle = threading.Condition(self._lock)
        #: files served by content (module parameters a VMM or kvm_util reads): path -> bytes
        self.files = dict(default_files(kernel) if files is None else files)
        self._devices = "\0".join(sorted(set(kernel.devices) | set(self.files))).encode() + b"\0"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.listen(128)
        self._thread = None
        self._stopping = False
        self._installed = threading.local()
        self._watch_installs()
        self._handlers = {
            P.OPEN: self._open, P.CLOSE: self._close, P.DUP: self._dup, P.IOCTL: self._ioctl,
            P.BIND: self._bind, P.MMAP: self._mmap, P.MUNMAP: self._munmap,
            P.FALLOCATE: self._fallocate, P.READ: self._read, P.WRITE: self._write,
            P.LSEEK: self._lseek, P.FSTAT: self._fstat, P.FTRUNCATE: self._ftruncate,
            P.MADVISE: self._madvise,
        }

    # --- lifecycle ------------------------------------------------------------------------

    def start(self):
        """Accept connections in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="kmock-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True,
                             name="kmock-serve-conn").start()

    def stop(self):
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def wait_idle(self, timeout=10.0):
        """Wait until every client process exited and its files were released; True if so."""
        with self._idle:
            return self._idle.wait_for(lambda: self._live == 0, timeout)

    def env(self, library=None):
        """The environment entries a client process needs (LD_PRELOAD, KMOCK_SOCKET)."""
        from .library import library_path

        lib = library or library_path()
        pre = os.environ.get("LD_PRELOAD")
        return {"LD_PRELOAD": lib if not pre else f"{lib}:{pre}", P.SOCKET_ENV: self.path}

    # --- one connection --------------------------------------------------------------------

    def _client(self, pid):
        with self._lock:
            c = self.clients.get(pid)
            if c is None:
                c = self.clients[pid] = Client(pid)
                self._live += 1
            c.conns += 1
        return c

    def _serve_conn(self, conn):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        buf = bytearray(REQ_SIZE + P.MAXPAY)
        try:
            n = conn.recv_into(buf)
        except OSError:
            n = 0
        if n >= REQ_SIZE and _unpack_request(buf)[0] == P.DUMP:
            self._dump(conn)  # an observer (kmock dump --live), not a client process
            return
        view = memoryview(buf)
        client = self._client(pid)
        # this thread serves one process: its copies reach that process's memory
        # (the library sends its gettid() with each request; one connection, one thread)
        task = _libc.user_task(pid, _unpack_request(buf)[7] if n >= REQ_SIZE else 0)
        task.__enter__()
        # the fds this thread's calls install (see _watch_installs)
        installed = self._installed.fds = []
        chan = None
        try:
            # the socket until the client asks for its shared channel (OP_CHANNEL)
            while n >= REQ_SIZE:
                if _unpack_request(view)[0] == P.CHANNEL:
                    chan = self._open_channel(conn)
                    if chan is not None:
                        break
                    msg, passfd = _pack_reply(-1, errno.ENOSYS, 0, 0, 0, 0, 0), None
                else:
                    msg, passfd = self._request(client, view, installed, 0)
                try:
                    if passfd is None:
                        conn.send(msg)
                    else:
                        socket.send_fds(conn, [msg], [passfd])
                    n = conn.recv_into(buf)
                except OSError:
                    break
            if chan is not None:
                self._serve_channel(conn, chan, client, installed)
        finally:
            if chan is not None:
                chan.close()
            task.__exit__(None, None, None)
            conn.close()
            self._disconnect(client)

    def _open_channel(self, conn):
        """The shared channel of a connection (csrc_preload/kmock_chan.h), its memfd sent
        with the reply; None where the server has none (channel_type)."""
        if self._channel is None:
            return None
        try:
            chan = self._channel(conn.fileno(), self.spin_ns)
        except OSError as e:
            self.errors.append(("channel", repr(e)))
            return None
        try:
            socket.send_fds(conn, [_pack_reply(0, 0, 0, 0, 0, self.spin_ns, 0)], [chan.fd])
        except OSError:
            chan.close()
            return None
        finally:
            chan.close_fd()
        with self._lock:
            self.channels += 1
        return chan

    def _serve_channel(self, conn, chan, client, installed):
        view = chan.data
        more = chan.wait()
        while more:
            msg, passfd = self._request(client, view, installed, P.SOCKFD)
            if passfd is not None:
                try:  # before the reply is posted: the client then reads it at once
                    socket.send_fds(conn, [b"\0"], [passfd])
                except OSError:
                    break
            more = chan.reply(msg)

    def _request(self, client, view, installed, sockfd):
        """Run the request in ``view``; returns the reply and the fd to pass with it.
        ``sockfd``: the reply flag that says the fd goes separately over the socket."""
        op, fd, a, b, c, d, ln, _ = _unpack_request(view)
        fds = client.fds
        flags = x = y = 0
        payload = b""
        passfd = None
        try:
            if op == IOCTL and fd in fds:  # the hot path
                if installed:
                    installed.clear()
                ret, flags, x, y = self._ioctl(client, fds[fd], a, b, installed)
            elif op == HELLO:
                ret, payload = self._hello(client, a)
            else:
                h = self._handlers.get(op)
                if h is None:
                    raise OSError(errno.ENOSYS, "unknown request")
                if op not in ANY_FD and fd not in fds:
                    raise OSError(errno.EBADF, "not a kmock fd of this process")
                ret, flags, payload, passfd, *more = h(
                    client, fd, a, b, c, d, view[REQ_SIZE:REQ_SIZE + ln])
                if more:
                    x = more[0]
            err = 0
        except OSError as e:
            ret, err = -1, e.errno or errno.EIO
        except (OverflowError, ValueError, TypeError):
            ret, err = -1, errno.EINVAL
        except Exception as e:  # a bug in the mock: the client sees EIO
            self.errors.append((P.NAMES.get(op, op), repr(e)))
            ret, err = -1, errno.EIO
        if self.trace is not None:
            self._log(client.pid, op, fd, a, b, c, d, ret, err)
        if passfd is not None:
            flags |= sockfd
        ops, nops = client.drain() if client.pending else (b"", 0)
        msg = _pack_reply(ret if type(ret) is int else 0, err, nops, len(payload), flags, x, y)
        if nops:
            msg += ops
        if payload:
            msg += payload
        return msg, passfd

    def _dump(self, conn):
        try:
            try:
                from ..snapshot import capture

                data = json.dumps(capture(self.kernel), default=repr, sort_keys=True).encode()
                msg = _pack_reply(0, 0, 0, len(data), 0, 0, 0) + data
            except Exception as e:
                self.errors.append(("dump", repr(e)))
                msg = _pack_reply(-1, errno.EIO, 0, 0, 0, 0, 0)
            conn.send(msg)
        except OSError:
            pass
        finally:
            conn.close()

    def _disconnect(self, client):
        with self._idle:
            client.conns -= 1
            watch = client.conns == 0 and not client.watched
            client.watched = client.watched or watch
            self._idle.notify_all()
        if watch:
            # Threads close their connections as they exit, the process may open new
            # ones: its files are released when the process itself is gone.
            threading.Thread(target=self._watch_exit, args=(client,), daemon=True,
                             name="kmock-serve-exit").start()

    def _watch_exit(self, client):
        """Runs once per client process; the only user of its pidfd after the start."""
        try:
            if client.pidfd >= 0:
                # poll, not select: a process with many fds gets a pidfd above FD_SETSIZE
                p = select.poll()
                p.register(client.pidfd, select.POLLIN)
                p.poll()
            else:
                while client.alive():
                    time.sleep(0.01)
        finally:
            if client.pidfd >= 0:
                os.close(client.pidfd)
                client.pidfd = -1
        with self._reap_lock:
            # every process found gone is released here, descendants before ancestors: a
            # forked child the parent waited for closed its files before the parent exited
            with self._lock:
                dead = [c for c in self.clients.values() if c is client or c.exited()]
            for c in sorted(dead, key=self._depth, reverse=True):
                self._reap(c)

    def _depth(self, client):
        """How many forks separate ``client`` from a process that was not forked from a client."""
        n, pid, seen = 0, self._parents.get(client.pid), set()
        while pid and pid not in seen:
            seen.add(pid)
            n += 1
            pid = self._parents.get(pid)
        return n

    def _reap(self, client):
        with self._idle:
            if client.released:
                return
            self._idle.wait_for(lambda: client.conns == 0, 5.0)
            client.released = True
            self.clients.pop(client.pid, None)
        try:
            self._release(client)
        finally:
            with self._idle:
                self._live -= 1
                self._idle.notify_all()

    def _release(self, client):
        """The client process is gone: record the state, then close what it held."""
        if client.fds or client.maps:
            try:
                self.exit_snapshots[client.pid] = self.kernel.snapshot()
            except Exception as e:
                self.errors.append(("snapshot", repr(e)))
        if self.keep_files:
            return
        for mid in list(client.maps):
            self._drop_map(client, mid)
        for cfd, sfd in list(client.fds.items()):
            self._server_fds.discard(sfd)
            try:
                self.kernel.close(sfd)
            except OSError:
                pass
        client.fds.clear()

    def _log(self, pid, op, fd, a, b, c, d, ret, err):
        name = P.NAMES.get(op, str(op))
        if op == P.IOCTL:
            what = f"ioctl({fd}, {a & 0xFFFFFFFF:#x}, {b:#x})"
        else:
            what = f"{name.lower()}({fd}, {a:#x}, {b:#x}, {c:#x}, {d:#x})"
        res = f"-1 {errno.errorcode.get(err, err)}" if err else str(ret)
        with self._trace_lock:
            self.trace.write(f"{pid} {what} = {res}\n")
            self.trace.flush()

    # --- requests -------------------------------------------------------------------------

    def _hello(self, client, parent):
        if parent:
            self._parents[client.pid] = parent
            with self._lock:
                p = self.clients.get(parent)
            if p is not None and not client.fds:
                # fork(): the child inherits the parent's kmock fds
                for cfd, sfd in list(p.fds.items()):
                    new = self.kernel.dup(sfd)
                    self._server_fds.add(new)
                    client.fds[cfd] = new
        return os.getpid(), self._devices

    def _bind_fd(self, client, cfd, sfd):
        old = client.fds.get(cfd)
        if old is not None:  # the number was closed behind the library's back
            self._server_fds.discard(old)
            self.kernel.close(old)
        client.fds[cfd] = sfd
        self._server_fds.add(sfd)

    def _open(self, client, fd, flags, mode, c, d, payload):
        path = os.fsdecode(bytes(payload).split(b"\0", 1)[0])
        content = self.files.get(path)
        if content is not None:
            return 0, P.FILE, content, None
        if path not in self.kernel.devices:
            return 0, P.PASS, b"", None
        sfd = self.kernel.open(path, flags & U32, mode)
        self._bind_fd(client, fd, sfd)
        return 0, 0, b"", None

    def _close(self, client, fd, a, b, c, d, payload):
        sfd = client.fds.pop(fd)
        self._server_fds.discard(sfd)
        self.kernel.close(sfd)
        return 0, 0, b"", None

    def _dup(self, client, fd, newfd, b, c, d, payload):
        sfd = client.fds.get(fd)
        if sfd is None:
            raise OSError(errno.EBADF, "not a kmock fd")
        self._bind_fd(client, newfd, self.kernel.dup(sfd))
        return 0, 0, b"", None

    def _bind(self, client, fd, sfd, b, c, d, payload):
        if sfd not in self._server_fds and self.kernel.owns_fd(sfd):
            self._bind_fd(client, fd, sfd)
            return 0, 0, b"", None
        raise OSError(errno.EBADF, "no such new fd")

    def _watch_installs(self):
        """Know exactly which fds a call installed (an ioctl's int result is a new fd only
        if this thread's call installed it, whatever other threads do meanwhile)."""
        table = self.kernel.fdtable
        previous = table.on_install  # (another server's on the same Kernel: both see it)
        local = self._installed

        def installed(fd):
            if previous is not None:
                previous(fd)
            seen = getattr(local, "fds", None)
            if seen is not None:
                seen.append(fd)

        table.on_install = installed

    def _ioctl(self, client, sfd, request, arg, installed):
        """``installed``: this thread's list of the fds its calls install, empty here."""
        kernel = self.kernel
        rule = self.rules.get(request & U32)
        if rule is not None and rule.when is not None and not rule.when(kernel.file(sfd)):
            rule = None
        if rule is None:
            r = kernel.ioctl(sfd, request, arg)
        else:
            r = self._ioctl_rule(client, sfd, request, arg, rule)
        if installed and type(r) is int and r in installed:
            cloexec = fcntl.fcntl(r, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            return 0, P.NEWFD, r, cloexec
        return (r if type(r) is int else 0), 0, 0, 0

    def _ioctl_rule(self, client, sfd, request, arg, rule):
        """An ioctl whose struct holds fds: run it on a copy with the server's fds."""
        arg &= (1 << 64) - 1
        size = rule.struct_size(request, lambda n: _libc.copy_from_user(arg, n))
        buf = bytearray(_libc.copy_from_user(arg, size))
        orig = bytes(buf)
        taken = []
        try:
            for off in rule.fd_fields:
                if off + 4 > size:
                    continue
                cfd = struct.unpack_from("<i", buf, off)[0]
                mine = client.fds.get(cfd)
                if mine is None and cfd >= 0 and client.pidfd >= 0:
                    try:
                        mine = pidfd_getfd(client.pidfd, cfd)
                        taken.append(mine)
                    except OSError:
                        mine = None
                struct.pack_into("<i", buf, off, -1 if mine is None else mine)
            r = self.kernel.ioctl(sfd, request, buf)
        finally:
            for fd in taken:
                os.close(fd)
        for off in rule.fd_fields:
            if off + 4 <= size:
                buf[off:off + 4] = orig[off:off + 4]
        if buf != orig:
            _libc.copy_to_user(arg, bytes(buf))
        return r

    def _mmap(self, client, fd, length, prot, flags, offset, payload):
        if flags & mmap.MAP_ANONYMOUS:
            # the library maps anonymous memory itself (ksys_mmap_pgoff never looks the fd
            # up); memory of this process would mean nothing to the client
            raise OSError(errno.EINVAL, "MAP_ANONYMOUS is the client's own mapping")
        m = self.kernel.mmap(client.fds[fd], length, prot & U32, flags & U32, offset)
        f = m.file
        inode = getattr(m, "inode", None)
        if inode is not None:
            src = inode.backing
        elif getattr(f, "vcpu", None) is not None:
            src = f.vcpu.run_fd
        else:
            m.close()
            raise OSError(errno.ENODEV, "this mapping cannot be shared with another process")
        mid = next(self._map_ids)
        remote = None
        runs = b""
        if inode is not None:
            with inode.invalidate_lock:
                remote = RemoteMapping(client, mid, m)
                runs = b"".join(P.RUN.pack(s, n) for s, n in remote.faulting_runs())
                inode.register_notifier(remote)
        client.maps[mid] = (m, remote)
        return mid, 0, runs, src, m.address

    def _drop_map(self, client, mid):
        m, remote = client.maps.pop(mid)
        if remote is not None:
            remote.inode.unregister_notifier(remote)
        m.close()

    def _munmap(self, client, fd, mid, b, c, d, payload):
        if mid not in client.maps:
            raise OSError(errno.EINVAL, "no such mapping")
        self._drop_map(client, mid)
        return 0, 0, b"", None

    def _madvise(self, client, fd, mid, at, length, advice, payload):
        m, _ = client.maps[mid]
        if advice == MADV_REMOVE:
            m.file.fallocate(FALLOC_PUNCH_KEEP, m.offset + at, length)
        return 0, 0, b"", None

    def _fallocate(self, client, fd, mode, offset, length, d, payload):
        self.kernel.fallocate(client.fds[fd], mode, offset, length)
        return 0, 0, b"", None

    def _read(self, client, fd, n, offset, c, d, payload):
        n = max(0, min(n, P.MAXPAY))
        sfd = client.fds[fd]
        data = self.kernel.read(sfd, n) if offset == -1 else self.kernel.pread(sfd, n, offset)
        return 0, 0, bytes(data), None

    def _write(self, client, fd, a, offset, c, d, payload):
        sfd = client.fds[fd]
        data = bytes(payload)
        r = self.kernel.write(sfd, data) if offset == -1 else self.kernel.pwrite(sfd, data, offset)
        return r, 0, b"", None

    def _lseek(self, client, fd, pos, how, c, d, payload):
        return self.kernel.lseek(client.fds[fd], pos, how), 0, b"", None

    def _fstat(self, client, fd, a, b, c, d, payload):
        st = self.kernel.fstat(client.fds[fd])
        vals = [getattr(st, name, None) for name in P.STAT_FIELDS]
        vals = [int(v) if v is not None else 0 for v in vals]
        for i, name in ((10, "st_atime"), (11, "st_mtime"), (12, "st_ctime")):
            if getattr(st, name + "_ns", None) is None:
                vals[i] = int((getattr(st, name, 0) or 0) * 1_000_000_000)
        return 0, 0, P.STAT.pack(*vals), None

    def _ftruncate(self, client, fd, length, b, c, d, payload):
        self.kernel.ftruncate(client.fds[fd], length)
        return 0, 0, b"", None
