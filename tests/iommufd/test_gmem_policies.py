"""guest_memfd and iommufd under the three policies of reference §4 (profile setting
``iommufd_gmem_policy``): one VMM scenario -- a SW_PROTECTED VM with a guest_memfd
(MMAP | INIT_SHARED), a VFIO device bound and attached, the guest memory mapped into the
IOAS (MAP_FILE of the guest_memfd where allowed, its host mapping by VA otherwise), DMA,
a page converted to private, DMA, a page punched, DMA, IOAS_UNMAP -- and what differs.

upstream     MAP_FILE of a guest_memfd is EINVAL; the VA map pins, so the conversion
             fails with EAGAIN until IOAS_UNMAP (§4.1).
rfc-2026-02  MAP_FILE accepted, no pin: the conversion succeeds, the stale IOMMU entries
             are recorded as hazards in kernel.violations, DMA still reaches the memory (§4.3).
notifier     PUNCH_HOLE revokes the whole area (DMA faults, IOAS_UNMAP still works); a
             conversion zaps the range's entries for the software VM type (§4.3, Jason's
             proposal).

Plugin VM types then show that the architecture decides: iommu_conversion_policy "keep"
with judge_stale_dma "fault" (SNP-like: the RMP check faults the DMA) or "machine_check"
(TDX-like: recorded, the DMA refused).
"""

import pytest

import kmock
import kmock_sw_protected
from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K

from ._gmem import GuestMem
from ._util import *  # noqa: F403

SIZE = 8 * P


class Vmm:
    """The scenario's VMM: guest memory, an iommufd, one VFIO device attached to an IOAS."""

    def __init__(self, policy, vm_type=K.KVM_X86_SW_PROTECTED_VM, plugins=None):
        # the stand-in architectures (types 4, 5) must not meet the installed plugins
        self.k = kmock.Kernel("gmem-attributes-v8", only_plugins=plugins,
                              iommufd_gmem_policy=policy)
        self.g = GuestMem(self.k, SIZE, vm_type=vm_type)
        self.m = self.g.mmap()
        for i in range(8):
            self.m[i * P:i * P + 6] = b"page %d" % i
        self.ictx = Iommufd(self.k)
        self.dev = self.k.add_vfio_device()
        self.vfd = vfio_open(self.k, self.dev)
        vfio_bind(self.k, self.vfd, self.ictx.fd)
        self.ioas = self.ictx.ioas_alloc()
        vfio_attach(self.k, self.vfd, self.ioas)
        self.iova = 1 << 30
        self.by_file = True
        try:
            self.ictx.map_file(self.ioas, self.g.gmem, 0, SIZE, iova=self.iova)
        except OSError as e:
            self.map_file_errno = e.errno
            self.by_file = False
            self.ictx.map(self.ioas, self.m.address, SIZE, iova=self.iova)
        else:
            self.map_file_errno = 0

    def dma(self, page, n=6):
        """The bytes a device DMA read of page ``page`` gets, or the DmaFault."""
        try:
            return self.dev.dma_read(self.iova + page * P, n)
        except kmock.DmaFault as e:
            return e

    def violations(self, kind):
        return [v for v in self.k.violations if v["kind"] == kind]

    def close(self):
        self.k.close_all()


@pytest.fixture
def vmm_factory():
    made = []

    def make(*a, **kw):
        v = Vmm(*a, **kw)
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()


def test_upstream(vmm_factory):
    v = vmm_factory("upstream")
    assert v.map_file_errno == errno.EINVAL and not v.by_file  # neither shmem nor hugetlbfs
    assert v.dma(1) == b"page 1"
    # the VA map pinned every page: to-private fails at the first pinned page
    assert v.g.to_private(2 * P) == (errno.EAGAIN, 2 * P)
    assert not v.g.is_private(2 * P)
    assert v.dma(2) == b"page 2"
    # PUNCH_HOLE under the pinned map: the pinned page is orphaned and stays mapped
    v.g.punch(5 * P)
    assert v.violations("orphaned_pinned_pages")
    assert not isinstance(v.dma(5), kmock.DmaFault)
    assert v.ictx.unmap(v.ioas, v.iova, SIZE) == SIZE
    # unpinned now: the conversion goes through; the device no longer reaches the memory
    assert v.g.to_private(2 * P) == (0, 0)
    assert isinstance(v.dma(2), kmock.DmaFault)
    assert v.k.dma_faults[-1][1] == v.iova + 2 * P


def test_rfc_2026_02(vmm_factory):
    v = vmm_factory("rfc-2026-02")
    assert v.by_file and v.map_file_errno == 0
    assert v.dma(1) == b"page 1"
    assert v.k.snapshot()["guest_memfds"][0]["pinned_pages"] == 0  # no pin, no refcount
    # the conversion is not blocked; the IOMMU still maps the page: a hazard
    assert v.g.to_private(2 * P) == (0, 0)
    assert v.g.is_private(2 * P)
    stale = v.violations("stale_iommu_entry")
    assert [(s["reason"], s["iova"], s["length"]) for s in stale] == [
        ("convert", v.iova + 2 * P, P)] or stale[0]["iova"] == v.iova + 2 * P
    # the software VM type has no hardware check: the DMA reaches the (now private) page
    assert v.dma(2) == b"page 2"
    dma = v.violations("stale_iommu_dma")
    assert dma and dma[-1]["verdict"] == "allow" and dma[-1]["page"] == "private"
    # PUNCH_HOLE: again no notifier, recorded, DMA not refused
    v.g.punch(5 * P)
    assert any(s["reason"] == "punch_hole" for s in v.violations("stale_iommu_entry"))
    assert not isinstance(v.dma(5), kmock.DmaFault)
    assert v.ictx.unmap(v.ioas, v.iova, SIZE) == SIZE
    assert isinstance(v.dma(1), kmock.DmaFault)


def test_notifier(vmm_factory):
    v = vmm_factory("notifier")
    assert v.by_file
    assert v.dma(1) == b"page 1"
    # conversion: the software VM type zaps the IOMMU entries of the range
    assert v.g.to_private(2 * P) == (0, 0)
    assert v.dev.translate(v.iova + 2 * P) is None
    assert isinstance(v.dma(2), kmock.DmaFault)
    assert v.dma(1) == b"page 1" and v.dma(3) == b"page 3"  # the rest still translates
    assert not v.violations("stale_iommu_dma")
    # back to shared: the entries are not restored by the zap policy
    # PUNCH_HOLE: the whole area is revoked
    v.g.punch(5 * P)
    for page in (0, 1, 5, 7):
        assert isinstance(v.dma(page), kmock.DmaFault)
    # IOAS_UNMAP still works and returns the whole length
    assert v.ictx.unmap(v.ioas, v.iova, SIZE) == SIZE
    # and the memory can be mapped again
    v.ictx.map_file(v.ioas, v.g.gmem, 0, 4 * P, iova=v.iova)
    assert v.dma(1) == b"page 1"


def test_notifier_revokes_only_the_area_over_the_hole(vmm_factory):
    v = vmm_factory("notifier")
    v.ictx.unmap(v.ioas, v.iova, SIZE)
    low = v.ictx.map_file(v.ioas, v.g.gmem, 0, 4 * P, iova=v.iova)
    high = v.ictx.map_file(v.ioas, v.g.gmem, 4 * P, 4 * P, iova=v.iova + 4 * P)
    v.g.punch(6 * P)
    assert v.dma(1) == b"page 1"
    assert isinstance(v.dma(4), kmock.DmaFault)
    assert v.ictx.unmap(v.ioas, high, 4 * P) == 4 * P
    assert v.ictx.unmap(v.ioas, low, 4 * P) == 4 * P


def test_map_file_of_gmem_checks(vmm_factory):
    v = vmm_factory("rfc-2026-02")
    v.ictx.unmap(v.ioas, v.iova, SIZE)
    assert err(v.ictx.map_file, v.ioas, v.g.gmem, 0, SIZE + P) == errno.EINVAL
    assert err(v.ictx.map_file, v.ioas, v.g.gmem, P, SIZE) == errno.EINVAL


# --- the architecture decides ------------------------------------------------------------


class _KeepVm(VmType):
    has_private_mem = True
    iommu_conversion_policy = "keep"
    verdict = "allow"

    def supports_gmem_init_shared(self, vm):
        return True

    def judge_stale_dma(self, entry_private, page_private, write):
        return self.verdict


class SnpLike(_KeepVm):
    type = K.KVM_X86_SNP_VM
    name = "SNP-like (test)"
    verdict = "fault"  # the RMP check: an IOMMU fault, "noisy but harmless"


class TdxLike(_KeepVm):
    type = K.KVM_X86_TDX_VM
    name = "TDX-like (test)"
    verdict = "machine_check"  # a shared IOPTE reaching a private page


class ArchPlugin:
    @hookimpl
    def kmock_vm_types(self, kernel):
        return [SnpLike(), TdxLike()]


PLUGINS = [kmock_sw_protected, ArchPlugin()]


@pytest.mark.parametrize("policy", ["notifier", "rfc-2026-02"])
@pytest.mark.parametrize("vmtype,verdict", [(SnpLike, "fault"), (TdxLike, "machine_check")])
def test_arch_keeps_entries_and_judges_dma(vmm_factory, policy, vmtype, verdict):
    v = vmm_factory(policy, vm_type=vmtype.type, plugins=PLUGINS)
    assert v.dma(2) == b"page 2"
    assert v.g.to_private(2 * P) == (0, 0)
    # "keep": the entry survives the conversion (under notifier as under the RFC)
    assert v.dev.translate(v.iova + 2 * P) is not None
    r = v.dma(2)
    assert isinstance(r, kmock.DmaFault)
    assert verdict in r.reason
    rec = v.violations("stale_iommu_dma")[-1]
    assert rec["verdict"] == verdict and rec["entry"] == "shared" and rec["page"] == "private"
    assert rec["iova"] == v.iova + 2 * P
    # shared pages are untouched
    assert v.dma(3) == b"page 3"
    # converting back to shared makes the kept entry right again
    assert v.g.to_shared(2 * P) == (0, 0)
    assert not isinstance(v.dma(2), kmock.DmaFault)


def test_software_vm_under_notifier_zaps_and_arch_vm_keeps(vmm_factory):
    sw = vmm_factory("notifier")
    snp = vmm_factory("notifier", vm_type=SnpLike.type, plugins=PLUGINS)
    for v in (sw, snp):
        assert v.g.to_private(2 * P) == (0, 0)
    assert sw.dev.translate(sw.iova + 2 * P) is None
    assert snp.dev.translate(snp.iova + 2 * P) is not None
