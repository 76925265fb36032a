# Cython declarations of kmock/preload/server.py (an augmenting .pxd: the .py stays the
# source and runs unchanged when interpreted). Every forwarded call reads these fields:
# typed, each is one load instead of a generic attribute look-up (~200 instructions).

cdef class Client:
    cdef public object pid, fds, maps, pending, lock
    cdef dict __dict__

cdef class Server:
    cdef public object kernel, trace
    cdef public dict rules, _handlers
    cdef dict __dict__
    cdef object __weakref__

    cpdef _request(self, Client client, view, list installed, int sockfd)
    cpdef _ioctl(self, Client client, sfd, request, arg, list installed)
