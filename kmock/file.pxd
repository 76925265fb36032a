# Cython declarations of kmock/file.py (an augmenting .pxd, see kmock/notifier.pxd):
# the fields every ioctl, dup, get and put reads, as typed members; a file type's other
# attributes live in the instance __dict__ as before.

cdef class File:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object kernel, refs, ioctls
