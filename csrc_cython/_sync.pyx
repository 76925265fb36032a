# cython: language_level=3
"""kmock._sync: the reentrant lock of kmock's kernel locks (slots_lock, the guest_memfd
invalidate lock, the iommu lock ...) and the condition a VM's mmu_lock is, for the
compiled modules.

It behaves as ``threading.RLock`` (same methods, same errors, usable by
``threading.Condition``); its interpreted twin is threading.RLock itself (kmock.locks).
The difference is the cost of an uncontended acquire/release from a compiled module that
types the lock (``cdef public RLock`` in its .pxd): a C call, about 60 instructions,
instead of about 600 through Python's method call and threading.RLock's argument parsing.
A conversion takes about ten such locks.

A contended acquire waits with the GIL released and lets signal handlers run, as
threading.RLock does (PyThread_acquire_lock_timed with intr_flag, then
PyErr_CheckSignals), so KeyboardInterrupt still reaches a waiting thread.
"""

from cpython.pythread cimport (NOWAIT_LOCK, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_release_lock, PyThread_type_lock)
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "pythread.h":
    ctypedef enum PyLockStatus:
        PY_LOCK_FAILURE
        PY_LOCK_ACQUIRED
        PY_LOCK_INTR
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock, long long microseconds,
                                             int intr_flag) nogil
    unsigned long PyThread_get_thread_ident()
    long long PY_TIMEOUT_MAX

from _thread import allocate_lock as _allocate_lock
from time import monotonic as _monotonic


cdef int _check_timeout(bint blocking, double timeout) except -1:
    """threading's checks of acquire's arguments (lock_acquire_parse_args)."""
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be positive")
    if timeout * 1e6 > PY_TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return 0


cdef class RLock:
    """A reentrant lock (threading.RLock's behaviour)."""

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("cannot allocate a lock")
        self._owner = 0
        self._count = 0

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    cpdef bint acquire(self, bint blocking=True, double timeout=-1) except -1:
        """Acquire the lock (reentrant); ``blocking`` and ``timeout`` as threading.RLock."""
        cdef unsigned long me = PyThread_get_thread_ident()
        if timeout != -1:
            _check_timeout(blocking, timeout)
        if self._count and self._owner == me:
            self._count += 1
            return True
        if PyThread_acquire_lock_timed(self._lock, 0, 0) != PY_LOCK_ACQUIRED:
            if not self._wait(blocking, timeout):
                return False
        self._owner = me
        self._count = 1
        return True

    cdef bint _wait(self, bint blocking, double timeout) except -1:
        """The contended acquire: wait with the GIL released, running signal handlers
        when a signal interrupts the wait (threading's acquire_timed)."""
        cdef long long us
        cdef PyLockStatus r
        cdef double deadline = 0
        if not blocking:
            return False
        if timeout != -1:
            deadline = _monotonic() + timeout
        while True:
            us = -1 if timeout == -1 else <long long>(max(0.0, deadline - _monotonic()) * 1e6)
            with nogil:
                r = PyThread_acquire_lock_timed(self._lock, us, 1)
            if r == PY_LOCK_ACQUIRED:
                return True
            if r == PY_LOCK_FAILURE:
                return False
            PyErr_CheckSignals()  # PY_LOCK_INTR: run the handlers (they may raise)

    cpdef release(self):
        """Release one level; RuntimeError when this thread does not hold the lock."""
        if self._count == 0 or self._owner != PyThread_get_thread_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = 0
            PyThread_release_lock(self._lock)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    # threading.Condition's protocol for a reentrant lock
    def _is_owned(self):
        return self._count > 0 and self._owner == PyThread_get_thread_ident()

    def _release_save(self):
        if self._count == 0:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = 0
        PyThread_release_lock(self._lock)
        return state

    def _acquire_restore(self, state):
        if PyThread_acquire_lock_timed(self._lock, 0, 0) != PY_LOCK_ACQUIRED:
            self._wait(True, -1)
        self._count, self._owner = state

    def __repr__(self):
        return (f"<{'locked' if self._count else 'unlocked'} kmock._sync.RLock object "
                f"owner={self._owner} count={self._count} at {id(self):#x}>")


cdef class Condition(RLock):
    """A condition variable over its own reentrant lock (threading.Condition(RLock())'s
    behaviour: acquire/release/with, wait, notify, notify_all), whose acquire/release
    are the RLock's C calls for typed callers. A VM's mmu_lock is one: guest accesses
    wait on it while an invalidation is in progress."""

    def __cinit__(self):
        self._waiters = []

    def wait(self, timeout=None):
        """Release the lock (all levels), wait for a notify or ``timeout`` seconds, take
        it back; True unless the timeout expired."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        saved = self._release_save()
        got = False
        try:
            if timeout is None:
                got = waiter.acquire()
            elif timeout > 0:
                got = waiter.acquire(True, timeout)
            else:
                got = waiter.acquire(False)
            return got
        finally:
            self._acquire_restore(saved)
            if not got:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # notified between the timeout and the lock

    def notify(self, n=1):
        """Wake up to ``n`` waiting threads (the lock must be held)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        while waiters and n > 0:
            waiters.pop(0).release()
            n -= 1

    def notify_all(self):
        self.notify(len(self._waiters))

    def __repr__(self):
        return f"<kmock._sync.Condition({RLock.__repr__(self)}, {len(self._waiters)})>"
