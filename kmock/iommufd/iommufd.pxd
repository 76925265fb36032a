# Cython declarations of kmock/iommufd/iommufd.py (an augmenting .pxd, see
# kmock/notifier.pxd): the iommufd file's object table and the hot commands' locals, typed.
cimport cython

from kmock._sync cimport RLock as SyncRLock
from kmock.file cimport File
from kmock.iommufd.ioas cimport IOAS
from kmock.iommufd.pages cimport Pages


cdef class IommufdCtx(File):
    cdef public dict objects
    cdef public object rlimit_mode

    cpdef lookup(self, id, object_type=*)


@cython.locals(lock=SyncRLock)
cpdef run_command(IommufdCtx ictx, arg, fn, ctype, Py_ssize_t ksize, Py_ssize_t min_size,
                  bint in_place)

@cython.locals(ioas=IOAS, pages=Pages)
cpdef ioas_map_file(IommufdCtx ictx, ucmd, cmd)

@cython.locals(ioas=IOAS)
cpdef ioas_unmap(IommufdCtx ictx, ucmd, cmd)
