# Cython declarations of kmock/iommufd/iommufd.py (an augmenting .pxd, see
# kmock/notifier.pxd): the hot commands' locals, typed.
cimport cython

from kmock.iommufd.ioas cimport IOAS
from kmock.iommufd.pages cimport Pages


@cython.locals(ioas=IOAS, pages=Pages)
cpdef ioas_map_file(ictx, ucmd, cmd)

@cython.locals(ioas=IOAS)
cpdef ioas_unmap(ictx, ucmd, cmd)
