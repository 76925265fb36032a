"""A hypothesis state machine over a launched TD: guest ACCEPT, private and shared accesses,
MapGPA answered by the VMM with a conversion, PUNCH_HOLE, RELEASE (TDX Connect) and device
DMA, checked after every step against a model of the S-EPT state of each page (FREE,
PENDING, MAPPED), its attribute, the IOMMU entries and whether the TD is dead.

Profile gmem-attributes-v8 (in-place conversion, guest_memfd mappable) with the iommufd
notifier policy: the TDX conversion policy zaps IOMMU entries of a converted page and a
PUNCH_HOLE revokes the whole area (the VMM maps it again with ``remap``).
"""

import ctypes
import errno
import mmap

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import kmock
import kmock_tdx
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from iommufd._util import Iommufd, vfio_attach, vfio_bind, vfio_open

from ._td import GPA, P, Td

N = 8
IMAGE = 2  # pages [0, IMAGE) are added at launch
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
pages = st.integers(0, N - 1)


class TdMachine(RuleBasedStateMachine):
    @initialize(connect=st.booleans(), cleanups=st.booleans())
    def launch(self, connect, cleanups):
        self.k = kmock.Kernel("gmem-attributes-v8", plugins=[kmock_tdx], platform="tdx",
                              iommufd_gmem_policy="notifier", tdx_connect=connect,
                              tdx_post_populate_cleanups=cleanups)
        self.connect = connect
        t = self.t = Td(self.k, npages=N,
                        gmem_flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)
        t.capabilities()
        t.split_irqchip()
        t.enable_map_gpa_exit()
        t.init_vm()
        t.create_vcpus()
        t.memslot()
        self.attrs(0, N, True)
        self.src = mmap.mmap(-1, IMAGE * P)
        self.src[:] = b"\x11" * (IMAGE * P)
        t.init_mem_region(GPA, ctypes.addressof(ctypes.c_char.from_buffer(self.src)), IMAGE)
        t.finalize()
        self.ictx = Iommufd(self.k)
        self.dev = self.k.add_vfio_device()
        vfd = vfio_open(self.k, self.dev)
        vfio_bind(self.k, vfd, self.ictx.fd)
        self.ioas = self.ictx.ioas_alloc()
        vfio_attach(self.k, vfd, self.ioas)
        self.iova = 1 << 30
        self.ictx.map_file(self.ioas, t.gmem, 0, N * P, iova=self.iova)
        # the model
        self.sept = ["MAPPED"] * IMAGE + ["FREE"] * (N - IMAGE)
        self.private = [True] * N
        self.iommu = [True] * N
        self.dead = False

    def teardown(self):
        if hasattr(self, "k"):
            self.k.close_all()

    # --- helpers ---------------------------------------------------------------------------

    def attrs(self, page, n, private):
        a = G.kvm_memory_attributes2(offset=page * P, size=n * P,
                                     attributes=PRIVATE if private else 0)
        try:
            self.k.ioctl(self.t.gmem, self.k.profile.set_memory_attributes2, a)
        except OSError as e:
            return e.errno, a.error_offset
        return 0, 0

    def run(self, stop=True):
        """KVM_RUN of a guest that ends with stop() (a TD's vCPU halts in the kernel):
        the exit reason (KVM_EXIT_INTR once it ran to the stop), or the errno."""
        if stop:
            self.t.guest().stop()
        try:
            return self.t.run()
        except OSError as e:
            return e.errno

    def convert(self, page, private):
        """The model of a conversion of one page; returns the expected errno."""
        if private == self.private[page]:
            return 0
        if not private and self.connect and self.sept[page] == "MAPPED":
            return errno.EAGAIN  # TD-DMA pinned until RELEASE
        self.private[page] = private
        self.iommu[page] = False  # the TDX policy zaps the IOMMU entries
        if not private:
            self.sept[page] = "FREE"
        return 0

    # --- guest ---------------------------------------------------------------------------

    @precondition(lambda self: not self.dead)
    @rule(page=pages)
    def accept(self, page):
        a = self.t.guest().tdx.accept(GPA + page * P)
        r = self.run()
        if not self.private[page]:
            assert r == errno.EFAULT and not a.done
            assert self.t.run_struct().memory_fault.flags == K.KVM_MEMORY_EXIT_FLAG_PRIVATE
            self.t.guest().clear()
            return
        assert r == K.KVM_EXIT_INTR
        if self.sept[page] == "MAPPED":
            assert a.result == T.TDX_PAGE_ALREADY_ACCEPTED
        else:
            assert a.result == T.TDX_SUCCESS
            self.sept[page] = "MAPPED"

    @precondition(lambda self: not self.dead)
    @rule(page=pages, shared=st.booleans())
    def access(self, page, shared):
        g = self.t.guest()
        gpa = GPA + page * P
        a = g.read(gpa | self.t.shared if shared else gpa, 8)
        r = self.run()
        if shared == self.private[page]:
            assert r == errno.EFAULT and not a.done  # the access kind differs from the attribute
            g.clear()
            return
        if not shared and self.sept[page] != "MAPPED":
            assert r == errno.EIO and not a.done  # pending EPT violation: the TD is dead
            self.sept[page] = "PENDING"
            self.dead = True
            return
        assert r == K.KVM_EXIT_INTR and a.done

    @precondition(lambda self: not self.dead)
    @rule(page=pages, private=st.booleans(), vmm_ok=st.booleans())
    def map_gpa(self, page, private, vmm_ok):
        t = self.t
        gpa = GPA + page * P
        a = t.guest().tdx.map_gpa(gpa if private else gpa | t.shared, P)
        assert self.run() == K.KVM_EXIT_HYPERCALL
        hc = t.run_struct().hypercall
        assert (hc.args[0], hc.args[1]) == (gpa, 1)
        assert hc.args[2] == (K.KVM_MAP_GPA_RANGE_ENCRYPTED if private else 0)
        expect = self.convert(page, private) if vmm_ok else None
        if vmm_ok:
            assert self.attrs(page, 1, private)[0] == expect
        hc.ret = 0 if vmm_ok and not expect else 1  # QEMU fails the call when it cannot convert
        assert self.run(stop=False) == K.KVM_EXIT_INTR  # the stop() queued after the call
        if hc.ret:
            assert a.result == (T.TDVMCALL_STATUS_INVALID_OPERAND, a.gpa)
        else:
            assert a.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)

    @precondition(lambda self: not self.dead)
    @rule(page=pages)
    def release(self, page):
        a = self.t.guest().tdx.release(GPA + page * P)
        assert self.run() == K.KVM_EXIT_INTR
        if self.connect and self.sept[page] == "MAPPED":
            assert a.result == T.TDX_SUCCESS
            self.sept[page] = "PENDING"
        else:
            assert a.result != T.TDX_SUCCESS

    # --- host --------------------------------------------------------------------------------

    @precondition(lambda self: not self.dead)
    @rule(page=pages, private=st.booleans())
    def vmm_convert(self, page, private):
        expect = self.convert(page, private)
        assert self.attrs(page, 1, private)[0] == expect

    @precondition(lambda self: not self.dead)
    @rule(page=pages)
    def punch(self, page):
        pinned = self.connect and self.sept[page] == "MAPPED"
        try:
            self.k.fallocate(self.t.gmem, 3, page * P, P)
            r = 0
        except OSError as e:
            r = e.errno
        assert r == (errno.EAGAIN if pinned else 0)
        if not pinned:
            self.sept[page] = "FREE"
            self.iommu = [False] * N  # the area is revoked

    @precondition(lambda self: not self.dead)
    @rule(page=pages)
    def dma(self, page):
        try:
            self.dev.dma_read(self.iova + page * P, 4)
            ok = True
        except kmock.DmaFault:
            ok = False
        assert ok == (self.iommu[page] and not self.private[page])

    @precondition(lambda self: not self.dead)
    @rule()
    def remap(self):
        self.ictx.unmap(self.ioas, self.iova, N * P)
        self.ictx.map_file(self.ioas, self.t.gmem, 0, N * P, iova=self.iova)
        self.iommu = [True] * N

    @precondition(lambda self: self.dead)
    @rule(page=pages)
    def dead_td(self, page):
        """A dead TD stays dead: KVM_RUN and VM ioctls fail with EIO."""
        assert self.run(stop=False) == errno.EIO
        try:
            self.k.ioctl(self.t.vm, K.KVM_CHECK_EXTENSION, 0)
            raise AssertionError("a dead VM answered")
        except OSError as e:
            assert e.errno == errno.EIO

    # --- the check ---------------------------------------------------------------------------

    @invariant()
    def matches_model(self):
        if not hasattr(self, "t"):
            return
        t = self.t
        assert [t.state(i) for i in range(N)] == self.sept
        inode = self.k.file(t.gmem).inode
        assert [inode.is_private(i) for i in range(N)] == self.private
        assert t.vmobj.dead == self.dead
        if self.dead:
            assert self.run(stop=False) == errno.EIO


TestTdStateMachine = TdMachine.TestCase
TestTdStateMachine.settings = settings(TestTdStateMachine.settings, stateful_step_count=30)
