"""``kmock bench iommufd``: the mock's iommufd/VFIO hot paths against a real 4K fallocate.

There is no real /dev/iommu to compare with, so each row is timed, in the same run,
against the cost of a 4K ``fallocate`` of a guest_memfd on the real kernel
(``HostKernel()`` on /dev/kvm, random offsets in 1 GiB, as in ``kmock bench syscalls``):

(a) IOMMU_IOAS_MAP_FILE + IOMMU_IOAS_UNMAP of a 4K area of a memfd, with a VFIO device
    attached to the IOAS (so the map pins and maps into the device's domain);
(b) a 4K ``dev.dma_read`` at a random offset of a 1 GiB MAP_FILE mapping of a memfd.

Target (issue 14): each row at most 3x the real 4K fallocate, judged on the median
of interleaved rounds (best and median are both printed). Without /dev/kvm the host column is
left empty and only the mock's times are reported.
"""

import ctypes
import os

from ._timing import real_fallocate_4k, scattered_offsets, side_by_side

PAGE = 4096
BIG = 1 << 30
TARGET_RATIO = 3.0


def _offsets(n=4096, span=BIG):
    return scattered_offsets(span, n)


def _mock_ops(mock):
    """(name, callable, iterations) of the mock's rows, set up on ``mock``."""
    from ..uapi import iommufd as I
    from ..uapi import vfio as V

    dev = mock.add_vfio_device()
    iommufd = mock.open("/dev/iommu", os.O_RDWR | os.O_CLOEXEC)
    cdev = mock.open(dev.path, os.O_RDWR | os.O_CLOEXEC)
    mock.ioctl(cdev, V.VFIO_DEVICE_BIND_IOMMUFD,
               V.vfio_device_bind_iommufd(argsz=16, iommufd=iommufd))
    alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
    mock.ioctl(iommufd, I.IOMMU_IOAS_ALLOC, alloc)
    ioas = alloc.out_ioas_id
    mock.ioctl(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
               V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=ioas))
    memfd = mock.memfd_create("kmock-bench-iommufd", os.MFD_CLOEXEC)
    os.ftruncate(memfd, BIG)
    rw = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE

    big = I.iommu_ioas_map_file(size=ctypes.sizeof(I.iommu_ioas_map_file), flags=rw,
                                ioas_id=ioas, fd=memfd, start=0, length=BIG)
    mock.ioctl(iommufd, I.IOMMU_IOAS_MAP_FILE, big)
    base = big.iova
    for off in range(0, BIG, 1 << 24):  # some data where the reads land
        os.pwrite(memfd, b"kmock", off)

    ioctl = mock.ioctl
    MAP_FILE, UNMAP = I.IOMMU_IOAS_MAP_FILE, I.IOMMU_IOAS_UNMAP
    small = I.iommu_ioas_map_file(size=ctypes.sizeof(I.iommu_ioas_map_file), flags=rw,
                                  ioas_id=ioas, fd=memfd, start=0, length=PAGE)
    unmap = I.iommu_ioas_unmap(size=ctypes.sizeof(I.iommu_ioas_unmap), ioas_id=ioas,
                               length=PAGE)
    file_offsets = _offsets()
    it = [0]

    def map_unmap():
        i = it[0] = (it[0] + 1) & 4095
        small.start = file_offsets[i]
        ioctl(iommufd, MAP_FILE, small)
        unmap.iova = small.iova
        unmap.length = PAGE
        ioctl(iommufd, UNMAP, unmap)

    dma_read = dev.dma_read
    iovas = [base + off for off in _offsets()]
    jt = [0]

    def dma():
        i = jt[0] = (jt[0] + 1) & 4095
        dma_read(iovas[i], PAGE)

    # the rows must really do what they claim
    map_unmap()
    assert dev.translate(base) is not None and len(dma_read(base, PAGE)) == PAGE
    assert dma_read(base, 5) == b"kmock"
    return [
        ("MAP_FILE + UNMAP 4K (attached)", map_unmap, 5000),
        ("dma_read 4K of a 1G MAP_FILE", dma, 20000),
    ]


def run(quick=False, out=print, rounds=7):
    """Time the mock's rows against a real 4K fallocate; return rows and print the table
    (best and median of ``rounds`` interleaved rounds; the verdict is on the median)."""
    from .. import HostKernel, Kernel

    have_kvm = os.path.exists("/dev/kvm")
    host = HostKernel() if have_kvm else None
    mock = Kernel()
    rows = []
    try:
        hfn = real_fallocate_4k(host, BIG) if have_kvm else None
        for name, mfn, n in _mock_ops(mock):
            if quick:
                n = max(50, n // 50)
            fns = (mfn,) if hfn is None else (mfn, hfn)
            times = side_by_side(fns, n, 1 if quick else rounds)
            (mb, mm) = times[0]
            row = {"op": name, "mock_us": mb * 1e6, "mock_median_us": mm * 1e6,
                   "fallocate_us": None, "fallocate_median_us": None,
                   "ratio": None, "median_ratio": None}
            if hfn is not None:
                hb, hm = times[1]
                row.update(fallocate_us=hb * 1e6, fallocate_median_us=hm * 1e6,
                           ratio=mb / hb, median_ratio=mm / hm)
            rows.append(row)
    finally:
        if host is not None:
            host.close_all()
        mock.close_all()
    if not have_kvm:
        out("kmock bench iommufd: no /dev/kvm on this machine; the fallocate column is skipped")
    out(f"{'operation':<32} {'mock us':>15} {'fallocate us':>15} {'ratio':>15}  "
        f"target <= {TARGET_RATIO:g}x a real 4K fallocate")
    out(f"{'':<32} {'best / median':>15} {'best / median':>15} {'best / median':>15}")
    for r in rows:
        mock_col = f"{r['mock_us']:7.2f}/{r['mock_median_us']:<7.2f}"
        if r["ratio"] is None:
            out(f"{r['op']:<32} {mock_col} {'-':>15} {'-':>15}")
            continue
        verdict = "ok" if r["median_ratio"] <= TARGET_RATIO else "MISSED"
        out(f"{r['op']:<32} {mock_col} {r['fallocate_us']:7.2f}/{r['fallocate_median_us']:<7.2f} "
            f"{r['ratio']:6.2f}x/{str(round(r['median_ratio'], 2)) + 'x':<7} {verdict}")
    return rows
