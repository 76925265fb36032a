# Cython declarations of kmock/file.py (an augmenting .pxd, see kmock/notifier.pxd):
# the fields every ioctl, dup, get and put reads, as typed members; a file type's other
# attributes live in the instance __dict__ as before. A file type that is a Python class
# overrides release as usual (cpdef dispatch finds its method).
cimport cython

from kmock._sync cimport RLock as SyncRLock


cdef class File:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object kernel, ioctls
    cdef public Py_ssize_t refs

    cpdef release(self)


# (the bodies of File.get and File.put, as C calls for the typed callers: a cpdef method
# of a class with an instance __dict__ looks for an override on every C call, about 400
# instructions)
@cython.locals(lock=SyncRLock)
cpdef get_file(File f)

@cython.locals(lock=SyncRLock)
cpdef fput(File f)
