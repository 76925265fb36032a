# Cython declarations of kmock/iommufd/ioas.py (an augmenting .pxd, see kmock/notifier.pxd):
# the IOAS and its areas, as typed members, for IOMMU_IOAS_MAP(_FILE), UNMAP and DMA.
cimport cython

from kmock.iommufd.pages cimport IommuMemory, Pages


cdef class Area:
    cdef public object ioas, iova, last, offset, readable, writable, revoked
    cdef public Pages pages

    cpdef perm(self)


cpdef _roundup_pow2(x)


cdef class IOAS:
    cdef dict __dict__
    cdef public object ictx, kernel, id, reserved, allowed, domains, accesses, users
    cdef public object huge_pages
    cdef public IommuMemory memory
    cdef public list _starts, _areas

    cpdef calculate_iova_alignment(self)
    cpdef area_at(self, iova)
    cpdef _overlaps(self, start, last)
    @cython.locals(a=Area)
    cpdef alloc_iova(self, length, addr, iova_alignment=*)
    cpdef check_fixed(self, iova, length)

    @cython.locals(area=Area)
    cpdef map(self, Pages pages, offset, length, iova, fixed, readable, writable)

    cpdef remove_area(self, Area area)

    @cython.locals(area=Area, pages=Pages)
    cpdef _remove_at(self, Py_ssize_t i)

    @cython.locals(a=Area)
    cpdef unmap(self, iova, length)
