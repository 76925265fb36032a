"""A device DMA over many pages works run by run, never page by page, with the effect
of a page-by-page walk: the pages before the first page that faults are transferred,
the fault names that page, and a stale entry is recorded once per run of pages."""

import pytest

import kmock
import kmock_sw_protected
from kmock.hookspecs import hookimpl
from kmock.uapi import kvm as K

from ._util import P
from .test_gmem_policies import SIZE, Vmm, _KeepVm  # noqa: F401


class Fences(_KeepVm):
    """A test VM type whose hardware refuses DMA to guest_memfd pages >= ``fence``, and
    counts how often it is asked."""

    type = K.KVM_X86_SNP_VM
    name = "fenced (test)"
    verdict = "fault"
    fence = 5
    calls = 0

    def dma_access(self, vm, inode, start, end, write):
        Fences.calls += 1
        if end > self.fence:
            return f"page {max(start, self.fence)} is fenced"
        return None


class Plugin:
    @hookimpl
    def kmock_vm_types(self, kernel):
        return [Fences()]


@pytest.fixture
def vmm():
    made = []

    def make(policy="rfc-2026-02", **kw):
        v = Vmm(policy, **kw)
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()


def test_stale_entries_are_recorded_once_per_run_and_the_dma_goes_on(vmm):
    v = vmm()
    assert v.g.to_private(2 * P, 2 * P) == (0, 0)  # pages 2-3: the IOMMU still maps them
    data = v.dev.dma_read(v.iova, SIZE)
    assert [data[i * P:i * P + 6] for i in range(8)] == [b"page %d" % i for i in range(8)]
    stale = v.violations("stale_iommu_dma")
    assert len(stale) == 1
    assert (stale[0]["iova"], stale[0]["npages"], stale[0]["page"]) == (v.iova + 2 * P, 2,
                                                                        "private")


def test_the_architecture_is_asked_about_ranges_and_the_dma_stops_at_its_first_refusal(vmm):
    v = vmm(vm_type=Fences.type, plugins=[kmock_sw_protected, Plugin()])
    Fences.calls = 0
    with pytest.raises(kmock.DmaFault) as e:
        v.dev.dma_write(v.iova, b"\xcd" * SIZE)
    assert e.value.iova == v.iova + 5 * P
    assert Fences.calls <= 5  # a bisection (one question per page would be 6 here)
    assert [x["explanation"] for x in v.violations("dma_blocked")] == ["page 5 is fenced"]
    assert v.m[0:5 * P] == b"\xcd" * (5 * P)  # written before the fault
    assert v.m[5 * P:5 * P + 6] == b"page 5"  # not written


def test_a_poisoned_page_stops_the_dma_after_the_pages_before_it(vmm):
    v = vmm()
    v.k.memory_failure(v.g.gmem, 4 * P)
    with pytest.raises(kmock.DmaFault) as e:
        v.dev.dma_read(v.iova + P, 6 * P)
    assert e.value.iova == v.iova + 4 * P
    assert v.violations("dma_to_poisoned_page")[-1]["index"] == 4


def test_a_dma_across_a_hole_faults_at_the_hole(vmm):
    v = vmm("notifier")
    assert v.g.to_private(3 * P) == (0, 0)  # the software type zaps page 3's entry
    with pytest.raises(kmock.DmaFault) as e:
        v.dev.dma_write(v.iova + P, b"\xee" * (4 * P))
    assert e.value.iova == v.iova + 3 * P and "not mapped" in e.value.reason
    assert v.m[P:3 * P] == b"\xee" * (2 * P)
