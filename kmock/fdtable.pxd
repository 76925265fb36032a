# Cython declarations of kmock/fdtable.py (an augmenting .pxd, see kmock/notifier.pxd):
# the table runs on every fd creation, close and look-up; its own fields are typed
# members, and a file's get_file and fput are C calls (kmock/file.pxd). The class is
# final: its methods are C calls without the look-up for an override that a cpdef method
# of a class with an instance __dict__ makes on every call (``on_install`` is the hook
# for watching install instead).
cimport cython

from kmock._sync cimport RLock as SyncRLock
from kmock.file cimport File, fput, get_file


@cython.final
cdef class FdTable:
    cdef dict __dict__
    cdef dict _files
    cdef public int placeholder
    cdef public object _lock, get, on_install

    @cython.locals(file=File)
    cpdef install(self, file, cloexec=*)

    @cython.locals(f=File)
    cpdef close_fd(self, fd)

    @cython.locals(f=File, lock=SyncRLock)
    cpdef fdget(self, fd)

    cpdef lookup(self, fd)
