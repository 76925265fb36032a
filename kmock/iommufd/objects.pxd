# Cython declarations of kmock/iommufd/objects.py (an augmenting .pxd, see
# kmock/notifier.pxd): the paging domain and the device, which every map, unmap and DMA
# goes through.
cimport cython

from kmock.iommufd.ioas cimport IOAS, Area
from kmock.iommufd.pages cimport Pages


cdef class HwptPaging:
    cdef dict __dict__
    cdef public object ictx, id, page_size, auto, nest_parent, dirty_tracking, table
    cdef public object devices, children, reserved
    cdef public IOAS ioas

    @cython.locals(pages=Pages)
    cpdef map_area(self, Area area, start=*, end=*)

    cpdef unmap_area(self, Area area, start=*, end=*)
    cpdef translate(self, iova)


cpdef tuple _iova_pages(Area area, start, end)


cdef class IommuDevice:
    cdef dict __dict__
    cdef public object ictx, id, dev, vdevice, user_destroyable
    cdef public HwptPaging hwpt

    @cython.locals(hwpt=HwptPaging, area=Area)
    cpdef _dma(self, iova, length, data)
