# Cython declarations of kmock/iommufd/ioas.py (an augmenting .pxd, see kmock/notifier.pxd):
# the IOAS and its areas, as typed members, for IOMMU_IOAS_MAP(_FILE), UNMAP and DMA.
cimport cython

from kmock.iommufd.pages cimport Pages


cdef class Area:
    cdef public object ioas, iova, last, offset, readable, writable, revoked
    cdef public Pages pages

    cpdef perm(self)


cdef class IOAS:
    cdef dict __dict__
    cdef public object ictx, kernel, id, reserved, allowed, domains, accesses, users
    cdef public object huge_pages
    cdef public list _starts, _areas

    cpdef calculate_iova_alignment(self)
    cpdef area_at(self, iova)
    cpdef _overlaps(self, start, last)
    cpdef alloc_iova(self, length, addr, iova_alignment=*)
    cpdef check_fixed(self, iova, length)

    @cython.locals(area=Area)
    cpdef map(self, Pages pages, offset, length, iova, fixed, readable, writable)

    @cython.locals(pages=Pages)
    cpdef remove_area(self, Area area)

    @cython.locals(a=Area)
    cpdef unmap(self, iova, length)
