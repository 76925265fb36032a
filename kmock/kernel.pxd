# Cython declarations of kmock/kernel.py (an augmenting .pxd, see kmock/notifier.pxd):
# the ioctl dispatch reads the open file's table as a typed member and a dict.
cimport cython

from kmock.file cimport File


@cython.locals(ioctls=dict)
cpdef dispatch_ioctl(File f, request, arg, mutate_flag)
