# cython: language_level=3
"""kmock.preload._channel: the server's side of a connection's shared channel
(csrc_preload/kmock_chan.h; kmock/preload/protocol.py).

Compiled only: kmock.preload.server uses it when it is built (and KMOCK_PURE_PYTHON is
not set); otherwise the server answers OP_CHANNEL with ENOSYS and its clients stay on
the socket.
"""

from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE
from libc.string cimport memcpy

cdef extern from "<sys/mman.h>":
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset) nogil
    int munmap(void *addr, size_t length) nogil
    int memfd_create(const char *name, unsigned int flags) nogil
    void *MAP_FAILED
    int PROT_READ, PROT_WRITE, MAP_SHARED, MFD_CLOEXEC

cdef extern from "<unistd.h>":
    int ftruncate(int fd, long length) nogil
    int close(int fd) nogil

cdef extern from "<errno.h>":
    int errno

cdef extern from "kmock_chan.h":
    enum: BUFSZ
    struct chan:
        int cli_cpu, srv_cpu
        char data[1]
    int kmock_chan_serve(chan *ch, int sock, long spin_ns, int post) nogil

#: sizeof(struct chan): the memfd's size
SIZE = sizeof(chan)
#: the request/reply area's size
DATA_SIZE = BUFSZ


cdef class Channel:
    """The shared memory of one connection: a memfd (``fd``, to pass to the client, then
    ``close_fd()``) mapped here; requests arrive in ``data`` (a memoryview)."""

    cdef chan *ch
    cdef int sock
    cdef long spin_ns
    cdef public int fd
    cdef public object data

    def __cinit__(self, int sock, long spin_ns):
        self.ch = NULL
        self.fd = memfd_create(b"kmock-channel", MFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(errno, "memfd_create")
        if ftruncate(self.fd, sizeof(chan)) < 0:
            e = errno
            self.close_fd()
            raise OSError(e, "ftruncate")
        cdef void *p = mmap(NULL, sizeof(chan), PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        if p == MAP_FAILED:
            e = errno
            self.close_fd()
            raise OSError(e, "mmap")
        self.ch = <chan *>p
        self.ch.cli_cpu = self.ch.srv_cpu = -1
        self.sock = sock
        self.spin_ns = spin_ns
        self.data = PyMemoryView_FromMemory(self.ch.data, BUFSZ, PyBUF_WRITE)

    def wait(self):
        """Wait for the first request (a bounded spin, then a sleep, without the GIL);
        False when the client closed the connection."""
        cdef int r
        with nogil:
            r = kmock_chan_serve(self.ch, self.sock, self.spin_ns, 0)
        return r == 1

    def reply(self, bytes msg):
        """Post ``msg`` as the reply (cut to the area, as a datagram too long for the
        client's buffer), then wait for the next request; False when the client closed
        the connection."""
        cdef size_t n = min(<size_t>len(msg), <size_t>BUFSZ)
        cdef int r
        memcpy(self.ch.data, <const char *>msg, n)
        with nogil:
            r = kmock_chan_serve(self.ch, self.sock, self.spin_ns, 1)
        return r == 1

    def close_fd(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def close(self):
        """Unmap (``data`` must not be used any more)."""
        self.close_fd()
        if self.ch != NULL:
            self.data.release()
            munmap(self.ch, sizeof(chan))
            self.ch = NULL

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
        if self.ch != NULL:
            munmap(self.ch, sizeof(chan))
