# Cython declarations of kmock/iommufd/pages.py (an augmenting .pxd, see kmock/notifier.pxd):
# the memory behind IOAS areas, whose fields every map, unmap and DMA reads.
cimport cython

cdef class IommuMemory


# (no instance __dict__: one Pages is made per map, and a cpdef method of an object with one
# looks the method up in it on every call)
cdef class Pages:
    cdef public IommuMemory memory
    cdef public object kernel, kind, start, length, writable, fd, gmem_file, mapping
    cdef public object _pin, _pin_runs, file_key, file_pfn_base
    cdef public Py_ssize_t users, pin_users

    cpdef first_page(self)
    cpdef _pin_pages(self)
    cpdef pfn_runs(self, offset, npages)
    cpdef need_pins(self)
    cpdef drop_pins(self)
    cpdef release(self)
    cpdef read(self, offset, n)
    cpdef write(self, offset, data)


cdef class IommuMemory:
    cdef dict __dict__
    cdef public object kernel, _next, orphans
    cdef public dict _bases, _file_refs
    cdef public set mapped

    cpdef file_pages(self, fd, start, length, writable)
    @cython.locals(pages=Pages)
    cpdef area_added(self, area)
    @cython.locals(pages=Pages)
    cpdef area_removed(self, area)
    cpdef file_ref(self, fd, key, ref=*)
    cpdef file_unref(self, key)
    cpdef _base_for(self, key)
    cpdef file_read(self, Pages pages, offset, n)
    cpdef file_write(self, Pages pages, offset, data)
