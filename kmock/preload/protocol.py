"""The wire format between the preload library (csrc_preload/kmock_preload.c) and ``kmock serve``.

One SOCK_SEQPACKET connection per client thread; every request gets one reply. After
the setup (HELLO on a process's first connection, then CHANNEL) the requests and replies
of a connection go through its shared channel instead (csrc_preload/kmock_chan.h: a
memfd both sides map, the same bytes as below at the start of its data area, a bounded
spin then a sleep on each side); the socket then carries only wake-ups of a sleeping
server (one byte, client to server) and the fd of a reply (one byte with SCM_RIGHTS,
reply flag SOCKFD). A server without the compiled channel (kmock.preload._channel)
answers CHANNEL with ENOSYS and the connection stays on the socket.

Request (48 bytes, then ``len`` payload bytes)::

    u32 op, i32 fd (the client's fd number), i64 a, b, c, d, u32 len, u32 tid

``tid`` is the client thread's id (gettid): one connection serves one thread, and the
server takes it as the task of the calls it runs (task_pid_nr(current), e.g. the id
string of a stats fd).

Reply (40 bytes, then ``nops`` remap orders of 32 bytes, then ``len`` payload bytes;
at most one fd passed with SCM_RIGHTS)::

    i64 ret, i32 err (an errno, 0 on success), u32 nops, u32 len, u32 flags, i64 x, y

A remap order ``(i64 map_id, i64 page, i64 npages, i32 fault, u32 seq)`` tells the
client to map pages [page, page + npages) of its mapping ``map_id`` onto the
zero-length memfd (``fault``) or back onto the file: the server's guest_memfd
notifier zapping or restoring the VMM's host mapping, which only the VMM's own
process can do. The client applies the orders before the call returns, in ``seq`` order
(1, 2, ... per process, wrapping at 2**32) whichever of its threads received them.

Requests (fields not listed are 0):

========== ==================================== ===============================================
op         request                              reply
========== ==================================== ===============================================
HELLO      a = parent pid after a fork (or 0)   ret = server pid; payload = device paths, NUL-separated
OPEN       fd = the client's new fd, a = flags, err, or flags PASS (not a kmock device),
           b = mode, payload = path + NUL       or FILE: payload = the contents of a file
                                                kmock serves (a module parameter); the
                                                client opens a memfd holding them
CLOSE      fd                                   err
DUP        fd = old, a = the client's new fd    err
IOCTL      a = request, b = arg (as passed)     ret/err; flags NEWFD: x = server fd, y = cloexec
BIND       fd = the client's new fd, a = x      err
MMAP       a = length, b = prot, c = flags,     ret = map id, x = the server's address,
           d = offset                           payload = (page, npages) i64 pairs that fault;
                                                the file's memfd passed with SCM_RIGHTS
MUNMAP     a = map id                           err
FALLOCATE  a = mode, b = offset, c = length     err
READ       a = n, b = offset (-1: read)         payload = the bytes
WRITE      b = offset (-1: write), payload      ret = bytes written
LSEEK      a = pos, b = whence                  ret = the new position
FSTAT      fd                                   payload = 13 i64 (see STAT_FIELDS)
FTRUNCATE  a = length                           err
MADVISE    a = map id, b = offset in mapping,   err (MADV_REMOVE: the file's PUNCH_HOLE)
           c = length, d = advice
DUMP       (first request of an observer        payload = Kernel.snapshot() as JSON; the
           connection, kmock dump --live)       connection is then closed
CHANNEL    (after HELLO, on the socket)         x = the spin bound in ns; the channel's memfd
                                                passed with SCM_RIGHTS; ENOSYS: no channel
========== ==================================== ===============================================
"""

import struct

(HELLO, OPEN, CLOSE, DUP, IOCTL, BIND, MMAP, MUNMAP, FALLOCATE, READ, WRITE, LSEEK, FSTAT,
 FTRUNCATE, MADVISE, DUMP, CHANNEL) = range(1, 18)

#: op number -> name (for traces)
NAMES = dict(enumerate(("HELLO OPEN CLOSE DUP IOCTL BIND MMAP MUNMAP FALLOCATE READ WRITE LSEEK "
                        "FSTAT FTRUNCATE MADVISE DUMP CHANNEL").split(), start=1))

REQ = struct.Struct("<Iiqqqq II")
REP = struct.Struct("<qiIIIqq")
OP = struct.Struct("<qqqiI")
RUN = struct.Struct("<qq")
assert REQ.size == 48 and REP.size == 40 and OP.size == 32

#: reply flags
NEWFD = 1
PASS = 2
FILE = 4
SOCKFD = 8  # (channel) the reply's fd follows on the socket

#: the largest payload a client sends or receives (read/write are cut to it, a short count)
MAXPAY = 1 << 20
#: how long a channel's server thread spins for the next request after a reply, and a
#: client thread for its reply, before sleeping (microseconds; Server(spin_us=...),
#: ``kmock run/serve --spin-us``; sent to the client in the CHANNEL reply)
SPIN_US = 50
#: the largest DUMP reply an observer accepts
MAXDUMP = 1 << 26

STAT_FIELDS = ("st_dev", "st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev",
               "st_size", "st_blksize", "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
STAT = struct.Struct("<13q")

#: environment of a client: where the server listens
SOCKET_ENV = "KMOCK_SOCKET"
