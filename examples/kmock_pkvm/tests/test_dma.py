"""DMA to pages the protected guest owns: refused by the hypervisor's IOMMU (Android),
or let through and recorded when ``pkvm_dma_isolation`` is off (upstream's status)."""

import ctypes
import os

import pytest

import kmock
import kmock_pkvm
from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import vfio as V
from pvm import GPA, P, Pvm

IOVA = 1 << 30


def attach_device(k, gmem, size):
    """A VFIO device in an IOAS that maps the guest_memfd (MAP_FILE) at IOVA."""
    dev = k.add_vfio_device()
    vfd = k.open(dev.path, os.O_RDWR)
    iommufd = k.open("/dev/iommu", os.O_RDWR)
    k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD,
            V.vfio_device_bind_iommufd(argsz=24, iommufd=iommufd))
    alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
    k.ioctl(iommufd, I.IOMMU_IOAS_ALLOC, alloc)
    k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
    rw = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE | I.IOMMU_IOAS_MAP_FIXED_IOVA
    k.ioctl(iommufd, I.IOMMU_IOAS_MAP_FILE, I.iommu_ioas_map_file(
        size=40, flags=rw, ioas_id=alloc.out_ioas_id, fd=gmem, start=0, length=size, iova=IOVA))
    return dev


@pytest.mark.parametrize("isolation", [True, False])
def test_dma_to_a_guest_owned_page(isolation):
    k = kmock.Kernel("linux-arm64-pkvm", only_plugins=[kmock_pkvm],
                     iommufd_gmem_policy="rfc-2026-02", pkvm_dma_isolation=isolation)
    pvm = Pvm(k)
    dev = attach_device(k, pvm.gmem, pvm.size)
    pvm.guest.write(GPA, b"guest secret")
    pvm.guest.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR
    if isolation:
        with pytest.raises(kmock.DmaFault, match="owned by the protected guest"):
            dev.dma_read(IOVA, 12)
        assert k.violations[-1].kind == "dma_blocked"
    else:
        assert dev.dma_read(IOVA, 12) == b"guest secret"
        assert k.violations[-1].kind == "pkvm_dma_not_isolated"
    # a page the guest never touched is the host's: DMA reaches it either way
    n = len(k.violations)
    assert dev.dma_read(IOVA + P, 4) == bytes(4) and len(k.violations) == n
    k.close_all()
