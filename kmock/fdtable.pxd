# Cython declarations of kmock/fdtable.py (an augmenting .pxd, see kmock/notifier.pxd):
# install and remove run on every fd creation and close, lookups on every syscall.

cdef class FdTable:
    cdef public dict _files
    cdef public object placeholder, _lock, get

    cpdef install(self, file, cloexec=*)
    cpdef remove(self, fd)
